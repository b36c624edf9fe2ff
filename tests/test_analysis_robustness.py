"""analysis/reports/robustness.py: accuracy and attack success vs the number of adversaries, per aggregator.

A synthetic sweep with known numbers (fedavg and median; threats none, sign_flip, backdoor; 1 and 3
malicious clients; 2 seeds; non-private and DP): each seed moves a value by ∓0.1 points, so every mean is
the number below and every 95% CI over the 2 seeds is t(0.975, 1) · 0.1 = 1.27 points. No training.
"""

from __future__ import annotations

import html
import math

import pandas as pd
import pytest

from psreval_tune.analysis import build_report
from psreval_tune.analysis.load import tidy
from psreval_tune.analysis.reports import REPORTS, robustness

T975_1 = 12.706204736174707  # Student t, 97.5% quantile, 1 degree of freedom (2 seeds)
CI = T975_1 * 0.1  # 1.27 points

# clean accuracy (%) per (aggregator, threat, num_malicious); DP (sample-level ε=3) is 10 points lower
CLEAN = {
    ("fedavg", "none", 0): 90.0,
    ("fedavg", "sign_flip", 1): 60.0,
    ("fedavg", "sign_flip", 3): 30.0,
    ("fedavg", "backdoor", 1): 89.0,
    ("fedavg", "backdoor", 3): 85.0,
    ("median", "none", 0): 88.0,
    ("median", "sign_flip", 1): 87.0,
    ("median", "sign_flip", 3): 70.0,
    ("median", "backdoor", 1): 88.5,
    ("median", "backdoor", 3): 86.0,
}
ASR = {("fedavg", 1): 40.0, ("fedavg", 3): 90.0, ("median", 1): 10.0, ("median", 3): 89.0}


def _row(agg: str, threat: str, k: int, seed: int, eps: float | None, mode: str = "sample", **extra) -> dict:
    shift = (-0.1 if seed == 0 else 0.1) - (10.0 if eps is not None else 0.0)
    clean = CLEAN[(agg, threat, k)] + shift
    row = {
        "sweep": "s",
        "trial_id": f"{agg}-{threat}-{k}-{seed}-{eps}-{mode}",
        "run_id": None,
        "run_name": "r",
        "source": "test",
        "dataset": "digits",
        "arch": "cnn",
        "epsilon": eps,
        "dp_mode": mode,
        "threat": threat,
        "aggregation": agg,
        "num_malicious": max(k, 1),  # threat none: the field says 1, but there are no adversaries
        "num_clients": 5,
        "adv_fraction": 0.0,
        "attack": "PGD",
        "seed": seed,
        "acc_clean_float": clean / 100,
        "acc_wb_pgd_mean": clean / 200,  # white-box PGD robust accuracy: half the clean one
        "n_test": 1000,
        "n_eval": 100,
    }
    if threat == "backdoor":
        row.update(asr_float=(ASR[(agg, k)] + shift + (10.0 if eps is not None else 0.0)) / 100, n_asr=900)
    return {**row, **extra}


def sweep(eps_values=(None, 3.0), seeds=(0, 1), aggs=("fedavg", "median")) -> pd.DataFrame:
    """The grid above; threat none is also run with num_malicious 3 (as a grid over num_malicious does): the
    same setting (no adversaries), which must count as one trial per seed, not two."""
    rows = [
        _row(agg, threat, k, seed, eps)
        for (agg, threat, k) in CLEAN
        if agg in aggs
        for seed in seeds
        for eps in eps_values
    ]
    again = [_row(agg, "none", 0, seed, eps, num_malicious=3) for agg in aggs for seed in seeds for eps in eps_values]
    return tidy(rows + [{**r, "trial_id": r["trial_id"] + "-again"} for r in again])


def table_row(rep, caption_start: str, **match) -> dict:
    table = next(t.frame for t in rep.tables if t.caption.startswith(caption_start))
    hit = table
    for key, value in match.items():
        hit = hit[hit[key] == value]
    assert len(hit) == 1, (match, table)
    return hit.iloc[0].to_dict()


def point(rep, **match) -> pd.Series:
    d = rep.data
    for key, value in match.items():
        d = d[d[key] == value]
    assert len(d) == 1, match
    return d.iloc[0]


@pytest.fixture(scope="module")
def rep(tmp_path_factory):
    out = tmp_path_factory.mktemp("robustness")
    return robustness(sweep(), out), out


def test_registered_in_reports():
    assert REPORTS["robustness"] is robustness


def test_means_cis_and_differences(rep):
    rep, _ = rep
    assert rep.messages == []
    p = point(rep, privacy="non-private", aggregator="fedavg", threat="sign_flip", adversaries=1, metric="clean")
    assert p["n"] == 2 and math.isclose(p["mean"], 60.0) and math.isclose(p["ci95"], CI, rel_tol=1e-9)
    assert math.isclose(p["diff_no_attack"], -30.0) and p["vs_no_attack"] == "exceeds CI"
    assert math.isnan(p["diff_reference"]) and p["vs_reference"] == "–"  # fedavg is the reference itself
    # the baseline: 0 adversaries whatever num_malicious said, its 2 seeds counted once each
    b = point(rep, privacy="non-private", aggregator="median", threat="none", metric="clean")
    assert b["adversaries"] == 0 and b["n"] == 2 and math.isclose(b["mean"], 88.0)
    assert math.isclose(b["diff_reference"], -2.0) and b["vs_reference"] == "within CI"  # 2 < 2 × 1.27
    m = point(rep, privacy="DP ε=3 (sample)", aggregator="median", threat="sign_flip", adversaries=1, metric="clean")
    assert (
        math.isclose(m["mean"], 77.0) and math.isclose(m["diff_reference"], 27.0) and m["vs_reference"] == "exceeds CI"
    )
    a = point(rep, privacy="non-private", aggregator="median", threat="backdoor", adversaries=3, metric="asr")
    assert (
        math.isclose(a["mean"], 89.0) and math.isclose(a["diff_reference"], -1.0) and a["vs_reference"] == "within CI"
    )
    assert math.isnan(a["diff_no_attack"])  # no attack success rate without an attack
    r = point(rep, privacy="non-private", aggregator="fedavg", threat="backdoor", adversaries=1, metric="robust_PGD")
    assert math.isclose(r["mean"], 44.5) and math.isclose(r["ci95"], CI / 2, rel_tol=1e-9)
    assert math.isclose(r["diff_no_attack"], -0.5) and r["vs_no_attack"] == "within CI"


def test_markdown_tables(rep):
    rep, out = rep
    assert [t.caption for t in rep.tables] == [
        "Clean accuracy (%)",
        "Robust accuracy, PGD white-box (%)",
        "Attack success rate (%)",
    ]
    row = table_row(rep, "Clean", privacy="non-private", aggregator="median", threat="sign flip", adversaries=3)
    assert row["clean accuracy (%)"] == "70.0 ± 1.3" and row["n"] == 2
    assert row["Δ vs no attack (points)"] == "-18.0" and row["vs no attack"] == "exceeds CI"
    assert row["Δ vs fedavg (points)"] == "+40.0" and row["vs fedavg"] == "exceeds CI"
    base = table_row(rep, "Clean", privacy="DP ε=3 (sample)", aggregator="fedavg", threat="no threat")
    assert base["clean accuracy (%)"] == "80.0 ± 1.3" and base["adversaries"] == 0
    assert base["vs no attack"] == "–" and base["vs fedavg"] == "–"
    asr = table_row(rep, "Attack", privacy="non-private", aggregator="median", threat="backdoor", adversaries=1)
    assert asr["attack success rate (%)"] == "10.0 ± 1.3" and asr["Δ vs fedavg (points)"] == "-30.0"
    assert asr["vs fedavg"] == "exceeds CI" and asr["vs no attack"] == "–"
    clean = next(t.frame for t in rep.tables if t.caption.startswith("Clean"))
    # one row per (privacy, aggregator, threat, adversaries): non-private first, fedavg before median
    assert len(clean) == 2 * 2 * 5
    assert list(clean["privacy"].iloc[[0, 10]]) == ["non-private", "DP ε=3 (sample)"]
    assert list(clean["aggregator"].iloc[[0, 5]]) == ["fedavg", "median"]
    assert list(clean["threat"].iloc[:5]) == ["no threat", "sign flip", "sign flip", "backdoor", "backdoor"]
    md = (out / "robustness.md").read_text()
    assert "| non-private | median | sign flip | 3 | 70.0 ± 1.3 | 2 | -18.0 | exceeds CI | +40.0 | exceeds CI |" in md


def test_a_figure_per_privacy_setting(rep):
    rep, out = rep
    names = sorted(f.name for f in rep.figures)
    assert names == ["robustness_digits_cnn_dp3_sample.png", "robustness_digits_cnn_nonprivate.png"]
    assert all(f.is_file() and f.with_suffix(".svg").is_file() for f in rep.figures)
    md = (out / "robustness.md").read_text()
    assert all(f"({f.name})" in md for f in rep.figures)


def test_one_seed_uses_the_interval_over_images(tmp_path):
    trials = sweep(eps_values=(None,), seeds=(0,))
    width = {"acc_clean_float_ci_low": -0.02, "acc_clean_float_ci_high": 0.02}
    for name, delta in width.items():
        trials[name] = trials["acc_clean_float"] + delta
    rep = robustness(trials)
    row = table_row(rep, "Clean", aggregator="fedavg", threat="sign flip", adversaries=1)
    assert row["clean accuracy (%)"] == "59.9 [57.9, 61.9] (1,000 img)" and row["n"] == 1
    assert row["vs no attack"] == "exceeds CI"
    close = table_row(rep, "Clean", aggregator="median", threat="backdoor", adversaries=3)
    assert (
        close["Δ vs fedavg (points)"] == "+1.0" and close["vs fedavg"] == "within CI"
    )  # [83.9, 87.9] overlaps [82.9, 86.9]
    # no interval over images for robust accuracy in this frame: a single seed gives no CI
    robust = table_row(rep, "Robust", aggregator="median", threat="backdoor", adversaries=3)
    assert robust["vs fedavg"] == "no CI"
    assert any("Wilson 95% interval over that trial's images" in n for n in rep.notes)


def test_client_level_dp_is_its_own_privacy_setting():
    trials = tidy(
        [
            _row("fedavg", t, k, s, 3.0, mode)
            for t, k in (("none", 0), ("sign_flip", 1))
            for s in (0, 1)
            for mode in ("client", "sample")
        ]
        + [_row("fedavg", t, k, s, 1.0, "client") for t, k in (("none", 0), ("sign_flip", 1)) for s in (0, 1)]
    )
    rep = robustness(trials)
    assert list(dict.fromkeys(rep.data["privacy"])) == ["DP ε=1 (client)", "DP ε=3 (sample)", "DP ε=3 (client)"]
    assert "robustness: one aggregator only (fedavg); no comparison across aggregation rules" in rep.messages
    assert "robustness: one number of adversaries only (1): no trend over it" in rep.messages


def test_an_aggregator_registered_later_appears(tmp_path):
    from psreval_tune.aggregators import AGGREGATORS

    CLEAN.update({("test_rule", t, k): v + 1 for (a, t, k), v in list(CLEAN.items()) if a == "median"})
    ASR.update({("test_rule", k): v for (a, k), v in list(ASR.items()) if a == "median"})
    AGGREGATORS.register("test_rule", order=99, robust=True)(lambda updates, ctx: updates.mean(0))
    try:
        rep = robustness(sweep(eps_values=(None,), aggs=("fedavg", "median", "test_rule")), tmp_path)
        clean = next(t.frame for t in rep.tables if t.caption.startswith("Clean"))
        assert list(dict.fromkeys(clean["aggregator"])) == ["fedavg", "median", "test_rule"]
        row = table_row(rep, "Clean", aggregator="test_rule", threat="sign flip", adversaries=1)
        assert row["clean accuracy (%)"] == "88.0 ± 1.3" and row["Δ vs fedavg (points)"] == "+28.0"
        assert len(rep.figures) == 1 and rep.figures[0].is_file()
    finally:
        AGGREGATORS.unregister("test_rule")
        for key in [k for k in CLEAN if k[0] == "test_rule"]:
            del CLEAN[key]
        for key in [k for k in ASR if k[0] == "test_rule"]:
            del ASR[key]
    assert "test_rule" not in AGGREGATORS


def test_missing_axes_give_a_message_not_a_plot(tmp_path):
    # no trial under a threat: only the baselines
    only_none = sweep()
    rep = robustness(only_none[only_none["threat"] == "none"], tmp_path / "a")
    assert rep.messages == [
        "robustness: needs trials under a threat other than none, adv_training, train_time_attack, "
        "train_time_attack_ref (malicious clients, num_malicious >= 1); this sweep has none"
    ]
    assert not rep.figures and not list((tmp_path / "a").glob("robustness_*"))
    # no baseline and no fedavg
    trials = sweep()
    rep = robustness(trials[(trials["threat"] != "none") & (trials["aggregation"] == "median")])
    assert "robustness: no fedavg trials: no difference to fedavg" in rep.messages
    assert "robustness: no trials with threat none: no difference to the no-attack baseline" in rep.messages
    assert set(rep.data["vs_no_attack"]) == {"–"} and set(rep.data["vs_reference"]) == {"–"}
    # a threat whose strength is the adversary's data share belongs to other reports
    frac = sweep().assign(threat=lambda f: f["threat"].where(f["threat"] == "none", "train_time_attack"))
    rep = robustness(frac)
    assert rep.messages and "have their own reports" in " ".join(rep.notes)


def test_an_old_sweep_without_the_federation_axes(tmp_path):
    """Trials logged before aggregation rules existed: no aggregation, num_malicious, asr columns."""
    trials = sweep().drop(columns=["aggregation", "num_malicious", "dp_mode", "num_clients"])
    trials = trials.drop(columns=[c for c in trials.columns if c.startswith(("asr", "n_asr"))])
    full = build_report(trials, tmp_path)
    rep = next(r for r in full.reports if r.key == "robustness")
    assert rep.messages == [
        "robustness: needs the federation's aggregation and num_malicious (config fields of the aggregation "
        "rules and update threats); this sweep's trials do not record them"
    ]
    assert full.failed == [] and not rep.figures and (tmp_path / "robustness.md").is_file()
    assert html.escape(rep.messages[0]) in (tmp_path / "report.html").read_text()
