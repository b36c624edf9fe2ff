"""The paper's checkable claims, measured on a sweep's trials, with a verdict each.

``claims_table(trials)`` gives one row per claim and (dataset, arch): the measured effect (the mean
over seeds of a per-seed value; a per-seed value is the mean of that seed's paired differences,
pooled over the attacks, budgets and fractions the row names), its t-based 95% CI over seeds
(``stats.mean_ci``; paired, because each difference is taken within one seed), the number of seeds,
the images behind one accuracy of one trial, and a verdict (``RULE``):

- a claim that an effect exceeds a threshold (0 for "improves", "reduces", "costs"): **holds** if the
  CI's lower bound is above it, **does not hold** if the upper bound is below it, else
  **inconclusive at this scale**;
- a claim "within ±b": **holds** if the whole CI lies in [-b, b], **does not hold** if it lies wholly
  outside, else inconclusive;
- fewer than 2 seeds give no CI: inconclusive, except for a quantity that does not depend on the
  seed (model size), whose CI is the single value.

A claim whose trials the sweep lacks keeps its row, with "not measured (needs ...)".
``claims_report`` draws the table and one figure for the analysis report; ``docs/reproduction.md``
comes from ``analysis.reproduction.write_reproduction``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .frames import col, dedupe_trials, image_count, model_rows, setting_columns
from .metrics import ATTACKED_IMAGES, CLEAN_IMAGES
from .stats import mean_ci

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this scale"
RULE = (
    "Verdicts: a claimed effect above a threshold (0 unless stated) holds if the 95% CI over seeds lies above "
    "it, does not hold if it lies below it, else is inconclusive at this scale; a claim 'within ±b' holds if "
    "the whole CI lies in [-b, b], does not hold if it lies wholly outside, else is inconclusive. Fewer than "
    "2 seeds give no CI (inconclusive), except for model size, which does not depend on the seed."
)
COLUMNS = [
    "claim",
    "text",
    "dataset",
    "arch",
    "measure",
    "effect",
    "ci_low",
    "ci_high",
    "unit",
    "seeds",
    "images",
    "verdict",
    "kind",
    "bound",
    "std",
    "note",
]


@dataclass(frozen=True)
class Claim:
    key: str
    text: str  # the paper's claim, short
    measure: str  # what the effect is, in words
    unit: str  # "points" (accuracy, percentage points), "%" (size reduction) or "×" (time ratio)
    kind: str  # "above": effect > bound; "within": |effect| <= bound
    bound: float
    needs: str  # the trials it needs, for "not measured (needs ...)"
    values: Callable[[pd.DataFrame], pd.DataFrame]  # trials -> rows: dataset, arch, seed, value[, n_img, pooled]
    note: str = ""
    exact: bool = False  # does not depend on the seed


def verdict(low: float, high: float, kind: str, bound: float) -> str:
    """The rule of ``RULE`` for one CI."""
    if not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if kind == "above":
        return HOLDS if low > bound else FAILS if high < bound else INCONCLUSIVE
    if -bound <= low and high <= bound:
        return HOLDS
    return FAILS if high < -bound or low > bound else INCONCLUSIVE


# --- per-seed values of each claim ----------------------------------------------------------------------


def _rows(frame: pd.DataFrame, value: pd.Series, n_img: str | None, **pooled) -> pd.DataFrame:
    """The long rows a claim's ``values`` returns; ``pooled``: what the row pools over (attack=..., ...)."""
    if frame.empty:
        return _concat([])
    out = frame[["dataset", "arch", "seed"]].copy()
    out["value"] = np.asarray(value, dtype=float)
    out["n_img"] = image_count(frame, n_img).to_numpy() if n_img else np.nan
    for name, v in pooled.items():
        out[name] = v if np.isscalar(v) or v is None else np.asarray(v)
    return out[np.isfinite(out["value"])]


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["dataset", "arch", "seed", "value"])


def _no_threat(trials: pd.DataFrame, private_only: bool = False) -> pd.DataFrame:
    base = trials[trials["threat"] == "none"]
    return base[base["private"]] if private_only else base


def size_reduction(trials: pd.DataFrame) -> pd.DataFrame:
    return _rows(trials, col(trials, "size_reduction_pct"), None)


def ptq_accuracy(model: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    """int8 minus float clean accuracy of the DP models or of the non-private ones (twins included)."""

    def values(trials: pd.DataFrame) -> pd.DataFrame:
        models = model_rows(_no_threat(trials))
        models = models[models["model"] == model]
        return _rows(models, 100 * (models["acc_int8"] - models["acc_float"]), CLEAN_IMAGES, epsilon=models["epsilon"])

    return values


def _attacks() -> tuple[str, ...]:
    """``config.ATTACKS`` in lower case, as metric names spell them (read when a claim is measured)."""
    from .. import config

    return tuple(a.lower() for a in config.ATTACKS)


def _transfer(trials: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Private trials without a threat: acc_transfer_<a>_<first> - acc_transfer_<a>_<second>, in points,
    for every attack and (first, second) pair of ``<gen>_to_<target>`` cells."""
    base = _no_threat(trials, private_only=True)
    parts = []
    for a in _attacks():
        for first, second in pairs:
            diff = col(base, f"acc_transfer_{a}_{first}_mean") - col(base, f"acc_transfer_{a}_{second}_mean")
            parts.append(_rows(base, 100 * diff, ATTACKED_IMAGES, attack=a.upper(), epsilon=base["epsilon"]))
    return _concat(parts)


def dp_vs_nonprivate_target(trials: pd.DataFrame) -> pd.DataFrame:
    return _transfer(trials, [("nonprivate_to_dp", "dp_to_nonprivate")])


def quantized_target(trials: pd.DataFrame) -> pd.DataFrame:
    return _transfer(
        trials, [("dp_to_int8_nonprivate", "dp_to_nonprivate"), ("nonprivate_to_int8_dp", "nonprivate_to_dp")]
    )


def dp_generator(trials: pd.DataFrame) -> pd.DataFrame:
    return _transfer(trials, [("nonprivate_to_dp", "dp_to_dp")])


def _pairs(
    trials: pd.DataFrame,
    treated: pd.Series,
    base: pd.Series,
    vary: tuple[str, ...] = ("threat", "adv_fraction", "attack"),
) -> pd.DataFrame:
    """Each ``treated`` trial beside the ``base`` trial of the same seed and setting (every setting column
    but ``vary`` equal); the base trial's columns end in ``_base``."""
    key = [c for c in setting_columns(trials) if c not in vary]
    left, right = trials[treated.to_numpy()].copy(), trials[base.to_numpy()].copy()  # copies: no fragmented views
    if left.empty or right.empty:
        return pd.DataFrame()

    def joined(f: pd.DataFrame) -> pd.Series:  # None/NaN keys match ("nan"); pandas 3's str dtype keeps NaN
        return f[key].apply(lambda column: column.map(str)).agg("|".join, axis=1)

    return left.assign(_k=joined(left)).merge(right.assign(_k=joined(right)), on="_k", suffixes=("", "_base"))


def _adv_pgd(trials: pd.DataFrame) -> pd.DataFrame:
    """Trials adversarially trained with PGD beside the same seed and setting trained without a threat."""
    treated = (trials["threat"] == "adv_training") & (trials["attack"] == "PGD") & (trials["adv_fraction"] > 0)
    return _pairs(trials, treated, trials["threat"] == "none")


def _drop(pairs: pd.DataFrame, metric: str) -> pd.Series:
    """Points of ``metric`` lost from the base trial to the treated one."""
    return 100 * (col(pairs, f"{metric}_base") - col(pairs, metric))


def _pair_rows(
    pairs: pd.DataFrame, value: Callable[[pd.DataFrame], pd.Series], n_img: str | None, private_only: bool = False
) -> pd.DataFrame:
    if pairs.empty:
        return _concat([])
    pairs = pairs[pairs["private"]] if private_only else pairs
    return _rows(
        pairs, value(pairs), n_img, attack=pairs["attack"], epsilon=pairs["epsilon"], adv_fraction=pairs["adv_fraction"]
    )


def _privacy_gap(pairs: pd.DataFrame) -> pd.Series:
    """The non-private twin's clean-accuracy drop minus the DP model's (positive: DP loses less)."""
    return _drop(pairs, "acc_clean_float_nonprivate") - _drop(pairs, "acc_clean_float")


def adv_robust_gain(trials: pd.DataFrame) -> pd.DataFrame:
    return _pair_rows(_adv_pgd(trials), lambda p: -_drop(p, "acc_wb_pgd_mean"), ATTACKED_IMAGES)


def adv_clean_cost(trials: pd.DataFrame) -> pd.DataFrame:
    return _pair_rows(_adv_pgd(trials), lambda p: _drop(p, "acc_clean_float"), CLEAN_IMAGES)


def adv_cost_gap(trials: pd.DataFrame) -> pd.DataFrame:
    return _pair_rows(_adv_pgd(trials), _privacy_gap, CLEAN_IMAGES, private_only=True)


def pgd_fgsm_time(trials: pd.DataFrame) -> pd.DataFrame:
    adv = (trials["threat"] == "adv_training") & (trials["adv_fraction"] > 0)
    pairs = _pairs(trials, adv & (trials["attack"] == "PGD"), adv & (trials["attack"] == "FGSM"), vary=("attack",))
    return _pair_rows(pairs, lambda p: col(p, "time_train_s") / col(p, "time_train_s_base"), None)


def train_time_damage(trials: pd.DataFrame) -> pd.DataFrame:
    treated = (trials["threat"] == "train_time_attack") & np.isclose(trials["adv_fraction"], 0.4)
    pairs = _pairs(trials, treated, trials["threat"] == "none")
    return _pair_rows(pairs, _privacy_gap, CLEAN_IMAGES, private_only=True)


# --- the claims -------------------------------------------------------------------------------------------

_NO_THREAT = "private trials (epsilon set) with threat none"
_ADV = (
    "private trials with threat adv_training, attack PGD, adv_fraction > 0, beside threat none of the same "
    "seeds, arch and epsilon; eval_attacks with PGD"
)
CLAIMS = (
    Claim(
        "a",
        "int8 PTQ shrinks the model by more than 70% (paper: ResNet-9 −74.4%, ResNet-18 −76.6%)",
        "size_reduction_pct of the trial's model",
        "%",
        "above",
        70.0,
        "any finished trial",
        size_reduction,
        exact=True,
    ),
    Claim(
        "b-dp",
        "PTQ keeps clean accuracy within ±1 point (DP models)",
        "int8 − float clean test accuracy of the DP model",
        "points",
        "within",
        1.0,
        _NO_THREAT,
        ptq_accuracy("dp"),
    ),
    Claim(
        "b-np",
        "PTQ keeps clean accuracy within ±1 point (non-private models)",
        "int8 − float clean test accuracy of the non-private model (a private trial's twin, or a non-private "
        "trial's model)",
        "points",
        "within",
        1.0,
        "trials with threat none",
        ptq_accuracy("nonprivate"),
    ),
    Claim(
        "c",
        "DP models are not more robust than non-private ones under transfer attacks (within ±2 points)",
        "robust accuracy of the DP target under examples crafted on the non-private model − of the non-private "
        "target under examples crafted on the DP model (acc_transfer_<a>_nonprivate_to_dp − "
        "acc_transfer_<a>_dp_to_nonprivate)",
        "points",
        "within",
        2.0,
        _NO_THREAT,
        dp_vs_nonprivate_target,
        note="each float target is attacked from the other model of its trial (partial white-box), so the "
        "generators differ as well as the targets",
    ),
    Claim(
        "d",
        "int8 quantization improves robustness under transfer attacks",
        "robust accuracy of the int8 target − of its float model, same examples crafted on the other model "
        "(dp_to_int8_nonprivate − dp_to_nonprivate; nonprivate_to_int8_dp − nonprivate_to_dp)",
        "points",
        "above",
        0.0,
        _NO_THREAT,
        quantized_target,
        note="paper: up to +5 points for smaller models, +20 for larger ones",
    ),
    Claim(
        "e",
        "DP models are strong transfer generators against DP targets",
        "robust accuracy of the DP target under examples from the non-private model − from a DP model "
        "(nonprivate_to_dp − dp_to_dp)",
        "points",
        "above",
        0.0,
        _NO_THREAT,
        dp_generator,
        note="limit of this measurement: the only DP generator in a trial is the target itself, so its examples "
        "are white-box, not crafted on a separately trained DP model",
    ),
    Claim(
        "f-robust",
        "Adversarial training (PGD) improves robustness",
        "white-box PGD accuracy of the trial's model: adversarially trained − trained without a threat",
        "points",
        "above",
        0.0,
        _ADV,
        adv_robust_gain,
    ),
    Claim(
        "f-cost",
        "... at a utility cost",
        "clean test accuracy of the trial's model: trained without a threat − adversarially trained (PGD)",
        "points",
        "above",
        0.0,
        _ADV,
        adv_clean_cost,
    ),
    Claim(
        "f-dp",
        "... and the cost is smaller with DP",
        "clean-accuracy cost of adversarial training (PGD) for the non-private twin − for the DP model",
        "points",
        "above",
        0.0,
        _ADV,
        adv_cost_gap,
    ),
    Claim(
        "g",
        "PGD adversarial training takes several (> 2) times FGSM's training time",
        "time_train_s adversarially trained with PGD ÷ with FGSM (same seed, fraction, arch, epsilon)",
        "×",
        "above",
        2.0,
        "trials with threat adv_training, attack PGD and attack FGSM at the same adv_fraction, seeds, arch and epsilon",
        pgd_fgsm_time,
        note="paper: up to 8× at 40% adversarial data; wall time, so trials sharing cores blur it",
    ),
    Claim(
        "h",
        "DP reduces the damage of a train-time attacker, even at 40%",
        "clean-accuracy drop from threat none to a train-time attacker holding 40% of the data: non-private "
        "twin's drop − DP model's drop",
        "points",
        "above",
        0.0,
        "private trials with threat train_time_attack at adv_fraction 0.4, beside threat none of the same seeds, "
        "arch and epsilon",
        train_time_damage,
    ),
)


def measures(bold: bool = False) -> list[str]:
    """'c: what row c measures (its caveat)', one line per claim."""
    key = "**{}**" if bold else "{}"
    return [f"{key.format(c.key)}: {c.measure}" + (f" ({c.note})" if c.note else "") for c in CLAIMS]


def _pooled(rows: pd.DataFrame) -> str:
    """'pooled over attacks PGD, FGSM; ε 3.4, 7' / 'at 40%': what one row's per-seed values average over."""
    labels = {
        "attack": ("attack", str),
        "epsilon": ("ε", lambda e: "non-private" if pd.isna(e) else f"{e:g}"),
        "adv_fraction": ("adversarial fraction", lambda f: f"{f:.0%}"),
    }
    many, one = [], []
    for name, (label, fmt) in labels.items():
        if name in rows.columns and not (name == "epsilon" and rows[name].isna().all()):  # twins only
            values = sorted({fmt(v) for v in rows[name]})
            (many if len(values) > 1 else one).append(f"{label} {', '.join(values)}")
    return "; ".join(([f"pooled over {', '.join(many)}"] if many else []) + ([f"at {', '.join(one)}"] if one else []))


def _summary(claim: Claim, rows: pd.DataFrame) -> list[dict]:
    """One table row per (dataset, arch) of a claim's long rows; one 'not measured' row if there are none."""
    base = {
        "claim": claim.key,
        "text": claim.text,
        "measure": claim.measure,
        "unit": claim.unit,
        "kind": claim.kind,
        "bound": claim.bound,
    }
    if rows.empty:
        return [
            {
                **base,
                "dataset": "–",
                "arch": "–",
                "seeds": 0,
                "verdict": f"not measured (needs {claim.needs})",
                "note": claim.note,
            }
        ]
    out = []
    for (ds, arch), g in rows.groupby(["dataset", "arch"], sort=False):
        per_seed = g.groupby("seed")["value"].mean()
        mean, half, n, std = mean_ci(per_seed.tolist())
        if claim.exact and per_seed.nunique() == 1:
            half = 0.0
        low, high = mean - half, mean + half
        note = "; ".join(x for x in (_pooled(g), claim.note) if x)
        out.append(
            {
                **base,
                "dataset": ds,
                "arch": arch,
                "effect": mean,
                "ci_low": low,
                "ci_high": high,
                "seeds": n,
                "images": g["n_img"].min() if g["n_img"].notna().any() else math.nan,
                "verdict": verdict(low, high, claim.kind, claim.bound),
                "std": std,
                "note": note,
            }
        )
    return out


def claims_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and (dataset, arch): claim, text, dataset, arch, measure, effect, ci_low, ci_high
    (t-based 95% CI over seeds of per-seed paired values), unit, seeds, images (fewest images behind one
    accuracy of one trial; NaN for size and time), verdict, kind, bound, std (over seeds), note."""
    trials = dedupe_trials(trials)
    rows = [r for claim in CLAIMS for r in _summary(claim, claim.values(trials))]
    return pd.DataFrame(rows, columns=COLUMNS)


# --- drawing ------------------------------------------------------------------------------------------------

UNIT_TEXT = {"points": " points", "%": "%", "×": "×"}
VERDICT_COLORS = {HOLDS: "#55A868", FAILS: "#C44E52", INCONCLUSIVE: "#8C8C8C"}
PANELS = {
    "%": "model size reduction (%)",
    "points": "accuracy difference (percentage points)",
    "×": "training-time ratio (×)",
}  # in the claims' order: a, b-h, g


def _num(value: float, unit: str) -> str:
    return f"{value:+.1f}" if unit == "points" else f"{value:.2f}" if unit == "×" else f"{value:.1f}"


def fmt_effect(row: pd.Series) -> str:
    """'+1.2 [−0.4, +2.9] points'; without a CI (one seed) '+1.2 points (no CI)'; '–' when not measured."""
    if not np.isfinite(row.get("effect", math.nan)):
        return "–"
    unit, text = row["unit"], _num(row["effect"], row["unit"])
    if np.isfinite(row["ci_low"]) and np.isfinite(row["ci_high"]):
        return f"{text} [{_num(row['ci_low'], unit)}, {_num(row['ci_high'], unit)}]{UNIT_TEXT[unit]}"
    return f"{text}{UNIT_TEXT[unit]} (no CI)"


def criterion(row: pd.Series) -> str:
    bound = f"{row['bound']:g}{' point' if row['bound'] == 1 else UNIT_TEXT[row['unit']]}"
    return f"within ±{bound}" if row["kind"] == "within" else f"> {bound}"


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading (strings); what each row measures is in ``table['measure']``."""
    return pd.DataFrame(
        {
            "claim": table["claim"],
            "paper's claim": table["text"],
            "data": [f"{d}, {a}" if d != "–" else "–" for d, a in zip(table["dataset"], table["arch"])],
            "effect [95% CI]": [fmt_effect(r) for _, r in table.iterrows()],
            "holds if": [criterion(r) for _, r in table.iterrows()],
            "seeds": table["seeds"].astype(int),
            "images/trial": [f"{int(v):,}" if np.isfinite(v) else "–" for v in table["images"].astype(float)],
            "verdict": table["verdict"],
        }
    )


def _panel(ax, rows: pd.DataFrame, unit: str) -> None:
    """One horizontal error bar per claim row; the claim's bound as a line or a band."""
    for y, (_, r) in enumerate(rows.iterrows()):
        if not np.isfinite(r.get("effect", math.nan)):
            ax.annotate(
                "not measured",
                (0, y),
                xytext=(4, 0),
                textcoords="offset points",
                va="center",
                fontsize=8,
                color="#8C8C8C",
            )
            continue
        err = [[r["effect"] - r["ci_low"]], [r["ci_high"] - r["effect"]]] if np.isfinite(r["ci_low"]) else None
        color = VERDICT_COLORS.get(r["verdict"], "#8C8C8C")
        ax.errorbar(r["effect"], y, xerr=err, fmt="o", color=color, ecolor=color, capsize=3, markersize=6)
        if r["kind"] == "within":
            ax.fill_betweenx([y - 0.4, y + 0.4], -r["bound"], r["bound"], color="#55A868", alpha=0.15, linewidth=0)
        elif r["bound"]:
            ax.plot([r["bound"]] * 2, [y - 0.4, y + 0.4], color="#333333", linestyle="--", linewidth=1)
    ax.axvline(0, color="#999999", linewidth=0.8)
    ax.set_yticks(range(len(rows)), [f"{r.claim} · {r.arch}" if r.arch != "–" else r.claim for r in rows.itertuples()])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(PANELS[unit])
    ax.grid(True, axis="x", alpha=0.3)


def plot_claims(table: pd.DataFrame, out_dir, stem: str = "claims") -> list:
    """Effect and 95% CI per claim row (green holds, red does not hold, grey inconclusive), one panel per unit;
    dashed line: the claim's threshold; green band: a 'within ±b' claim's range. Returns [png, svg]."""
    from matplotlib.lines import Line2D

    from . import plots

    units = [u for u in PANELS if (table["unit"] == u).any()]
    heights = [max((table["unit"] == u).sum(), 1) for u in units]
    fig, axes = plots.plt.subplots(
        len(units),
        1,
        figsize=(8, 0.42 * sum(heights) + 1.2 * len(units) + 0.8),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
    )
    for ax, unit in zip(axes[:, 0], units):
        _panel(ax, table[table["unit"] == unit].reset_index(drop=True), unit)
    handles = [Line2D([], [], marker="o", linestyle="none", color=c, label=v) for v, c in VERDICT_COLORS.items()]
    fig.suptitle("The paper's claims: measured effect and 95% CI over seeds")
    plots.legend_below(fig, handles, ns=table["seeds"], ncol=3)
    return plots.save(fig, out_dir, stem)
