"""Tables and figures of the PSREval paper from any sweep's results.

Reads MLflow runs or a Ray Tune results folder (``analysis.load``), never the
training code: it imports mlflow, pandas and matplotlib, not psreval_tune.

    from analysis import load_mlflow, build_report
    trials = load_mlflow("psreval", "sqlite:///runs/mlflow.db", sweep="smoke")
    build_report(trials, "runs/reports/smoke")   # figures, *.md tables, report.html

    python -m analysis report --sweep smoke --out runs/reports/smoke
"""

from .build import FullReport, build_report, report_sweep
from .load import AnalysisError, load_mlflow, load_trials, load_tune
from .reports import REPORTS, Report, adv_training, overview, pareto, train_time, transfer

__all__ = ["AnalysisError", "FullReport", "REPORTS", "Report", "adv_training", "build_report", "load_mlflow",
           "load_trials", "load_tune", "overview", "pareto", "report_sweep", "train_time", "transfer"]
