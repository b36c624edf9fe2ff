"""(f) The paper's claims: measured effect, 95% CI over seeds and a verdict (``analysis.claims``), and the
plain-language paragraph the report opens with (``plain_summary``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..claims import (
    CLAIMS,
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_APPLICABLE,
    RULE,
    claims_table,
    format_claims,
    measures,
    plot_claims,
)
from ..frames import image_count
from ..metrics import ATTACKED_IMAGES
from .base import Report, Table, values_text

# verdict -> how (one row, several rows) of it read in the summary
VERDICT_WORDS = {
    HOLDS: ("holds", "hold"),
    FAILS: ("does not hold", "do not hold"),
    INCONCLUSIVE: ("is inconclusive at this scale", "are inconclusive at this scale"),
    NOT_APPLICABLE: ("is not applicable", "are not applicable"),
}


def _and(parts: list[str]) -> str:
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else "".join(parts)


def _counts(verdicts: pd.Series) -> str:
    """'3 hold, 1 does not hold and 2 are inconclusive at this scale'."""
    counts = {v: int(n) for v, n in verdicts.value_counts().items()}
    return _and([f"{counts[v]} {words[counts[v] > 1]}" for v, words in VERDICT_WORDS.items() if counts.get(v, 0)])


def _scope(trials: pd.DataFrame) -> str:
    """'12 trials on digits (resnet9), 3 seeds (0, 1, 2), 360 attacked images per trial'."""
    seeds = sorted(trials["seed"].dropna().unique())
    images = image_count(trials, ATTACKED_IMAGES)
    text = (
        f"{len(trials)} trials on {values_text(trials['dataset'])} ({values_text(trials['arch'])}), "
        f"{len(seeds)} seed{'s' * (len(seeds) != 1)} ({', '.join(map(str, seeds))})"
    )
    if images.notna().any():
        text += f", {values_text(images, lambda v: f'{v:,.0f}')} attacked images per trial"
    return text


def _not_applicable(rows: pd.DataFrame) -> str:
    """' Not applicable: a on cnn (the paper's statement is about resnet9, resnet18); ...' for the n/a rows."""
    if rows.empty:
        return ""
    archs = {c.key: c.archs for c in CLAIMS}
    parts = [
        f"{key} on {values_text(g['arch'])} (the paper's statement is about {', '.join(archs[key])})"
        for key, g in rows.groupby("claim", sort=False)
    ]
    return f" Not applicable: {'; '.join(parts)}; the measured effect is shown, untested."


def plain_summary(table: pd.DataFrame, trials: pd.DataFrame) -> str:
    """One paragraph in plain words, from the claims table (``claims_table``) and the trials behind it: what ran,
    how many claim rows hold, do not hold, are inconclusive or not applicable (after Holm), what was not measured."""
    missing = table["verdict"].str.startswith("not measured")
    rows, keys = table[~missing], list(dict.fromkeys(table["claim"]))
    lost = list(dict.fromkeys(table.loc[missing, "claim"]))
    text = (
        f"This sweep ran {_scope(trials)}. Of the paper's {len(keys)} checkable claims, {len(keys) - len(lost)} were "
        f"measured, in {len(rows)} rows (one per dataset, architecture and split)"
    )
    if len(rows):
        text += f": after Holm's correction over the tested rows, {_counts(rows['verdict_holm'])}"
        raw, adjusted = (int((rows[c] == HOLDS).sum()) for c in ("verdict", "verdict_holm"))
        text += f" ({raw} {VERDICT_WORDS[HOLDS][int(raw != 1)]} before the correction)" if raw != adjusted else ""
    text += "."
    text += _not_applicable(rows[rows["verdict"] == NOT_APPLICABLE])
    return text + (f" Not measured (this sweep lacks their trials): {', '.join(lost)}." if lost else "")


def claims_tables(trials: pd.DataFrame) -> Report:
    """The paper's checkable claims: measured effect, 95% CI over seeds (paired by seed) and a verdict;
    a claim whose trials the sweep lacks says what it needs."""
    rep = Report(
        "claims",
        "Paper claims: measured effect, 95% CI over seeds and verdict",
        "Paper §4.2–4.5. Each effect is the mean over seeds of a paired, per-seed difference (or ratio).",
    )
    rep.data = claims_table(trials)
    rep.summary = plain_summary(rep.data, trials)
    rep.notes.append(RULE)
    rep.notes += measures()
    rep.tables.append(Table("The paper's claims on this sweep", format_claims(rep.data), wrap=True))
    return rep


def draw_claims(rep: Report, out_dir: Path | None) -> None:
    rep.figures += plot_claims(rep.data, out_dir, "claims_effects")[:1]


def claims(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The claims report's table (``claims_tables``) and figure, written into ``out_dir``."""
    rep = claims_tables(trials)
    draw_claims(rep, out_dir)
    rep.write(out_dir)
    return rep
