"""(a) Performance overview: clean accuracy float vs int8 and model size (paper §4.2)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...baselines import NO_THREAT
from .. import plots
from ..frames import col as _col
from ..frames import dedupe_trials, model_rows, model_values
from ..metrics import better
from ..stats import fmt_ci, summarize
from .base import Report, Table, ci_cols, pooled_note, privacy_order_np_first, sort_np_first, stem

PRECISIONS = ("float", "int8")


def _base(rep: Report, trials: pd.DataFrame) -> pd.DataFrame:
    """Trials trained without a threat; all trials (with a message) when the sweep has none."""
    base = trials[trials["threat"] == NO_THREAT]
    if base.empty:
        rep.messages.append(
            "performance overview: no trials with threat none (clean training); "
            "the overview pools every threat setting of this sweep"
        )
        return trials
    rep.notes.append(
        f"trials trained without a threat (threat none): {len(base)} of {len(trials)}; "
        "non-private rows are the twins the private trials train"
    )
    return base


def overview_data(base: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """(clean accuracy per dataset, arch, privacy and precision; sizes, size reduction and int8 - float)."""
    models = model_rows(base)
    long = pd.concat([models.assign(precision=p, **model_values(models, f"acc_{p}")) for p in PRECISIONS])
    acc = summarize(long, ["dataset", "arch", "privacy", "precision"])
    diff = summarize(
        models.assign(value=100 * (models["acc_int8"] - models["acc_float"])), ["dataset", "arch", "privacy"]
    )
    sizes = pd.concat([base.assign(precision=p, value=_col(base, f"size_bytes_{p}") / 1e6) for p in PRECISIONS])
    size = summarize(sizes, ["dataset", "arch", "precision"])
    reduction = summarize(base.assign(value=_col(base, "size_reduction_pct")), ["dataset", "arch"])
    return acc, {"size_mb": size, "size_reduction_pct": reduction, "int8_minus_float_pp": diff}


def accuracy_table(acc: pd.DataFrame, diff: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (ds, arch, priv), _ in acc.groupby(["dataset", "arch", "privacy"], sort=False):
        here = acc[(acc.dataset == ds) & (acc.arch == arch) & (acc.privacy == priv)]
        f, i = here[here.precision == "float"], here[here.precision == "int8"]
        d = diff[(diff.dataset == ds) & (diff.arch == arch) & (diff.privacy == priv)]
        rows.append(
            {
                "dataset": ds,
                "arch": arch,
                "privacy": priv,
                "clean acc float (%)": ci_cols(f)[0],
                "clean acc int8 (%)": ci_cols(i)[0] if len(i) else "–",
                "int8 - float (points)": fmt_ci(d["mean"].iloc[0], d["ci95"].iloc[0], 2) if len(d) else "–",
                "n": int(f["n"].iloc[0]),
            }
        )
    return sort_np_first(pd.DataFrame(rows), ["dataset", "arch"])


def size_table(size: pd.DataFrame, reduction: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (ds, arch), _ in size.groupby(["dataset", "arch"], sort=False):
        f = size[(size.dataset == ds) & (size.arch == arch) & (size.precision == "float")]
        i = size[(size.dataset == ds) & (size.arch == arch) & (size.precision == "int8")]
        r = reduction[(reduction.dataset == ds) & (reduction.arch == arch)]
        rows.append(
            {
                "dataset": ds,
                "arch": arch,
                "float (MB)": f"{f['mean'].iloc[0]:.3f}",
                "int8 (MB)": f"{i['mean'].iloc[0]:.3f}",
                "reduction (%)": f"{r['mean'].iloc[0]:.1f}",
            }
        )
    return pd.DataFrame(rows)


def overview_tables(trials: pd.DataFrame) -> Report:
    """Clean accuracy float vs int8 per arch and privacy setting; model size float vs int8 and its
    reduction (paper 4.2). Trials without a training-time threat; twins give the non-private rows."""
    rep = Report(
        "overview",
        "Performance overview: clean accuracy and model size, float vs int8",
        "Paper §4.2: ResNet-9 -74.4%, ResNet-18 -76.6% in size; int8 accuracy within ±1 point of float.",
    )
    base = _base(rep, dedupe_trials(trials))
    rep.data, rep.extra = overview_data(base)
    rep.note(pooled_note(base, ["dataset", "arch"]))
    rep.tables.append(
        Table("Clean test accuracy (%), float vs int8", accuracy_table(rep.data, rep.extra["int8_minus_float_pp"]))
    )
    rep.tables.append(
        Table("Model size (serialized state_dict)", size_table(rep.extra["size_mb"], rep.extra["size_reduction_pct"]))
    )
    return rep


# --- drawing -----------------------------------------------------------------------------------------------

BARS = dict(colors={"float": plots.BLUE, "int8": plots.GREEN}, hatches={"int8": "///"})


def _accuracy_panel(ax, a: pd.DataFrame, groups: list[tuple[str, str]]):
    handles, top = plots.grouped_bars(
        ax,
        a.assign(group=[f"{r.arch}|{r.privacy}" for r in a.itertuples()]),
        "group",
        [f"{g[0]}|{g[1]}" for g in groups],
        "precision",
        list(PRECISIONS),
        **BARS,
        group_labels=[f"{arch}\n{priv}" for arch, priv in groups],
        hue_labels={"float": "float32", "int8": "int8 (static PTQ)"},
    )
    ax.set_ylim(0, min(max(top * 1.12, 10), 112))
    ax.set_ylabel("clean test accuracy (%)")
    ax.set_title(f"Clean accuracy ({better('acc_clean_float')})")
    return handles


def _size_panel(ax, s: pd.DataFrame, reduction: pd.DataFrame, archs: list[str]) -> None:
    _, top = plots.grouped_bars(ax, s, "arch", archs, "precision", list(PRECISIONS), **BARS, fmt=lambda v: f"{v:.3g}")
    for k, arch in enumerate(archs):
        r = reduction[reduction.arch == arch]
        if len(r):
            ax.annotate(
                f"int8: −{r['mean'].iloc[0]:.1f}%",
                (k, top * 1.12),
                ha="center",
                fontsize=9,
                fontweight="bold",
                color=plots.GREEN,
            )
    ax.set_ylim(0, top * 1.3)
    ax.set_ylabel("model size (MB)")
    ax.set_title(f"Model size ({better('size_bytes_int8')})")


def _figure(rep: Report, ds: str, out_dir: Path | None) -> list[Path]:
    a = rep.data[rep.data.dataset == ds]
    groups = [(arch, p) for arch in a["arch"].unique() for p in privacy_order_np_first(a[a.arch == arch]["privacy"])]
    s = rep.extra["size_mb"][rep.extra["size_mb"].dataset == ds]
    reduction = rep.extra["size_reduction_pct"]
    archs = list(s["arch"].unique())
    fig, axes = plots.figure(1, 2, gridspec_kw={"width_ratios": [max(len(groups), 2), max(len(archs), 1) + 0.6]})
    handles = _accuracy_panel(axes[0][0], a, groups)
    _size_panel(axes[0][1], s, reduction[reduction.dataset == ds], archs)
    fig.suptitle(
        f"Float vs int8 — {ds}, {', '.join(a['arch'].unique())}; "
        f"{'trained without a threat' if not rep.messages else 'all threat settings'}"
    )
    plots.legend_below(fig, handles, ["float32", "int8 (static PTQ)"], ns=a["n"])
    return plots.save(fig, out_dir, stem("overview", ds))[:1]


def draw_overview(rep: Report, out_dir: Path | None) -> None:
    for ds in rep.data["dataset"].unique():
        rep.figures += _figure(rep, ds, out_dir)


def overview(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The overview's tables (``overview_tables``) and figures, written into ``out_dir``."""
    rep = overview_tables(trials)
    draw_overview(rep, out_dir)
    rep.write(out_dir)
    return rep
