"""analysis/reports/masking.py: the trials whose gradient-masking checks failed (masking_suspect_<check> = 1),
named with their checks in a report section and in the report's summary; from small frames, no training."""

from __future__ import annotations

import pandas as pd

from psreval_tune.analysis import build_report
from psreval_tune.analysis.load import tidy
from psreval_tune.analysis.reports import REPORTS
from psreval_tune.analysis.reports.masking import masking, masking_tables, summary_line

CHECKS = ("large_eps", "more_steps", "square")


def _row(seed: int, eps: float | None = 3.4, failed: tuple[str, ...] = (), checks: bool = True) -> dict:
    row = {
        "sweep": "s",
        "trial_id": f"t{seed}-{eps}",
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
    if checks:
        row["n_masking"] = 200
        for check in CHECKS:
            row[f"masking_suspect_{check}"] = float(check in failed)
        row["masking_suspect_any"] = float(bool(failed))
        for model in ("dp", "int8_dp") if eps is not None else ("nonprivate",):
            row.update(
                {
                    f"acc_masking_pgd_{model}": 0.30,
                    f"acc_masking_large_eps_{model}": 0.45 if "large_eps" in failed and model == "int8_dp" else 0.0,
                    f"acc_masking_more_steps_{model}": 0.29,
                    f"acc_masking_square_{model}": 0.31,
                }
            )
    return row


def sweep() -> pd.DataFrame:
    return tidy(
        [
            _row(0),
            _row(1, failed=("large_eps", "square")),
            _row(2, eps=None),
            _row(3, eps=None, failed=("more_steps",)),
            _row(4, checks=False),  # an older trial without the checks
        ]
    )


def test_registered_in_reports():
    assert REPORTS["masking"] is masking


def test_lists_the_flagged_trials_with_their_checks():
    rep = masking_tables(sweep())
    table = next(t.frame for t in rep.tables if t.caption.startswith("Trials whose"))
    failed = dict(zip(table["trial"], table["failed checks"]))
    assert failed == {"trial-1-3.4": "large_eps, square", "trial-3-None": "more_steps"}
    assert set(table["images"]) == {"200"}
    assert len(rep.data) == 4  # the trials that ran the checks; the older one is not counted
    assert (
        rep.notes[0]
        == "2 of 4 trials flagged (large_eps: 1, more_steps: 1, square: 1); see the gradient-masking section"
    )
    assert any(n.startswith("large_eps: flagged when PGD at eps 0.3") for n in rep.notes)


def test_the_checks_accuracies_per_model_of_a_flagged_trial():
    rep = masking_tables(sweep())
    acc = next(t.frame for t in rep.tables if t.caption.startswith("Their checks"))
    assert list(acc.columns) == ["trial", "model", "pgd (%)", "large_eps (%)", "more_steps (%)", "square (%)"]
    row = acc[(acc["trial"] == "trial-1-3.4") & (acc["model"] == "DP int8")].iloc[0]
    assert (row["pgd (%)"], row["large_eps (%)"]) == ("30.0", "45.0")
    assert set(acc.loc[acc["trial"] == "trial-3-None", "model"]) == {"non-private (float)"}


def test_no_flag_and_no_checks():
    clean = masking_tables(tidy([_row(0), _row(1, eps=None)]))
    assert clean.tables == [] and clean.messages == []
    assert clean.notes[0].startswith("none of 2 trials flagged")
    none = masking_tables(tidy([_row(0, checks=False)]))
    assert any("masking_checks" in m for m in none.messages)
    assert summary_line(tidy([_row(0, checks=False)])) is None


def test_the_report_names_them_in_its_summary_and_section(tmp_path):
    full = build_report(sweep(), tmp_path, only=["masking"])
    summary = dict(full.summary)
    assert summary["gradient-masking checks"].startswith("2 of 4 trials flagged")
    md = (tmp_path / "report.md").read_text()
    assert "Gradient-masking checks: trials flagged" in md and "| trial-1-3.4 |" in md and "large_eps, square" in md
    assert "gradient-masking checks: 2 of 4 trials flagged" in "\n".join(full.lines())
    assert "large_eps, square" in full.html.read_text()
