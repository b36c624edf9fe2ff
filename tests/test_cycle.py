"""run_cycle end to end on tiny digits configs, its metrics, twin cache and artifacts.

Runs (module-scoped, each a few seconds on 2 CPU cores; training pinned to
conftest.FAST_TRAINING so recipe changes never move these numbers):
- nonprivate: cnn, 10 rounds, PGD+FGSM, 32 eval images, 2 PGD runs; run twice
  with seed 0 and once with seed 1;
- dp: the same at epsilon 3.4 with 3 rounds and all three attacks, run twice
  against one TwinCache folder (the second run loads the non-private twin).
"""

from __future__ import annotations

import json
import math
import os
import re
from datetime import datetime
from pathlib import Path

import pytest
import torch
from conftest import FAST_TRAINING

from psreval_tune.artifacts import ARTIFACTS, TWIN_ARTIFACTS, example_captions, write_outputs
from psreval_tune.config import DEFAULT_EVAL_ATTACKS as ATTACKS  # PGD, FGSM: FAB-T and AutoAttack are opt-in
from psreval_tune.config import CycleConfig
from psreval_tune.cycle import TwinCache, _fresh_model, eval_images, run_cycle
from psreval_tune.data import load_data
from psreval_tune.evaluate import accuracy, wilson
from psreval_tune.hardware import cpu_info
from psreval_tune.quantize import load_int8
from psreval_tune.tracking import package_version

pytestmark = pytest.mark.slow  # run_cycle end to end, several trainings

BASE_KEYS = (
    "acc_clean_float",
    "acc_clean_int8",
    "size_bytes_float",
    "size_bytes_int8",
    "size_reduction_pct",
    "epsilon_spent",
    "noise_multiplier",
    "sample_rate",
    "dp_steps",
    "delta",
    "dp_bookkeeping",
    "final_train_loss",
    "n_test",
    "n_eval",
    "acc_val_float",
    "acc_val_wb_pgd",
    *(f"acc_clean_{k}_ci_{b}" for k in ("float", "int8") for b in ("low", "high")),
)
# the int8 model that ran and its speed (config int8_lowering=auto leaves digits on the reference graph, so no
# int8_lowered_disagree / time_int8_compile_s here; tests/test_quantize.py lowers)
INT8_KEYS = (
    "int8_lowered",
    *(f"latency_ms_{k}_b{b}" for k in ("float", "int8") for b in (1, 256)),
    "throughput_int8_over_float",
    "time_int8_latency_s",
)
PRIVACY_KEYS = ("epsilon_spent", "noise_multiplier", "sample_rate", "dp_steps", "delta", "dp_bookkeeping")
PHASES = ("data", "train", "quantize", "eval", "attack")
GENERATORS = ("nonprivate", "dp")
TARGETS = ("nonprivate", "dp", "int8_nonprivate", "int8_dp")


def _untimed(metrics: dict) -> dict:
    """Without the wall times and the latencies (timings too: they differ between runs)."""
    return {k: v for k, v in metrics.items() if not k.startswith(("time_", "latency_ms_", "throughput_"))}


def _stats(stem: str, attack: str) -> list[str]:
    """worst case over restarts (the headline) and mean over them, each with a Wilson interval; std only for
    PGD, the one attack run more than once."""
    stats = [f"{stem}_{s}" for s in ("worst", "worst_ci_low", "worst_ci_high", "mean", "ci_low", "ci_high")]
    return stats + ([f"{stem}_std"] if attack == "PGD" else [])


def _wb_keys(attacks) -> list[str]:
    keys = []
    for a in attacks:
        for q in ("", "_int8", "_int8_bpda"):
            keys += _stats(f"acc_wb_{a.lower()}{q}", a) + [f"acc_loss_wb_{a.lower()}{q}"]
        keys.append(f"attack_runs_{a.lower()}")
    return keys


def _clean_eval_keys(models) -> list[str]:
    return [f"acc_clean_eval_{q}{m}" for m in models for q in ("", "int8_")]


@pytest.fixture(scope="module")
def np_cfg() -> CycleConfig:
    return CycleConfig(
        dataset="digits",
        arch="cnn",
        rounds=10,
        eval_samples=32,
        attack_repeats=2,
        eval_attacks=("PGD", "FGSM"),
        device="cpu",
        seed=0,
        **FAST_TRAINING,
    )


@pytest.fixture(scope="module")
def dp_cfg(np_cfg) -> CycleConfig:
    return np_cfg.replace(epsilon=3.4, rounds=3, eval_attacks=ATTACKS)


@pytest.fixture(scope="module")
def np_run(np_cfg):
    rounds: list[int] = []
    messages: list[str] = []
    result = run_cycle(np_cfg, on_round=lambda r, fed: rounds.append(r.round), progress=messages.append)
    return result, rounds, messages


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("twin-cache")


@pytest.fixture(scope="module")
def dp_run(dp_cfg, cache_dir):
    rounds: list[int] = []
    result = run_cycle(dp_cfg, cache=TwinCache(cache_dir), on_round=lambda r, fed: rounds.append(r.round))
    return result, rounds


@pytest.fixture(scope="module")
def dp_run_cached(dp_cfg, cache_dir, dp_run):
    return run_cycle(dp_cfg, cache=TwinCache(cache_dir))


# --- non-private -----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_nonprivate_metrics(np_run, np_cfg):
    result, rounds, messages = np_run
    m = result.metrics
    expected = (
        set(BASE_KEYS)
        | set(_wb_keys(np_cfg.eval_attacks))
        | set(_clean_eval_keys(["nonprivate"]))
        | {f"time_{p}_s" for p in PHASES}
        | {"time_total_s"}
        | set(INT8_KEYS)
    )
    assert set(m) == expected  # no transfer matrix and no twin without DP
    for key in PRIVACY_KEYS:
        assert m[key] is None, key
    # observed: float 0.928, int8 0.925, PGD 0.78, FGSM 0.84 (32 images)
    assert m["acc_clean_float"] >= 0.8
    assert abs(m["acc_clean_float"] - m["acc_clean_int8"]) <= 0.02
    assert m["acc_wb_pgd_mean"] < m["acc_clean_float"]
    assert m["acc_wb_fgsm_mean"] < m["acc_clean_float"]
    for key in _wb_keys(np_cfg.eval_attacks):
        assert -1.0 <= m[key] <= 1.0 if "loss" in key else 0.0 <= m[key] <= 2.0, key
    assert m["attack_runs_pgd"] == 2 and m["attack_runs_fgsm"] == 1  # FGSM is deterministic: run once
    assert m["n_test"] == 359 and m["n_eval"] == 32
    # 95% Wilson intervals over images, beside every accuracy
    assert (m["acc_wb_pgd_ci_low"], m["acc_wb_pgd_ci_high"]) == wilson(m["acc_wb_pgd_mean"], 32)
    assert (m["acc_clean_float_ci_low"], m["acc_clean_float_ci_high"]) == wilson(m["acc_clean_float"], 359)
    assert m["acc_wb_pgd_ci_low"] < m["acc_wb_pgd_mean"] < m["acc_wb_pgd_ci_high"]
    assert (m["acc_wb_pgd_worst_ci_low"], m["acc_wb_pgd_worst_ci_high"]) == wilson(m["acc_wb_pgd_worst"], 32)
    assert m["acc_wb_pgd_worst"] <= m["acc_wb_pgd_mean"]  # worst case over restarts <= mean over them
    assert m["acc_wb_fgsm_worst"] == m["acc_wb_fgsm_mean"]  # run once
    assert m["size_bytes_int8"] < m["size_bytes_float"]
    assert m["size_reduction_pct"] == pytest.approx(100 * (1 - m["size_bytes_int8"] / m["size_bytes_float"]))
    assert m["size_reduction_pct"] > 55  # cnn: observed 62.1%
    # the metric is the float model's accuracy, recomputed here
    data = load_data(np_cfg)
    assert m["acc_clean_float"] == accuracy(result.models["nonprivate"].float_model, data.test.x, data.test.y)
    assert m["acc_clean_int8"] == accuracy(result.models["nonprivate"].int8_model, data.test.x, data.test.y)
    assert set(result.models) == {"nonprivate"}
    assert any("round 10/10" in msg for msg in messages)


@pytest.mark.timeout(300)
def test_nonprivate_history_rises(np_run, np_cfg):
    result, rounds, _ = np_run
    h = result.history
    assert rounds == list(range(1, 11))
    assert [r["round"] for r in h] == list(range(1, 11))
    assert all(r["epsilon"] is None for r in h)
    assert set(h[0]) == {"round", "train_loss", "acc_val", "epsilon"}  # validation, never test, per round
    # observed: val acc 0.2 after round 1, 0.9 after round 10
    assert h[-1]["acc_val"] >= h[0]["acc_val"] + 0.3
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert h[-1]["acc_val"] == result.metrics["acc_val_float"]
    assert h[-1]["train_loss"] == result.metrics["final_train_loss"]


@pytest.mark.timeout(300)
def test_timings_cover_the_phases(np_run):
    m = np_run[0].metrics
    for p in PHASES:
        assert m[f"time_{p}_s"] >= 0
    assert m["time_train_s"] > 0 and m["time_attack_s"] > 0
    assert sum(m[f"time_{p}_s"] for p in PHASES) <= m["time_total_s"] + 1e-3


@pytest.mark.timeout(300)
def test_int8_latency_metrics(np_run):
    """Float vs int8 latency at batch 1 and 256, positive; digits is below cycle.LOWER_MIN_PIXELS, so auto
    evaluates the reference graph and says so (tests/test_quantize.py covers the lowered model)."""
    result, _, messages = np_run
    m = result.metrics
    for key in INT8_KEYS:
        assert m[key] is not None and math.isfinite(m[key]), key
    assert all(m[k] > 0 for k in INT8_KEYS if k != "int8_lowered")
    assert m["throughput_int8_over_float"] == m["latency_ms_float_b256"] / m["latency_ms_int8_b256"]
    assert m["int8_lowered"] == 0.0 and "int8_lowered_disagree" not in m
    assert any(msg.startswith("int8: the PT2E reference graph") and "int8_lowering=auto" in msg for msg in messages)


@pytest.mark.timeout(300)
def test_examples_for_the_image_grid(np_run, np_cfg):
    ex = np_run[0].examples
    assert ex["clean"].shape == ex["adversarial"].shape == (8, 1, 8, 8)
    assert ex["labels"].shape == (8,)
    assert float((ex["adversarial"] - ex["clean"]).abs().max()) <= np_cfg.attack_eps + 1e-6
    assert not torch.equal(ex["adversarial"], ex["clean"])


@pytest.mark.timeout(300)
def test_same_seed_same_metrics_other_seed_other_metrics(np_run, np_cfg):
    first = np_run[0].metrics
    again = run_cycle(np_cfg).metrics
    assert _untimed(again) == _untimed(first)
    other = run_cycle(np_cfg.replace(seed=1)).metrics
    assert set(other) == set(first)
    assert _untimed(other) != _untimed(first)
    assert other["final_train_loss"] != first["final_train_loss"]


# --- private + twin ----------------------------------------------------------------


@pytest.mark.timeout(300)
def test_dp_metrics_and_transfer_matrix(dp_run, dp_cfg):
    result, rounds = dp_run
    m = result.metrics
    transfer = [
        k
        for a in ATTACKS
        for g in GENERATORS
        for t in TARGETS
        for k in _stats(f"acc_transfer_{a.lower()}_{g}_to_{t}", a)
    ]
    twin_clean = [f"acc_clean_{k}_nonprivate{c}" for k in ("float", "int8") for c in ("", "_ci_low", "_ci_high")]
    twin_bpda = [k for a in ATTACKS for k in _stats(f"acc_wb_{a.lower()}_int8_bpda_nonprivate", a)]
    expected = (
        set(BASE_KEYS)
        | set(_wb_keys(ATTACKS))
        | set(transfer)
        | set(twin_clean)
        | set(twin_bpda)
        | set(_clean_eval_keys(["dp", "nonprivate"]))
        | {f"time_{p}_s" for p in PHASES}
        | {"time_train_twin_s", "time_total_s"}
        | set(INT8_KEYS)
    )
    assert set(m) == expected
    assert len(transfer) == 2 * 4 * (6 + 7)  # worst and mean + intervals per cell, std for PGD only
    for key in transfer:
        assert 0.0 <= m[key] <= 1.0, key
    for a in ("pgd", "fgsm"):
        # white-box is the diagonal of the matrix
        assert m[f"acc_wb_{a}_mean"] == m[f"acc_transfer_{a}_dp_to_dp_mean"]
        assert m[f"acc_wb_{a}_worst"] == m[f"acc_transfer_{a}_dp_to_dp_worst"]
        assert m[f"acc_wb_{a}_worst"] <= m[f"acc_wb_{a}_mean"]
        assert m[f"acc_wb_{a}_int8_mean"] == m[f"acc_transfer_{a}_dp_to_int8_dp_mean"]
        assert m[f"attack_runs_{a}"] == (2 if a == "pgd" else 1)  # deterministic attacks run once
    assert m["acc_wb_pgd_std"] == m["acc_transfer_pgd_dp_to_dp_std"]
    # privacy numbers: 2 clients of 647, batch 128 -> 6 Poisson batches per epoch
    assert 3.4 - 0.02 <= m["epsilon_spent"] <= 3.4  # observed 3.3955
    assert m["sample_rate"] == pytest.approx(1 / 6)
    assert m["dp_steps"] == dp_cfg.rounds * dp_cfg.local_epochs * 6 == 18
    assert m["dp_bookkeeping"] in (0.0, 1.0)  # which clipping ran (tests/test_fast_paths.py checks which)
    assert m["delta"] == dp_cfg.delta
    assert m["noise_multiplier"] > 0  # observed 1.411
    # own model and twin both evaluated, twin's clean accuracy recomputed here
    assert set(result.models) == {"dp", "nonprivate"}
    data = load_data(dp_cfg)
    twin = result.models["nonprivate"]
    assert m["acc_clean_float_nonprivate"] == accuracy(twin.float_model, data.test.x, data.test.y)
    assert m["acc_clean_float"] == accuracy(result.models["dp"].float_model, data.test.x, data.test.y)
    assert not twin.cached and twin.privacy is None
    assert all(r["epsilon"] is None for r in twin.history) and len(twin.history) == dp_cfg.rounds
    # the cycle's history is its own (DP) model's, and on_round saw only it
    assert rounds == [1, 2, 3]
    eps = [r["epsilon"] for r in result.history]
    assert all(a < b for a, b in zip(eps, eps[1:])) and eps[-1] == m["epsilon_spent"]


@pytest.mark.timeout(300)
def test_twin_cache_is_reused_with_identical_metrics(dp_run, dp_run_cached, dp_cfg, cache_dir):
    first, cached = dp_run[0], dp_run_cached
    assert first.models["nonprivate"].cached is False
    assert cached.models["nonprivate"].cached is True
    twin_cfg = dp_cfg.replace(epsilon=None)
    assert sorted(os.listdir(cache_dir)) == sorted([TwinCache(cache_dir).name(twin_cfg), "trained"])
    assert len(TwinCache(cache_dir).trainings(twin_cfg)) == 1  # trained once, by the first run
    assert _untimed(cached.metrics) == _untimed(first.metrics)
    assert "time_train_twin_s" not in cached.metrics  # nothing was trained for the twin
    assert cached.models["nonprivate"].history == first.models["nonprivate"].history
    sd_a = first.models["nonprivate"].float_model.state_dict()
    sd_b = cached.models["nonprivate"].float_model.state_dict()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


@pytest.mark.timeout(60)
def test_twin_cache_ignores_a_torn_file(tmp_path, dp_cfg):
    cache = TwinCache(tmp_path)
    twin_cfg = dp_cfg.replace(epsilon=None)
    assert cache.load(twin_cfg) is None
    Path(cache.path(twin_cfg)).write_bytes(b"not a torch file")
    assert cache.load(twin_cfg) is None
    cache.save(twin_cfg, {"state_dict": {"w": torch.ones(2)}, "history": []})
    assert torch.equal(cache.load(twin_cfg)["state_dict"]["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == [cache.name(twin_cfg)]  # no .tmp left


# --- artifacts -----------------------------------------------------------------


@pytest.mark.timeout(300)
@pytest.mark.parametrize("which", ["dp", "nonprivate"])
def test_write_outputs(which, dp_run, np_run, tmp_path):
    from PIL import Image

    result = dp_run[0] if which == "dp" else np_run[0]
    cfg = result.config
    out = write_outputs(result, tmp_path / "out")
    assert out == tmp_path / "out"
    assert sorted(os.listdir(out)) == sorted(ARTIFACTS + (TWIN_ARTIFACTS if which == "dp" else ()))
    assert os.listdir(tmp_path) == ["out"]  # the temporary sibling was renamed away

    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary) == {"config", "metrics", "history", "dp", "machine", "provenance"}
    assert set(summary["machine"]) == set(cpu_info())  # where the numbers were measured (ISA, torch's kernels)
    # which code made the numbers, and when: package, commit of this checkout, library versions, start time
    prov = summary["provenance"]
    assert prov["psreval_version"] == package_version()
    assert re.fullmatch(r"[0-9a-f]{40,64}", prov["git_commit"]) and prov["git_dirty"] in ("true", "false")
    assert prov["packages"]["torch"] == torch.__version__ and prov["packages"]["opacus"]
    assert {"ray", "torchattacks", "mlflow"} <= set(prov["packages"])
    started, written = (datetime.fromisoformat(prov[k]) for k in ("started_at", "written_at"))
    assert abs((written - started).total_seconds() - result.metrics["time_total_s"]) <= 1  # to the second
    assert CycleConfig.from_dict(summary["config"]) == cfg
    assert summary["metrics"] == {
        k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in result.metrics.items()
    }
    assert summary["history"] == result.history and len(summary["history"]) == cfg.rounds

    # both weight files load without pickle and reproduce the reported accuracies
    data = load_data(cfg)
    model = _fresh_model(cfg, data)
    model.load_state_dict(torch.load(out / "model_float.pt", weights_only=True))
    assert accuracy(model, data.test.x, data.test.y) == result.metrics["acc_clean_float"]
    assert accuracy(load_int8(out / "model_int8.pt2"), data.test.x, data.test.y) == result.metrics["acc_clean_int8"]
    if which == "dp":  # the twin's weights too: the other seeds' transfer generators (psreval_tune/xseed.py)
        model.load_state_dict(torch.load(out / "model_float_nonprivate.pt", weights_only=True))
        assert accuracy(model, data.test.x, data.test.y) == result.metrics["acc_clean_float_nonprivate"]
        int8 = load_int8(out / "model_int8_nonprivate.pt2")
        assert accuracy(int8, data.test.x, data.test.y) == result.metrics["acc_clean_int8_nonprivate"]

    png = out / "adv_examples.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as img:
        img.verify()
    with Image.open(png) as img:  # 2 rows of 8 captioned images, wider than tall
        assert img.size[0] > 2 * img.size[1] > 400
    # the captions: the attack, its budget and target, each image's true label and the predictions
    cap = example_captions(result)
    assert cap["title"].startswith(f"{cfg.eval_attacks[0]} at 8/255")
    assert ("DP model" in cap["title"]) == (which == "dp")
    model = result.models[which].float_model
    assert cap["true"] == result.examples["labels"].tolist()
    assert cap["clean"] == model(result.examples["clean"]).argmax(1).tolist()
    assert cap["adversarial"] == model(result.examples["adversarial"]).argmax(1).tolist()


@pytest.mark.timeout(300)
def test_write_outputs_replaces_an_existing_folder(dp_run, np_run, tmp_path):
    write_outputs(dp_run[0], tmp_path / "out")
    write_outputs(np_run[0], tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert summary["config"]["epsilon"] is None
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.timeout(300)
def test_accuracy_loss_is_measured_on_the_attacked_images(np_run, np_cfg):
    m, model = np_run[0].metrics, np_run[0].models["nonprivate"]
    data = load_data(np_cfg)
    x_eval, y_eval = eval_images(np_cfg, data)
    assert len(y_eval) == m["n_eval"] == 32 < m["n_test"]
    clean_here = accuracy(model.float_model, x_eval, y_eval)
    assert m["acc_clean_eval_nonprivate"] == clean_here
    assert m["acc_clean_eval_int8_nonprivate"] == accuracy(model.int8_model, x_eval, y_eval)
    for a in ("pgd", "fgsm"):
        assert m[f"acc_loss_wb_{a}"] == pytest.approx(clean_here - m[f"acc_wb_{a}_worst"])  # of the headline
        assert m[f"acc_loss_wb_{a}_int8"] == pytest.approx(
            m["acc_clean_eval_int8_nonprivate"] - m[f"acc_wb_{a}_int8_worst"]
        )
    # the default attacks the whole test split
    assert eval_images(np_cfg.replace(eval_samples=None), data)[1].shape == data.test.y.shape


@pytest.mark.timeout(300)
def test_bpda_white_box_on_int8_is_reported_beside_the_transfer_number(np_run):
    m = np_run[0].metrics
    for a in ("pgd", "fgsm"):
        bpda, transfer = m[f"acc_wb_{a}_int8_bpda_mean"], m[f"acc_wb_{a}_int8_mean"]
        assert 0.0 <= bpda <= m["acc_clean_eval_int8_nonprivate"]
        # white-box through the int8 model is at least as strong as transfer from its float model
        # (same images; one image of 32 is 0.031)
        assert bpda <= transfer + 1 / 32 + 1e-9, (a, bpda, transfer)
