"""What every report shares: the ``Report`` it returns, the ``FullReport`` of a sweep (all of them, as
``analysis.build`` writes them and ``analysis.html`` renders them), markdown tables, privacy ordering, table cells.

Nothing here draws: matplotlib is used by the ``draw_*`` functions of each report module only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ... import schema
from ...baselines import NO_THREAT
from ..frames import PRIVACY_ONLY, setting_columns
from ..frames import col as _col
from ..load import EVAL_ONLY
from ..stats import fmt_cell

GENERATORS = schema.GENERATORS  # models examples are crafted on
TARGETS = schema.TARGETS  # models examples are evaluated on
GEN_LABELS = {"nonprivate": "generated on\nnon-private", "dp": "generated on\nDP"}
TARGET_LABELS = {
    "nonprivate": "non-private (float)",
    "dp": "DP (float)",
    "int8_nonprivate": "non-private int8",
    "int8_dp": "DP int8",
}
# Wording of the threats whose plain name reads badly; any other threat of config.THREATS reads as its name.
THREAT_WORDS = {"none": "no threat", "adv_training": "adversarial training", "train_time_attack": "train-time attack"}


def attack_names() -> tuple[str, ...]:
    """``config.ATTACKS`` (the attack registry's names, in its order), read when a report runs: a new attack
    appears in every report, and importing analysis does not load the registry (nor torch)."""
    from ... import config

    return tuple(config.ATTACKS)


def threat_names() -> tuple[str, ...]:
    """``config.THREATS``, read when asked (as ``attack_names``)."""
    from ... import config

    return tuple(config.THREATS)


def threat_label(threat) -> str:
    """'adversarial training' for adv_training; a threat without its own wording reads as its name."""
    return THREAT_WORDS.get(threat, str(threat).replace("_", " "))


def attack_rank(attack) -> int:
    """Position of ``attack`` in ``config.ATTACKS`` (unknown names last), for sorting."""
    names = attack_names()
    return names.index(attack) if attack in names else len(names)


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame  # formatted for reading (strings)
    wrap: bool = False  # long text cells: wrap them in the HTML page (else each cell stays on one line)


@dataclass
class Report:
    key: str  # file stem and CLI subcommand
    title: str
    paper: str  # where the paper shows it
    data: pd.DataFrame = field(default_factory=pd.DataFrame)  # the numbers behind the figure(s)
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)  # further plotted numbers (sizes, times)
    tables: list[Table] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)  # PNGs; an SVG of the same stem beside each
    messages: list[str] = field(default_factory=list)  # what the sweep does not cover
    notes: list[str] = field(default_factory=list)  # how to read it: slices, pooling, n
    params: dict[str, Any] = field(default_factory=dict)  # what the drawing needs besides data (e.g. the attack)
    summary: str = ""  # one plain-language paragraph on what the report found (the claims'), shown first

    def markdown(self, level: int = 2) -> str:
        out = [f"{'#' * level} {self.title}", "", f"*{self.paper}*", ""]
        out += [self.summary, ""] if self.summary else []
        out += [f"> **missing:** {m}" for m in self.messages] + ([""] if self.messages else [])
        out += [f"- {n}" for n in self.notes] + ([""] if self.notes else [])
        for fig in self.figures:
            out += [f"![{fig.stem}]({fig.name}) ([SVG]({fig.with_suffix('.svg').name}))", ""]
        for table in self.tables:
            out += [f"**{table.caption}**", "", markdown_table(table.frame), ""]
        return "\n".join(out)

    def write(self, out_dir: Path | None) -> None:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / f"{self.key}.md").write_text(self.markdown() + "\n")

    def note(self, text: str | None) -> None:
        if text:
            self.notes.append(text)


@dataclass
class FullReport:
    """Every report of a sweep, and what the page says about the sweep above them."""

    reports: list[Report]
    summary: list[tuple[str, str]]  # (what, value) lines about the sweep
    coverage: list[str]  # paper axes this sweep does not cover
    warnings: list[str] = field(default_factory=list)  # why this sweep's scale cannot support conclusions
    html: Path | None = None
    messages: list[str] = field(default_factory=list)  # every report's missing-cell messages
    failed: list[str] = field(default_factory=list)  # reports that raised (traceback in KEY.error.txt)

    def lines(self) -> list[str]:
        """What the CLI prints."""
        out = [f"scale warning: {w}" for w in self.warnings]
        out += [f"{k}: {v}" for k, v in self.summary]
        out += [f"not covered: {c}" for c in self.coverage]
        for rep in self.reports:
            figs = ", ".join(f.name for f in rep.figures) or "no figure"
            out.append(f"{rep.key}: {figs}; table {rep.key}.md")
            out += [f"  missing: {m}" for m in rep.messages]
        if self.html is not None:
            out.append(f"report: {self.html}")
        return out

    def lead(self) -> Report | None:
        """The report the page opens with: the claims (their table and plain-language summary), if it ran."""
        return next((r for r in self.reports if r.key == "claims" and r.summary), None)


def values_text(series: pd.Series, fmt=str) -> str:
    """'a, b, c': the distinct values of ``series``, sorted."""
    vals = sorted(series.dropna().unique().tolist())
    return ", ".join(fmt(v) for v in vals) or "–"


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)"
    cols = [str(c) for c in frame.columns]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def pooled_note(frame: pd.DataFrame, by: Sequence[str], skip: Sequence[str] = ()) -> str | None:
    """Which settings (besides seed and privacy) differ inside one plotted group of ``frame`` (trials,
    grouped by ``by``), so that n there counts more than seeds. ``skip``: columns that differ on purpose."""
    if frame.empty:
        return None
    ignore = set(by) | set(skip) | {"seed", "epsilon", "privacy", "model"} | PRIVACY_ONLY | EVAL_ONLY
    cols = [c for c in setting_columns(frame) if c not in ignore]
    varied = []
    for c in cols:
        most = frame.groupby(list(by), dropna=False)[c].nunique(dropna=False).max()
        if most > 1:
            varied.append(f"{c} (up to {most} values)")
    return (
        f"pooled over differing {', '.join(varied)} within one bar or point: n counts those trials too"
        if varied
        else None
    )


def privacy_order(labels) -> list[str]:
    def key(lbl: str) -> float:
        return math.inf if lbl == "non-private" else float(lbl.split("=")[1])

    return sorted(set(labels), key=key)


def privacy_order_np_first(labels) -> list[str]:
    order = privacy_order(labels)
    return (["non-private"] if "non-private" in order else []) + [p for p in order if p != "non-private"]


def sort_np_first(table: pd.DataFrame, by: Sequence[str], after: Sequence[str] = ()) -> pd.DataFrame:
    """``table`` sorted by ``by``, then privacy (non-private first, then by ε), then ``after``."""
    order = privacy_order_np_first(table["privacy"])
    table = table.assign(_o=[order.index(p) for p in table["privacy"]])
    return table.sort_values([*by, "_o", *after], kind="stable").drop(columns="_o")


def present_attacks(frame: pd.DataFrame, pattern: str) -> list[str]:
    """Attacks of ``config.ATTACKS`` (upper case, in its order) for which ``pattern.format(a=lower)`` has values."""
    return [a for a in attack_names() if _col(frame, pattern.format(a=a.lower())).notna().any()]


def in_attack_order(names) -> list[str]:
    """The attacks among ``names``, in ``config.ATTACKS`` order."""
    present = set(names)
    return [a for a in attack_names() if a in present]


def facets(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(frame[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None))


def stem(key: str, *parts) -> str:
    return "_".join([key, *[str(p).replace(" ", "").replace("/", "-") for p in parts]])


def cell(row: pd.Series, digits: int = 1) -> str:
    """A table cell of one ``summarize`` row: mean ± CI over seeds; one seed: the interval over images."""
    return fmt_cell(
        row["mean"],
        row["ci95"],
        row["n"],
        row.get("img_lo", math.nan),
        row.get("img_hi", math.nan),
        row.get("n_img", math.nan),
        digits,
    )


def ci_cols(frame: pd.DataFrame, digits: int = 1) -> list[str]:
    return [cell(r, digits) for _, r in frame.iterrows()]


def eps_text(eps: float) -> str:
    return "non-private" if not np.isfinite(eps) else f"ε={eps:g}"


def config_label(row, cols: Sequence[str]) -> str:
    """'adversarial training, FGSM 20%, resnet9': the settings in ``cols`` that tell configurations apart."""
    parts = []
    for c in cols:
        v = row[c]
        if c == "threat":
            parts.append(threat_label(v))
        elif c in ("adv_fraction", "attack") and row.get("threat") == NO_THREAT:
            continue  # meaningless without a training-time threat
        elif c == "adv_fraction":
            parts.append(f"{v:.0%}")
        elif c in ("arch", "attack"):
            parts.append(str(v))
        elif isinstance(v, float):
            parts.append(f"{c}={v:g}")
        else:
            parts.append(f"{c}={v}")
    return ", ".join(parts) or "-"
