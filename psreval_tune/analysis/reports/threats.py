"""What the two training-time threat reports share (adversarial training, train-time attacker): the
split of a sweep's trials, tables by adversarial fraction, and the lines-by-fraction figures."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from ...baselines import NO_THREAT
from .. import plots
from ..frames import dedupe_trials
from .base import Report, attack_names, facets, privacy_order, privacy_order_np_first, stem


def by_fraction(table: pd.DataFrame, index: list[str], header: str) -> pd.DataFrame:
    """``cell`` strings pivoted to one column per adversarial fraction, in increasing order."""
    wide = table.pivot_table(
        index=index, columns="adv_fraction", values="cell", aggfunc="first", sort=False
    ).reset_index()
    fracs = sorted(c for c in wide.columns if c not in index)
    wide = wide[[*index, *fracs]].fillna("–")
    wide.columns = [*index, *[header.format(f) for f in fracs]]
    return wide


def baseline_note(rep: Report, base: pd.DataFrame, what: str) -> None:
    if base.empty:
        rep.notes.append(f"no trials with threat none: no adversarial fraction 0 baseline for {what}")
    else:
        rep.notes.append(f"adversarial fraction 0 = trials trained without a threat (threat none), {what}")


def threat_split(rep: Report, trials: pd.DataFrame, threat: str, what: str, verb: str):
    """(trials under ``threat`` with adv_fraction > 0, the no-threat baseline, attacks used), or
    None with a message naming what the sweep lacks."""
    trials = dedupe_trials(trials)
    under = trials[(trials["threat"] == threat) & (trials["adv_fraction"] > 0)]
    if under.empty:
        rep.messages.append(f"{what}: needs adv_fraction > 0 and threat {threat}; this sweep has none")
        return None
    used = [a for a in attack_names() if (under["attack"] == a).any()]
    rep.messages += [f"{what}: no trials {verb} {a}" for a in attack_names() if a not in used]
    return under, trials[trials["threat"] == NO_THREAT], used


def metric_title(metric: str, attack: str) -> str:
    return {
        "accuracy_loss": f"trained and attacked with {attack}",
        "clean": f"attacker uses {attack}: clean accuracy",
        "robust": f"attacker uses {attack}: robust acc. ({attack}, white-box)",
    }[metric]


# --- drawing -----------------------------------------------------------------------------------------------


def _line_panel(ax, d: pd.DataFrame, metric: str, attack: str, zero_label: str, handles: dict) -> None:
    """One metric of one attack vs adversarial fraction, a line per privacy setting."""
    order = privacy_order_np_first(d["privacy"])
    colors = plots.privacy_colors(privacy_order(d["privacy"]))
    cell = d[(d.attack == attack) & (d.metric == metric)]
    for h in plots.lines_ci(ax, cell, "adv_fraction", "privacy", order, colors):
        handles.setdefault(h.get_label(), h)
    fracs = sorted(d["adv_fraction"].unique())
    ax.set_xticks(fracs, [f"{f:.0%}" if f else f"0\n({zero_label})" for f in fracs])
    ax.set_title(f"{metric_title(metric, attack)}")
    ax.grid(True, axis="both", alpha=0.3)
    if metric == "accuracy_loss":
        ax.axhline(0, color="#999999", linewidth=0.8)
    else:  # accuracies: a CI cannot make them negative or above 100
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, 0), min(hi, 102))


def by_attack_lines(
    rep: Report,
    data: pd.DataFrame,
    rows: Sequence[tuple[str, str]],
    out_dir: Path | None,
    key: str,
    title: Callable[[str, str], str],
    xlabel: str,
    zero_label: str,
) -> None:
    """Figures with one panel per (row metric, attack in ``rep.params["attacks"]``): value vs adversarial
    fraction, a line per privacy setting."""
    for ds, arch in facets(data):
        d = data[(data.dataset == ds) & (data.arch == arch)]
        cols = [a for a in rep.params["attacks"] if (d.attack == a).any()]
        if not cols:
            continue
        fig, axes = plots.figure(len(rows), len(cols), panel=(4.2, 3.0), sharex=True)
        handles: dict = {}
        for r, (metric, ylabel) in enumerate(rows):
            for c, a in enumerate(cols):
                _line_panel(axes[r][c], d, metric, a, zero_label, handles)
                axes[r][c].set_ylabel(ylabel)
                if r == len(rows) - 1:
                    axes[r][c].set_xlabel(xlabel)
        fig.suptitle(title(ds, arch))
        plots.legend_below(fig, list(handles.values()), list(handles), ns=d["n"], ncol=len(handles))
        rep.figures += plots.save(fig, out_dir, stem(key, ds, arch))[:1]
