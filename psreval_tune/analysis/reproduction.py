"""docs/reproduction.md: the paper's claims checked on one sweep, with the command that regenerates it.

from analysis.reproduction import write_reproduction
write_reproduction(trials, "docs/reproduction.md", "docs/reproduction", command="python sweeps/reproduce.py",
                   meta={"wall_time_s": 4810, "machine": "2 CPU cores"})
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from .build import describe
from .claims import (
    FAILS,
    HOLDS,
    NOT_APPLICABLE,
    RULE,
    XSEED_NEEDS,
    claims_table,
    criterion,
    fmt_effect,
    fmt_p,
    format_claims,
    measures,
    plot_claims,
    xseed_matrix,
)
from .frames import col, dedupe_trials, image_count
from .metrics import ATTACKED_IMAGES, CLEAN_IMAGES
from .reports import markdown_table
from .reports.base import values_text
from .reports.claims import plain_summary
from .scale import MIN_SEEDS, scale_markdown, scale_warnings
from .stats import t_critical

META_KEYS = {"wall_time_s": "wall time", "machine": "machine", "sweep": "sweep", "date": "date", "git_commit": "commit"}


def _duration(seconds: float) -> str:
    minutes = seconds / 60
    return f"{seconds:.0f} s" if minutes < 2 else f"{minutes:.0f} min ({seconds:,.0f} s)"


def _counts(series: pd.Series) -> str:
    return values_text(series, lambda v: f"{v:,.0f}")


def scale_lines(trials: pd.DataFrame, meta: Mapping[str, Any]) -> list[str]:
    """The scale section: what the sweep ran (as the report's summary says it), images and rounds per trial,
    and ``meta``."""
    lines = [f"{k}: {v}" for k, v in describe(trials, "") if k != "source"]
    lines += [
        f"images per trial: {_counts(image_count(trials, ATTACKED_IMAGES))} attacked; clean accuracy on "
        f"{_counts(image_count(trials, CLEAN_IMAGES))} test images",
        f"rounds: {_counts(col(trials, 'rounds'))}; local epochs: {_counts(col(trials, 'local_epochs'))}",
    ]
    for key, value in meta.items():
        label = META_KEYS.get(key, key)
        lines.append(f"{label}: {_duration(float(value)) if key == 'wall_time_s' else value}")
    return lines


def on_the_claims_side(row: pd.Series) -> bool:
    """Whether the mean lies where the claim says it does (above, below, or inside ±bound)."""
    mean, bound = row["effect"], row["bound"]
    return {"above": mean > bound, "below": mean < bound}.get(row["kind"], abs(mean) < bound)


def seeds_to_decide(row: pd.Series) -> int | None:
    """Seeds at which the CI's half-width, at the observed spread over seeds, would clear the bound on the claim's
    side, before the Holm correction (None without a spread, with the mean on the wrong side, or beyond 1000)."""
    std, mean, bound = row.get("std", math.nan), row["effect"], row["bound"]
    if not (np.isfinite(std) and std > 0) or not on_the_claims_side(row):
        return None
    gap = abs(mean - bound) if row["kind"] != "within" else bound - abs(mean)
    for n in range(max(int(row["seeds"]) + 1, 2), 1001):
        if t_critical(n) * std / math.sqrt(n) < gap:
            return n
    return None


def _p_text(row: pd.Series) -> str:
    return f"p = {fmt_p(row['p'])} ({row['test']}), Holm-adjusted {fmt_p(row['p_holm'])}"


def explain(row: pd.Series) -> str:
    """A short paragraph on a claim row that does not hold or is inconclusive (raw or after Holm)."""
    images = f", {int(row['images']):,} images per trial" if np.isfinite(row["images"]) else ""
    text = (
        f"**{row['claim']} — {row['text']}** ({_where(row)}). Measured as {row['measure']}: {fmt_effect(row)} over "
        f"{int(row['seeds'])} seed(s){images}. The claim needs {criterion(row)}"
    )
    if row["verdict"] == FAILS:
        after = "" if row["verdict_holm"] == FAILS else " before the Holm correction (inconclusive after it)"
        text += (
            f"; the reverse test gives p = {fmt_p(row['p_against'])}, Holm-adjusted {fmt_p(row['p_against_holm'])}: "
            f"it does not hold here{after}."
        )
    elif row["seeds"] < 2:
        text += f"; with one seed there is no test over seeds: run at least {MIN_SEEDS}."
    elif row["verdict"] == HOLDS:
        text += f"; {_p_text(row)}: it holds before the correction for the table's many tests, not after it."
    else:
        text += f"; {_p_text(row)}: this sweep cannot tell."
        n = seeds_to_decide(row)
        if n:
            text += (
                f" At the observed spread over seeds (sd {row['std']:.2g}), about {n} seeds would clear the bound "
                "if the mean stayed where it is (more with the Holm correction)."
            )
        elif not on_the_claims_side(row):
            text += " The mean does not lie on the claim's side of the bound, so more seeds would not make it hold."
    for label, value in (("Beside it", row["beside"]), ("Note", row["note"])):
        text += f" {label}: {value}." if isinstance(value, str) and value else ""
    return text


PRIVACY_SCOPE = (
    "Each DP model's epsilon (delta) covers the training of that run only: the DP-SGD steps of its clients, "
    "accounted across rounds. It does not cover: the hyperparameter searches that chose the recipes (their "
    "size is in the recipe's source below; choosing hyperparameters on private data costs privacy too, "
    "Papernot & Steinke 2022, and it is neither accounted here nor bounded); normalisation constants, which "
    "are fixed public constants where the dataset's entry declares them and otherwise computed from the run's "
    "training split; and the validation split, which is assumed public (it calibrates int8 quantization and "
    "selects recipes and early stops), as is the test split."
)


def privacy_lines(trials: pd.DataFrame) -> list[str]:
    """What the reported epsilon covers, and each recipe's source (the search that chose it and its size)."""
    from .. import recipes

    known = recipes.load()
    names = sorted({str(r) for r in col(trials, "recipe").dropna() if str(r) in known})
    return [PRIVACY_SCOPE, ""] + [f"- recipe `{n}`: {known[n].get('source', 'no source recorded')}" for n in names]


def _cells(table: pd.DataFrame) -> list[str]:
    """The cross-seed transfer matrix as markdown, or a line saying it was not measured."""
    if table.empty:
        return [f"Not measured: the trials record no {XSEED_NEEDS}."]
    return [markdown_table(table)]


def render_reproduction(
    trials: pd.DataFrame, table: pd.DataFrame, figure: str, command: str, meta: Mapping[str, Any]
) -> str:
    """The markdown of docs/reproduction.md; ``figure``: the claims figure's path relative to it."""
    md = (
        [
            "# Reproducing the paper's claims",
            "",
            "Usynin et al., *Can collaborative learning be private, robust and scalable?*, section 4, checked on one "
            "sweep. Generated by this command; do not edit by hand, rerun it:",
            "",
            "```bash",
            command,
            "```",
            "",
            "## Scale",
            "",
        ]
        + [f"- {line}" for line in scale_lines(trials, meta)]
        + [""]
    )
    md += scale_markdown(scale_warnings(trials, table))
    md += [
        "## Claims",
        "",
        plain_summary(table, trials),
        "",
        RULE,
        "",
        markdown_table(format_claims(table)),
        "",
        f"![effect and 95% CI per claim]({figure})",
        "",
        "What each row measures:",
        "",
    ]
    md += [f"- {line}" for line in measures(bold=True)]
    md += ["", "## Transfer between separately trained models", "", XSEED_TEXT, ""] + _cells(xseed_matrix(trials))
    md += ["", "## What the privacy budget covers", ""] + privacy_lines(trials)
    return "\n".join(md + open_claims(table)).rstrip() + "\n"


def open_claims(table: pd.DataFrame) -> list[str]:
    """The last section: a paragraph per claim row that does not hold or is inconclusive after Holm, then the
    rows that are not applicable (with their measured effect) and the claims not measured."""
    missing = table["verdict"].str.startswith("not measured")
    other = table["verdict"] == NOT_APPLICABLE
    open_rows = table[~missing & ~other & (table["verdict_holm"] != HOLDS)]
    md = ["", "## Claims that do not hold or are inconclusive (after the Holm correction)", ""]
    md += [explain(r) + "\n" for _, r in open_rows.iterrows()] or ["Every measured claim that applies holds.", ""]
    md += [
        f"Not applicable: **{r['claim']} — {r['text']}** ({_where(r)}), measured {fmt_effect(r)}: {r['note']}.\n"
        for _, r in table[other].iterrows()
    ]
    md += [f"Not measured: **{r.claim}** — {r.verdict}." for r in table[missing].itertuples()]
    return md


def _where(row: pd.Series) -> str:
    return ", ".join(x for x in (row["dataset"], row["arch"], row["split"]) if x)


XSEED_TEXT = (
    "Robust accuracy and accuracy loss (clean minus robust accuracy on the same attacked images), in points, "
    "mean ± 95% CI over target seeds, per attack and generator × target cell. The generator is a model of "
    "another seed of the same setting (same architecture, different weights: the paper's partial white-box "
    "adversary), never the target itself; minimum-norm attacks (FAB) are left out."
)


def write_reproduction(
    trials: pd.DataFrame,
    out_md_path: str | Path,
    fig_dir: str | Path,
    command: str,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``out_md_path`` (e.g. docs/reproduction.md): the command that regenerates it, the sweep's scale,
    the claims table with verdicts, its figure (``fig_dir``/claims.png and .svg, embedded by relative path,
    with the numbers in ``fig_dir``/claims.csv) and a paragraph per claim that does not hold or is inconclusive.
    ``meta``: shown under Scale; known keys wall_time_s (seconds), machine, sweep, date, git_commit, any other
    key as 'key: value'. Returns the markdown's path."""
    out, fig_dir = Path(out_md_path), Path(fig_dir)
    trials = dedupe_trials(trials)
    table = claims_table(trials)
    png = plot_claims(table, fig_dir, "claims")[0]
    table.to_csv(fig_dir / "claims.csv", index=False)
    figure = Path(os.path.relpath(png, out.parent)).as_posix()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_reproduction(trials, table, figure, command, dict(meta or {})))
    return out
