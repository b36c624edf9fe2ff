"""analysis/reports/curves.py and masking.py: robustness curves (accuracy vs eps per model, with bands and the
area under them) and the trials whose gradient-masking checks failed, from small frames with known numbers.
No training."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from psreval_tune.analysis import build_report
from psreval_tune.analysis.load import tidy
from psreval_tune.analysis.reports import REPORTS
from psreval_tune.analysis.reports.curves import curve_figure, curves, curves_tables

T975_1 = 12.706204736174707  # Student t, 97.5% quantile, 1 degree of freedom (2 seeds)
GRID = (0.0, 0.1, 0.3)
# accuracy (fraction) per model at each eps of GRID; each seed moves it by -/+ 0.01
CURVE = {
    "dp": (0.80, 0.40, 0.02),
    "nonprivate": (0.95, 0.30, 0.00),
    "int8_dp": (0.78, 0.42, 0.03),
    "int8_nonprivate": (0.93, 0.32, 0.01),
}


def area(values) -> float:
    return sum((GRID[i + 1] - GRID[i]) * (values[i] + values[i + 1]) / 2 for i in range(2)) / (GRID[-1] - GRID[0])


def _row(seed: int, eps: float | None = 3.4, curve: bool = True, **extra) -> dict:
    shift = -0.01 if seed == 0 else 0.01
    row = {
        "sweep": "s",
        "trial_id": f"t-{seed}-{eps}",
        "run_id": None,
        "run_name": f"trial-{seed}-{eps}",
        "source": "test",
        "dataset": "digits",
        "arch": "cnn",
        "epsilon": eps,
        "threat": "none",
        "adv_fraction": 0.0,
        "attack": "PGD",
        "seed": seed,
        "acc_clean_float": 0.9,
        "acc_wb_pgd_worst": 0.3,
        "n_test": 300,
        "n_eval": 100,
    }
    models = CURVE if eps is not None else {m: v for m, v in CURVE.items() if "dp" not in m}
    if curve:
        row["n_curve"] = 100
        for i, e in enumerate(GRID):
            row[f"curve_eps_{i}"] = e
            for model, values in models.items():
                v = min(max(values[i] + shift, 0.0), 1.0)
                row[f"acc_curve_{i}_{model}"] = v
                row[f"acc_curve_{i}_{model}_ci_low"] = max(v - 0.05, 0.0)
                row[f"acc_curve_{i}_{model}_ci_high"] = min(v + 0.05, 1.0)
        for model, values in models.items():
            row[f"auc_curve_{model}"] = area([min(max(v + shift, 0.0), 1.0) for v in values])
    return {**row, **extra}


def sweep(seeds=(0, 1), eps_values=(3.4,)) -> pd.DataFrame:
    return tidy([_row(s, e) for s in seeds for e in eps_values])


@pytest.fixture(scope="module")
def rep():
    return curves_tables(sweep())


def test_registered_in_reports():
    assert REPORTS["curves"] is curves


def test_points_are_means_over_seeds_with_their_ci(rep):
    d = rep.data
    assert set(d["model"]) == set(CURVE)
    for model, values in CURVE.items():
        for e, v in zip(GRID, values):
            row = d[(d["model"] == model) & np.isclose(d["eps"], e)]
            assert len(row) == 1
            row = row.iloc[0]
            assert row["mean"] == pytest.approx(100 * v, abs=1e-9) or v == 0.0  # clipped at 0 for one seed
            if v >= 0.01:
                assert row["n"] == 2
                assert row["ci95"] == pytest.approx(T975_1, rel=1e-6)  # ∓1 point over 2 seeds: std √2, CI t·√2/√2
                assert row["lo"] == pytest.approx(row["mean"] - row["ci95"])


def test_area_table_and_accuracy_at_the_largest_eps(rep):
    auc = rep.extra["auc"]
    row = auc[auc["model"] == "dp"].iloc[0]
    assert row["mean"] == pytest.approx(100 * area(CURVE["dp"]), abs=1e-9)
    assert row["eps_max"] == pytest.approx(0.3) and row["last_mean"] == pytest.approx(2.0)
    table = next(t.frame for t in rep.tables if t.caption.startswith("Area"))
    assert list(table["model"]) == ["non-private (float)", "DP (float)", "non-private int8", "DP int8"]
    dp = table[table["model"] == "DP (float)"].iloc[0]
    assert dp["eps range"] == "0–0.3"
    assert dp["area under the curve (% = mean accuracy over the range)"].startswith(f"{100 * area(CURVE['dp']):.1f}")
    assert dp["accuracy at the largest eps (%)"].startswith("2.0 ± ")
    points = next(t.frame for t in rep.tables if t.caption.startswith("Robust accuracy"))
    assert list(points.columns[-3:]) == ["eps 0", "eps 0.1", "eps 0.3"]
    assert not any("keeps" in n for n in rep.notes)  # every curve ends near zero


def test_figure_draws_one_line_per_model_with_its_values_and_bands(rep):
    import matplotlib.pyplot as plt

    fig = curve_figure(rep, "digits", "cnn")
    try:
        ax = fig.axes[0]
        lines = {ln.get_label(): ln for ln in ax.get_lines()}
        assert set(lines) == {"non-private (float)", "DP (float)", "non-private int8", "DP int8"}
        dp = lines["DP (float)"]
        assert list(dp.get_xdata()) == pytest.approx(list(GRID))
        assert list(dp.get_ydata()) == pytest.approx([100 * v for v in CURVE["dp"]])
        assert lines["DP int8"].get_linestyle() == "--" and dp.get_linestyle() == "-"
        assert lines["DP int8"].get_markerfacecolor() == "white" and dp.get_markerfacecolor() != "white"
        assert len(ax.collections) == 4  # a band per model
        assert ax.get_ylim() == (0, 102)
        assert fig.legends and len(fig.legends[0].get_texts()) == 4
    finally:
        plt.close(fig)


def test_one_seed_uses_the_wilson_interval_and_a_high_end_is_noted():
    high = _row(0)
    for i in range(len(GRID)):  # the DP model keeps 40% at eps 0.3
        high[f"acc_curve_{i}_dp"] = 0.4
        high[f"acc_curve_{i}_dp_ci_low"], high[f"acc_curve_{i}_dp_ci_high"] = 0.35, 0.45
    rep = curves_tables(tidy([high]))
    row = rep.data[(rep.data["model"] == "dp") & (rep.data["eps"] == 0.3)].iloc[0]
    assert (row["n"], row["lo"], row["hi"]) == (1, pytest.approx(35.0), pytest.approx(45.0))
    assert any("DP (float)" in n and "keeps 40.0% at eps 0.3" in n for n in rep.notes)


def test_a_sweep_without_curves_gives_a_message_not_a_figure(tmp_path):
    rep = curves(tidy([_row(0, curve=False)]), tmp_path)
    assert rep.figures == [] and rep.tables == []
    assert any("attack_eps_grid" in m for m in rep.messages)


def test_full_report_has_the_figure_and_the_table(tmp_path):
    full = build_report(sweep(eps_values=(3.4, None)), tmp_path, only=["curves"])
    rep = full.reports[0]
    assert [p.name for p in rep.figures] == ["curves_digits_cnn.png"]
    assert (tmp_path / "curves_digits_cnn.svg").is_file()
    html = full.html.read_text()
    assert "Robustness curves" in html and "Area under the robustness curve" in html
    auc = rep.extra["auc"]
    assert set(auc["privacy"]) == {"non-private", "DP ε=3.4"}
    assert set(auc.loc[auc["privacy"] == "non-private", "model"]) == {"nonprivate", "int8_nonprivate"}


def test_the_reviewer_options_are_evaluation_only():
    """A trial rerun with the eps grid (or AutoAttack, the masking checks) is the same trained model: the same
    setting for dedupe and pairing, not a new one."""
    from psreval_tune.analysis.frames import setting_columns

    extra = dict(attack_eps_grid="[0.0, 0.1, 0.3]", masking_checks=True, autoattack=True, autoattack_samples=1000)
    trials = tidy([_row(0, curve=False), _row(0, **extra)])
    assert not {"attack_eps_grid", "masking_checks", "autoattack", "autoattack_samples"} & set(setting_columns(trials))
