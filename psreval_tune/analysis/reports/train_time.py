"""(d) Train-time attacker: clean and robust accuracy vs the adversary's share of the training data,
DP vs non-private (paper Fig. 5)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..frames import model_rows, model_values
from ..stats import summarize
from .base import Report, Table, attack_names, ci_cols, pooled_note, sort_np_first
from .threats import baseline_note, by_attack_lines, by_fraction, threat_split

METRIC_LABELS = {"clean": "clean", "robust": "robust (same attack, white-box)"}


def _rows(rep: Report, tta: pd.DataFrame, base: pd.DataFrame, used: list[str]) -> list[pd.DataFrame]:
    """Per model row and attack: clean accuracy, and robust accuracy where the attack was evaluated."""
    lower = [a.lower() for a in attack_names()]
    tm, bm = model_rows(tta, lower), model_rows(base, lower)
    rows = []
    for a in used:
        m = tm[tm["attack"] == a]
        parts = [m] + ([bm.assign(attack=a, adv_fraction=0.0)] if len(bm) else [])
        for frame in parts:
            rows.append(frame.assign(metric="clean", **model_values(frame, "acc_float")))
            if frame[f"robust_{a.lower()}"].notna().any():
                rows.append(frame.assign(metric="robust", **model_values(frame, f"robust_{a.lower()}")))
        if m[f"robust_{a.lower()}"].isna().all():
            rep.messages.append(
                f"train-time attacker: attack {a} was not evaluated at inference (eval_attacks); "
                "only clean accuracy is shown for it"
            )
    return rows


def train_time_table(data: pd.DataFrame) -> pd.DataFrame:
    table = data.assign(cell=ci_cols(data))
    table["metric"] = table["metric"].map(METRIC_LABELS)
    table = by_fraction(table, ["dataset", "arch", "attack", "metric", "privacy"], "{:.0%} adversary (%)")
    return sort_np_first(table, ["dataset", "arch", "attack", "metric"])


def train_time_tables(trials: pd.DataFrame) -> Report:
    """Clean and robust accuracy vs the adversary's share of the training data, DP vs non-private
    (paper Fig. 5)."""
    rep = Report(
        "train_time",
        "Train-time attacker: accuracy vs the adversary's share of the training data",
        "Paper Fig. 5 and §4.5: the adversary replaces its data with adversarial examples labelled with the "
        "model's own predictions. Higher is better; DP-SGD limits the damage even at 40%.",
    )
    split = threat_split(rep, trials, "train_time_attack", "train-time attacker", "whose adversary uses")
    if split is None:
        return rep
    tta, base, used = split
    rep.params["attacks"] = used
    rows = _rows(rep, tta, base, used)
    baseline_note(rep, base, "no poisoning")
    rep.data = summarize(
        pd.concat(rows, ignore_index=True), ["dataset", "arch", "attack", "metric", "privacy", "adv_fraction"]
    )
    rep.note(pooled_note(tta, ["dataset", "arch", "attack", "adv_fraction"]))
    rep.tables.append(
        Table(
            "Accuracy (%) of the model trained under a train-time attacker, by the adversary's share; 0% = no attacker",
            train_time_table(rep.data),
        )
    )
    return rep


def draw_train_time(rep: Report, out_dir: Path | None) -> None:
    if rep.data.empty:
        return
    metrics = [("clean", "clean accuracy (%)")]
    if (rep.data.metric == "robust").any():
        metrics.append(("robust", "robust accuracy (%)"))
    by_attack_lines(
        rep,
        rep.data,
        metrics,
        out_dir,
        "train_time",
        lambda ds, arch: f"Train-time attacker: accuracy vs adversary's share — {ds}, {arch} (higher is better)",
        "adversary's share of the training data",
        "no attacker",
    )


def train_time(trials: pd.DataFrame, out_dir: Path | None = None) -> Report:
    """The train-time attacker report's tables (``train_time_tables``) and figures, written into ``out_dir``."""
    rep = train_time_tables(trials)
    draw_train_time(rep, out_dir)
    rep.write(out_dir)
    return rep
