"""The sweep's console summary (sweeps.engine._summary) shows the headline robust accuracy, the worst case over
restarts (acc_wb_*_worst), and a trial recorded before it (acc_wb_*_mean only) shows its mean, trial by trial."""

from __future__ import annotations

from types import SimpleNamespace

from psreval_tune.sweeps.engine import SUMMARY_METRICS, _summary


def _result(metrics: dict) -> SimpleNamespace:
    return SimpleNamespace(config={"epsilon": 3.4, "seed": 0}, metrics={"cycle_complete": True, **metrics}, error=None)


def test_summary_reads_the_headline_and_falls_back_to_the_mean_per_trial():
    assert "acc_wb_pgd_worst" in SUMMARY_METRICS and "acc_wb_pgd_mean" not in SUMMARY_METRICS
    new = _result({"acc_wb_pgd_worst": 0.2, "acc_wb_pgd_mean": 0.3, "acc_wb_fgsm_worst": 0.4})
    old = _result({"acc_wb_pgd_mean": 0.35, "acc_wb_fgsm_mean": 0.45})
    table = _summary([new, old])
    assert table["acc_wb_pgd_worst"].tolist() == [0.2, 0.35]
    assert table["acc_wb_fgsm_worst"].tolist() == [0.4, 0.45]
    assert table["acc_clean_float"].isna().all() and table["status"].tolist() == ["done", "done"]
