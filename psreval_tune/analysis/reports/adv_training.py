"""(c) Adversarial training: accuracy lost to an attack vs adversarial fraction, and the training time
per attack (paper Fig. 4, §4.4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ...baselines import NO_THREAT
from .. import plots
from ..frames import col as _col
from ..frames import loss_reference, model_rows
from ..stats import summarize
from .base import (
    Report,
    Table,
    attack_names,
    attack_rank,
    ci_cols,
    facets,
    in_attack_order,
    pooled_note,
    privacy_order_np_first,
    sort_np_first,
    stem,
)
from .threats import baseline_note, by_attack_lines, by_fraction, threat_split

LOSS_NOTE = (
    "accuracy loss = clean accuracy on the attacked images (acc_clean_eval_<target>) − robust accuracy "
    "on the same images"
)
LOSS_FALLBACK_NOTE = (
    "accuracy loss: some trials (runs older than acc_clean_eval_<target>) record no clean accuracy "
    "on the attacked images; for them it is clean accuracy on the whole test split − robust accuracy "
    "on the attacked subset, two different image sets"
)
TIME_KEY = ["dataset", "arch", "privacy", "attack", "adv_fraction"]


def accuracy_loss(models: pd.DataFrame, attack: str, int8: bool = False) -> tuple[pd.Series, bool]:
    """Points lost to white-box ``attack`` (lower case) by each model row, clean and robust accuracy on the
    same images where recorded (``frames.loss_reference``); and whether any row fell back to the whole split."""
    clean, fell_back = loss_reference(models, int8)
    return 100 * (clean - _col(models, f"robust_{attack}{'_int8' if int8 else ''}")), fell_back


def _loss_rows(rep: Report, adv: pd.DataFrame, base: pd.DataFrame, trained: list[str]) -> tuple[list, bool]:
    """Per model row: the accuracy lost to the attack it was trained with (baseline rows at fraction 0)."""
    lower = [a.lower() for a in attack_names()]
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
    return rows, whole_split


def _loss_tables(rep: Report, adv: pd.DataFrame, rows: list) -> None:
    long = pd.concat(rows, ignore_index=True)
    data = summarize(long, ["dataset", "arch", "attack", "privacy", "adv_fraction"])
    rep.data = data.assign(metric="accuracy_loss")
    rep.note(pooled_note(adv, ["dataset", "arch", "attack", "adv_fraction"]))
    table = by_fraction(
        data.assign(cell=ci_cols(data)), ["dataset", "arch", "attack", "privacy"], "{:.0%} adv. (points)"
    )
    rep.tables.append(
        Table(
            "Accuracy loss (percentage points: clean − under attack), by adversarial fraction; "
            "0% = no adversarial training",
            sort_np_first(table, ["dataset", "arch", "attack"]),
        )
    )


def time_data(adv: pd.DataFrame, base: pd.DataFrame) -> pd.DataFrame:
    """Training time of the trial's own model (DP-SGD for private trials) per privacy setting, attack and
    fraction; adv_gen_mean (its adversarial generation) and the ratio to the same setting without a threat."""
    timed = pd.concat([adv, base.assign(attack=NO_THREAT, adv_fraction=0.0)], ignore_index=True)
    time = summarize(timed.assign(value=_col(timed, "time_train_s")), TIME_KEY)
    gen = summarize(timed.assign(value=_col(timed, "time_adv_gen_s")), TIME_KEY)
    time = time.merge(gen[[*TIME_KEY, "mean"]].rename(columns={"mean": "adv_gen_mean"}), how="left", on=TIME_KEY)
    ref = time[time.attack == NO_THREAT][["dataset", "arch", "privacy", "mean"]].rename(columns={"mean": "ref"})
    time = time.merge(ref, how="left", on=["dataset", "arch", "privacy"])
    time["ratio_vs_no_threat"] = time["mean"] / time["ref"]
    return time.drop(columns="ref")


def time_table(time: pd.DataFrame) -> pd.DataFrame:
    table = time.assign(
        **{
            "training time (s)": ci_cols(time),
            "of which adv. generation (s)": time["adv_gen_mean"].map(lambda v: f"{v:.1f}" if np.isfinite(v) else "–"),
            "× no threat": time["ratio_vs_no_threat"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "–"),
        }
    )
    table["adv_fraction"] = table["adv_fraction"].map(lambda f: f"{f:.0%}")
    table["_a"] = [-1 if a == NO_THREAT else attack_rank(a) for a in table["attack"]]
    table = sort_np_first(table, ["dataset", "arch"], ["_a", "adv_fraction"])
    columns = [*TIME_KEY, "training time (s)", "of which adv. generation (s)", "× no threat", "n"]
    return table[columns]


def adv_training_tables(trials: pd.DataFrame) -> Report:
    """Accuracy lost to an attack vs adversarial fraction, per attack and privacy setting; training
    time per attack (paper Fig. 4, §4.4)."""
    rep = Report(
        "adv_training",
        "Adversarial training: accuracy loss and training-time cost",
        "Paper Fig. 4 and §4.4: accuracy loss = clean accuracy − accuracy under the attack the model was "
        "adversarially trained with, white-box on each model (lower is better); PGD costs up to 8× the "
        "training time of FGSM at 40% adversarial data, FAB ×20.",
    )
    split = threat_split(rep, trials, "adv_training", "adversarial training", "adversarially trained with")
    if split is None:
        return rep
    adv, base, trained = split
    rep.params["attacks"] = trained
    rows, whole_split = _loss_rows(rep, adv, base, trained)
    baseline_note(rep, base, "under the same attack")
    rep.notes.append(LOSS_FALLBACK_NOTE if whole_split else LOSS_NOTE)
    if rows:
        _loss_tables(rep, adv, rows)
    rep.extra["time_train_s"] = time_data(adv, base)
    rep.notes.append(
        "training time: wall seconds to train the trial's own model (time_train_s; DP-SGD for a "
        "private trial), including generating its adversarial data (time_adv_gen_s, shaded); "
        "× = ratio to the same privacy setting trained without a threat"
    )
    rep.tables.append(
        Table(
            "Training time per attack and adversarial fraction (attack none = no threat)",
            time_table(rep.extra["time_train_s"]),
        )
    )
    return rep


# --- drawing -----------------------------------------------------------------------------------------------


def _time_panel(ax, cell: pd.DataFrame) -> tuple[list, float]:
    """Bars of training time per fraction and attack, the adversarial-generation share darker inside each."""
    fracs = sorted(cell["adv_fraction"].unique())
    atk = in_attack_order(cell["attack"])
    colors = plots.attack_colors()
    handles, top = plots.grouped_bars(
        ax,
        cell,
        "adv_fraction",
        fracs,
        "attack",
        atk,
        colors,
        group_labels=[f"{f:.0%}" for f in fracs],
        fmt=lambda v: f"{v:.1f}s",
    )
    for j, a in enumerate(atk):
        for i, f in enumerate(fracs):
            row = cell[(cell.attack == a) & (cell.adv_fraction == f)]
            if len(row) and np.isfinite(row["adv_gen_mean"].iloc[0]):
                x = i - 0.4 + 0.8 / len(atk) * (j + 0.5)
                ax.bar(x, row["adv_gen_mean"].iloc[0], 0.8 / len(atk) * 0.92, color="black", alpha=0.3)
    ax.set_xlabel("adversarial share of the training data")
    return handles, top


def _reference(ax, ref: pd.DataFrame, priv: str, top: float) -> float:
    """The no-threat training time as a dashed line, and the panel's title; returns the new top."""
    title = f"{priv} ({'DP-SGD' if priv != 'non-private' else 'SGD'})"
    if len(ref):
        ax.axhline(ref["mean"].iloc[0], color=plots.GREY, linestyle="--", linewidth=1.2)
        top = max(top, ref["mean"].iloc[0])
        title += f"; no threat: {ref['mean'].iloc[0]:.1f}s"
    ax.set_title(title)
    return top


def _time_figure(t: pd.DataFrame, ds: str, arch: str, out_dir: Path | None) -> list[Path]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    privs = [p for p in privacy_order_np_first(t["privacy"]) if ((t.privacy == p) & (t.attack != NO_THREAT)).any()]
    fig, axes = plots.figure(1, len(privs), panel=(5.0, 3.4), sharey=True)
    handles, tops = [], []
    for k, priv in enumerate(privs):
        h, top = _time_panel(axes[0][k], t[(t.privacy == priv) & (t.attack != NO_THREAT)])
        handles = handles if len(handles) >= len(h) else h
        tops.append(_reference(axes[0][k], t[(t.privacy == priv) & (t.attack == NO_THREAT)], priv, top))
        if k == 0:
            axes[0][k].set_ylabel("training time (s)")
    for k in range(len(privs)):
        axes[0][k].set_ylim(0, max(tops) * 1.18)
    handles = handles + [
        Patch(color="black", alpha=0.3, label="of which: generating adversarial data"),
        Line2D([], [], color=plots.GREY, linestyle="--", label="trained without a threat"),
    ]
    fig.suptitle(f"Adversarial training: time to train the model, per attack — {ds}, {arch}")
    plots.legend_below(fig, handles, [h.get_label() for h in handles], ns=t[t.attack != NO_THREAT]["n"])
    return plots.save(fig, out_dir, stem("adv_training_time", ds, arch))[:1]


def draw_adv_training(rep: Report, out_dir: Path | None) -> None:
    if not rep.data.empty:
        by_attack_lines(
            rep,
            rep.data,
            [("accuracy_loss", "accuracy loss (points)")],
            out_dir,
            "adv_training",
            lambda ds, arch: (
                f"Adversarial training: accuracy lost to a white-box attack "
                f"vs adversarial fraction — {ds}, {arch} (lower is better)"
            ),
            "share of the training data replaced by adversarial examples",
            "no adv. training",
        )
    time = rep.extra.get("time_train_s")
    if time is not None:
        for ds, arch in facets(time):
            rep.figures += _time_figure(time[(time.dataset == ds) & (time.arch == arch)], ds, arch, out_dir)


def adv_training(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The adversarial-training report's tables (``adv_training_tables``) and figures, written into ``out_dir``."""
    rep = adv_training_tables(trials)
    draw_adv_training(rep, out_dir)
    rep.write(out_dir)
    return rep
