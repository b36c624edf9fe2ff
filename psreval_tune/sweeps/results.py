"""What a finished sweep shows and keeps: the summary table of its trials, its report (analysis.report_sweep,
written into RUN_DIR/reports and onto its MLflow run), and its exit status."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

SUMMARY_COLUMNS = ["epsilon", "threat", "adv_fraction", "attack", "attack_alpha", "arch", "lr", "seed"]
SUMMARY_METRICS = [
    "acc_clean_float",
    "acc_clean_int8",
    "acc_wb_pgd_worst",  # the headline robust accuracies: worst case over restarts (older trials: their _mean)
    "acc_wb_fgsm_worst",
    "epsilon_spent",
    "size_reduction_pct",
    "time_total_s",
]


def _metric(metrics: dict, name: str) -> Any:
    """``metrics[name]``; a headline robust accuracy (``_worst``) a trial from before it lacks: its ``_mean``."""
    from ..analysis.metrics import legacy_robust

    value = metrics.get(name)
    return metrics.get(legacy_robust(name)) if value is None else value


def _summary(results, extra_metrics: Sequence[str] = ()) -> Any:
    import pandas as pd

    rows = []
    for res in results:
        cfg = res.config or {}
        flat = {}
        for key, value in cfg.items():
            flat.update(value if isinstance(value, dict) else {key: value})
        row = {k: flat.get(k) for k in SUMMARY_COLUMNS}
        metrics = res.metrics or {}
        row.update({k: _metric(metrics, k) for k in [*SUMMARY_METRICS, *extra_metrics]})
        row["status"] = "ERROR" if res.error else ("done" if metrics.get("cycle_complete") else "stopped early")
        row["trial_id"] = metrics.get("trial_id")
        rows.append(row)
    return pd.DataFrame(rows)


def _print_table(title: str, frame) -> None:
    import pandas as pd

    print(f"\n{title}")
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False) if len(frame) else "  (no trials)")


def print_trial_warnings(tracker, parent_run_id: str) -> list[str]:
    """Under the summary table, each trial's warnings as its MLflow run holds them (trial_warnings.TAGS: a
    resume from an older checkpoint or from round 1, data too small), the '! TRIAL: ...' lines the live
    console showed, which a scrolled or piped console may have lost. Never fails the sweep."""
    from ..trial_warnings import sweep_lines

    try:
        lines = sweep_lines(tracker.trial_tags(parent_run_id))
    except Exception as exc:  # noqa: BLE001 - a store that cannot be read here costs these lines only
        lines = [f"warning: the trials' warnings could not be read from MLflow ({type(exc).__name__}: {exc})"]
    for line in lines:
        print(line, flush=True)
    return lines


def report(*args: Any, **kwargs: Any):
    """analysis.report_sweep, imported when the trials are done (a broken analysis costs the
    report, never the sweep)."""
    from ..analysis import report_sweep

    return report_sweep(*args, **kwargs)


FRAGMENTED = (
    r"DataFrame is highly fragmented\.  This is usually the result of calling `frame\.insert` many times, "
    r"which has poor performance\."
)


def write_report(report: Callable[..., Any], tracking, parent_run_id: str, out_dir: Path) -> Path | None:
    """The sweep's report (tables, figures, report.html) into out_dir and onto its MLflow run.
    Any failure is one warning line: the trials are done and tracked whatever happens here."""
    try:
        with warnings.catch_warnings():
            # pandas' speed hint about the report's own frame building (psreval_tune/analysis/reports.py),
            # one per table of the report: not the user's to act on. Exactly that message.
            warnings.filterwarnings("ignore", message=FRAGMENTED)
            full = report(tracking.tracking_uri, tracking.experiment_name, tracking.sweep_name, out_dir, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - the sweep's results must not depend on its report
        text = str(exc).strip().splitlines()
        print(
            f"\nwarning: no report for sweep {tracking.sweep_name!r} ({type(exc).__name__}: "
            f"{text[0] if text else 'no message'}); retry with: psreval report "
            f"--tracking-uri {tracking.tracking_uri} --experiment {tracking.experiment_name} "
            f"--sweep {tracking.sweep_name} --out {out_dir}",
            file=sys.stderr,
            flush=True,
        )
        return None
    html = getattr(full, "html", None)
    print(f"\nreport: {html} (tables and figures of the sweep; also in its MLflow run, artifacts report/)", flush=True)
    failed = getattr(full, "failed", [])
    if failed:
        print(
            f"warning: report parts failed: {', '.join(failed)} (tracebacks in {out_dir}/<part>.error.txt)",
            file=sys.stderr,
            flush=True,
        )
    return html


def with_tmp_csv(tracker, run_id: str, frame, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        frame.to_csv(path, index=False)
        tracker.client.log_artifact(run_id, str(path))


def exit_status(results) -> int:
    """A finished sweep's exit status: 0 when no trial ended in ERROR, else 1 after one line on stderr
    saying how many (a script or CI job running the sweep sees it; the table above says which)."""
    errors = len(getattr(results, "errors", None) or [])
    if not errors:
        return 0
    print(
        f"error: {errors} of {len(results)} trials failed (status ERROR in the table above; "
        "their errors are in the Tune folder and on their MLflow runs, tag psreval.failure)",
        file=sys.stderr,
    )
    return 1
