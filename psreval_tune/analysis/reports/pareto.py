"""(e) Beyond the paper: the privacy-utility-robustness Pareto front across epsilon."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plots
from ..frames import PRIVACY_ONLY, dedupe_trials, model_rows, model_values, setting_columns
from ..metrics import maximize
from ..stats import pareto_mask, summarize
from .base import Report, Table, attack_names, cell, config_label, present_attacks, privacy_order, stem

FIRST = ["threat", "attack", "adv_fraction", "arch"]  # named first in a configuration's label
# Which way each objective is better, from the schema: privacy spent (epsilon), clean and robust accuracy
OBJECTIVES = maximize(["epsilon", "acc_clean_float", "acc_wb_{attack}_worst"])


def _point(key: list[str], k: tuple, group: pd.DataFrame, a: str) -> dict:
    """One configuration: clean and robust accuracy (mean over seeds, CI) and their table cells."""
    clean = summarize(group.assign(**model_values(group, "acc_float"), _=0), ["_"]).iloc[0]
    robust = summarize(group.assign(**model_values(group, f"robust_{a.lower()}"), _=0), ["_"])
    rrow = robust.iloc[0] if len(robust) else pd.Series({"mean": np.nan, "ci95": np.nan, "n": 0})
    return {
        **dict(zip(key, k)),
        "epsilon": group["epsilon"].iloc[0],
        "clean_mean": clean["mean"],
        "clean_ci95": clean["ci95"],
        "robust_mean": rrow["mean"],
        "robust_ci95": rrow["ci95"],
        "n": int(clean["n"]),
        "clean_cell": cell(clean),
        "robust_cell": cell(rrow),
    }


def _mark(data: pd.DataFrame) -> pd.DataFrame:
    """pareto (3 objectives, per dataset), front_at_eps (clean and robust, per privacy level) and rank
    (the Pareto-optimal configurations per dataset numbered: most private first, then by clean accuracy)."""
    data["pareto"] = False
    data["front_at_eps"] = False
    data["rank"] = 0
    for ds in data["dataset"].unique():
        idx = data.index[data.dataset == ds]
        sub = data.loc[idx]
        data.loc[idx, "pareto"] = pareto_mask(sub[["epsilon", "clean_mean", "robust_mean"]].to_numpy(), OBJECTIVES)
        for priv in sub["privacy"].unique():
            pidx = sub.index[sub.privacy == priv]
            values = data.loc[pidx, ["clean_mean", "robust_mean"]].to_numpy()
            data.loc[pidx, "front_at_eps"] = pareto_mask(values, OBJECTIVES[1:])
        on = data[(data.dataset == ds) & data.pareto].sort_values(["epsilon", "clean_mean"], ascending=[True, False])
        data.loc[on.index, "rank"] = range(1, len(on) + 1)
    return data


def pareto_data(trials: pd.DataFrame, a: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per configuration (mean over seeds; non-private twins at ε = ∞), marked; and the setting
    columns that tell the configurations apart."""
    models = model_rows(trials, [a.lower()])
    key = [c for c in setting_columns(trials) if c not in PRIVACY_ONLY and c != "seed"] + ["privacy"]
    rows = [_point(key, k, g, a) for k, g in models.groupby(key, dropna=False, sort=False)]
    data = pd.DataFrame(rows)
    data["epsilon"] = data["epsilon"].astype(float).fillna(math.inf)
    data = _mark(data)
    varied = [
        c
        for c in FIRST + [c for c in key if c not in FIRST]
        if c in key and c not in ("dataset", "privacy") and data[c].nunique(dropna=False) > 1
    ]
    data["config"] = [config_label(r, varied) for _, r in data.iterrows()]
    return data, varied


def pareto_set_table(data: pd.DataFrame, a: str) -> pd.DataFrame:
    front = data[data["pareto"]].sort_values(["dataset", "rank"])
    return pd.DataFrame(
        {
            "#": front["rank"],
            "dataset": front["dataset"],
            "privacy": front["privacy"],
            "configuration": front["config"],
            "clean acc (%)": front["clean_cell"],
            f"{a} robust acc (%)": front["robust_cell"],
            "n": front["n"],
        }
    )


def best_table(data: pd.DataFrame, a: str) -> pd.DataFrame:
    """The best configuration for clean and for robust accuracy at each privacy level."""
    best = []
    for (ds, priv), g in data.groupby(["dataset", "privacy"], sort=False):
        c = g.loc[g["clean_mean"].idxmax()]
        r = g.loc[g["robust_mean"].idxmax()] if g["robust_mean"].notna().any() else None
        best.append(
            {
                "dataset": ds,
                "privacy": priv,
                "epsilon": g["epsilon"].iloc[0],
                "best clean acc (%)": c.clean_cell,
                "configuration (clean)": c.config,
                f"best {a} robust acc (%)": r.robust_cell if r is not None else "–",
                "configuration (robust)": r.config if r is not None else "–",
            }
        )
    return pd.DataFrame(best).sort_values(["dataset", "epsilon"]).drop(columns="epsilon")


def _attack(rep: Report, trials: pd.DataFrame, attack: str) -> str | None:
    """The attack whose white-box accuracy is the robustness axis (upper case), or None with a message."""
    available = present_attacks(trials, "acc_wb_{a}_worst")
    if not available:
        rep.messages.append("Pareto front: no white-box attack results in this sweep")
        return None
    if attack.upper() not in available:
        rep.messages.append(
            f"Pareto front: no trials with attack {attack.upper()}; robustness is measured with {available[0]} instead"
        )
        return available[0]
    return attack.upper()


def pareto_tables(trials: pd.DataFrame, attack: str | None = None) -> Report:
    """Privacy (epsilon, lower is better), utility (clean accuracy) and robustness (white-box accuracy
    under ``attack``, default the first of ``config.ATTACKS``) of every configuration; the 3-objective Pareto
    set and each epsilon's front."""
    rep = Report(
        "pareto",
        "Beyond the paper: privacy-utility-robustness Pareto front across ε",
        "Each point is one configuration (mean over seeds; non-private twins are ε = ∞). A configuration "
        "is Pareto-optimal when no other has lower ε, higher clean and higher robust accuracy at once.",
    )
    trials = dedupe_trials(trials)
    a = _attack(rep, trials, attack or attack_names()[0])
    if a is None:
        return rep
    rep.params["attack"] = a
    rep.data, varied = pareto_data(trials, a)
    rep.notes.append(
        f"robustness = white-box {a} accuracy of the float model; configurations differ in: "
        f"{', '.join(varied) or 'privacy only'}"
    )
    rep.tables.append(
        Table(f"Pareto set (lower ε, higher clean accuracy, higher {a} robust accuracy)", pareto_set_table(rep.data, a))
    )
    rep.tables.append(Table("Best configuration at each privacy level", best_table(rep.data, a)))
    return rep


# --- drawing -----------------------------------------------------------------------------------------------

MARKERS = ["o", "s", "^", "D"]


def plt_line(color: str, marker: str, label: str, line: bool = False):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, marker=marker, linestyle="-" if line else "none", markersize=7, label=label)


def plt_ring():
    from matplotlib.lines import Line2D

    return Line2D(
        [],
        [],
        marker="o",
        markersize=10,
        markerfacecolor="none",
        markeredgecolor="black",
        linestyle="none",
        label="Pareto-optimal",
    )


def _points(ax, q: pd.DataFrame, color: str, marker: str) -> None:
    """One privacy level's configurations of one arch: error bars, a ring and its number on Pareto-optimal ones."""
    xerr = np.where((q.n >= 2) & np.isfinite(q.clean_ci95), q.clean_ci95, 0)
    yerr = np.where((q.n >= 2) & np.isfinite(q.robust_ci95), q.robust_ci95, 0)
    style = dict(elinewidth=0.8, capsize=2, markersize=7, alpha=0.9)
    ax.errorbar(q.clean_mean, q.robust_mean, xerr=xerr, yerr=yerr, fmt=marker, color=color, ecolor=color, **style)
    on = q[q.pareto]
    ax.scatter(on.clean_mean, on.robust_mean, s=110, facecolors="none", edgecolors="black", linewidths=1.4, zorder=5)
    for r in on.itertuples():  # numbered; the legend and the table name them
        ax.annotate(
            str(r.rank),
            (r.clean_mean, r.robust_mean),
            xytext=(6, 5),
            textcoords="offset points",
            fontsize=8,
            fontweight="bold",
            zorder=6,
        )


def _scatter_panel(ax, d: pd.DataFrame, a: str, colors: dict, markers: dict) -> None:
    for priv in privacy_order(d["privacy"]):
        p = d[d.privacy == priv]
        for arch, marker in markers.items():
            if (p.arch == arch).any():
                _points(ax, p[p.arch == arch], colors[priv], marker)
        f = p[p.front_at_eps].sort_values("clean_mean")
        if len(f) > 1:
            ax.plot(f.clean_mean, f.robust_mean, color=colors[priv], linewidth=1, alpha=0.7, linestyle="--")
    lo_x = np.nanmin(d.clean_mean - d.clean_ci95.fillna(0))
    hi_x = np.nanmax(d.clean_mean + d.clean_ci95.fillna(0))
    lo_y = np.nanmin(d.robust_mean - d.robust_ci95.fillna(0))
    hi_y = np.nanmax(d.robust_mean + d.robust_ci95.fillna(0))
    ax.set_xlim(max(0, lo_x - 4), min(101, hi_x + 6))
    ax.set_ylim(max(0, lo_y - 4), min(101, hi_y + 6))
    ax.set_xlabel("clean accuracy (%)  →  better")
    ax.set_ylabel(f"robust accuracy, white-box {a} (%)  →  better")
    ax.grid(True, axis="both", alpha=0.3)
    ax.set_title("Configurations (black ring: Pareto-optimal over ε, clean, robust)")


def _best_line(d: pd.DataFrame, order: list[str], metric: str) -> tuple[list, list]:
    """The best ``metric`` mean at each privacy level, and its CI (0 where n < 2)."""
    ys, es = [], []
    for priv in order:
        g = d[d.privacy == priv]
        if g[f"{metric}_mean"].notna().any():
            row = g.loc[g[f"{metric}_mean"].idxmax()]
            ys.append(row[f"{metric}_mean"])
            es.append(row[f"{metric}_ci95"] if row["n"] >= 2 and np.isfinite(row[f"{metric}_ci95"]) else 0)
        else:
            ys.append(np.nan)
            es.append(0)
    return ys, es


def _best_panel(ax, d: pd.DataFrame, a: str, order: list[str]) -> None:
    """The best any configuration reaches at each privacy level."""
    xs = np.arange(len(order))
    lines = (("clean", plots.BLUE, "best clean accuracy"), ("robust", plots.RED, f"best robust accuracy ({a})"))
    for shift, (metric, color, name) in zip((-0.04, 0.04), lines):
        ys, es = _best_line(d, order, metric)
        ax.errorbar(xs + shift, ys, yerr=es, color=color, marker="o", capsize=3, linewidth=1.5, label=name)
    ax.set_xticks(xs, [p.replace("DP ", "") for p in order])
    ax.set_xlabel("privacy budget (lower ε = more private)")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 119)  # room for the legend above the 100% line
    ax.set_yticks(range(0, 101, 20))
    ax.grid(True, axis="both", alpha=0.3)
    ax.set_title("Best configuration per privacy level")
    ax.legend(loc="upper center", ncol=2, frameon=False)


def _handles(d: pd.DataFrame, order: list[str], colors: dict, markers: dict) -> tuple[list, int]:
    handles = [plt_line(colors[p], "o", p) for p in order]
    if len(markers) > 1:
        handles += [plt_line("#555555", m, arch, line=False) for arch, m in markers.items()]
    handles.append(plt_ring())
    numbered = d[d.pareto].sort_values("rank")
    handles += [plt_line("black", f"${r.rank}$", f"{r.privacy}: {r.config}") for r in numbered.itertuples()]
    return handles, len(numbered)


def _figure(d: pd.DataFrame, a: str, ds: str, out_dir: Path | None) -> list[Path]:
    order = privacy_order(d["privacy"])
    colors = plots.privacy_colors(order)
    archs = list(d["arch"].unique())
    markers = dict(zip(archs, MARKERS))
    fig, axes = plots.figure(1, 2, panel=(5.6, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
    _scatter_panel(axes[0][0], d, a, colors, markers)
    _best_panel(axes[0][1], d, a, order)
    handles, numbered = _handles(d, order, colors, markers)
    fig.suptitle(f"Privacy-utility-robustness trade-off — {ds}, {', '.join(archs)}")
    plots.legend_below(
        fig, handles, [h.get_label() for h in handles], ns=d["n"], ncol=min(len(handles), 4 if numbered else 6)
    )
    return plots.save(fig, out_dir, stem("pareto", ds))[:1]


def draw_pareto(rep: Report, out_dir: Path | None) -> None:
    if rep.data.empty:
        return
    for ds in rep.data["dataset"].unique():
        rep.figures += _figure(rep.data[rep.data.dataset == ds], rep.params["attack"], ds, out_dir)


def pareto(trials: pd.DataFrame, out_dir: Path | None = None, attack: str | None = None) -> Report:
    """The Pareto report's tables (``pareto_tables``) and figures, written into ``out_dir``."""
    rep = pareto_tables(trials, attack)
    draw_pareto(rep, out_dir)
    rep.write(out_dir)
    return rep
