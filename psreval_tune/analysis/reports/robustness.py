"""(e) Robust aggregation: clean accuracy, robust accuracy and a backdoor's attack success rate vs the number
of adversaries, per aggregation rule and threat, DP and non-private.

The x axis is the number of malicious clients (``num_malicious``; 0 for a threat of kind none, whatever the
field says). Every point is compared with the same aggregator's no-attack baseline and with the reference
aggregator (the first non-robust rule of the registry: fedavg) under the same attack. Aggregators and threats,
their order and metadata (``kind``, ``asr``, ``needs_fraction``) come from the registries, read when the
report runs (they import torch): a new rule or threat appears here without an edit.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from .. import plots
from ..frames import col, dedupe_trials, interval, metric_values
from ..metrics import ci_high, ci_low
from ..stats import summarize
from .base import Report, Table, ci_cols, facets, pooled_note, present_attacks, stem, threat_label

AXES = ("aggregation", "num_malicious")  # the federation's config fields this report needs
KEY = ["dataset", "arch", "privacy", "aggregator", "threat", "adversaries"]
ASR = "asr_float"
VERDICT_NOTE = (
    "verdicts: **exceeds CI** = the two 95% intervals do not overlap (the difference is larger than their "
    "combined half-widths); **within CI** = they overlap; **no CI** = a single seed without an interval over "
    "images; – = nothing to compare with"
)


def registry_view() -> dict:
    """What the report reads from the aggregator and threat registries (imported here, when it runs)."""
    from ...aggregators import AGGREGATORS
    from ...threats import THREATS

    plain = [e.name for e in AGGREGATORS if not e.meta.get("robust", True)]
    return {
        "aggregators": AGGREGATORS.names(),
        "reference": (plain or list(AGGREGATORS.names()) or [None])[0],
        "threats": THREATS.names(),
        "baseline": {e.name for e in THREATS if e.meta.get("kind") == "none"},
        "by_fraction": {e.name for e in THREATS if e.meta.get("needs_fraction")},
        "asr": {e.name for e in THREATS if "asr" in e.meta},
    }


def in_order(present, order) -> list:
    """The distinct values of ``present`` in registry ``order``; names the registry lacks last, sorted."""
    have = set(present)
    return [n for n in order if n in have] + sorted(str(n) for n in have if n not in set(order))


def dp_modes() -> tuple[str, ...]:
    from ... import config

    return tuple(config.DP_MODES)


def privacy_labels(trials: pd.DataFrame) -> list[str]:
    """'non-private', or 'DP ε=3.4 (sample)' / 'DP ε=3.4 (client)' (sample-level DP-SGD or DP-FedAvg)."""
    modes = trials["dp_mode"] if "dp_mode" in trials.columns else pd.Series(np.nan, index=trials.index)
    modes = modes.where(modes.notna(), dp_modes()[0])
    return [
        f"DP ε={e:g} ({m})" if private else "non-private"
        for private, e, m in zip(trials["private"], trials["epsilon"], modes)
    ]


def privacy_rank(label: str) -> tuple:
    """Sort key: non-private first, then by ε, sample-level before client-level at one ε."""
    found = re.fullmatch(r"DP ε=(\S+) \((\w+)\)", str(label))
    if not found:
        return (0, 0.0, 0)
    modes = dp_modes()
    mode = found.group(2)
    return (1, float(found.group(1)), modes.index(mode) if mode in modes else len(modes))


def privacy_slug(label: str) -> str:
    """'nonprivate', 'dp3.4_sample': a privacy label as a file-name part."""
    found = re.fullmatch(r"DP ε=(\S+) \((\w+)\)", str(label))
    return f"dp{found.group(1)}_{found.group(2)}" if found else "nonprivate"


def prepare(rep: Report, trials: pd.DataFrame, reg: dict) -> pd.DataFrame | None:
    """The trials this report reads, with ``aggregator``, ``adversaries`` and the privacy label; or None
    with a message naming what the sweep lacks."""
    missing = [c for c in AXES if c not in trials.columns or trials[c].isna().all()]
    if missing:
        rep.messages.append(
            f"robustness: needs the federation's {' and '.join(missing)} (config fields of the aggregation "
            "rules and update threats); this sweep's trials do not record them"
        )
        return None
    old = trials[list(AXES)].isna().any(axis=1)
    if old.any():
        rep.notes.append(f"{int(old.sum())} trials without {' or '.join(AXES)} (older runs) are left out")
    trials = trials[~old]
    base = trials["threat"].isin(reg["baseline"])
    trials = dedupe_trials(trials.assign(num_malicious=np.where(base, 0, trials["num_malicious"]).astype(int)))
    if trials["threat"].isin(reg["by_fraction"]).any():
        rep.notes.append(
            "threats whose strength is the adversary's share of the data (registry metadata needs_fraction: "
            f"{', '.join(in_order(reg['by_fraction'], reg['threats']))}) have their own reports, not this one"
        )
    trials = trials[~trials["threat"].isin(reg["by_fraction"])]
    if trials["threat"].isin(reg["baseline"]).all():
        skip = ", ".join(in_order(reg["baseline"] | reg["by_fraction"], reg["threats"]))
        rep.messages.append(
            f"robustness: needs trials under a threat other than {skip} (malicious clients, num_malicious >= 1); "
            "this sweep has none"
        )
        return None
    return trials.assign(
        aggregator=trials["aggregation"].astype(str),
        adversaries=trials["num_malicious"].astype(int),
        privacy=privacy_labels(trials),
    )


def long_rows(rep: Report, trials: pd.DataFrame, reg: dict) -> pd.DataFrame:
    """One row per trial and metric: clean, robust_<ATTACK> (white-box) and asr (backdoor threats), in %."""
    parts = [trials.assign(metric="clean", **metric_values(trials, "acc_clean_float"))]
    for a in present_attacks(trials, "acc_wb_{a}_worst"):
        parts.append(trials.assign(metric=f"robust_{a}", **metric_values(trials, f"acc_wb_{a.lower()}_worst")))
    carriers = trials[trials["threat"].isin(reg["asr"])]
    if len(carriers):
        asr = interval(carriers, ASR, ci_low(ASR), ci_high(ASR), col(carriers, "n_asr").astype(float))
        parts.append(carriers.assign(metric="asr", **asr))
        if ASR not in carriers.columns or carriers[ASR].isna().all():
            rep.messages.append(
                f"robustness: trials under {', '.join(in_order(carriers['threat'], reg['threats']))} record no "
                f"{ASR} (the backdoor's attack success rate); only accuracy is shown for them"
            )
    long = pd.concat(parts, ignore_index=True)
    return long[np.isfinite(long["value"].astype(float))]


def bounds(data: pd.DataFrame) -> pd.DataFrame:
    """``lo``/``hi``: mean ± the t-based 95% CI over seeds; one seed: its Wilson interval over images."""
    over_seeds = (data["n"] >= 2) & np.isfinite(data["ci95"])
    one = data["n"] == 1
    lo = np.where(over_seeds, data["mean"] - data["ci95"], np.where(one, data["img_lo"], np.nan))
    hi = np.where(over_seeds, data["mean"] + data["ci95"], np.where(one, data["img_hi"], np.nan))
    return data.assign(lo=lo.astype(float), hi=hi.astype(float))


def verdict(diff: float, lo: float, hi: float, ref_lo: float, ref_hi: float) -> str:
    if not np.isfinite(diff):
        return "–"
    if not all(np.isfinite(v) for v in (lo, hi, ref_lo, ref_hi)):
        return "no CI"
    return "exceeds CI" if lo > ref_hi or hi < ref_lo else "within CI"


def compare(data: pd.DataFrame, ref: pd.DataFrame, on: list[str], name: str) -> pd.DataFrame:
    """``diff_<name>`` (points: this − the reference row matching on ``on``) and ``vs_<name>`` (verdict)."""
    ref = ref[[*on, "mean", "lo", "hi"]].drop_duplicates(subset=on)
    ref = ref.rename(columns={"mean": "_m", "lo": "_lo", "hi": "_hi"})
    merged = data.merge(ref, how="left", on=on)
    diff = merged["mean"] - merged["_m"]
    rows = zip(diff, merged["lo"], merged["hi"], merged["_lo"], merged["_hi"])
    return data.assign(
        **{f"diff_{name}": diff.to_numpy(), f"vs_{name}": [verdict(*r) for r in rows]},
    )


def robustness_data(long: pd.DataFrame, reg: dict) -> pd.DataFrame:
    """Mean ± CI per (KEY, metric), with the differences to the no-attack baseline and to the reference rule."""
    data = bounds(summarize(long, [*KEY, "metric"]))
    base = data["threat"].isin(reg["baseline"])
    data = compare(data, data[base], ["dataset", "arch", "privacy", "aggregator", "metric"], "no_attack")
    data.loc[base, ["diff_no_attack", "vs_no_attack"]] = [np.nan, "–"]
    ref = data["aggregator"] == reg["reference"]
    data = compare(data, data[ref], ["dataset", "arch", "privacy", "threat", "adversaries", "metric"], "reference")
    data.loc[ref, ["diff_reference", "vs_reference"]] = [np.nan, "–"]
    return sort_rows(data, reg)


def sort_rows(data: pd.DataFrame, reg: dict) -> pd.DataFrame:
    aggs, threats = in_order(data["aggregator"], reg["aggregators"]), in_order(data["threat"], reg["threats"])
    keys = {
        "_p": [privacy_rank(p) for p in data["privacy"]],
        "_a": [aggs.index(a) for a in data["aggregator"]],
        "_t": [threats.index(t) for t in data["threat"]],
    }
    order = data.assign(**keys).sort_values(["dataset", "arch", "_p", "_a", "_t", "adversaries"], kind="stable")
    return order.drop(columns=list(keys)).reset_index(drop=True)


def metric_label(metric: str) -> str:
    if metric == "clean":
        return "clean accuracy (%)"
    if metric == "asr":
        return "attack success rate (%)"
    return f"robust accuracy, {metric.split('_', 1)[1]} white-box (%)"


def robustness_table(data: pd.DataFrame, metric: str, reference: str) -> pd.DataFrame:
    """One row per (privacy, aggregator, threat, adversaries) of ``metric``: mean ± CI, n, the differences."""
    d = data[data["metric"] == metric]
    diff = lambda v: f"{v:+.1f}" if np.isfinite(v) else "–"  # noqa: E731
    return pd.DataFrame(
        {
            "dataset": d["dataset"],
            "arch": d["arch"],
            "privacy": d["privacy"],
            "aggregator": d["aggregator"],
            "threat": d["threat"].map(threat_label),
            "adversaries": d["adversaries"],
            metric_label(metric): ci_cols(d),
            "n": d["n"],
            "Δ vs no attack (points)": d["diff_no_attack"].map(diff),
            "vs no attack": d["vs_no_attack"],
            f"Δ vs {reference} (points)": d["diff_reference"].map(diff),
            f"vs {reference}": d["vs_reference"],
        }
    ).reset_index(drop=True)


def axis_messages(rep: Report, data: pd.DataFrame, reg: dict) -> None:
    """What the sweep lacks for the comparisons: a baseline, the reference rule, a second rule, several counts."""
    aggs = in_order(data["aggregator"], reg["aggregators"])
    if len(aggs) == 1:
        rep.messages.append(f"robustness: one aggregator only ({aggs[0]}); no comparison across aggregation rules")
    if reg["reference"] not in aggs:
        rep.messages.append(f"robustness: no {reg['reference']} trials: no difference to {reg['reference']}")
    if not data["threat"].isin(reg["baseline"]).any():
        rep.messages.append("robustness: no trials with threat none: no difference to the no-attack baseline")
    counts = sorted(data.loc[~data["threat"].isin(reg["baseline"]), "adversaries"].unique())
    if len(counts) == 1:
        rep.messages.append(f"robustness: one number of adversaries only ({counts[0]}): no trend over it")


def robustness_tables(trials: pd.DataFrame) -> Report:
    """Clean accuracy, robust accuracy and attack success rate vs the number of adversaries, per aggregation
    rule and threat, DP and non-private; differences to the no-attack baseline and to the reference rule."""
    rep = Report(
        "robustness",
        "Robust aggregation: accuracy and attack success vs the number of adversaries",
        "Beyond the paper: malicious clients against the aggregation rules. Higher accuracy and lower attack "
        "success rate are better; 0 adversaries = trained without a threat.",
    )
    reg = registry_view()
    trials = prepare(rep, trials, reg)
    if trials is None:
        return rep
    rep.data = robustness_data(long_rows(rep, trials, reg), reg)
    rep.params.update(reference=reg["reference"], registry=reg)
    axis_messages(rep, rep.data, reg)
    rep.note(pooled_note(trials, KEY, skip=["aggregation", "num_malicious", "dp_mode"]))
    rep.notes.append(
        f"cells: mean ± 95% CI (t) over seeds; n = 1: the mean [Wilson 95% interval over that trial's images]; "
        f"Δ vs no attack: minus the same rule without a threat; Δ vs {reg['reference']}: minus "
        f"{reg['reference']} under the same threat and number of adversaries (same privacy)"
    )
    rep.notes.append(VERDICT_NOTE)
    for metric in ["clean", *sorted(m for m in rep.data["metric"].unique() if m.startswith("robust_")), "asr"]:
        if (rep.data["metric"] == metric).any():
            table = robustness_table(rep.data, metric, reg["reference"])
            rep.tables.append(Table(f"{metric_label(metric)[:1].upper()}{metric_label(metric)[1:]}", table))
    return rep


# --- drawing -----------------------------------------------------------------------------------------------


def _panel(ax, cell: pd.DataFrame, reg: dict, threats: list[str], xs: list, handles: dict) -> None:
    """Lines per threat vs adversaries; the rule's no-attack baseline is each line's x = 0 point."""
    base = cell[cell["threat"].isin(reg["baseline"])]
    lines = [cell[cell["threat"] == t] for t in threats if t not in reg["baseline"]]
    lines = [pd.concat([base.assign(threat=ln["threat"].iloc[0]), ln]) if len(base) else ln for ln in lines if len(ln)]
    plot = pd.concat(lines) if lines else base
    colors = {t: plots.GREY if t in reg["baseline"] else plots.palette_color(i) for i, t in enumerate(threats)}
    for h in plots.lines_ci(ax, plot, "adversaries", "threat", threats, colors):
        handles.setdefault(h.get_label(), h)
    if len(base):
        ax.axhline(base["mean"].iloc[0], color=plots.GREY, linestyle="--", linewidth=0.8)
    ax.set_xticks(xs, [str(x) if x else "0\n(no attack)" for x in xs])
    ax.grid(True, axis="both", alpha=0.3)


def _figure(rep: Report, d: pd.DataFrame, title: str, out_dir: Path | None, name: str) -> list[Path]:
    reg = rep.params["registry"]
    aggs = in_order(d["aggregator"], reg["aggregators"])
    threats = in_order(d["threat"], reg["threats"])
    rows = [m for m in ["clean", *sorted(set(d["metric"]) - {"clean", "asr"}), "asr"] if (d["metric"] == m).any()]
    fig, axes = plots.figure(len(rows), len(aggs), panel=(3.6, 2.8), sharex=True, sharey="row")
    handles: dict = {}
    xs = sorted(d["adversaries"].unique())
    for r, metric in enumerate(rows):
        for c, agg in enumerate(aggs):
            ax = axes[r][c]
            cell = d[(d["metric"] == metric) & (d["aggregator"] == agg)]
            if cell.empty:
                ax.set_axis_off()
                continue
            _panel(ax, cell, reg, threats, xs, handles)
            ax.set_title(agg if r == 0 else "")
            ax.set_ylabel(metric_label(metric) if c == 0 else "")
            if r == len(rows) - 1:
                ax.set_xlabel("number of adversaries")
        lo, hi = axes[r][0].get_ylim()  # percentages: a CI cannot take them below 0 or above 100
        axes[r][0].set_ylim(max(lo, 0), min(hi, 102))
    fig.suptitle(title)
    labels = [threat_label(t) for t in handles]
    plots.legend_below(fig, list(handles.values()), labels, ns=d["n"], title="threat (dashed: no attack)")
    return plots.save(fig, out_dir, name)[:1]


def draw_robustness(rep: Report, out_dir: Path | None) -> None:
    """One figure per (dataset, arch, privacy): a panel per aggregator (registry order), a row per metric."""
    if rep.data.empty:
        return
    for ds, arch in facets(rep.data):
        d = rep.data[(rep.data["dataset"] == ds) & (rep.data["arch"] == arch)]
        for priv in sorted(d["privacy"].unique(), key=privacy_rank):
            p = d[d["privacy"] == priv]
            title = f"Aggregation rules vs number of adversaries — {ds}, {arch}, {priv} (accuracy: higher is better)"
            rep.figures += _figure(rep, p, title, out_dir, stem("robustness", ds, arch, privacy_slug(priv)))


def robustness(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The robust-aggregation report's tables (``robustness_tables``) and figures, written into ``out_dir``."""
    rep = robustness_tables(trials)
    draw_robustness(rep, out_dir)
    rep.write(out_dir)
    return rep
