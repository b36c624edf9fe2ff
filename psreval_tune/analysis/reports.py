"""The paper's tables and figures, from the tidy trials frame of ``analysis.load``.

Each report is a function ``report(trials, out_dir) -> Report``: it writes its
figures (PNG and SVG) and a markdown file into ``out_dir`` and returns the
numbers it plotted (``Report.data``, one row per bar or point: the grouping
columns, ``mean``, ``ci95`` (half-width of the t-based 95% CI over seeds; NaN
when n = 1), ``n``, ``std``). Accuracies are in percent, sizes in MB (10^6
bytes), times in seconds.

A sweep that does not cover a report's axes gives ``Report.messages`` naming
what is missing, and no figure for it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from . import plots
from .claims import RULE, claims_table, format_claims, measures, plot_claims
from .frames import (
    PRIVACY_ONLY,
    dedupe_trials,
    loss_reference,
    metric_values,
    model_rows,
    model_values,
    setting_columns,
)
from .frames import col as _col
from .load import EVAL_ONLY
from .stats import fmt_cell, fmt_ci, pareto_mask, summarize

ATTACKS = ("PGD", "FGSM", "FAB")
GENERATORS = ("nonprivate", "dp")
TARGETS = ("nonprivate", "dp", "int8_nonprivate", "int8_dp")
GEN_LABELS = {"nonprivate": "generated on\nnon-private", "dp": "generated on\nDP"}
TARGET_LABELS = {
    "nonprivate": "non-private (float)",
    "dp": "DP (float)",
    "int8_nonprivate": "non-private int8",
    "int8_dp": "DP int8",
}
TARGET_COLORS = {"nonprivate": plots.BLUE, "int8_nonprivate": "#A9C1E3", "dp": plots.ORANGE, "int8_dp": "#F2C4A2"}
TARGET_HATCH = {"int8_nonprivate": "///", "int8_dp": "///"}
THREAT_LABELS = {"none": "no threat", "adv_training": "adversarial training", "train_time_attack": "train-time attack"}


@dataclass
class Table:
    caption: str
    frame: pd.DataFrame  # formatted for reading (strings)


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

    def markdown(self, level: int = 2) -> str:
        out = [f"{'#' * level} {self.title}", "", f"*{self.paper}*", ""]
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


def markdown_table(frame: pd.DataFrame) -> str:
    if frame.empty:
        return "(no rows)"
    cols = [str(c) for c in frame.columns]
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


# --- shared preparation ------------------------------------------------------------------


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


def present_attacks(frame: pd.DataFrame, pattern: str) -> list[str]:
    """Attacks (upper case, paper order) for which ``pattern.format(a=lower)`` has values."""
    return [a for a in ATTACKS if _col(frame, pattern.format(a=a.lower())).notna().any()]


def _facets(frame: pd.DataFrame) -> list[tuple[str, str]]:
    return list(frame[["dataset", "arch"]].drop_duplicates().itertuples(index=False, name=None))


def _stem(key: str, *parts) -> str:
    return "_".join([key, *[str(p).replace(" ", "").replace("/", "-") for p in parts]])


def _cell(row: pd.Series, digits: int = 1) -> str:
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


def _ci_cols(frame: pd.DataFrame, digits: int = 1) -> list[str]:
    return [_cell(r, digits) for _, r in frame.iterrows()]


def _eps_text(eps: float) -> str:
    return "non-private" if not np.isfinite(eps) else f"ε={eps:g}"


# --- (a) performance overview ---------------------------------------------------------------


def overview(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """Clean accuracy float vs int8 per arch and privacy setting; model size float vs int8 and its
    reduction (paper 4.2). Trials without a training-time threat; twins give the non-private rows."""
    rep = Report(
        "overview",
        "Performance overview: clean accuracy and model size, float vs int8",
        "Paper §4.2: ResNet-9 -74.4%, ResNet-18 -76.6% in size; int8 accuracy within ±1 point of float.",
    )
    trials = dedupe_trials(trials)
    base = trials[trials["threat"] == "none"]
    if base.empty:
        base = trials
        rep.messages.append(
            "performance overview: no trials with threat none (clean training); "
            "the overview pools every threat setting of this sweep"
        )
    else:
        rep.notes.append(
            f"trials trained without a threat (threat none): {len(base)} of {len(trials)}; "
            "non-private rows are the twins the private trials train"
        )
    models = model_rows(base)
    long = pd.concat([models.assign(precision=p, **model_values(models, f"acc_{p}")) for p in ("float", "int8")])
    acc = summarize(long, ["dataset", "arch", "privacy", "precision"])
    diff = summarize(
        models.assign(value=100 * (models["acc_int8"] - models["acc_float"])), ["dataset", "arch", "privacy"]
    )
    sizes = pd.concat([base.assign(precision=p, value=_col(base, f"size_bytes_{p}") / 1e6) for p in ("float", "int8")])
    size = summarize(sizes, ["dataset", "arch", "precision"])
    reduction = summarize(base.assign(value=_col(base, "size_reduction_pct")), ["dataset", "arch"])
    rep.data, rep.extra = acc, {"size_mb": size, "size_reduction_pct": reduction, "int8_minus_float_pp": diff}
    note = pooled_note(base, ["dataset", "arch"])
    if note:
        rep.notes.append(note)

    rows = []
    for (ds, arch, priv), _ in acc.groupby(["dataset", "arch", "privacy"], sort=False):
        f = acc[(acc.dataset == ds) & (acc.arch == arch) & (acc.privacy == priv) & (acc.precision == "float")]
        i = acc[(acc.dataset == ds) & (acc.arch == arch) & (acc.privacy == priv) & (acc.precision == "int8")]
        d = diff[(diff.dataset == ds) & (diff.arch == arch) & (diff.privacy == priv)]
        rows.append(
            {
                "dataset": ds,
                "arch": arch,
                "privacy": priv,
                "clean acc float (%)": _ci_cols(f)[0],
                "clean acc int8 (%)": _ci_cols(i)[0] if len(i) else "–",
                "int8 - float (points)": fmt_ci(d["mean"].iloc[0], d["ci95"].iloc[0], 2) if len(d) else "–",
                "n": int(f["n"].iloc[0]),
            }
        )
    table = pd.DataFrame(rows)
    table["_o"] = [privacy_order_np_first(table["privacy"]).index(p) for p in table["privacy"]]
    table = table.sort_values(["dataset", "arch", "_o"]).drop(columns="_o")
    rep.tables.append(Table("Clean test accuracy (%), float vs int8", table))
    srows = []
    for (ds, arch), _ in size.groupby(["dataset", "arch"], sort=False):
        f = size[(size.dataset == ds) & (size.arch == arch) & (size.precision == "float")]
        i = size[(size.dataset == ds) & (size.arch == arch) & (size.precision == "int8")]
        r = reduction[(reduction.dataset == ds) & (reduction.arch == arch)]
        srows.append(
            {
                "dataset": ds,
                "arch": arch,
                "float (MB)": f"{f['mean'].iloc[0]:.3f}",
                "int8 (MB)": f"{i['mean'].iloc[0]:.3f}",
                "reduction (%)": f"{r['mean'].iloc[0]:.1f}",
            }
        )
    rep.tables.append(Table("Model size (serialized state_dict)", pd.DataFrame(srows)))

    for ds in acc["dataset"].unique():
        a = acc[acc.dataset == ds]
        groups = [
            (arch, priv) for arch in a["arch"].unique() for priv in privacy_order_np_first(a[a.arch == arch]["privacy"])
        ]
        a = a.assign(group=[f"{r.arch}|{r.privacy}" for r in a.itertuples()])
        s = size[size.dataset == ds]
        archs = list(s["arch"].unique())
        fig, axes = plots.figure(1, 2, gridspec_kw={"width_ratios": [max(len(groups), 2), max(len(archs), 1) + 0.6]})
        ax1, ax2 = axes[0]
        handles, top = plots.grouped_bars(
            ax1,
            a,
            "group",
            [f"{g[0]}|{g[1]}" for g in groups],
            "precision",
            ["float", "int8"],
            {"float": plots.BLUE, "int8": plots.GREEN},
            hatches={"int8": "///"},
            group_labels=[f"{arch}\n{priv}" for arch, priv in groups],
            hue_labels={"float": "float32", "int8": "int8 (static PTQ)"},
        )
        ax1.set_ylim(0, min(max(top * 1.12, 10), 112))
        ax1.set_ylabel("clean test accuracy (%)")
        ax1.set_title("Clean accuracy (higher is better)")
        _, stop = plots.grouped_bars(
            ax2,
            s,
            "arch",
            archs,
            "precision",
            ["float", "int8"],
            {"float": plots.BLUE, "int8": plots.GREEN},
            hatches={"int8": "///"},
            fmt=lambda v: f"{v:.3g}",
        )
        for k, arch in enumerate(archs):
            r = reduction[(reduction.dataset == ds) & (reduction.arch == arch)]
            if len(r):
                ax2.annotate(
                    f"int8: −{r['mean'].iloc[0]:.1f}%",
                    (k, stop * 1.12),
                    ha="center",
                    fontsize=9,
                    fontweight="bold",
                    color=plots.GREEN,
                )
        ax2.set_ylim(0, stop * 1.3)
        ax2.set_ylabel("model size (MB)")
        ax2.set_title("Model size (lower is better)")
        fig.suptitle(
            f"Float vs int8 — {ds}, {', '.join(a['arch'].unique())}; "
            f"{'trained without a threat' if not rep.messages else 'all threat settings'}"
        )
        plots.legend_below(fig, handles, ["float32", "int8 (static PTQ)"], ns=a["n"])
        rep.figures += plots.save(fig, out_dir, _stem("overview", ds))[:1]
    rep.write(out_dir)
    return rep


# --- (b) transfer attacks -------------------------------------------------------------------


def transfer(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """Robust accuracy per generator x target and attack, per epsilon (paper Fig. 2 and 3)."""
    rep = Report(
        "transfer",
        "Transfer attacks: robust accuracy per generator × target",
        "Paper Fig. 2 (ε=7.0) and Fig. 3 (ε=1.7): examples generated on the non-private or the DP "
        "float model (white-box on it), evaluated on both float models and their int8 versions. "
        "Higher is better.",
    )
    trials = dedupe_trials(trials)
    private = trials[trials["private"]]
    if private.empty:
        rep.messages.append(
            "transfer figure: needs private trials (epsilon set; each trains its non-private twin); this sweep has none"
        )
        rep.write(out_dir)
        return rep
    base = private[private["threat"] == "none"]
    if base.empty:
        rep.messages.append(
            "transfer figure: no private trials with threat none (inference-time attacks on "
            "models trained without a training-time threat); this sweep has none"
        )
        rep.write(out_dir)
        return rep
    attacks = present_attacks(base, "acc_transfer_{a}_dp_to_dp_mean")
    rep.messages += [
        f"transfer figure: no {a} results (not in the trials' eval_attacks)" for a in ATTACKS if a not in attacks
    ]
    if not attacks:
        rep.write(out_dir)
        return rep
    rows = []
    for a in attacks:
        for g in GENERATORS:
            for t in TARGETS:
                col = f"acc_transfer_{a.lower()}_{g}_to_{t}_mean"
                rows.append(base.assign(attack_eval=a, generator=g, target=t, **metric_values(base, col)))
    long = pd.concat(rows, ignore_index=True)
    data = summarize(long, ["dataset", "arch", "epsilon", "attack_eval", "generator", "target"])
    data = data.rename(columns={"attack_eval": "attack"})
    rep.data = data
    rep.notes.append(
        "white-box cells: non-private → non-private (float) and DP → DP (float); int8 targets are "
        "always transfer targets (no gradients)"
    )
    rep.notes.append(f"trials trained without a threat (threat none): {len(base)} of {len(private)} private trials")
    note = pooled_note(base, ["dataset", "arch", "epsilon"])
    if note:
        rep.notes.append(note)

    table = (
        data.assign(cell=_ci_cols(data))
        .pivot_table(
            index=["dataset", "arch", "epsilon", "attack", "generator", "n"],
            columns="target",
            values="cell",
            aggfunc="first",
            sort=False,
        )
        .reset_index()
    )
    table = table[
        ["dataset", "arch", "epsilon", "attack", "generator", *[t for t in TARGETS if t in table.columns], "n"]
    ].rename(columns={t: f"→ {TARGET_LABELS[t]} (%)" for t in TARGETS})
    table["epsilon"] = table["epsilon"].map(lambda e: f"{e:g}")
    table["_a"] = table["attack"].map(ATTACKS.index)
    table = table.sort_values(["dataset", "arch", "epsilon", "_a"], kind="stable").drop(columns="_a")
    rep.tables.append(Table("Robust accuracy (%) under transfer attacks, generator (rows) × target (columns)", table))

    for ds, arch in _facets(data):
        d = data[(data.dataset == ds) & (data.arch == arch)]
        eps = sorted(d["epsilon"].unique())
        fig, axes = plots.figure(len(eps), len(attacks), panel=(4.4, 3.0), sharey=True)
        handles = []
        for r, e in enumerate(eps):
            for c, a in enumerate(attacks):
                ax = axes[r][c]
                cell = d[(d.epsilon == e) & (d.attack == a)]
                h, _ = plots.grouped_bars(
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
                handles = handles if len(handles) >= len(h) else h
                for i, g in enumerate(GENERATORS):  # mark the white-box cells
                    wb = cell[(cell.generator == g) & (cell.target == g)]
                    if len(wb) and np.isfinite(wb["mean"].iloc[0]) and wb["mean"].iloc[0] > 6:
                        x = i - 0.4 + 0.2 * (TARGETS.index(g) + 0.5)
                        ax.text(x, 1.5, "WB", ha="center", va="bottom", fontsize=6.5, color="white", fontweight="bold")
                ax.set_title(f"{a}, DP model at ε={e:g}")
                ax.set_ylim(0, 108)
                if c == 0:
                    ax.set_ylabel("robust accuracy (%)")
        fig.suptitle(
            f"Transfer attacks: robust accuracy by generator and target — {ds}, {arch} "
            "(higher is better; WB = white-box)"
        )
        plots.legend_below(fig, handles, ns=d["n"], title="target: the model the examples are evaluated on")
        rep.figures += plots.save(fig, out_dir, _stem("transfer", ds, arch))[:1]
    rep.write(out_dir)
    return rep


# --- (c) adversarial training -----------------------------------------------------------------


def _by_fraction(table: pd.DataFrame, index: list[str], header: str) -> pd.DataFrame:
    """``cell`` strings pivoted to one column per adversarial fraction, in increasing order."""
    wide = table.pivot_table(
        index=index, columns="adv_fraction", values="cell", aggfunc="first", sort=False
    ).reset_index()
    fracs = sorted(c for c in wide.columns if c not in index)
    wide = wide[[*index, *fracs]].fillna("–")
    wide.columns = [*index, *[header.format(f) for f in fracs]]
    return wide


def _baseline_note(rep: Report, base: pd.DataFrame, what: str) -> None:
    if base.empty:
        rep.notes.append(f"no trials with threat none: no adversarial fraction 0 baseline for {what}")
    else:
        rep.notes.append(f"adversarial fraction 0 = trials trained without a threat (threat none), {what}")


def _by_attack_lines(
    rep: Report,
    data: pd.DataFrame,
    rows: Sequence[tuple[str, str]],
    attacks: Sequence[str],
    out_dir: Path | None,
    stem: str,
    title: Callable[[str, str], str],
    xlabel: str,
    zero_label: str,
) -> None:
    """Figures with one panel per (row metric, attack): value vs adversarial fraction, a line per privacy."""
    for ds, arch in _facets(data):
        d = data[(data.dataset == ds) & (data.arch == arch)]
        cols = [a for a in attacks if (d.attack == a).any()]
        if not cols:
            continue
        order = privacy_order_np_first(d["privacy"])
        colors = plots.privacy_colors(privacy_order(d["privacy"]))
        fig, axes = plots.figure(len(rows), len(cols), panel=(4.2, 3.0), sharex=True)
        handles = {}
        for r, (metric, ylabel) in enumerate(rows):
            for c, a in enumerate(cols):
                ax = axes[r][c]
                cell = d[(d.attack == a) & (d.metric == metric)]
                for h in plots.lines_ci(ax, cell, "adv_fraction", "privacy", order, colors):
                    handles.setdefault(h.get_label(), h)
                fracs = sorted(d["adv_fraction"].unique())
                ax.set_xticks(fracs, [f"{f:.0%}" if f else f"0\n({zero_label})" for f in fracs])
                ax.set_title(f"{metric_title(metric, a)}")
                ax.set_ylabel(ylabel)
                ax.grid(True, axis="both", alpha=0.3)
                if metric == "accuracy_loss":
                    ax.axhline(0, color="#999999", linewidth=0.8)
                else:  # accuracies: a CI cannot make them negative or above 100
                    lo, hi = ax.get_ylim()
                    ax.set_ylim(max(lo, 0), min(hi, 102))
                if r == len(rows) - 1:
                    ax.set_xlabel(xlabel)
        fig.suptitle(title(ds, arch))
        plots.legend_below(fig, list(handles.values()), list(handles), ns=d["n"], ncol=len(handles))
        rep.figures += plots.save(fig, out_dir, _stem(stem, ds, arch))[:1]


def metric_title(metric: str, attack: str) -> str:
    return {
        "accuracy_loss": f"trained and attacked with {attack}",
        "clean": f"attacker uses {attack}: clean accuracy",
        "robust": f"attacker uses {attack}: robust acc. ({attack}, white-box)",
    }[metric]


def _threat_split(rep: Report, trials: pd.DataFrame, threat: str, what: str, verb: str):
    """(trials under ``threat`` with adv_fraction > 0, the no-threat baseline, attacks used), or
    None with a message naming what the sweep lacks."""
    trials = dedupe_trials(trials)
    under = trials[(trials["threat"] == threat) & (trials["adv_fraction"] > 0)]
    if under.empty:
        rep.messages.append(f"{what}: needs adv_fraction > 0 and threat {threat}; this sweep has none")
        return None
    used = [a for a in ATTACKS if (under["attack"] == a).any()]
    rep.messages += [f"{what}: no trials {verb} {a}" for a in ATTACKS if a not in used]
    return under, trials[trials["threat"] == "none"], used


LOSS_NOTE = (
    "accuracy loss = clean accuracy on the attacked images (acc_clean_eval_<target>) − robust accuracy "
    "on the same images"
)
LOSS_FALLBACK_NOTE = (
    "accuracy loss: some trials (runs older than acc_clean_eval_<target>) record no clean accuracy "
    "on the attacked images; for them it is clean accuracy on the whole test split − robust accuracy "
    "on the attacked subset, two different image sets"
)


def accuracy_loss(models: pd.DataFrame, attack: str, int8: bool = False) -> tuple[pd.Series, bool]:
    """Points lost to white-box ``attack`` (lower case) by each model row, clean and robust accuracy on the
    same images where recorded (``frames.loss_reference``); and whether any row fell back to the whole split."""
    clean, fell_back = loss_reference(models, int8)
    return 100 * (clean - _col(models, f"robust_{attack}{'_int8' if int8 else ''}")), fell_back


def adv_training(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """Accuracy lost to an attack vs adversarial fraction, per attack and privacy setting; training
    time per attack (paper Fig. 4, §4.4)."""
    rep = Report(
        "adv_training",
        "Adversarial training: accuracy loss and training-time cost",
        "Paper Fig. 4 and §4.4: accuracy loss = clean accuracy − accuracy under the attack the model was "
        "adversarially trained with, white-box on each model (lower is better); PGD costs up to 8× the "
        "training time of FGSM at 40% adversarial data, FAB ×20.",
    )
    split = _threat_split(rep, trials, "adv_training", "adversarial training", "adversarially trained with")
    if split is None:
        rep.write(out_dir)
        return rep
    adv, base, trained = split
    lower = [a.lower() for a in ATTACKS]
    rows, whole_split = [], False
    adv_models, base_models = model_rows(adv, lower), model_rows(base, lower)
    for a in trained:
        m = adv_models[adv_models["attack"] == a]
        if m[f"robust_{a.lower()}"].isna().all():
            rep.messages.append(
                f"adversarial training: attack {a} was used in training but not evaluated "
                "at inference (eval_attacks); no accuracy loss for it"
            )
            continue
        parts = [(m, {})] + ([(base_models, {"attack": a, "adv_fraction": 0.0})] if len(base_models) else [])
        for frame, fixed in parts:
            loss, fell_back = accuracy_loss(frame, a.lower())
            rows.append(frame.assign(value=loss, **fixed))
            whole_split |= fell_back
    _baseline_note(rep, base, "under the same attack")
    rep.notes.append(LOSS_FALLBACK_NOTE if whole_split else LOSS_NOTE)
    if rows:
        long = pd.concat(rows, ignore_index=True)
        data = summarize(long, ["dataset", "arch", "attack", "privacy", "adv_fraction"])
        rep.data = data.assign(metric="accuracy_loss")
        note = pooled_note(adv, ["dataset", "arch", "attack", "adv_fraction"])
        if note:
            rep.notes.append(note)
        table = _by_fraction(
            data.assign(cell=_ci_cols(data)), ["dataset", "arch", "attack", "privacy"], "{:.0%} adv. (points)"
        )
        table["_o"] = [privacy_order_np_first(table["privacy"]).index(p) for p in table["privacy"]]
        table = table.sort_values(["dataset", "arch", "attack", "_o"], kind="stable").drop(columns="_o")
        rep.tables.append(
            Table(
                "Accuracy loss (percentage points: clean − under attack), by adversarial fraction; "
                "0% = no adversarial training",
                table,
            )
        )
        _by_attack_lines(
            rep,
            rep.data,
            [("accuracy_loss", "accuracy loss (points)")],
            trained,
            out_dir,
            "adv_training",
            lambda ds, arch: (
                f"Adversarial training: accuracy lost to a white-box attack "
                f"vs adversarial fraction — {ds}, {arch} (lower is better)"
            ),
            "share of the training data replaced by adversarial examples",
            "no adv. training",
        )

    # training time of the trial's own model (DP-SGD for private trials), per privacy setting
    timed = pd.concat([adv, base.assign(attack="none", adv_fraction=0.0)], ignore_index=True)
    tkey = ["dataset", "arch", "privacy", "attack", "adv_fraction"]
    time = summarize(timed.assign(value=_col(timed, "time_train_s")), tkey)
    gen = summarize(timed.assign(value=_col(timed, "time_adv_gen_s")), tkey)
    time = time.merge(gen[[*tkey, "mean"]].rename(columns={"mean": "adv_gen_mean"}), how="left", on=tkey)
    ref = time[time.attack == "none"][["dataset", "arch", "privacy", "mean"]].rename(columns={"mean": "ref"})
    time = time.merge(ref, how="left", on=["dataset", "arch", "privacy"])
    time["ratio_vs_no_threat"] = time["mean"] / time["ref"]
    time = time.drop(columns="ref")
    rep.extra["time_train_s"] = time
    rep.notes.append(
        "training time: wall seconds to train the trial's own model (time_train_s; DP-SGD for a "
        "private trial), including generating its adversarial data (time_adv_gen_s, shaded); "
        "× = ratio to the same privacy setting trained without a threat"
    )
    ttable = time.assign(
        **{
            "training time (s)": _ci_cols(time),
            "of which adv. generation (s)": time["adv_gen_mean"].map(lambda v: f"{v:.1f}" if np.isfinite(v) else "–"),
            "× no threat": time["ratio_vs_no_threat"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "–"),
        }
    )
    ttable["adv_fraction"] = ttable["adv_fraction"].map(lambda f: f"{f:.0%}")
    ttable["_o"] = [privacy_order_np_first(ttable["privacy"]).index(p) for p in ttable["privacy"]]
    ttable["_a"] = [(["none", *ATTACKS]).index(a) for a in ttable["attack"]]
    ttable = ttable.sort_values(["dataset", "arch", "_o", "_a", "adv_fraction"], kind="stable")
    rep.tables.append(
        Table(
            "Training time per attack and adversarial fraction (attack none = no threat)",
            ttable[
                [
                    "dataset",
                    "arch",
                    "privacy",
                    "attack",
                    "adv_fraction",
                    "training time (s)",
                    "of which adv. generation (s)",
                    "× no threat",
                    "n",
                ]
            ],
        )
    )
    for ds, arch in _facets(time):
        t = time[(time.dataset == ds) & (time.arch == arch)]
        privs = [p for p in privacy_order_np_first(t["privacy"]) if ((t.privacy == p) & (t.attack != "none")).any()]
        fig, axes = plots.figure(1, len(privs), panel=(5.0, 3.4), sharey=True)
        handles, tops = [], []
        for k, priv in enumerate(privs):
            ax = axes[0][k]
            cell = t[(t.privacy == priv) & (t.attack != "none")]
            fracs = sorted(cell["adv_fraction"].unique())
            atk = [a for a in ATTACKS if (cell.attack == a).any()]
            h, top = plots.grouped_bars(
                ax,
                cell,
                "adv_fraction",
                fracs,
                "attack",
                atk,
                plots.ATTACK_COLORS,
                group_labels=[f"{f:.0%}" for f in fracs],
                fmt=lambda v: f"{v:.1f}s",
            )
            handles = handles if len(handles) >= len(h) else h
            for j, a in enumerate(atk):  # the adversarial-generation share, darker inside each bar
                for i, f in enumerate(fracs):
                    row = cell[(cell.attack == a) & (cell.adv_fraction == f)]
                    if len(row) and np.isfinite(row["adv_gen_mean"].iloc[0]):
                        x = i - 0.4 + 0.8 / len(atk) * (j + 0.5)
                        ax.bar(x, row["adv_gen_mean"].iloc[0], 0.8 / len(atk) * 0.92, color="black", alpha=0.3)
            ref = t[(t.privacy == priv) & (t.attack == "none")]
            title = f"{priv} ({'DP-SGD' if priv != 'non-private' else 'SGD'})"
            if len(ref):
                ax.axhline(ref["mean"].iloc[0], color=plots.GREY, linestyle="--", linewidth=1.2)
                top = max(top, ref["mean"].iloc[0])
                title += f"; no threat: {ref['mean'].iloc[0]:.1f}s"
            tops.append(top)
            ax.set_title(title)
            ax.set_xlabel("adversarial share of the training data")
            if k == 0:
                ax.set_ylabel("training time (s)")
        for k in range(len(privs)):
            axes[0][k].set_ylim(0, max(tops) * 1.18)
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = handles + [
            Patch(color="black", alpha=0.3, label="of which: generating adversarial data"),
            Line2D([], [], color=plots.GREY, linestyle="--", label="trained without a threat"),
        ]
        fig.suptitle(f"Adversarial training: time to train the model, per attack — {ds}, {arch}")
        plots.legend_below(fig, handles, [h.get_label() for h in handles], ns=t[t.attack != "none"]["n"])
        rep.figures += plots.save(fig, out_dir, _stem("adv_training_time", ds, arch))[:1]
    rep.write(out_dir)
    return rep


# --- (d) train-time attacker ---------------------------------------------------------------------


def train_time(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """Clean and robust accuracy vs the adversary's share of the training data, DP vs non-private
    (paper Fig. 5)."""
    rep = Report(
        "train_time",
        "Train-time attacker: accuracy vs the adversary's share of the training data",
        "Paper Fig. 5 and §4.5: the adversary replaces its data with adversarial examples labelled with the "
        "model's own predictions. Higher is better; DP-SGD limits the damage even at 40%.",
    )
    split = _threat_split(rep, trials, "train_time_attack", "train-time attacker", "whose adversary uses")
    if split is None:
        rep.write(out_dir)
        return rep
    tta, base, used = split
    lower = [a.lower() for a in ATTACKS]
    tm, bm = model_rows(tta, lower), model_rows(base, lower)
    rows = []
    for a in used:
        m = tm[tm["attack"] == a]
        parts = [(m, a)] + ([(bm.assign(attack=a, adv_fraction=0.0), a)] if len(bm) else [])
        for frame, _ in parts:
            rows.append(frame.assign(metric="clean", **model_values(frame, "acc_float")))
            if frame[f"robust_{a.lower()}"].notna().any():
                rows.append(frame.assign(metric="robust", **model_values(frame, f"robust_{a.lower()}")))
        if m[f"robust_{a.lower()}"].isna().all():
            rep.messages.append(
                f"train-time attacker: attack {a} was not evaluated at inference (eval_attacks); "
                "only clean accuracy is shown for it"
            )
    _baseline_note(rep, base, "no poisoning")
    long = pd.concat(rows, ignore_index=True)
    data = summarize(long, ["dataset", "arch", "attack", "metric", "privacy", "adv_fraction"])
    rep.data = data
    note = pooled_note(tta, ["dataset", "arch", "attack", "adv_fraction"])
    if note:
        rep.notes.append(note)
    table = data.assign(cell=_ci_cols(data))
    table["metric"] = table["metric"].map({"clean": "clean", "robust": "robust (same attack, white-box)"})
    table = _by_fraction(table, ["dataset", "arch", "attack", "metric", "privacy"], "{:.0%} adversary (%)")
    table["_o"] = [privacy_order_np_first(table["privacy"]).index(p) for p in table["privacy"]]
    table = table.sort_values(["dataset", "arch", "attack", "metric", "_o"], kind="stable").drop(columns="_o")
    rep.tables.append(
        Table(
            "Accuracy (%) of the model trained under a train-time attacker, by the adversary's share; 0% = no attacker",
            table,
        )
    )
    metrics = [("clean", "clean accuracy (%)")]
    if (data.metric == "robust").any():
        metrics.append(("robust", "robust accuracy (%)"))
    _by_attack_lines(
        rep,
        data,
        metrics,
        used,
        out_dir,
        "train_time",
        lambda ds, arch: f"Train-time attacker: accuracy vs adversary's share — {ds}, {arch} (higher is better)",
        "adversary's share of the training data",
        "no attacker",
    )
    rep.write(out_dir)
    return rep


# --- (e) Pareto front across epsilon --------------------------------------------------------------


def pareto(trials: pd.DataFrame, out_dir: Path | None = None, attack: str = "PGD") -> Report:
    """Privacy (epsilon, lower is better), utility (clean accuracy) and robustness (white-box accuracy
    under ``attack``) of every configuration; the 3-objective Pareto set and each epsilon's front."""
    rep = Report(
        "pareto",
        "Beyond the paper: privacy-utility-robustness Pareto front across ε",
        "Each point is one configuration (mean over seeds; non-private twins are ε = ∞). A configuration "
        "is Pareto-optimal when no other has lower ε, higher clean and higher robust accuracy at once.",
    )
    trials = dedupe_trials(trials)
    available = present_attacks(trials, "acc_wb_{a}_mean")
    if not available:
        rep.messages.append("Pareto front: no white-box attack results in this sweep")
        rep.write(out_dir)
        return rep
    if attack.upper() not in available:
        rep.messages.append(
            f"Pareto front: no trials with attack {attack.upper()}; robustness is measured with {available[0]} instead"
        )
        attack = available[0]
    a = attack.upper()
    models = model_rows(trials, [a.lower()])
    key = [c for c in setting_columns(trials) if c not in PRIVACY_ONLY and c != "seed"] + ["privacy"]
    rows = []
    for k, group in models.groupby(key, dropna=False, sort=False):
        clean = summarize(group.assign(**model_values(group, "acc_float"), _=0), ["_"]).iloc[0]
        robust = summarize(group.assign(**model_values(group, f"robust_{a.lower()}"), _=0), ["_"])
        rrow = robust.iloc[0] if len(robust) else pd.Series({"mean": np.nan, "ci95": np.nan, "n": 0})
        rows.append(
            {
                **dict(zip(key, k)),
                "epsilon": group["epsilon"].iloc[0],
                "clean_mean": clean["mean"],
                "clean_ci95": clean["ci95"],
                "robust_mean": rrow["mean"],
                "robust_ci95": rrow["ci95"],
                "n": int(clean["n"]),
                "clean_cell": _cell(clean),
                "robust_cell": _cell(rrow),
            }
        )
    data = pd.DataFrame(rows)
    data["epsilon"] = data["epsilon"].astype(float).fillna(math.inf)
    data["pareto"] = False
    data["front_at_eps"] = False
    for ds in data["dataset"].unique():
        idx = data.index[data.dataset == ds]
        sub = data.loc[idx]
        data.loc[idx, "pareto"] = pareto_mask(
            sub[["epsilon", "clean_mean", "robust_mean"]].to_numpy(), [False, True, True]
        )
        for priv in sub["privacy"].unique():
            pidx = sub.index[sub.privacy == priv]
            data.loc[pidx, "front_at_eps"] = pareto_mask(
                data.loc[pidx, ["clean_mean", "robust_mean"]].to_numpy(), [True, True]
            )
    # number the Pareto-optimal configurations per dataset: most private first, then by clean accuracy
    data["rank"] = 0
    for ds in data["dataset"].unique():
        on = data[(data.dataset == ds) & data.pareto].sort_values(["epsilon", "clean_mean"], ascending=[True, False])
        data.loc[on.index, "rank"] = range(1, len(on) + 1)
    rep.data = data
    first = ["threat", "attack", "adv_fraction", "arch"]
    varied = [
        c
        for c in first + [c for c in key if c not in first]
        if c in key and c not in ("dataset", "privacy") and data[c].nunique(dropna=False) > 1
    ]
    rep.notes.append(
        f"robustness = white-box {a} accuracy of the float model; configurations differ in: "
        f"{', '.join(varied) or 'privacy only'}"
    )
    data["config"] = [config_label(r, varied) for _, r in data.iterrows()]
    front = data[data["pareto"]].sort_values(["dataset", "rank"])
    rep.tables.append(
        Table(
            f"Pareto set (lower ε, higher clean accuracy, higher {a} robust accuracy)",
            pd.DataFrame(
                {
                    "#": front["rank"],
                    "dataset": front["dataset"],
                    "privacy": front["privacy"],
                    "configuration": front["config"],
                    "clean acc (%)": front["clean_cell"],
                    f"{a} robust acc (%)": front["robust_cell"],
                    "n": front["n"],
                }
            ),
        )
    )
    best = []
    for (ds, priv), g in data.groupby(["dataset", "privacy"], sort=False):
        c, r = (
            g.loc[g["clean_mean"].idxmax()],
            g.loc[g["robust_mean"].idxmax()] if g["robust_mean"].notna().any() else None,
        )
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
    best = pd.DataFrame(best).sort_values(["dataset", "epsilon"]).drop(columns="epsilon")
    rep.tables.append(Table("Best configuration at each privacy level", best))

    for ds in data["dataset"].unique():
        d = data[data.dataset == ds]
        order = privacy_order(d["privacy"])
        colors = plots.privacy_colors(order)
        archs = list(d["arch"].unique())
        markers = dict(zip(archs, ["o", "s", "^", "D"]))
        fig, axes = plots.figure(1, 2, panel=(5.6, 4.2), gridspec_kw={"width_ratios": [1.5, 1]})
        ax, ax2 = axes[0]
        for priv in order:
            p = d[d.privacy == priv]
            for arch in archs:
                q = p[p.arch == arch]
                if q.empty:
                    continue
                xerr = np.where((q.n >= 2) & np.isfinite(q.clean_ci95), q.clean_ci95, 0)
                yerr = np.where((q.n >= 2) & np.isfinite(q.robust_ci95), q.robust_ci95, 0)
                ax.errorbar(
                    q.clean_mean,
                    q.robust_mean,
                    xerr=xerr,
                    yerr=yerr,
                    fmt=markers[arch],
                    color=colors[priv],
                    ecolor=colors[priv],
                    elinewidth=0.8,
                    capsize=2,
                    markersize=7,
                    alpha=0.9,
                )
                on = q[q.pareto]
                ax.scatter(
                    on.clean_mean,
                    on.robust_mean,
                    s=110,
                    facecolors="none",
                    edgecolors="black",
                    linewidths=1.4,
                    zorder=5,
                )
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
        handles = [plt_line(colors[p], "o", p) for p in order]
        handles += [plt_line("#555555", markers[arch], arch, line=False) for arch in archs] if len(archs) > 1 else []
        handles.append(plt_ring())
        numbered = d[d.pareto].sort_values("rank")
        handles += [plt_line("black", f"${r.rank}$", f"{r.privacy}: {r.config}") for r in numbered.itertuples()]
        # right: the best any configuration reaches at each privacy level
        xs = np.arange(len(order))
        for shift, (metric, color, name) in zip(
            (-0.04, 0.04),
            (("clean", plots.BLUE, "best clean accuracy"), ("robust", plots.RED, f"best robust accuracy ({a})")),
        ):
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
            ax2.errorbar(xs + shift, ys, yerr=es, color=color, marker="o", capsize=3, linewidth=1.5, label=name)
        ax2.set_xticks(xs, [p.replace("DP ", "") for p in order])
        ax2.set_xlabel("privacy budget (lower ε = more private)")
        ax2.set_ylabel("accuracy (%)")
        ax2.set_ylim(0, 119)  # room for the legend above the 100% line
        ax2.set_yticks(range(0, 101, 20))
        ax2.grid(True, axis="both", alpha=0.3)
        ax2.set_title("Best configuration per privacy level")
        ax2.legend(loc="upper center", ncol=2, frameon=False)
        fig.suptitle(f"Privacy-utility-robustness trade-off — {ds}, {', '.join(archs)}")
        plots.legend_below(
            fig, handles, [h.get_label() for h in handles], ns=d["n"], ncol=min(len(handles), 4 if len(numbered) else 6)
        )
        rep.figures += plots.save(fig, out_dir, _stem("pareto", ds))[:1]
    rep.write(out_dir)
    return rep


def config_label(row, cols: Sequence[str]) -> str:
    """'adversarial training, FGSM 20%, resnet9': the settings in ``cols`` that tell configurations apart."""
    parts = []
    for c in cols:
        v = row[c]
        if c == "threat":
            parts.append(THREAT_LABELS.get(v, str(v)))
        elif c in ("adv_fraction", "attack") and row.get("threat") == "none":
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


# --- (f) the paper's claims -------------------------------------------------------------------------------


def claims(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The paper's checkable claims: measured effect, 95% CI over seeds (paired by seed) and a verdict
    (``analysis.claims``); a claim whose trials the sweep lacks says what it needs."""
    rep = Report(
        "claims",
        "Paper claims: measured effect, 95% CI over seeds and verdict",
        "Paper §4.2–4.5. Each effect is the mean over seeds of a paired, per-seed difference (or ratio).",
    )
    table = claims_table(trials)
    rep.data = table
    rep.notes.append(RULE)
    rep.notes += measures()
    rep.tables.append(Table("The paper's claims on this sweep", format_claims(table)))
    rep.figures += plot_claims(table, out_dir, "claims_effects")[:1]
    rep.write(out_dir)
    return rep


REPORTS: dict[str, Callable[..., Report]] = {
    "overview": overview,
    "transfer": transfer,
    "adv_training": adv_training,
    "train_time": train_time,
    "pareto": pareto,
    "claims": claims,
}
