"""Cross-seed transfer (psreval_tune/xseed.py) and its post-sweep step (psreval_tune/sweeps/xseed.py).

Fast tier: tiny linear models on 8x8 digits (trained in a fraction of a second), 60 images, PGD with 2 restarts
and FGSM. The slow test builds a real MLflow store with two private trials (cnn, digits, real int8 programs)
written by artifacts.write_outputs and runs ``psreval xseed`` on it.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from psreval_tune import schema, xseed
from psreval_tune.analysis import claims
from psreval_tune.attacks import AttackSpec
from psreval_tune.xseed import NotSeparate, TrialModels, check_separate, generator_trials, xseed_group, xseed_metrics

SPECS = [AttackSpec("PGD", 0.15, 0.05, 5), AttackSpec("FGSM", 0.15, 0.05, 1), AttackSpec("FAB", 0.15, 0.05, 5)]
KW = dict(repeats=2, num_classes=10, device="cpu")


@pytest.fixture(scope="module")
def digits():
    d = load_digits()
    x = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(d.target, dtype=torch.int64)
    return x[:1200], y[:1200], x[1200:1260], y[1200:1260]


def _linear(seed: int, x: torch.Tensor, y: torch.Tensor, private: bool) -> nn.Module:
    """A softmax regression trained full-batch; 'private' ones get noisy, fewer steps (a weaker model)."""
    g = torch.Generator().manual_seed(seed * 2 + private)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(40 if private else 80):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if private:
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.01)
    return model.eval()


def _int8_like(model: nn.Module) -> nn.Module:
    """A stand-in for the int8 program: the weights rounded to 1/16 steps (xseed.py only evaluates it)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.copy_(torch.round(p * 16) / 16)
    return out


def _trial(seed: int, digits, key: str | None = None) -> TrialModels:
    x, y = digits[0], digits[1]
    dp, np_ = _linear(seed, x, y, True), _linear(seed, x, y, False)
    return TrialModels(key or f"run{seed}", seed, dp, np_, _int8_like(dp), _int8_like(np_))


class GarbledGradient(nn.Module):
    """The same logits as ``model`` (bit for bit) with a fixed random input gradient: a generator whose
    adversarial examples are garbage, and a target that classifies exactly as ``model`` does."""

    def __init__(self, model: nn.Module, seed: int):
        super().__init__()
        self.model = model
        self.register_buffer("w", torch.randn(10, 64, generator=torch.Generator().manual_seed(seed)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        junk = x.flatten(1) @ self.w.T
        return self.model(x.detach()) + (junk - junk.detach())


def _garbled(t: TrialModels) -> TrialModels:
    return TrialModels(
        t.key,
        t.seed,
        GarbledGradient(t.float_dp, 1),
        GarbledGradient(t.float_nonprivate, 2),
        t.int8_dp,
        t.int8_nonprivate,
    )


@pytest.fixture(scope="module")
def two(digits):
    return [_trial(0, digits), _trial(1, digits)]


def test_metric_names_are_what_the_claims_read_and_the_schema_declares(two, digits):
    x, y = digits[2], digits[3]
    m = xseed_metrics(two[0], [two[1]], x, y, SPECS, **KW)
    read = {claims.xseed(a, f"{g}_to_{t}") for a in ("pgd", "fgsm") for g in schema.GENERATORS for t in schema.TARGETS}
    assert read <= set(m), sorted(read - set(m))
    assert m[xseed.COUNT] == 1.0
    assert not [k for k in m if "_fab_" in k]  # minimum-norm: no transfer cells
    for k in m:
        match = schema.lookup(k)
        assert match is not None and match.when == schema.FINAL, k
    for k in read:
        assert 0.0 <= m[k] <= 1.0
        lo, hi = m[k.replace("_mean", "_ci_low")], m[k.replace("_mean", "_ci_high")]
        assert lo <= m[k] <= hi
    assert f"{xseed.metric_stem('PGD', 'dp', 'dp')}_std" in m  # PGD: 2 restarts
    assert f"{xseed.metric_stem('FGSM', 'dp', 'dp')}_std" not in m  # deterministic: one run


def test_a_generator_is_never_the_target_trials_own_model(two, digits, monkeypatch):
    a, b = two
    with pytest.raises(NotSeparate, match="white-box"):
        check_separate(a, a)
    with pytest.raises(NotSeparate, match="white-box"):  # a rerun of the same seed is the same model
        check_separate(
            a, TrialModels("other-run", a.seed, b.float_dp, b.float_nonprivate, b.int8_dp, b.int8_nonprivate)
        )
    shared = TrialModels("run9", 9, a.float_dp, b.float_nonprivate, b.int8_dp, b.int8_nonprivate)
    with pytest.raises(NotSeparate, match="itself"):
        check_separate(a, shared)
    with pytest.raises(NotSeparate):
        xseed_metrics(a, [a], digits[2], digits[3], SPECS, **KW)
    rerun = TrialModels("run0-again", 0, b.float_dp, b.float_nonprivate, b.int8_dp, b.int8_nonprivate)
    assert generator_trials(a, [a, rerun, b]) == [b]  # same seed: never a generator, whatever its run

    seen = []
    real = xseed.attack_matrix

    def spy(generators, targets, *args, **kwargs):
        seen.append((list(generators.values()), list(targets.values())))
        return real(generators, targets, *args, **kwargs)

    monkeypatch.setattr(xseed, "attack_matrix", spy)
    xseed_group([a, b, rerun], {a.key: digits[2:], b.key: digits[2:]}, SPECS[:2], targets=[a.key, b.key], **KW)
    assert seen
    trials = (a, b, rerun)
    owner = {id(m): t.key for t in trials for m in t.targets().values()}
    for gens, targets in seen:
        (source,) = {owner[id(g)] for g in gens}  # one generator trial per crafting
        assert source not in {owner[id(t)] for t in targets}  # evaluated only on other trials' models
        assert all(g is not t for g in gens for t in targets)


def test_each_trials_numbers_come_from_the_other_seeds_models(two, digits):
    a, b = two
    imgs = {a.key: digits[2:], b.key: digits[2:]}
    before = xseed_group([a, b], imgs, SPECS, **KW)
    after = xseed_group([a, _garbled(b)], imgs, SPECS, **KW)  # b's generators garbage, b's predictions unchanged
    assert after[b.key] == before[b.key]  # b's generators are a's models: untouched
    moved = [k for k in before[a.key] if k.endswith("_mean") and after[a.key][k] != before[a.key][k]]
    assert moved and all(k.startswith("acc_xseed_") for k in moved)
    # garbage examples fool the targets less than real ones crafted on b
    for g in ("dp", "nonprivate"):
        k = xseed.metric_stem("FGSM", g, "dp") + "_mean"
        assert after[a.key][k] > before[a.key][k]


def test_deterministic_and_independent_of_what_is_computed_together(two, digits):
    a, b = two
    x, y = digits[2], digits[3]
    first = xseed_metrics(a, [b], x, y, SPECS, **KW)
    again = xseed_metrics(a, [b], x.clone(), y.clone(), SPECS, **KW)
    assert first == again
    together = xseed_group([a, b], {a.key: (x, y), b.key: (x, y)}, SPECS, **KW)
    assert together[a.key] == first
    assert together[b.key] == xseed_metrics(b, [a], x, y, SPECS, **KW)


def test_means_over_generator_seeds(two, digits):
    a, b = two
    c = _trial(2, digits)
    x, y = digits[2], digits[3]
    both = xseed_metrics(a, [b, c], x, y, SPECS[:2], **KW)
    one_b, one_c = (xseed_metrics(a, [g], x, y, SPECS[:2], **KW) for g in (b, c))
    assert both[xseed.COUNT] == 2.0
    for k, v in both.items():
        if k.endswith(("_mean", "_worst")):
            assert math.isclose(v, (one_b[k] + one_c[k]) / 2, abs_tol=1e-12), k
    assert xseed_metrics(a, [], x, y, SPECS, **KW) == {}  # no other seed: nothing


# --- the post-sweep step, end to end on a real store -------------------------------------------------------


def _cycle_result(cfg, data, seed: int, int8: dict):
    """A CycleResult as run_cycle returns it, without training: a cnn DP model and its twin, their int8
    programs quantized once (``int8``, shared by the seeds to save time: xseed only evaluates them)."""
    from psreval_tune.cycle import CycleResult, TrainedModel
    from psreval_tune.models import build_model
    from psreval_tune.quantize import quantize_static

    models = {}
    for i, name in enumerate(("dp", "nonprivate")):
        torch.manual_seed(100 * seed + i)
        model = build_model(cfg.arch, data.in_channels, data.num_classes, data.mean, data.std).eval()
        if name not in int8:
            int8[name] = quantize_static(model, data.val.x[:64])
        models[name] = TrainedModel(name, model, int8[name])
    x = data.test.x[:8]
    metrics = {"acc_clean_float": 0.1, "n_test": float(len(data.test)), "n_eval": float(cfg.eval_samples)}
    metrics.update({f"acc_clean_eval_{t}": 0.1 for t in schema.TARGETS})
    ex = {"clean": x, "adversarial": x, "labels": data.test.y[:8]}
    return CycleResult(cfg, metrics, [{"round": 1, "train_loss": 1.0}], models, ex)


@pytest.mark.slow
def test_psreval_xseed_on_a_store(tmp_path, capsys):
    from mlflow import MlflowClient

    from psreval_tune.analysis.load import load_mlflow
    from psreval_tune.artifacts import TWIN_ARTIFACTS, write_outputs
    from psreval_tune.config import CycleConfig
    from psreval_tune.data import load_data
    from psreval_tune.sweeps import xseed as step
    from psreval_tune.tracking import Tracker, TrackingSpec, local_store

    uri, _ = local_store(tmp_path / "runs")
    tracker = Tracker(TrackingSpec(uri, "psreval", "sw", (tmp_path / "runs" / "mlartifacts").as_uri()))
    parent = tracker.sweep_run({"kind": "test"})
    runs, int8 = {}, {}
    for seed in (0, 1):
        cfg = CycleConfig(
            dataset="digits",
            arch="cnn",
            epsilon=3.4,
            seed=seed,
            rounds=1,
            eval_samples=20,
            eval_attacks=("PGD", "FGSM", "FAB"),
            attack_repeats=2,
            attack_steps=2,  # plumbing: a short PGD
        )
        result = _cycle_result(cfg, load_data(cfg), seed, int8)
        out = write_outputs(result, tmp_path / f"trial{seed}")
        assert all((out / n).is_file() for n in TWIN_ARTIFACTS)  # a private trial keeps its twin
        run_id, _ = tracker.trial_run(parent, f"trial{seed}", f"s{seed}")
        tracker.log_params(run_id, cfg.record())
        tracker.log_metrics(run_id, result.metrics, step=1)
        tracker.log_artifacts(run_id, out)
        tracker.finish(run_id)
        runs[seed] = run_id
    tracker.finish(parent)
    argv = ["--run-dir", str(tmp_path / "runs"), "--sweep", "sw"]

    assert step.main(argv) == 0
    out = capsys.readouterr().out
    assert "2 trial(s) measured" in out and "s0 (seed 0)" in out and "s1 (seed 1)" in out
    client = MlflowClient(uri)
    for run_id in runs.values():
        metrics = client.get_run(run_id).data.metrics
        assert metrics[xseed.COUNT] == 1.0
        for a in ("pgd", "fgsm"):
            for g in schema.GENERATORS:
                for t in schema.TARGETS:
                    assert 0.0 <= metrics[claims.xseed(a, f"{g}_to_{t}")] <= 1.0
    frame = load_mlflow("psreval", uri, "sw")
    assert not claims.xseed_matrix(frame).empty  # the report's cross-seed table now has its cells

    assert step.main(argv) == 0  # idempotent: nothing recomputed
    assert "0 trial(s) measured, 2 already measured" in capsys.readouterr().out

    assert step.main(["--run-dir", str(tmp_path / "nowhere"), "--sweep", "sw"]) == 2
    assert step.main([*argv[:2], "--sweep", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("error: --run-dir=") and "no sweep 'nope'" in err[1]
