"""Tables and figures of the PSREval paper from any sweep's results.

Reads MLflow runs or a Ray Tune results folder (``analysis.load``), never the
training code: besides mlflow, pandas and matplotlib it imports psreval_tune.schema (the
metrics, declared once) and psreval_tune.config (CycleConfig's fields and defaults; the
registries' names, such as config.ATTACKS, are read only when a report runs).

One module per report in ``analysis/reports/``: ``<key>_tables`` computes its numbers and
tables (DataFrames), ``draw_<key>`` draws them.

    from analysis import load_mlflow, build_report
    trials = load_mlflow("psreval", "sqlite:///runs/mlflow.db", sweep="smoke")
    build_report(trials, "runs/reports/smoke")   # figures, *.md tables, report.html

    python -m analysis report --sweep smoke --out runs/reports/smoke

The paper's claims with verdicts (also the report's "claims" section), and docs/reproduction.md:

    from analysis import claims_table, write_reproduction
    claims_table(trials)                      # one row per claim: effect, 95% CI over seeds, verdict
    write_reproduction(trials, "docs/reproduction.md", "docs/reproduction", command="python sweeps/reproduce.py")
"""

from .build import FullReport, build_report, report_sweep
from .claims import claims_table
from .load import AnalysisError, load_mlflow, load_trials, load_tune
from .reports import REPORTS, Report, adv_training, overview, pareto, train_time, transfer
from .reproduction import write_reproduction
from .scale import scale_warnings

__all__ = [
    "AnalysisError",
    "FullReport",
    "REPORTS",
    "Report",
    "adv_training",
    "build_report",
    "claims_table",
    "load_mlflow",
    "load_trials",
    "load_tune",
    "overview",
    "pareto",
    "report_sweep",
    "scale_warnings",
    "train_time",
    "transfer",
    "write_reproduction",
]
