"""Robustness curves (issue 22): PGD robust accuracy against the attack's eps, one line per model (float and
int8, DP and non-private) with its 95% band, and the area under each curve.

A trial run with ``attack_eps_grid`` records ``curve_eps_<i>`` (the i-th eps, ascending),
``acc_curve_<i>_<model>`` (PGD, worst case over restarts, step size scaled with eps; eps 0 is the clean
accuracy) with Wilson intervals over its ``n_curve`` images, and ``auc_curve_<model>`` (trapezoidal area under
accuracy vs eps divided by the eps range: the mean accuracy over the range). ``<model>`` is one of
``schema.TARGETS``; a private trial's ``nonprivate`` models are its non-private twin's. Points are grouped by
the eps value, not its index, so sweeps with different grids share the points they have in common.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plots
from ..frames import col, dedupe_trials, interval
from ..metrics import ci_high, ci_low
from ..stats import summarize
from .base import (
    TARGET_LABELS,
    TARGETS,
    Report,
    Table,
    ci_cols,
    config_label,
    facets,
    pooled_note,
    privacy_order_np_first,
    stem,
)
from .robustness import bounds

KEY = ["dataset", "arch", "setting", "privacy", "model"]
SETTING = ("threat", "adv_fraction", "attack")  # the training-time setting a panel row shows
NEAR_ZERO = 10.0  # points: a curve still above this at its largest eps does not reach "about zero"
EPS = re.compile(r"curve_eps_(\d+)$")
COLORS = {"nonprivate": plots.BLUE, "dp": plots.ORANGE}  # by the float model an int8 one comes from


def curve_indices(trials: pd.DataFrame) -> list[int]:
    """The grid positions ``i`` with a ``curve_eps_<i>`` column, ascending."""
    return sorted(int(m.group(1)) for c in trials.columns if (m := EPS.fullmatch(str(c))))


def model_order(models) -> list[str]:
    """``schema.TARGETS`` order (non-private, DP, then their int8 versions), restricted to ``models``."""
    present = set(models)
    return [t for t in TARGETS if t in present]


def model_label(model: str) -> str:
    return TARGET_LABELS.get(model, model)


def _settings(trials: pd.DataFrame) -> pd.DataFrame:
    cols = [c for c in SETTING if c in trials.columns]
    return trials.assign(setting=[config_label(r, cols) for _, r in trials.iterrows()])


def curve_long(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial, grid point and model: eps, value (%), img_lo/img_hi (Wilson, %), n_img (n_curve)."""
    parts = []
    n_img = col(trials, "n_curve").astype(float)
    for i in curve_indices(trials):
        eps = col(trials, f"curve_eps_{i}").astype(float).round(10)
        for model in TARGETS:
            name = f"acc_curve_{i}_{model}"
            values = interval(trials, name, ci_low(name), ci_high(name), n_img)
            parts.append(trials.assign(eps=eps, model=model, **values))
    if not parts:
        return pd.DataFrame(columns=[*KEY, "eps", "value"])
    long = pd.concat(parts, ignore_index=True)
    return long[np.isfinite(long["value"].astype(float)) & np.isfinite(long["eps"])]


def auc_long(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per trial and model: ``value`` = auc_curve_<model> (%), no interval over images."""
    parts = [trials.assign(model=m, value=100 * col(trials, f"auc_curve_{m}").astype(float)) for m in TARGETS]
    long = pd.concat(parts, ignore_index=True)
    return long[np.isfinite(long["value"])]


def sort_rows(data: pd.DataFrame, after: tuple[str, ...] = ()) -> pd.DataFrame:
    privacies = privacy_order_np_first(data["privacy"])  # non-private first, then by epsilon
    keys = {"_p": [privacies.index(p) for p in data["privacy"]], "_m": [TARGETS.index(m) for m in data["model"]]}
    order = data.assign(**keys).sort_values(["dataset", "arch", "setting", "_p", "_m", *after], kind="stable")
    return order.drop(columns=list(keys)).reset_index(drop=True)


def curves_data(trials: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the curves: mean, ci95, n, lo/hi per KEY and eps; the areas: mean, ci95, n per KEY, with the eps range
    and the accuracy at the largest eps)."""
    trials = _settings(dedupe_trials(trials))
    data = sort_rows(bounds(summarize(curve_long(trials), [*KEY, "eps"])), ("eps",))
    auc = summarize(auc_long(trials), KEY)
    if data.empty or auc.empty:
        return data, auc
    ends = data.groupby(KEY, sort=False).agg(eps_min=("eps", "min"), eps_max=("eps", "max")).reset_index()
    last = data.merge(ends, on=KEY)
    last = last[last["eps"] == last["eps_max"]][[*KEY, "eps_min", "eps_max", "mean", "ci95", "n", "img_lo", "img_hi"]]
    last = last.rename(columns={c: f"last_{c}" for c in ("mean", "ci95", "n", "img_lo", "img_hi")})
    return data, sort_rows(auc.merge(last, on=KEY, how="left"))


def auc_table(auc: pd.DataFrame) -> pd.DataFrame:
    last = auc.rename(columns=lambda c: c[len("last_") :] if c.startswith("last_") else f"_{c}")
    return pd.DataFrame(
        {
            "dataset": auc["dataset"],
            "arch": auc["arch"],
            "setting": auc["setting"],
            "privacy": auc["privacy"],
            "model": auc["model"].map(model_label),
            "eps range": [f"{a:g}–{b:g}" for a, b in zip(auc["eps_min"], auc["eps_max"])],
            "area under the curve (% = mean accuracy over the range)": ci_cols(auc),
            "accuracy at the largest eps (%)": ci_cols(last),
            "n": auc["n"],
        }
    ).reset_index(drop=True)


def points_table(data: pd.DataFrame) -> pd.DataFrame:
    """The curves, one row per model and a column per eps: mean ± CI (one seed: [Wilson interval])."""
    wide = data.assign(cell=ci_cols(data), model=data["model"].map(model_label))
    wide = wide.pivot_table(index=KEY, columns="eps", values="cell", aggfunc="first", sort=False).reset_index()
    eps = sorted(c for c in wide.columns if c not in KEY)
    wide = wide[[*KEY, *eps]].fillna("–")
    wide.columns = [*KEY, *[f"eps {e:g}" for e in eps]]
    return wide


def far_from_zero(auc: pd.DataFrame) -> list[str]:
    """Models whose curve stays above NEAR_ZERO points at its largest eps (a sign of masking or a short grid)."""
    high = auc[auc["last_mean"] > NEAR_ZERO]
    return [
        f"{model_label(r.model)} ({r.dataset}, {r.arch}, {r.setting}, {r.privacy}) keeps {r.last_mean:.1f}% at "
        f"eps {r.eps_max:g} (above {NEAR_ZERO:g}%): not about zero; either the grid stops short or the gradients "
        "mislead PGD (see the gradient-masking checks)"
        for r in high.itertuples()
    ]


def curves_tables(trials: pd.DataFrame) -> Report:
    """Robust accuracy against eps per model with bands, and the area under each curve."""
    rep = Report(
        "curves",
        "Robustness curves: robust accuracy vs the attack's eps, per model",
        "Beyond the paper (issue 22): PGD at every eps of attack_eps_grid, white-box on the float models and via "
        "BPDA on the int8 ones. Higher is better; the paper attacks one eps only.",
    )
    if not curve_indices(trials):
        rep.messages.append(
            "curves: needs a sweep run with attack_eps_grid (psreval run --attack-eps-grid); this sweep's trials "
            "record no acc_curve_*"
        )
        return rep
    rep.data, auc = curves_data(trials)
    rep.extra["auc"] = auc
    if rep.data.empty:
        rep.messages.append("curves: the trials' curve_eps_* carry no robust accuracy (acc_curve_*)")
        return rep
    rep.note(pooled_note(_settings(dedupe_trials(trials)), KEY[:4], skip=["attack_eps_grid"]))
    rep.notes.append(
        "PGD, worst case over restarts, step size scaled with eps (alpha/eps as configured); eps 0 = clean accuracy; "
        "int8 models attacked through their straight-through twin (BPDA); a private trial's non-private models are "
        "its twin's; images: n_curve (the attacked ones)"
    )
    rep.notes.append(
        "bands and cells: mean ± 95% CI (t) over seeds; n = 1: [Wilson 95% interval over the trial's images]; "
        "area: trapezoids under accuracy vs eps divided by the eps range (the mean accuracy over the range)"
    )
    rep.notes += far_from_zero(auc)
    rep.tables.append(Table("Area under the robustness curve (%)", auc_table(auc)))
    rep.tables.append(Table("Robust accuracy (%) at each eps", points_table(rep.data)))
    return rep


# --- drawing -----------------------------------------------------------------------------------------------


def _panel(ax, cell: pd.DataFrame, handles: dict) -> None:
    """A line per model, int8 dashed, with its 95% band."""
    for model in model_order(cell["model"]):
        d = cell[cell["model"] == model].sort_values("eps")
        base = model[len("int8_") :] if model.startswith("int8_") else model
        int8 = model != base
        line = plots.line_band(
            ax,
            d["eps"],
            d["mean"],
            d["lo"],
            d["hi"],
            color=COLORS.get(base, plots.GREY),
            linestyle="--" if int8 else "-",
            marker="s" if int8 else "o",
            hollow=int8,  # int8 often lies on its float model's line: both stay visible
            label=model_label(model),
        )
        handles.setdefault(model, line)
    ax.set_ylim(0, 102)
    ax.grid(True, axis="both", alpha=0.3)


def curve_figure(rep: Report, ds: str, arch: str):
    """The figure of one (dataset, arch): a panel per (setting, privacy), a line per model."""
    d = rep.data[(rep.data["dataset"] == ds) & (rep.data["arch"] == arch)]
    settings = list(dict.fromkeys(d["setting"]))
    privacies = privacy_order_np_first(d["privacy"])
    fig, axes = plots.figure(len(settings), len(privacies), panel=(4.2, 3.2), sharex=True, sharey=True)
    handles: dict = {}
    for r, setting in enumerate(settings):
        for c, priv in enumerate(privacies):
            ax = axes[r][c]
            cell = d[(d["setting"] == setting) & (d["privacy"] == priv)]
            if cell.empty:
                ax.set_axis_off()
                continue
            _panel(ax, cell, handles)
            ax.set_title(f"{priv}, {setting}" if len(settings) > 1 else priv)
            ax.set_ylabel("robust accuracy, PGD (%)" if c == 0 else "")
            if r == len(settings) - 1:
                ax.set_xlabel("attack eps ([0, 1] pixels)")
    fig.suptitle(f"Robustness curves — {ds}, {arch} (higher is better)")
    order = model_order(handles)
    plots.legend_below(fig, [handles[m] for m in order], [model_label(m) for m in order], ns=d["n"], title="model")
    return fig


def draw_curves(rep: Report, out_dir: Path | None) -> None:
    if rep.data.empty:
        return
    for ds, arch in facets(rep.data):
        rep.figures += plots.save(curve_figure(rep, ds, arch), out_dir, stem("curves", ds, arch))[:1]


def curves(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The robustness-curve report's tables (``curves_tables``) and figures, written into ``out_dir``."""
    rep = curves_tables(trials)
    draw_curves(rep, out_dir)
    rep.write(out_dir)
    return rep
