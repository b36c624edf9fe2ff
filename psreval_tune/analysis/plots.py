"""Matplotlib helpers shared by the reports: bars and lines with 95% CIs, saving PNG + SVG."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .stats import n_note  # noqa: E402

plt.rcParams.update(
    {
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.labelsize": 9,
        "legend.fontsize": 8,
        "legend.title_fontsize": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.fonttype": "none",
        "axes.grid": True,
        "axes.grid.axis": "y",
        "grid.alpha": 0.3,
    }
)

BLUE, ORANGE, GREEN, RED, PURPLE, GREY = "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#8C8C8C"
# Categorical colours, in order; an attack gets the one at its index in config.ATTACKS (then tab10's, cycling)
PALETTE = (BLUE, ORANGE, GREEN, RED, PURPLE, "#937860", "#DA8BC3", "#CCB974", "#64B5CD")
DP_SHADES = ["#7f2704", "#d94801", "#fd8d3c", "#fdd0a2"]  # most private (smallest epsilon) darkest


def palette_color(index: int) -> str:
    """The ``index``-th categorical colour: PALETTE, then matplotlib's tab10, cycling."""
    if index < len(PALETTE):
        return PALETTE[index]
    return matplotlib.colors.to_hex(plt.get_cmap("tab10")((index - len(PALETTE)) % 10))


def attack_colors() -> dict[str, str]:
    """A colour per attack of ``config.ATTACKS``, by its index there: every registered attack has one."""
    from .. import config

    return {name: palette_color(i) for i, name in enumerate(config.ATTACKS)}


def privacy_colors(labels: Sequence[str]) -> dict[str, str]:
    """non-private blue; DP budgets in oranges, darker = more private (labels come sorted by epsilon)."""
    dp = [lbl for lbl in labels if lbl != "non-private"]
    shades = (
        DP_SHADES
        if len(dp) <= len(DP_SHADES)
        else [matplotlib.colors.to_hex(c) for c in plt.get_cmap("Oranges_r")(np.linspace(0.05, 0.7, len(dp)))]
    )
    out = {"non-private": BLUE}
    # few budgets: use the middle shades, which read best on white
    start = 1 if len(dp) <= 2 else 0
    out.update({lbl: shades[min(start + i, len(shades) - 1)] for i, lbl in enumerate(dp)})
    return out


def _cell(data: pd.DataFrame, **match) -> pd.Series | None:
    mask = np.ones(len(data), dtype=bool)
    for col, val in match.items():
        mask &= (data[col] == val).to_numpy()
    rows = data[mask]
    return None if rows.empty else rows.iloc[0]


def grouped_bars(
    ax,
    data: pd.DataFrame,
    group: str,
    groups: Sequence,
    hue: str,
    hues: Sequence,
    colors: dict,
    hatches: dict | None = None,
    group_labels: Sequence[str] | None = None,
    hue_labels: dict | None = None,
    fmt: Callable[[float], str] = "{:.1f}".format,
    label_values: bool = True,
) -> tuple[list, float]:
    """Bars of ``data`` (columns group, hue, mean, ci95, n): one cluster per group, one bar per hue;
    95% CI error bars where n >= 2; the mean written above each bar.
    Returns (legend handles, top of the highest bar or error bar)."""
    hatches = hatches or {}
    width = 0.8 / max(len(hues), 1)
    handles = {}
    top = 0.0
    for j, h in enumerate(hues):
        for i, g in enumerate(groups):
            row = _cell(data, **{group: g, hue: h})
            if row is None or not np.isfinite(row["mean"]):
                continue
            x = i - 0.4 + width * (j + 0.5)
            bar = ax.bar(
                x,
                row["mean"],
                width * 0.92,
                color=colors.get(h, GREY),
                hatch=hatches.get(h),
                edgecolor="white" if not hatches.get(h) else "#333333",
                linewidth=0.5,
                label=(hue_labels or {}).get(h, str(h)),
            )
            handles.setdefault(h, bar)
            ci = row["ci95"] if row["n"] >= 2 and np.isfinite(row["ci95"]) else 0.0
            if ci:
                ax.errorbar(x, row["mean"], yerr=ci, fmt="none", ecolor="#222222", elinewidth=0.9, capsize=2.5)
            if label_values:
                ax.annotate(
                    fmt(row["mean"]),
                    (x, row["mean"] + ci),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize=6.5,
                    rotation=90 if len(hues) * len(groups) > 10 else 0,
                )
            top = max(top, row["mean"] + ci)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(group_labels if group_labels is not None else [str(g) for g in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    return [handles[h] for h in hues if h in handles], top


def lines_ci(
    ax,
    data: pd.DataFrame,
    x: str,
    hue: str,
    hues: Sequence,
    colors: dict,
    markers: Sequence[str] = ("o", "s", "^", "D", "v", "P"),
) -> list:
    """One line per hue over ``x`` with 95% CI error bars where n >= 2. Returns legend handles."""
    handles = []
    xs = data[x].astype(float)
    span = float(xs.max() - xs.min()) if len(xs) else 0.0
    present = [h for h in hues if (data[hue] == h).any()]
    for k, h in enumerate(hues):
        sub = data[data[hue] == h].sort_values(x)
        if sub.empty:
            continue
        # dodge the lines sideways a little, so error bars at the same x do not hide each other
        shift = (present.index(h) - (len(present) - 1) / 2) * 0.012 * span
        ci = np.where((sub["n"] >= 2) & np.isfinite(sub["ci95"]), sub["ci95"], 0.0)
        line = ax.errorbar(
            sub[x] + shift,
            sub["mean"],
            yerr=ci,
            color=colors.get(h, GREY),
            marker=markers[k % len(markers)],
            markersize=5,
            capsize=3,
            linewidth=1.5,
            elinewidth=0.9,
            label=str(h),
        )
        handles.append(line)
    return handles


def line_band(ax, x, mean, lo, hi, color: str, label: str, linestyle: str = "-", marker: str = "o", hollow=False):
    """A line of ``mean`` over ``x`` with a shaded band from ``lo`` to ``hi`` where both are finite (a 95%
    interval); ``hollow``: open markers (a line drawn over another stays readable). Returns the line (the legend
    handle)."""
    x, mean = np.asarray(x, dtype=float), np.asarray(mean, dtype=float)
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    style = dict(color=color, linestyle=linestyle, marker=marker, markersize=4, linewidth=1.5, zorder=3)
    if hollow:  # larger and beneath: a filled marker at the same point shows inside it
        style.update(markerfacecolor="white", markersize=7, zorder=2)
    (line,) = ax.plot(x, mean, label=label, **style)
    band = np.isfinite(lo) & np.isfinite(hi)
    if band.any():
        ax.fill_between(x, np.where(band, lo, mean), np.where(band, hi, mean), color=color, alpha=0.15, linewidth=0)
    return line


def legend_below(
    fig,
    handles: list,
    labels: Sequence[str] | None = None,
    ns: Sequence[int] = (),
    ncol: int | None = None,
    title: str | None = None,
) -> None:
    """One legend for the figure, under the panels; its title says what the error bars are
    (after ``title``, what the entries are)."""
    labels = labels if labels is not None else [h.get_label() for h in handles]
    heading = " — ".join(t for t in (title, n_note(ns)) if t)
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=ncol or min(len(handles), 4),
        title=heading or None,
        frameon=False,
    )


def figure(nrows: int, ncols: int, panel: tuple[float, float] = (4.2, 3.2), **kw):
    width = min(max(panel[0] * ncols, 6.5), 18)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(width, panel[1] * nrows + 1.3), squeeze=False, layout="constrained", **kw
    )
    return fig, axes


def save(fig, out_dir: Path | None, stem: str) -> list[Path]:
    """``stem``.png and ``stem``.svg in out_dir; returns [png, svg]."""
    if out_dir is None:
        plt.close(fig)
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    # the tight box once for both files: bbox_inches="tight" would lay out and draw the figure an extra time per file
    bbox = fig.get_tightbbox().padded(plt.rcParams["savefig.pad_inches"])
    for path in paths:
        fig.savefig(path, bbox_inches=bbox, facecolor="white")
    plt.close(fig)
    return paths
