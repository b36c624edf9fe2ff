"""Gradient-masking checks (issue 22): the trials whose checks failed, with the check names.

A trial run with ``masking_checks`` records ``masking_suspect_<check>`` (1: a model of the trial failed the
check; 0: every model passed) for each check of ``evaluate.MASKING_CHECKS`` and ``masking_suspect_any``, and
the accuracies behind them, ``acc_masking_<what>_<model>`` (what: pgd, large_eps, more_steps, square) on
``n_masking`` images. A failed check never changes a number: it is listed here, and the sweep's console warns.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..frames import col
from .base import TARGETS, Report, Table, config_label
from .curves import SETTING, model_label

FLAG = re.compile(r"masking_suspect_(\w+)$")
RUN = re.compile(rf"acc_masking_(\w+?)_({'|'.join(sorted(TARGETS, key=len, reverse=True))})$")
REFERENCE = "pgd"  # the configured attack the checks compare with: its column first


def check_names(trials: pd.DataFrame) -> list[str]:
    """The checks this sweep's trials record a flag for (``masking_suspect_<check>``), ``any`` left out."""
    names = [m.group(1) for c in trials.columns if (m := FLAG.fullmatch(str(c)))]
    return [n for n in names if n != "any"]


def checked(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that ran the checks (a flag recorded)."""
    flags = [f"masking_suspect_{c}" for c in check_names(trials)]
    if not flags:
        return trials.iloc[0:0]
    return trials[trials[flags].notna().any(axis=1)]


def failed_checks(trials: pd.DataFrame) -> pd.Series:
    """Per trial: the checks it failed, in order (``[]`` where none or where the checks did not run)."""
    names = check_names(trials)
    return pd.Series(
        [[c for c in names if col(trials, f"masking_suspect_{c}").loc[i] == 1] for i in trials.index],
        index=trials.index,
        dtype=object,
    )


def flagged(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials with at least one failed check, with ``failed`` (the check names)."""
    failed = failed_checks(trials)
    return trials.assign(failed=failed)[failed.map(bool)]


def summary_line(trials: pd.DataFrame) -> str | None:
    """'2 of 6 trials flagged (large_eps: 1, square: 2)' or 'none of 6 trials flagged'; None without checks."""
    ran = checked(trials)
    if ran.empty:
        return None
    bad = flagged(ran)
    if bad.empty:
        return f"none of {len(ran)} trials flagged ({', '.join(check_names(ran))} passed on every model)"
    counts = {c: sum(c in f for f in bad["failed"]) for c in check_names(ran)}
    text = ", ".join(f"{c}: {k}" for c, k in counts.items() if k)
    return f"{len(bad)} of {len(ran)} trials flagged ({text}); see the gradient-masking section"


def _trial_name(row: pd.Series) -> str:
    name = row.get("run_name")
    trial = row.get("trial_id")
    return str(name) if isinstance(name, str) and name and name != "nan" else str(trial)


def flagged_table(bad: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in SETTING if c in bad.columns]
    return pd.DataFrame(
        {
            "trial": [_trial_name(r) for _, r in bad.iterrows()],
            "dataset": bad["dataset"],
            "arch": bad["arch"],
            "privacy": bad["privacy"],
            "setting": [config_label(r, cols) for _, r in bad.iterrows()],
            "seed": bad["seed"],
            "failed checks": [", ".join(f) for f in bad["failed"]],
            "images": col(bad, "n_masking").map(lambda v: f"{v:.0f}" if np.isfinite(v) else "–"),
        }
    ).reset_index(drop=True)


def check_runs(trials: pd.DataFrame) -> list[str]:
    """What the checks ran (``acc_masking_<what>_<model>`` columns; schema's ``{masking}``), the reference first."""
    runs = dict.fromkeys(m.group(1) for c in trials.columns if (m := RUN.fullmatch(str(c))))
    return sorted(runs, key=lambda w: w != REFERENCE)


def accuracy_table(bad: pd.DataFrame) -> pd.DataFrame:
    """Per flagged trial and model: the accuracies (%) the checks compare."""
    rows = []
    runs = check_runs(bad)
    for _, r in bad.iterrows():
        for model in TARGETS:
            values = {w: 100 * float(col(bad, f"acc_masking_{w}_{model}").loc[r.name]) for w in runs}
            if all(not np.isfinite(v) for v in values.values()):
                continue
            cells = {f"{w} (%)": f"{v:.1f}" if np.isfinite(v) else "–" for w, v in values.items()}
            rows.append({"trial": _trial_name(r), "model": model_label(model), **cells})
    return pd.DataFrame(rows)


def check_doc() -> list[str]:
    """What each check asks (``evaluate.MASKING_DOC``, imported when the report runs)."""
    from ...evaluate import MASKING_DOC

    return [f"{name}: flagged when {text}" for name, text in MASKING_DOC.items()]


def masking_tables(trials: pd.DataFrame) -> Report:
    """The trials whose gradient-masking checks failed, the checks' names and the accuracies behind them."""
    rep = Report(
        "masking",
        "Gradient-masking checks: trials flagged",
        "Beyond the paper (issue 22): per trial and model, PGD at a large eps, PGD with 5x the steps and "
        "gradient-free Square against the configured PGD. A flag changes no number.",
    )
    ran = checked(trials)
    if ran.empty:
        rep.messages.append(
            "masking: needs a sweep run with masking_checks (psreval run --masking-checks); this sweep's trials "
            "record no masking_suspect_*"
        )
        return rep
    bad = flagged(ran)
    rep.data = ran.assign(failed=failed_checks(ran).map(", ".join))
    rep.notes.append(summary_line(trials) or "")
    rep.notes += check_doc()
    if bad.empty:
        return rep
    rep.tables.append(Table("Trials whose gradient-masking checks failed", flagged_table(bad)))
    rep.tables.append(Table("Their checks' accuracies (%), per model", accuracy_table(bad)))
    return rep


def masking(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The gradient-masking report (tables only, no figure), written into ``out_dir``."""
    rep = masking_tables(trials)
    rep.write(out_dir)
    return rep
