"""(b) Transfer attacks: robust accuracy per generator x target and attack, per epsilon (paper Fig. 2, 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...baselines import NO_THREAT
from .. import plots
from ..frames import dedupe_trials, metric_values
from ..stats import summarize
from .base import (
    GEN_LABELS,
    GENERATORS,
    TARGET_LABELS,
    TARGETS,
    Report,
    Table,
    attack_names,
    attack_rank,
    ci_cols,
    facets,
    pooled_note,
    present_attacks,
    stem,
)


def _base(rep: Report, trials: pd.DataFrame) -> pd.DataFrame | None:
    """Private trials without a training-time threat, or None with a message naming what is missing."""
    private = trials[trials["private"]]
    if private.empty:
        rep.messages.append(
            "transfer figure: needs private trials (epsilon set; each trains its non-private twin); this sweep has none"
        )
        return None
    base = private[private["threat"] == NO_THREAT]
    if base.empty:
        rep.messages.append(
            "transfer figure: no private trials with threat none (inference-time attacks on "
            "models trained without a training-time threat); this sweep has none"
        )
        return None
    return base


def transfer_data(base: pd.DataFrame, attacks: list[str]) -> pd.DataFrame:
    """One row per dataset, arch, epsilon, attack, generator and target: mean, ci95, n over seeds (%)."""
    rows = []
    for a in attacks:
        for g in GENERATORS:
            for t in TARGETS:
                col = f"acc_transfer_{a.lower()}_{g}_to_{t}_worst"  # the headline (older runs: the mean)
                rows.append(base.assign(attack_eval=a, generator=g, target=t, **metric_values(base, col)))
    long = pd.concat(rows, ignore_index=True)
    data = summarize(long, ["dataset", "arch", "epsilon", "attack_eval", "generator", "target"])
    return data.rename(columns={"attack_eval": "attack"})


def transfer_table(data: pd.DataFrame) -> pd.DataFrame:
    """Generator (rows) x target (columns) cells, for reading."""
    table = (
        data.assign(cell=ci_cols(data))
        .pivot_table(
            index=["dataset", "arch", "epsilon", "attack", "generator", "n"],
            columns="target",
            values="cell",
            aggfunc="first",
            sort=False,
        )
        .reset_index()
        .rename_axis(columns=None)  # the pivot's "target" would read as an empty column of the rendered table
    )
    table = table[
        ["dataset", "arch", "epsilon", "attack", "generator", *[t for t in TARGETS if t in table.columns], "n"]
    ].rename(columns={t: f"→ {TARGET_LABELS[t]} (%)" for t in TARGETS})
    table["epsilon"] = table["epsilon"].map(lambda e: f"{e:g}")
    table["_a"] = table["attack"].map(attack_rank)
    return table.sort_values(["dataset", "arch", "epsilon", "_a"], kind="stable").drop(columns="_a")


def transfer_tables(trials: pd.DataFrame) -> Report:
    """Robust accuracy per generator x target and attack, per epsilon (paper Fig. 2 and 3)."""
    rep = Report(
        "transfer",
        "Transfer attacks: robust accuracy per generator × target",
        "Paper Fig. 2 (ε=7.0) and Fig. 3 (ε=1.7): examples generated on the non-private or the DP "
        "float model (white-box on it), evaluated on both float models and their int8 versions. "
        "Higher is better.",
    )
    trials = dedupe_trials(trials)
    base = _base(rep, trials)
    if base is None:
        return rep
    attacks = present_attacks(base, "acc_transfer_{a}_dp_to_dp_worst")
    rep.messages += [
        f"transfer figure: no {a} results (not in the trials' eval_attacks)" for a in attack_names() if a not in attacks
    ]
    if not attacks:
        return rep
    rep.data, rep.params["attacks"] = transfer_data(base, attacks), attacks
    rep.notes.append(
        "white-box cells: non-private → non-private (float) and DP → DP (float); int8 targets are "
        "always transfer targets (no gradients)"
    )
    rep.notes.append(
        f"trials trained without a threat (threat none): {len(base)} of {int(trials['private'].sum())} private trials"
    )
    rep.note(pooled_note(base, ["dataset", "arch", "epsilon"]))
    rep.tables.append(
        Table(
            "Robust accuracy (%) under transfer attacks, generator (rows) × target (columns)", transfer_table(rep.data)
        )
    )
    return rep


# --- drawing -----------------------------------------------------------------------------------------------

TARGET_COLORS = {"nonprivate": plots.BLUE, "int8_nonprivate": "#A9C1E3", "dp": plots.ORANGE, "int8_dp": "#F2C4A2"}
TARGET_HATCH = {"int8_nonprivate": "///", "int8_dp": "///"}


def _panel(ax, cell: pd.DataFrame, attack: str, eps: float) -> list:
    handles, _ = plots.grouped_bars(
        ax,
        cell,
        "generator",
        GENERATORS,
        "target",
        TARGETS,
        TARGET_COLORS,
        TARGET_HATCH,
        group_labels=[GEN_LABELS[g] for g in GENERATORS],
        hue_labels=TARGET_LABELS,
    )
    for i, g in enumerate(GENERATORS):  # mark the white-box cells
        wb = cell[(cell.generator == g) & (cell.target == g)]
        if len(wb) and np.isfinite(wb["mean"].iloc[0]) and wb["mean"].iloc[0] > 6:
            x = i - 0.4 + 0.2 * (TARGETS.index(g) + 0.5)
            ax.text(x, 1.5, "WB", ha="center", va="bottom", fontsize=6.5, color="white", fontweight="bold")
    ax.set_title(f"{attack}, DP model at ε={eps:g}")
    ax.set_ylim(0, 108)
    return handles


def _figure(d: pd.DataFrame, attacks: list[str], ds: str, arch: str, out_dir: Path | None) -> list[Path]:
    eps = sorted(d["epsilon"].unique())
    fig, axes = plots.figure(len(eps), len(attacks), panel=(4.4, 3.0), sharey=True)
    handles = []
    for r, e in enumerate(eps):
        for c, a in enumerate(attacks):
            h = _panel(axes[r][c], d[(d.epsilon == e) & (d.attack == a)], a, e)
            handles = handles if len(handles) >= len(h) else h
            if c == 0:
                axes[r][c].set_ylabel("robust accuracy (%)")
    fig.suptitle(
        f"Transfer attacks: robust accuracy by generator and target — {ds}, {arch} (higher is better; WB = white-box)"
    )
    plots.legend_below(fig, handles, ns=d["n"], title="target: the model the examples are evaluated on")
    return plots.save(fig, out_dir, stem("transfer", ds, arch))[:1]


def draw_transfer(rep: Report, out_dir: Path | None) -> None:
    if rep.data.empty:
        return
    for ds, arch in facets(rep.data):
        d = rep.data[(rep.data.dataset == ds) & (rep.data.arch == arch)]
        rep.figures += _figure(d, rep.params["attacks"], ds, arch, out_dir)


def transfer(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The transfer report's tables (``transfer_tables``) and figures, written into ``out_dir``."""
    rep = transfer_tables(trials)
    draw_transfer(rep, out_dir)
    rep.write(out_dir)
    return rep
