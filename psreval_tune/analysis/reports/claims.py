"""(f) The paper's claims: measured effect, 95% CI over seeds and a verdict (``analysis.claims``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..claims import RULE, claims_table, format_claims, measures, plot_claims
from .base import Report, Table


def claims_tables(trials: pd.DataFrame) -> Report:
    """The paper's checkable claims: measured effect, 95% CI over seeds (paired by seed) and a verdict;
    a claim whose trials the sweep lacks says what it needs."""
    rep = Report(
        "claims",
        "Paper claims: measured effect, 95% CI over seeds and verdict",
        "Paper §4.2–4.5. Each effect is the mean over seeds of a paired, per-seed difference (or ratio).",
    )
    rep.data = claims_table(trials)
    rep.notes.append(RULE)
    rep.notes += measures()
    rep.tables.append(Table("The paper's claims on this sweep", format_claims(rep.data)))
    return rep


def draw_claims(rep: Report, out_dir: Path | None) -> None:
    rep.figures += plot_claims(rep.data, out_dir, "claims_effects")[:1]


def claims(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The claims report's table (``claims_tables``) and figure, written into ``out_dir``."""
    rep = claims_tables(trials)
    draw_claims(rep, out_dir)
    rep.write(out_dir)
    return rep
