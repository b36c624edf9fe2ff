"""analysis/: the paper's tables and figures, checked against sweeps with known numbers.

The runs are logged through the real MlflowClient (psreval_tune's Tracker, as the
sweeps log them) into a temporary SQLite store; each report's markdown table and
the numbers behind its figures (Report.data / Report.extra) must equal what the
known per-seed values give: means, t-based 95% CIs over 3 seeds, size reduction,
accuracy loss, time ratios, Pareto membership.
"""

from __future__ import annotations

import html
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from psreval_tune.analysis import build_report, load_mlflow, load_tune
from psreval_tune.analysis.cli import main as cli
from psreval_tune.config import ATTACKS, CycleConfig
from psreval_tune.tracking import Tracker, TrackingSpec, local_store

pytestmark = pytest.mark.slow  # sweeps logged through MlflowClient into SQLite stores, reports, CLI subprocesses

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = "psreval"
SEEDS = (0, 1, 2)
T975_2 = 4.302652729911275  # Student t, 97.5% quantile, 2 degrees of freedom (3 seeds)


def ci(std: float, n: int = 3) -> float:
    return T975_2 * std / math.sqrt(n)


# --- a sweep with known numbers ----------------------------------------------------------------------
# Accuracies in percent; per seed s the clean accuracies move by 2*(s-1) points and every robust
# accuracy by 1*(s-1) points, so each mean is the value below, clean CIs are ci(2) = 4.97 points,
# robust ones ci(1) = 2.48 points.

SETTINGS = {
    "none": {"threat": "none", "adv_fraction": 0.0, "attack": "PGD"},
    "adv20": {"threat": "adv_training", "adv_fraction": 0.2, "attack": "FGSM"},
    "adv40": {"threat": "adv_training", "adv_fraction": 0.4, "attack": "FGSM"},
    "tta20": {"threat": "train_time_attack", "adv_fraction": 0.2, "attack": "FGSM"},
}
# (clean, white-box PGD robust) of the trial's own DP model, and of its non-private twin
DP = {
    3.4: {"none": (80, 20), "adv20": (78, 30), "adv40": (75, 28), "tta20": (70, 15)},
    7.0: {"none": (85, 25), "adv20": (77, 29), "adv40": (76, 33), "tta20": (74, 18)},
}
NP = {"none": (95, 10), "adv20": (92, 38), "adv40": (90, 45), "tta20": (88, 12)}
FGSM_EXTRA = 10  # FGSM robust accuracy = PGD robust accuracy + 10 points
TRAIN_S = {"none": 10.0, "adv20": 15.0, "adv40": 20.0, "tta20": 14.0}  # + (s-1) seconds
ADV_GEN_S = {"none": 0.0, "adv20": 3.0, "adv40": 6.0, "tta20": 4.0}
SIZE_FLOAT, SIZE_INT8 = 400_000, 104_000  # bytes: -74.0%


def transfer_truth(eps: float, setting: str, attack: str) -> dict[tuple[str, str], float]:
    """(generator, target) -> mean robust accuracy (%) of the transfer matrix."""
    extra = FGSM_EXTRA if attack == "fgsm" else 0
    dp_r, np_r = DP[eps][setting][1] + extra, NP[setting][1] + extra
    bump = 5 if eps == 7.0 else 0
    return {
        ("nonprivate", "nonprivate"): np_r,
        ("nonprivate", "dp"): 60 + bump + extra,
        ("nonprivate", "int8_nonprivate"): np_r + 3,
        ("nonprivate", "int8_dp"): 62 + bump + extra,
        ("dp", "nonprivate"): 70 + extra,
        ("dp", "dp"): dp_r,
        ("dp", "int8_nonprivate"): 72 + extra,
        ("dp", "int8_dp"): dp_r + 4,
    }


def trial_metrics(eps: float, setting: str, seed: int) -> dict[str, float]:
    """Final metrics of one private trial, under the README's metric names (fractions for accuracies)."""
    dc, np_c = (DP[eps][setting][0] + 2 * (seed - 1)) / 100, (NP[setting][0] + 2 * (seed - 1)) / 100
    r = (seed - 1) / 100
    m = {
        "acc_clean_float": dc,
        "acc_clean_int8": dc - 0.01 - 0.005 * (seed - 1),
        "acc_clean_float_nonprivate": np_c,
        "acc_clean_int8_nonprivate": np_c - 0.01 - 0.005 * (seed - 1),
        "size_bytes_float": SIZE_FLOAT,
        "size_bytes_int8": SIZE_INT8,
        "size_reduction_pct": 100 * (1 - SIZE_INT8 / SIZE_FLOAT),
        "epsilon_spent": eps - 0.1,
        "noise_multiplier": 1.1,
        "sample_rate": 0.1,
        "dp_steps": 30,
        "delta": 1e-5,
        "final_train_loss": 0.5,
        "time_train_s": TRAIN_S[setting] + (seed - 1),
        "time_adv_gen_s": ADV_GEN_S[setting],
        "time_train_twin_s": 5.0,
        "time_total_s": 40.0,
    }
    for a in ("pgd", "fgsm"):
        matrix = transfer_truth(eps, setting, a)
        for (g, t), v in matrix.items():
            m[f"acc_transfer_{a}_{g}_to_{t}_mean"] = v / 100 + r
        m[f"acc_wb_{a}_mean"] = matrix[("dp", "dp")] / 100 + r
        m[f"acc_wb_{a}_int8_mean"] = matrix[("dp", "int8_dp")] / 100 + r
    # only PGD (random starts) is repeated and has a std over its runs; FGSM runs once
    m["attack_runs_pgd"], m["attack_runs_fgsm"] = 2, 1
    m.update({k.replace("_mean", "_std"): 0.01 for k in list(m) if k.startswith(("acc_wb_pgd", "acc_transfer_pgd"))})
    return m


def _log_trial(tracker: Tracker, parent: str, trial_id: str, cfg: CycleConfig, final: dict | None) -> None:
    """One trial's MLflow run as psreval_tune.trainable logs it: nested, tagged, flattened config as
    params, per-round metrics at step = round, final metrics at step = rounds."""
    run_id, _ = tracker.trial_run(parent, trial_id, f"trial-{trial_id}")
    tracker.log_params(run_id, cfg.to_dict())
    for rnd in range(1, cfg.rounds + 1):
        per_round = {"round": rnd, "train_loss": 2.0 / rnd, "acc_clean": 0.3 * rnd}
        if cfg.epsilon is not None:
            per_round["epsilon"] = cfg.epsilon * rnd / cfg.rounds
        tracker.log_metrics(run_id, per_round, step=rnd)
    if final is None:  # stopped early (ASHA) or failed: no final metrics
        tracker.finish(run_id, "KILLED")
        return
    tracker.log_metrics(run_id, final, step=cfg.rounds)
    tracker.finish(run_id, "FINISHED")


def _cfg(**kw) -> CycleConfig:
    return CycleConfig(
        dataset="digits", arch="cnn", rounds=3, eval_samples=64, eval_attacks=("PGD", "FGSM"), attack_repeats=2, **kw
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """A local MLflow store with three sweeps of experiment 'psreval':
    'grid': 2 epsilons x 4 settings x 3 seeds = 24 finished trials + 1 stopped early;
    'clean-only': 2 non-private trials without a threat (covers none of the threat figures);
    'other': one trial with different numbers, which 'grid' must not pick up."""
    uri, artifacts = local_store(tmp_path_factory.mktemp("mlflow"))
    grid = Tracker(TrackingSpec(uri, EXPERIMENT, "grid", artifacts))
    parent = grid.sweep_run({"kind": "paper_grid"})
    k = 0
    for eps in DP:
        for name, setting in SETTINGS.items():
            for seed in SEEDS:
                _log_trial(
                    grid, parent, f"g_{k:05d}", _cfg(epsilon=eps, seed=seed, **setting), trial_metrics(eps, name, seed)
                )
                k += 1
    _log_trial(grid, parent, "g_stopped", _cfg(epsilon=3.4, seed=5), None)
    grid.finish(parent)

    clean = Tracker(TrackingSpec(uri, EXPERIMENT, "clean-only", artifacts))
    parent = clean.sweep_run({"kind": "paper_grid"})
    for seed in (0, 1):
        m = {
            "acc_clean_float": 0.9 + 0.02 * seed,
            "acc_clean_int8": 0.89 + 0.02 * seed,
            "size_bytes_float": SIZE_FLOAT,
            "size_bytes_int8": SIZE_INT8,
            "size_reduction_pct": 74.0,
            "acc_wb_pgd_mean": 0.3,
            "acc_wb_fgsm_mean": 0.4,
            "time_train_s": 3.0,
        }
        _log_trial(clean, parent, f"c_{seed}", _cfg(seed=seed), m)
    clean.finish(parent)

    other = Tracker(TrackingSpec(uri, EXPERIMENT, "other", artifacts))
    parent = other.sweep_run({"kind": "search"})
    _log_trial(
        other, parent, "o_0", _cfg(epsilon=3.4, seed=0), {**trial_metrics(3.4, "none", 0), "acc_clean_float": 0.01}
    )
    other.finish(parent)
    return uri


@pytest.fixture(scope="module")
def trials(store) -> pd.DataFrame:
    return load_mlflow(EXPERIMENT, store, sweep="grid")


@pytest.fixture(scope="module")
def full(trials, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    return build_report(trials, out, source="test"), out


def report_of(full, key: str):
    return next(r for r in full[0].reports if r.key == key)


def md_row(text: str, *lead: str) -> list[str]:
    """The cells of the markdown table row that starts with ``lead``."""
    for line in text.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if cells[: len(lead)] == list(lead):
                return cells
    raise AssertionError(f"no row starting {lead} in:\n{text}")


def md_header(text: str, first: str) -> list[str]:
    return md_row(text, first)


def one(frame: pd.DataFrame, **match) -> pd.Series:
    mask = pd.Series(True, index=frame.index)
    for col, val in match.items():
        mask &= frame[col].map(
            lambda v, val=val: v == val or (isinstance(v, float) and isinstance(val, float) and math.isclose(v, val))
        )
    rows = frame[mask]
    assert len(rows) == 1, (match, rows)
    return rows.iloc[0]


# --- loading -----------------------------------------------------------------------------------------


def test_load_mlflow_gives_one_tidy_row_per_trial_and_seed(store, trials):
    assert len(trials) == 24 and trials.attrs["left_out"] == 1  # the stopped trial has no final metrics
    assert set(trials["sweep"]) == {"grid"} and trials["run_id"].nunique() == 24
    assert sorted(trials["epsilon"].unique()) == [3.4, 7.0] and trials["private"].all()
    assert set(trials["privacy"]) == {"DP ε=3.4", "DP ε=7"}
    assert trials["seed"].dtype.kind == "i" and set(trials["seed"]) == set(SEEDS)
    assert trials["eval_attacks"].iloc[0] == "PGD,FGSM" and (trials["rounds"] == 3).all()
    row = one(trials, epsilon=7.0, threat="adv_training", adv_fraction=0.4, seed=2)
    assert row["acc_clean_float"] == pytest.approx((76 + 2) / 100)  # the final metric, not per-round acc_clean
    assert row["acc_transfer_pgd_dp_to_int8_dp_mean"] == pytest.approx((33 + 4 + 1) / 100)
    assert "acc_clean" not in trials.columns and "train_loss" not in trials.columns
    # by parent-run id as well as by name; every sweep of the experiment without one
    parent = trials["run_id"].iloc[0]
    from mlflow import MlflowClient

    parent = MlflowClient(store).get_run(parent).data.tags["mlflow.parentRunId"]
    assert len(load_mlflow(EXPERIMENT, store, sweep=parent)) == 24
    everything = load_mlflow(EXPERIMENT, store)
    assert len(everything) == 24 + 2 + 1 and set(everything["sweep"]) == {"grid", "clean-only", "other"}


def test_load_tune_folder_as_ray_tune_writes_it(tmp_path):
    """A Tune experiment folder (Ray 2.60 layout): per trial, params.json (the param space, with
    paper_grid's nested 'setting') and result.json (one JSON line per report; the last, with
    cycle_complete, holds the final metrics). A trial without that line is left out."""
    root = tmp_path / "ray_results" / "tsweep"
    finals = {}
    for i, (eps, setting, seed) in enumerate([(3.4, "none", 0), (3.4, "none", 1), (7.0, "adv20", 0), (7.0, "none", 0)]):
        folder = root / f"run_trial_ab12c_{i:05d}_{i}_epsilon={eps:.4f},seed={seed}_2026-01-01_00-00-0{i}"
        folder.mkdir(parents=True)
        space = {
            "dataset": "digits",
            "arch": "cnn",
            "rounds": 2,
            "eval_samples": 64,
            "eval_attacks": ["PGD", "FGSM"],
            "attack_repeats": 1,
            "epsilon": eps,
            "setting": dict(SETTINGS[setting]),
            "seed": seed,
        }
        (folder / "params.json").write_text(json.dumps(space, indent=2))
        lines = [
            {
                "round": r,
                "train_loss": 1.0 / r,
                "acc_clean": 0.1 * r,
                "epsilon": eps / 2 * r,
                "training_iteration": r,
                "trial_id": f"ab12c_{i:05d}",
                "time_total_s": 3.0 * r,
                "config": space,
                "done": False,
            }
            for r in (1, 2)
        ]
        if i < 3:
            final = {**lines[-1], **trial_metrics(eps, setting, seed), "cycle_complete": 1, "training_iteration": 3}
            finals[(eps, setting, seed)] = final
            lines.append(final)
        (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (root / "experiment_state-2026-01-01_00-00-00.json").write_text("{}")

    frame = load_tune(root)
    assert len(frame) == 3 and frame.attrs["left_out"] == 1
    assert set(frame["sweep"]) == {"tsweep"} and set(frame["source"]) == {"tune"}
    row = one(frame, epsilon=7.0, seed=0)
    assert row["threat"] == "adv_training" and row["adv_fraction"] == 0.2 and row["attack"] == "FGSM"
    assert row["acc_clean_float"] == pytest.approx(0.75) and row["eval_attacks"] == "PGD,FGSM"
    assert row["privacy"] == "DP ε=7" and row["trial_id"] == "ab12c_00002"
    assert "acc_clean" not in frame.columns  # per-round values are not final metrics

    out = tmp_path / "out"
    assert cli(["overview", "--results", str(root), "--out", str(out)]) == 0
    md = (out / "overview.md").read_text()
    # DP ε=3.4 without a threat, seeds 0 and 1: clean 78% and 80%
    # n = 2: t(0.975, 1) * std(78, 80) / sqrt(2) = 12.706 * sqrt(2) / sqrt(2)
    assert md_row(md, "digits", "cnn", "DP ε=3.4")[3] == "79.0 ± 12.7"
    assert (out / "overview_digits.png").is_file()


# --- the reports, number by number --------------------------------------------------------------------


def test_overview_accuracy_size_and_reduction(full):
    rep = report_of(full, "overview")
    acc = rep.data
    dp = one(acc, privacy="DP ε=3.4", precision="float")
    assert (dp["mean"], dp["n"]) == (pytest.approx(80.0), 3) and dp["ci95"] == pytest.approx(ci(2.0))
    assert one(acc, privacy="DP ε=7", precision="int8")["mean"] == pytest.approx(84.0)
    # the non-private twin is shared by both epsilons: one model per seed, n = 3, not 6
    tw = one(acc, privacy="non-private", precision="float")
    assert (tw["mean"], tw["n"]) == (pytest.approx(95.0), 3)
    diff = one(rep.extra["int8_minus_float_pp"], privacy="DP ε=3.4")
    assert diff["mean"] == pytest.approx(-1.0) and diff["ci95"] == pytest.approx(ci(0.5))
    size = rep.extra["size_mb"]
    assert one(size, precision="float")["mean"] == pytest.approx(0.4)
    assert one(size, precision="int8")["mean"] == pytest.approx(0.104)
    assert rep.extra["size_reduction_pct"]["mean"].iloc[0] == pytest.approx(74.0)

    md = (full[1] / "overview.md").read_text()
    assert md_row(md, "digits", "cnn", "DP ε=3.4") == [
        "digits",
        "cnn",
        "DP ε=3.4",
        "80.0 ± 5.0",
        "79.0 ± 3.7",
        "-1.00 ± 1.24",
        "3",
    ]
    assert md_row(md, "digits", "cnn", "non-private")[3:] == ["95.0 ± 5.0", "94.0 ± 3.7", "-1.00 ± 1.24", "3"]
    assert md_row(md, "digits", "cnn", "0.400") == ["digits", "cnn", "0.400", "0.104", "74.0"]
    assert [f.name for f in rep.figures] == ["overview_digits.png"] and not rep.messages


def test_transfer_matrix_per_epsilon(full):
    rep = report_of(full, "transfer")
    data = rep.data
    assert len(data) == 2 * 2 * 2 * 4  # epsilon x attack x generator x target
    for eps in DP:
        for attack in ("PGD", "FGSM"):
            for (g, t), value in transfer_truth(eps, "none", attack.lower()).items():
                row = one(data, epsilon=eps, attack=attack, generator=g, target=t)
                assert row["mean"] == pytest.approx(value), (eps, attack, g, t)
                assert row["ci95"] == pytest.approx(ci(1.0)) and row["n"] == 3
    md = (full[1] / "transfer.md").read_text()
    assert md_row(md, "digits", "cnn", "3.4", "PGD", "nonprivate")[5:] == [
        "10.0 ± 2.5",
        "60.0 ± 2.5",
        "13.0 ± 2.5",
        "62.0 ± 2.5",
        "3",
    ]
    assert md_row(md, "digits", "cnn", "7", "FGSM", "dp")[5:] == [
        "80.0 ± 2.5",
        "35.0 ± 2.5",
        "82.0 ± 2.5",
        "39.0 ± 2.5",
        "3",
    ]
    # the sweep evaluated PGD and FGSM only: FAB is named as missing
    # every registered attack the sweep did not run (FAB, and the AutoAttack entries since issue 22) is named
    unrun = [a for a in ATTACKS if a not in ("PGD", "FGSM")]
    assert rep.messages == [f"transfer figure: no {a} results (not in the trials' eval_attacks)" for a in unrun]
    assert [f.name for f in rep.figures] == ["transfer_digits_cnn.png"]


def test_adversarial_training_accuracy_loss_and_time(full):
    rep = report_of(full, "adv_training")
    data = rep.data
    # accuracy loss = clean - FGSM robust (the attack it was trained with), in points; fraction 0 = no threat
    expect = {
        ("DP ε=3.4", 0.0): 80 - 30,
        ("DP ε=3.4", 0.2): 78 - 40,
        ("DP ε=3.4", 0.4): 75 - 38,
        ("DP ε=7", 0.0): 85 - 35,
        ("DP ε=7", 0.2): 77 - 39,
        ("DP ε=7", 0.4): 76 - 43,
        ("non-private", 0.0): 95 - 20,
        ("non-private", 0.2): 92 - 48,
        ("non-private", 0.4): 90 - 55,
    }
    assert len(data) == len(expect) and set(data["attack"]) == {"FGSM"}
    for (priv, frac), loss in expect.items():
        row = one(data, privacy=priv, adv_fraction=frac)
        assert row["mean"] == pytest.approx(loss) and row["n"] == 3, (priv, frac)
        assert row["ci95"] == pytest.approx(ci(1.0))  # clean moves 2 points per seed, robust 1
    md = (full[1] / "adv_training.md").read_text()
    assert md_header(md, "dataset")[4:7] == ["0% adv. (points)", "20% adv. (points)", "40% adv. (points)"]
    assert md_row(md, "digits", "cnn", "FGSM", "DP ε=3.4")[4:] == ["50.0 ± 2.5", "38.0 ± 2.5", "37.0 ± 2.5"]
    assert md_row(md, "digits", "cnn", "FGSM", "non-private")[4:] == ["75.0 ± 2.5", "44.0 ± 2.5", "35.0 ± 2.5"]

    time = rep.extra["time_train_s"]
    row = one(time, privacy="DP ε=3.4", attack="FGSM", adv_fraction=0.4)
    assert row["mean"] == pytest.approx(20.0) and row["ci95"] == pytest.approx(ci(1.0))
    assert row["adv_gen_mean"] == pytest.approx(6.0) and row["ratio_vs_no_threat"] == pytest.approx(2.0)
    assert md_row(md, "digits", "cnn", "DP ε=7", "FGSM", "20%")[5:] == ["15.0 ± 2.5", "3.0", "1.50", "3"]
    assert md_row(md, "digits", "cnn", "DP ε=7", "none", "0%")[5:] == ["10.0 ± 2.5", "0.0", "1.00", "3"]
    assert sorted(f.name for f in rep.figures) == ["adv_training_digits_cnn.png", "adv_training_time_digits_cnn.png"]
    # every registered attack but FGSM (FAB, PGD, and the AutoAttack entries since issue 22) is named
    unused = [a for a in ATTACKS if a != "FGSM"]
    assert rep.messages == [f"adversarial training: no trials adversarially trained with {a}" for a in unused]


def test_train_time_attacker_clean_and_robust_vs_share(full):
    rep = report_of(full, "train_time")
    data = rep.data
    expect = {
        ("clean", "DP ε=3.4", 0.0): 80,
        ("clean", "DP ε=3.4", 0.2): 70,
        ("clean", "DP ε=7", 0.2): 74,
        ("clean", "non-private", 0.0): 95,
        ("clean", "non-private", 0.2): 88,
        ("robust", "DP ε=3.4", 0.0): 30,
        ("robust", "DP ε=3.4", 0.2): 25,
        ("robust", "DP ε=7", 0.2): 28,
        ("robust", "non-private", 0.0): 20,
        ("robust", "non-private", 0.2): 22,
    }
    assert len(data) == 2 * 3 * 2  # metric x privacy x fraction
    for (metric, priv, frac), value in expect.items():
        row = one(data, metric=metric, privacy=priv, adv_fraction=frac)
        assert row["mean"] == pytest.approx(value) and row["n"] == 3, (metric, priv, frac)
        assert row["ci95"] == pytest.approx(ci(2.0 if metric == "clean" else 1.0))
    md = (full[1] / "train_time.md").read_text()
    assert md_row(md, "digits", "cnn", "FGSM", "clean", "DP ε=3.4")[5:] == ["80.0 ± 5.0", "70.0 ± 5.0"]
    assert md_row(md, "digits", "cnn", "FGSM", "robust (same attack, white-box)", "non-private")[5:] == [
        "20.0 ± 2.5",
        "22.0 ± 2.5",
    ]
    assert [f.name for f in rep.figures] == ["train_time_digits_cnn.png"]


def test_pareto_front_membership(full):
    rep = report_of(full, "pareto")
    data = rep.data
    assert len(data) == 12  # 4 settings x {3.4, 7, non-private}
    on = {(r.privacy, r.threat, r.adv_fraction) for r in data[data.pareto].itertuples()}
    assert on == {
        ("DP ε=3.4", "none", 0.0),
        ("DP ε=3.4", "adv_training", 0.2),
        ("DP ε=7", "none", 0.0),
        ("DP ε=7", "adv_training", 0.4),
        ("non-private", "none", 0.0),
        ("non-private", "adv_training", 0.2),
        ("non-private", "adv_training", 0.4),
    }
    # (77, 29) at ε=7 is on ε=7's own front but dominated by (78, 30) at the lower ε=3.4
    row = one(data, privacy="DP ε=7", threat="adv_training", adv_fraction=0.2)
    assert row["front_at_eps"] and not row["pareto"]
    assert (row["clean_mean"], row["robust_mean"]) == (pytest.approx(77.0), pytest.approx(29.0))
    assert row["clean_ci95"] == pytest.approx(ci(2.0)) and row["robust_ci95"] == pytest.approx(ci(1.0))
    assert one(data, privacy="non-private", threat="none")["epsilon"] == math.inf
    md = (full[1] / "pareto.md").read_text()
    assert md_row(md, "1") == ["1", "digits", "DP ε=3.4", "no threat", "80.0 ± 5.0", "20.0 ± 2.5", "3"]
    assert md_row(md, "4") == [
        "4",
        "digits",
        "DP ε=7",
        "adversarial training, FGSM, 40%",
        "76.0 ± 5.0",
        "33.0 ± 2.5",
        "3",
    ]
    assert md_row(md, "digits", "DP ε=3.4")[2:] == [
        "80.0 ± 5.0",
        "no threat",
        "30.0 ± 2.5",
        "adversarial training, FGSM, 20%",
    ]
    assert [f.name for f in rep.figures] == ["pareto_digits.png"]


def test_pareto_with_another_attack_from_the_cli(store, tmp_path):
    assert cli(["pareto", "--tracking-uri", store, "--sweep", "grid", "--attack", "FGSM", "--out", str(tmp_path)]) == 0
    md = (tmp_path / "pareto.md").read_text()
    assert "FGSM robust acc (%)" in md
    assert md_row(md, "1")[5] == "30.0 ± 2.5"  # FGSM = PGD + 10 points


def test_report_html_and_markdown_name_every_figure(full):
    fullrep, out = full
    html = (out / "report.html").read_text()
    figures = [f for r in fullrep.reports for f in r.figures]
    assert len(figures) == 7 and all(f.is_file() and f.with_suffix(".svg").is_file() for f in figures)
    # 3 seeds, but 64 attacked images per trial and 3 one-epoch rounds: the page says so first
    assert [w.split(":")[0] for w in fullrep.warnings] == ["few images", "short training"]
    assert html.index("cannot support conclusions") < html.index("<table")
    assert "> - short training: 3 rounds × " in (out / "report.md").read_text()
    assert html.count("<img") == len(figures) and all(f.name in html for f in figures)
    assert "80.0 ± 5.0" in html  # the tables are in the page too
    md = (out / "report.md").read_text()
    assert all(f"({f.name})" in md for f in figures)
    assert "1 left out" in md and "seeds**: 3 (0, 1, 2)" in md
    assert pd.read_csv(out / "trials.csv").shape[0] == 24
    assert fullrep.failed == [] and not list(out.glob("*.error.txt"))


# --- a sweep that does not cover the figures' axes ---------------------------------------------------


def test_missing_axes_give_a_message_not_a_plot(store, tmp_path, capsys):
    out = tmp_path / "clean"
    assert cli(["report", "--tracking-uri", store, "--sweep", "clean-only", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for message in (
        "transfer figure: needs private trials (epsilon set; each trains its non-private twin); this sweep has none",
        "adversarial training: needs adv_fraction > 0 and threat adv_training; this sweep has none",
        "train-time attacker: needs adv_fraction > 0 and threat train_time_attack; this sweep has none",
    ):
        assert f"  missing: {message}" in printed
        assert html.escape(message) in (out / "report.html").read_text()
    assert not list(out.glob("transfer_*")) and not list(out.glob("adv_training_*"))
    assert not list(out.glob("train_time_*")) and not list(out.glob("*.error.txt"))
    # what the sweep does cover is still reported: two non-private seeds, 90% and 92%
    md = (out / "overview.md").read_text()
    assert md_row(md, "digits", "cnn", "non-private")[3] == "91.0 ± 12.7"  # t(0.975, 1) * std / sqrt(2)
    assert (out / "overview_digits.png").is_file() and (out / "pareto_digits.png").is_file()


def test_missing_attack_or_baseline_is_named(trials, tmp_path):
    """Private trials all under a threat (no threat-none baseline), one training attack only."""
    rep = build_report(trials[trials["threat"] != "none"], tmp_path)
    by_key = {r.key: r for r in rep.reports}
    assert (
        "transfer figure: no private trials with threat none (inference-time attacks on models trained "
        "without a training-time threat); this sweep has none" in by_key["transfer"].messages
    )
    assert not by_key["transfer"].figures
    assert any("no trials with threat none" in m for m in by_key["overview"].messages)
    assert "no trials with threat none: no adversarial fraction 0 baseline" in " ".join(by_key["adv_training"].notes)
    assert 0.0 not in set(by_key["adv_training"].data["adv_fraction"])


# --- at the end of a sweep -------------------------------------------------------------------------


def test_sweep_end_logs_the_report_to_the_parent_run(store, tmp_path, capsys):
    """What run_sweep does when its trials are done (with analysis.report_sweep, as the sweep scripts
    pass it): the report on disk and under the parent run's artifacts report/."""
    from mlflow import MlflowClient

    from psreval_tune.analysis import report_sweep
    from psreval_tune.sweeps.engine import write_report

    client = MlflowClient(store)
    exp = client.get_experiment_by_name(EXPERIMENT)
    parent = client.search_runs([exp.experiment_id], "tags.`psreval.sweep` = 'grid' and tags.`psreval.kind` = 'sweep'")
    parent = parent[0].info.run_id
    spec = TrackingSpec(store, EXPERIMENT, "grid")
    html = write_report(report_sweep, spec, parent, tmp_path / "reports" / "grid")
    assert html == tmp_path / "reports" / "grid" / "report.html" and html.is_file()
    captured = capsys.readouterr()
    assert f"report: {html} " in captured.out and captured.err == ""
    logged = {a.path for a in client.list_artifacts(parent, "report")}
    assert {"report/report.html", "report/overview_digits.png", "report/pareto.md", "report/trials.csv"} <= logged
    assert "sweep grid" in html.read_text()

    # a report that cannot be made is one warning line; the sweep goes on
    missing = TrackingSpec(store, EXPERIMENT, "no-such-sweep")
    assert write_report(report_sweep, missing, "0" * 32, tmp_path / "reports" / "x") is None
    captured = capsys.readouterr()
    assert captured.err.startswith("\nwarning: no report for sweep 'no-such-sweep' (AnalysisError: no sweep ")
    assert captured.err.strip().count("\n") == 0 and "psreval report" in captured.err


# --- the command line -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["report", "--experiment", "nope"], "error: unknown experiment 'nope' at "),
        (["report", "--sweep", "nope"], "error: no sweep 'nope' in this experiment (sweeps there: "),
        (["report", "--results", "/no/such/folder"], "error: --results /no/such/folder: no such folder"),
        (["overview", "--results", "s3://bucket/x"], "error: --results s3://bucket/x: only a local Tune folder"),
        (
            ["report", "--results", ".", "--experiment", "x"],
            "error: --results reads a Tune folder; it does not combine",
        ),
        (
            ["report", "--tracking-uri", "sqlite:////no/such/mlflow.db"],
            "error: --tracking-uri=sqlite:////no/such/mlflow.db: no MLflow store at /no/such/mlflow.db",
        ),
        (["report", "--attack", "CW"], "error: argument --attack: invalid choice: 'CW'"),
        (["frobnicate"], "error: argument COMMAND: invalid choice: 'frobnicate'"),
        ([], "error: name a command: report, overview"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(store, tmp_path, capsys, argv, expected):
    if "--tracking-uri" not in argv and "--results" not in argv and argv and argv[0] == "report":
        argv = [*argv, "--tracking-uri", store]
    if argv and argv[0] != "frobnicate":
        argv = [*argv, "--out", str(tmp_path / "out")]
    rc = run_cli(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(expected) and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()  # nothing written


def test_cli_empty_tune_folder_and_entry_point(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "analysis", "report", "--results", str(tmp_path / "empty")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert (
        proc.stderr == f"error: --results {tmp_path / 'empty'}: no Tune trial folders in it (expected */result.json)\n"
    )


def run_cli(argv: list[str]) -> int:
    """The CLI's exit status, whether it returns it or argparse exits with it."""
    try:
        return cli(argv)
    except SystemExit as exc:
        return exc.code
