"""All reports of a sweep in one folder: figures, markdown tables, trials.csv and report.html;
and ``report_sweep``, which the sweep scripts call at the end to log that folder to MLflow."""

from __future__ import annotations

import math
import traceback
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from ..baselines import NO_THREAT, PAPER_ARCHS
from .html import render_html
from .load import AnalysisError, load_mlflow, metric_columns
from .reports import REPORTS, Report, attack_names, present_attacks
from .reports.base import FullReport, values_text
from .reports.masking import summary_line as masking_summary
from .scale import scale_markdown, scale_warnings

# The paper's grid, which a sweep is compared with (not the registries: a sweep may run more than the paper)
PAPER_AXES = {
    "arch": PAPER_ARCHS,
    "epsilon": (1.7, 3.4, 7.0),
    "threat": (NO_THREAT, "adv_training", "train_time_attack"),
    "adv_fraction": (0.1, 0.2, 0.3, 0.4),
}


def describe(trials: pd.DataFrame, source: str) -> list[tuple[str, str]]:
    left = trials.attrs.get("left_out", 0)
    privacy = ["non-private"] * bool((~trials["private"]).any()) + [
        f"{e:g}" for e in sorted(trials["epsilon"].dropna().unique())
    ]
    seeds = sorted(trials["seed"].unique())
    out = [
        ("source", source),
        ("sweep", values_text(trials["sweep"])),
        (
            "trials",
            f"{len(trials)} with final metrics"
            + (f" ({left} left out: stopped early, failed or unfinished)" if left else ""),
        ),
        ("dataset", values_text(trials["dataset"])),
        ("arch", values_text(trials["arch"])),
        ("epsilon (DP model)", ", ".join(privacy)),
        ("threat", values_text(trials["threat"])),
        ("adv_fraction", values_text(trials["adv_fraction"], lambda v: f"{v:g}")),
        ("training attack", values_text(trials.loc[trials["threat"] != NO_THREAT, "attack"])),
        ("inference attacks", ", ".join(present_attacks(trials, "acc_wb_{a}_worst")) or "–"),
        ("seeds", f"{len(seeds)} ({', '.join(map(str, seeds))})"),
    ]
    masking = masking_summary(trials)
    if masking:
        out.append(("gradient-masking checks", masking))
    unknown = trials.attrs.get("unknown_metrics") or []
    if unknown:
        out.append(("metrics not in psreval_tune/schema.py (not grouped by)", ", ".join(unknown)))
    return out


def coverage(trials: pd.DataFrame) -> list[str]:
    """The paper's axes this sweep leaves out (information, not an error)."""
    out = []
    for col, expected in PAPER_AXES.items():
        have = set(trials[col].dropna().tolist())
        if col == "adv_fraction":
            have = set(trials.loc[trials["threat"] != NO_THREAT, col].tolist())
        missing = [v for v in expected if not any(_same(v, h) for h in have)]
        if missing:
            out.append(
                f"{col} {', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in missing)} "
                "(the paper's grid has them)"
            )
    attacks = present_attacks(trials, "acc_wb_{a}_worst")
    missing = [a for a in attack_names() if a not in attacks]
    if missing:
        out.append(f"inference attack {', '.join(missing)} (not in eval_attacks)")
    if trials["seed"].nunique() < 2:
        out.append("several seeds: with one seed every number is a single run (n=1), shown without a CI")
    return out


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b))
        except (TypeError, ValueError):
            return False
    return a == b


def _clear(out: Path, keys: Sequence[str]) -> None:
    """Remove what an earlier report of these keys wrote into ``out`` (a figure a sweep no longer
    covers must not linger beside the new ones); other files are left alone."""
    stale = [out / n for n in ("report.html", "report.md", "trials.csv")]
    for key in keys:
        stale += [out / f"{key}.md", out / f"{key}.error.txt"]
        stale += [p for ext in ("png", "svg") for p in out.glob(f"{key}_*.{ext}")]
    for path in stale:
        if path.is_file():
            path.unlink()


def _run(keys: list[str], trials: pd.DataFrame, out: Path, options) -> tuple[list[Report], list[str]]:
    """Each report of ``keys``, written into ``out``; one that raises keeps a report naming the failure (its
    traceback in KEY.error.txt) and its key in the second list."""
    reports, failed = [], []
    for key in keys:
        try:
            reports.append(REPORTS[key](trials, out, **dict((options or {}).get(key, {}))))
        except Exception as exc:  # one broken figure must not cost the others
            rep = Report(key, key, "")
            rep.messages.append(f"{key} report failed: {type(exc).__name__}: {exc}")
            (out / f"{key}.error.txt").write_text(traceback.format_exc())
            reports.append(rep)
            failed.append(key)
    return reports, failed


def _markdown(heading: str, full: FullReport) -> str:
    """report.md, in the page's order: title, scale warning, the claims (summary and table), the sweep, the rest."""
    lead = full.lead()
    md = [f"# {heading}", "", *scale_markdown(full.warnings)]
    md += [lead.markdown() + "\n"] if lead else []
    md += [f"- **{k}**: {v}" for k, v in full.summary] + [""]
    if full.coverage:
        md += ["Not covered by this sweep: " + "; ".join(full.coverage), ""]
    md += [r.markdown() + "\n" for r in full.reports if r is not lead]
    return "\n".join(md)


def build_report(
    trials: pd.DataFrame,
    out_dir: str | Path,
    source: str = "",
    only: Sequence[str] | None = None,
    title: str | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> FullReport:
    """Run the reports (all, or ``only``) on ``trials``; write everything into ``out_dir``.
    ``options``: keyword arguments per report, e.g. ``{"pareto": {"attack": "FGSM"}}``."""
    unknown = [k for k in [*(only or []), *(options or {})] if k not in REPORTS]
    if unknown:
        raise AnalysisError(f"unknown report {', '.join(map(repr, unknown))} (reports: {', '.join(REPORTS)})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keys = list(only or REPORTS)
    _clear(out, keys)
    trials.to_csv(out / "trials.csv", index=False)
    reports, failed = _run(keys, trials, out, options)
    # the claims table gives the differences the image intervals are compared with (none if it failed)
    claims = pd.DataFrame() if "claims" in failed else next((r.data for r in reports if r.key == "claims"), None)
    full = FullReport(
        reports,
        describe(trials, source),
        coverage(trials),
        scale_warnings(trials, claims),
        messages=[m for r in reports for m in r.messages],
        failed=failed,
    )
    heading = title or f"PSREval report — {values_text(trials['sweep'])}"
    (out / "report.md").write_text(_markdown(heading, full))
    full.html = out / "report.html"
    full.html.write_text(render_html(heading, full, out))
    return full


def report_sweep(
    tracking_uri: str,
    experiment_name: str,
    sweep_name: str,
    out_dir: str | Path,
    parent_run_id: str | None = None,
    artifact_path: str = "report",
) -> FullReport:
    """The report of one sweep from MLflow, written to ``out_dir`` and logged to the sweep's parent
    run (``parent_run_id``, else found by its tags) under ``artifact_path``. The sweep scripts call
    this when their trials are done."""
    from mlflow import MlflowClient

    from .load import _experiment, _quiet_mlflow, find_sweep_run

    trials = load_mlflow(experiment_name, tracking_uri, parent_run_id or sweep_name)
    full = build_report(
        trials,
        out_dir,
        source=f"MLflow {tracking_uri}, experiment {experiment_name!r}",
        title=f"PSREval report — sweep {sweep_name}",
    )
    _quiet_mlflow()
    client = MlflowClient(tracking_uri=tracking_uri)
    if parent_run_id is None:
        exp = _experiment(client, experiment_name, tracking_uri)
        parent_run_id = find_sweep_run(client, exp.experiment_id, sweep_name).info.run_id
    client.log_artifacts(parent_run_id, str(out_dir), artifact_path=artifact_path)
    return full


__all__ = ["FullReport", "build_report", "coverage", "describe", "report_sweep", "metric_columns", "values_text"]
