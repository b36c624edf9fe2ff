"""The paper's checkable claims, measured on a sweep's trials, each tested, with raw and Holm-adjusted verdicts.

``claims_table(trials)`` gives one row per claim, (dataset, arch) and the claim's own split (``Claim.by``:
epsilon for c, d, e; model, adversarial fraction and training attack for f; ...): the measured effect (the
mean over seeds of a per-seed value; a per-seed value is the mean of that seed's paired differences, pooled
over what the row names), its t-based 95% CI over seeds (``stats.mean_ci``; paired, because each difference
is taken within one seed), the test of the claim and its p-value, raw and Holm-adjusted over the table, the
verdict at both, a value read beside the effect where one explains it (``beside``), seeds and images.

Tests (``RULE``), each on the per-seed values, one-sided at ``ALPHA`` = 2.5% so that a verdict agrees with the
95% CI drawn:

- "above b" (the claim: effect > b): one-sided t test of H0 effect <= b; "below b" the mirror;
- "within ±b": TOST (two one-sided tests) of H0 |effect| >= b, i.e. equivalence within the paper's margin;
- ``Claim.every``: the claim must hold for each value of a column (20% against each other fraction):
  an intersection-union test, whose p-value is the largest of its parts (no correction needed);
- **holds** if the claim's test rejects its H0; **does not hold** if the reverse test rejects (the CI lies
  wholly on the wrong side of the bound, or outside ±b); else **inconclusive at this scale**;
- Holm's step-down correction runs over every tested row of the table, once for the "holds" tests and once for
  the "does not hold" tests (2.5% each: 5% family-wise over all verdicts);
- fewer than 2 seeds give no test (inconclusive), except for a quantity that does not depend on the seed
  (model size), which is read exactly and is no member of the Holm family;
- a claim declares the architectures its statement is about (``Claim.archs``: claim a's 70% is the paper's
  ResNet number); a row of another architecture is **not applicable**: its effect and CI are shown, it has
  no test, no verdict and is no member of the Holm family.

Transfer (partial white-box) claims read only cross-seed transfer accuracies (``xseed``): adversarial examples
crafted on a model trained separately from the target (another seed of the same setting) and evaluated on the
trial's own models. A generator that is the target itself makes a white-box attack, so ``acc_transfer_*``
(crafted on the trial's own models) is never read by them; without cross-seed numbers they are "not measured".
Minimum-norm attacks (FAB) stay out of transfer rows: their examples sit on the generator's decision boundary.

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

from ..baselines import NO_THREAT, PAPER_ARCHS
from .frames import PRIVACY_ONLY, col, dedupe_trials, image_count, model_rows, setting_columns
from .metrics import ATTACKED_IMAGES, CLEAN_IMAGES, GENERATORS, TARGETS, clean_eval
from .stats import fmt_ci, holm, mean_ci, summarize, t_test, tost

HOLDS, FAILS, INCONCLUSIVE = "holds", "does not hold", "inconclusive at this scale"
NOT_APPLICABLE = "not applicable"  # the paper's statement is about other architectures: no test, no verdict
# claim d: a gain the paper would call an improvement exceeds its own ±1 point of "not significantly altered"
# (claim b's margin); without it, a CI of [-0.3, +0.3] that rules out the paper's +5 points reads "inconclusive"
QUANTIZATION_GAIN = 1.0
ALPHA = 0.025  # per one-sided test: a verdict agrees with the 95% CI drawn
MINIMUM_NORM = frozenset({"FAB"})  # attacks whose examples lie on the generator's boundary: no transfer rows
XSEED_NEEDS = (
    "cross-seed transfer: acc_xseed_<attack>_<generator>_to_<target>_worst, examples crafted on the models of other "
    "seeds of the same setting"
)
RULE = (
    "Tests, on the per-seed paired values, one-sided at 2.5% so that each verdict agrees with the 95% CI drawn: "
    "a claimed effect above (below) a bound is a one-sided t test of H0 'effect <= bound' ('>= bound'); a claim "
    "'within ±b' is an equivalence test (TOST, H0 '|effect| >= b'); a claim that must hold for each of several "
    "comparisons is an intersection-union test (largest p). A claim holds if its test rejects H0, does not hold "
    "if the reverse test rejects (the CI lies wholly on the wrong side, or outside ±b), else is inconclusive at "
    "this scale. Holm's correction runs over every tested row of the table (separately for 'holds' and 'does not "
    "hold', 2.5% each); both the raw and the Holm-adjusted p and verdict are shown. Fewer than 2 seeds give no "
    "test (inconclusive), except for model size, which does not depend on the seed and is read exactly. A row "
    "of an architecture the paper's statement is not about is not applicable: its effect is shown, untested."
)
COLUMNS = [
    "claim",
    "text",
    "dataset",
    "arch",
    "split",
    "measure",
    "effect",
    "ci_low",
    "ci_high",
    "unit",
    "seeds",
    "images",
    "test",
    "p",
    "p_holm",
    "verdict",
    "verdict_holm",
    "p_against",
    "p_against_holm",
    "beside",
    "applicable",
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
    unit: str  # "points" (accuracy, percentage points), "%" (size reduction) or "×" (ratio)
    kind: str  # "above": effect > bound; "below": effect < bound; "within": |effect| < bound (TOST)
    bound: float
    needs: str  # the trials it needs, for "not measured (needs ...)"
    values: Callable[[pd.DataFrame], pd.DataFrame]  # trials -> rows: dataset, arch, seed, value, n_img, ...
    by: tuple[str, ...] = ()  # columns of ``values`` that split the claim into rows
    every: str = ""  # a column of ``values``: the claim must hold for each of its values
    beside: str = ""  # what the rows' ``beside`` column is, in words ("" if none)
    note: str = ""
    exact: bool = False  # does not depend on the seed
    archs: tuple[str, ...] = ()  # the architectures the paper's statement (and its bound) is about; () any

    def applies(self, arch) -> bool:
        """Whether the paper's statement is about ``arch`` (a row of another arch is "not applicable")."""
        return not self.archs or arch in self.archs


def decide(p: float, p_against: float) -> str:
    """The verdict of a claim's test (p) and of the reverse test (p_against), at ``ALPHA``."""
    if p < ALPHA:
        return HOLDS
    return FAILS if p_against < ALPHA else INCONCLUSIVE


def p_values(values: list[float], kind: str, bound: float) -> tuple[float, float]:
    """(p of the claim's test, p of the reverse test) on per-seed ``values``: see ``RULE``."""
    if kind == "above":
        return t_test(values, bound, greater=True), t_test(values, bound, greater=False)
    if kind == "below":
        return t_test(values, bound, greater=False), t_test(values, bound, greater=True)
    against = min(t_test(values, bound, greater=True), t_test(values, -bound, greater=False))
    return tost(values, bound), against


def xseed(attack: str, cell: str) -> str:
    """Cross-seed transfer accuracy of ``cell`` ('<generator>_to_<target>'): examples crafted on the generator
    model of another seed of the same setting, evaluated on this trial's target model (same images as
    ``acc_clean_eval_<target>``). The headline, the fooling restart's examples (``_worst``); ``col`` falls back,
    trial by trial, to the mean over restarts (``_mean``) that older stores recorded."""
    return f"acc_xseed_{attack}_{cell}_worst"


# --- per-seed values of each claim ----------------------------------------------------------------------


def _rows(frame: pd.DataFrame, value: pd.Series, n_img: str | None, **columns) -> pd.DataFrame:
    """The long rows a claim's ``values`` returns; ``columns``: what the row splits or pools over (attack=...),
    and ``beside``."""
    if frame.empty:
        return _concat([])
    data = {c: frame[c].to_numpy() for c in ("dataset", "arch", "seed")}  # a new frame: no attrs to copy
    data["value"] = np.asarray(value, dtype=float)
    data["n_img"] = image_count(frame, n_img).to_numpy() if n_img else np.nan
    for name, v in columns.items():
        data[name] = v if np.isscalar(v) or v is None else np.asarray(v)
    out = pd.DataFrame(data)
    return out[np.isfinite(out["value"])].reset_index(drop=True)


def _concat(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["dataset", "arch", "seed", "value"])


def _no_threat(trials: pd.DataFrame, private_only: bool = False) -> pd.DataFrame:
    base = trials[trials["threat"] == NO_THREAT]
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


def _transfer_attacks() -> tuple[str, ...]:
    """``config.ATTACKS`` but the minimum-norm ones, in lower case as metric names spell them."""
    from .. import config

    return tuple(a.lower() for a in config.ATTACKS if a not in MINIMUM_NORM)


def _cross_seed(cells: list[tuple[str, str, dict]], beside: Callable | None = None) -> Callable:
    """Values of a transfer claim on private trials without a threat: 100 × (first − second) for every transfer
    attack and (first, second, labels) of ``cells``, cross-seed cells only (``xseed``)."""

    def values(trials: pd.DataFrame) -> pd.DataFrame:
        base = _no_threat(trials, private_only=True)
        extra = {"beside": beside(base)} if beside else {}
        parts = []
        for a in _transfer_attacks():
            for first, second, labels in cells:
                diff = 100 * (col(base, xseed(a, first)) - col(base, xseed(a, second)))
                parts.append(
                    _rows(base, diff, ATTACKED_IMAGES, attack=a.upper(), epsilon=base["epsilon"], **labels, **extra)
                )
        return _concat(parts)

    return values


def _clean_gap(base: pd.DataFrame) -> pd.Series:
    """Clean accuracy of the DP model − of the non-private twin, on the attacked images, in points."""
    return 100 * (col(base, clean_eval("dp")) - col(base, clean_eval("nonprivate")))


dp_vs_nonprivate_target = _cross_seed(
    [(f"{g}_to_dp", f"{g}_to_nonprivate", {"generator": g}) for g in GENERATORS], beside=_clean_gap
)
quantized_target = _cross_seed(
    [(f"{g}_to_int8_{t}", f"{g}_to_{t}", {"generator": g, "target": t}) for g in GENERATORS for t in GENERATORS]
)
dp_generator = _cross_seed([("nonprivate_to_dp", "dp_to_dp", {})])


def _join(left: pd.DataFrame, right: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    """Each row of ``left`` beside the rows of ``right`` with equal ``key``; right's columns end in ``_base``."""
    if left.empty or right.empty:
        return pd.DataFrame()

    def joined(f: pd.DataFrame) -> pd.Series:  # None/NaN keys match ("nan"); pandas 3's str dtype keeps NaN
        return f[key].apply(lambda column: column.map(str)).agg("|".join, axis=1)

    left, right = left.copy(), right.copy()  # copies: no fragmented views
    return left.assign(_k=joined(left)).merge(right.assign(_k=joined(right)), on="_k", suffixes=("", "_base"))


def _pairs(trials: pd.DataFrame, treated: pd.Series, base: pd.Series, vary: tuple[str, ...]) -> pd.DataFrame:
    """Each ``treated`` trial beside the ``base`` trial of the same seed and setting (every setting column
    but ``vary`` equal)."""
    key = [c for c in setting_columns(trials) if c not in vary]
    return _join(trials[treated.to_numpy()], trials[base.to_numpy()], key)


def _model_pairs(trials: pd.DataFrame, treated, base, vary: tuple[str, ...]) -> pd.DataFrame:
    """As ``_pairs`` over trained models (``model_rows``: DP models and non-private ones, twins included);
    ``treated``/``base``: model rows -> mask."""
    models = model_rows(trials, ["pgd"])
    key = [c for c in setting_columns(trials) if c not in vary and c not in PRIVACY_ONLY] + ["privacy"]
    return _join(models[treated(models).to_numpy()], models[base(models).to_numpy()], key)


def _adv(f: pd.DataFrame) -> pd.Series:
    return (f["threat"] == "adv_training") & (f["adv_fraction"] > 0)


def _base_side(pairs: pd.DataFrame) -> pd.DataFrame:
    """The base trial's (or model's) columns of ``pairs`` under their own names (``_base`` dropped), so that
    ``col`` applies its fallbacks (a headline ``_worst`` read as ``_mean`` in older stores) to that side too."""
    base = [c for c in pairs.columns if c.endswith("_base")]
    return pairs[base].rename(columns=lambda c: c[: -len("_base")])


def _drop(pairs: pd.DataFrame, metric: str) -> pd.Series:
    """Points of ``metric`` lost from the base trial (or model) to the treated one."""
    return 100 * (col(_base_side(pairs), metric) - col(pairs, metric))


def _model_rows(pairs: pd.DataFrame, value: pd.Series, n_img: str, **extra) -> pd.DataFrame:
    if pairs.empty:
        return _concat([])
    return _rows(
        pairs,
        value,
        n_img,
        model=pairs["model"],
        adv_fraction=pairs["adv_fraction"],
        train_attack=pairs["attack"],
        epsilon=pairs["epsilon"],
        **extra,
    )


def adv_robust_gain(trials: pd.DataFrame) -> pd.DataFrame:
    pairs = _model_pairs(trials, _adv, lambda m: m["threat"] == NO_THREAT, ("threat", "adv_fraction", "attack"))
    return _model_rows(pairs, -_drop(pairs, "robust_pgd"), ATTACKED_IMAGES)


def adv_clean_cost(trials: pd.DataFrame) -> pd.DataFrame:
    pairs = _model_pairs(trials, _adv, lambda m: m["threat"] == NO_THREAT, ("threat", "adv_fraction", "attack"))
    return _model_rows(pairs, _drop(pairs, "acc_float"), CLEAN_IMAGES)


def _at20(f: pd.DataFrame) -> pd.Series:
    return pd.Series(np.isclose(f["adv_fraction"].astype(float), 0.2), index=f.index)


def best_fraction(trials: pd.DataFrame) -> pd.DataFrame:
    """White-box PGD accuracy at 20% adversarial data − at each other fraction (column ``vs``)."""
    pairs = _model_pairs(trials, lambda m: _adv(m) & _at20(m), lambda m: _adv(m) & ~_at20(m), ("adv_fraction",))
    return _model_rows(pairs, -_drop(pairs, "robust_pgd"), ATTACKED_IMAGES, vs=col(pairs, "adv_fraction_base"))


def _privacy_gap(pairs: pd.DataFrame, dp: str, nonprivate: str) -> pd.Series:
    """The non-private twin's drop of a metric minus the DP model's (positive: DP loses less)."""
    return _drop(pairs, nonprivate) - _drop(pairs, dp)


def adv_cost_gap(trials: pd.DataFrame) -> pd.DataFrame:
    pairs = _pairs(
        trials, _adv(trials) & trials["private"], trials["threat"] == NO_THREAT, ("threat", "adv_fraction", "attack")
    )
    if pairs.empty:
        return _concat([])
    gap = _privacy_gap(pairs, "acc_clean_float", "acc_clean_float_nonprivate")
    return _rows(
        pairs,
        gap,
        CLEAN_IMAGES,
        epsilon=pairs["epsilon"],
        adv_fraction=pairs["adv_fraction"],
        train_attack=pairs["attack"],
    )


def _passes(f: pd.DataFrame, suffix: str = "") -> pd.Series:
    """Forward+backward passes of one trial's training, adversarial generation included."""
    return col(f, f"passes_train{suffix}") + col(f, f"passes_adv_gen{suffix}")


def pgd_fgsm_cost(trials: pd.DataFrame) -> pd.DataFrame:
    adv = _adv(trials)
    pairs = _pairs(trials, adv & (trials["attack"] == "PGD"), adv & (trials["attack"] == "FGSM"), ("attack",))
    if pairs.empty:
        return _concat([])
    wall = col(pairs, "time_train_s") / col(pairs, "time_train_s_base")
    ratio = _passes(pairs) / _passes(pairs, "_base")
    return _rows(pairs, ratio, None, adv_fraction=pairs["adv_fraction"], epsilon=pairs["epsilon"], beside=wall)


# robust accuracies are the headline, worst case over restarts (col() falls back to _mean for older stores)
WB = "acc_wb_pgd_worst"
TWIN_WB = "acc_transfer_pgd_nonprivate_to_nonprivate_worst"  # the twin attacked through itself: white-box


# claim h's label rules, as its split reads them ("labels from global model (self-labelling), ...")
SELF_LABELS, REFERENCE_LABELS = "global model (self-labelling)", "reference model"


def label_rules() -> dict[str, str]:
    """Claim h's train-time attackers -> whose predictions label their adversarial examples: the global model's
    own (threats/train_time_attack.py, the paper's) or the adversary's separately trained reference model
    (threats/train_time_attack_ref.py). Reading the second's name loads the threat registry (torch), as
    ``_transfer_attacks`` loads the attacks'."""
    from ..threats.train_time_attack_ref import NAME as REFERENCE_LABELLED

    return {"train_time_attack": SELF_LABELS, REFERENCE_LABELLED: REFERENCE_LABELS}


def train_time_damage(trials: pd.DataFrame) -> pd.DataFrame:
    """Per private train-time-attacked trial beside its no-threat trial, split by label rule (``label_rules``)."""
    rules = label_rules()
    treated = trials["threat"].isin(list(rules)) & (trials["adv_fraction"] > 0) & trials["private"]
    # the attacker's own parameters (threat_params.*) are no column of the no-threat trial: not part of the key
    vary = ("threat", "adv_fraction", "attack", *(c for c in trials.columns if c.startswith("threat_params.")))
    pairs = _pairs(trials, treated, trials["threat"] == NO_THREAT, vary)
    if pairs.empty:
        return _concat([])
    robust = _privacy_gap(pairs, WB, TWIN_WB)
    clean = _privacy_gap(pairs, "acc_clean_float", "acc_clean_float_nonprivate")
    labels = pairs["threat"].map(rules)
    return _rows(
        pairs,
        robust,
        ATTACKED_IMAGES,
        epsilon=pairs["epsilon"],
        labels=labels,
        adv_fraction=pairs["adv_fraction"],
        beside=clean,
    )


def _xseed_long(trials: pd.DataFrame) -> pd.DataFrame:
    """Per private trial without a threat, transfer attack and cross-seed cell: robust and loss, in points."""
    base = _no_threat(trials, private_only=True)
    parts = []
    for a in _transfer_attacks():
        for g in GENERATORS:
            for t in TARGETS:
                robust = 100 * col(base, xseed(a, f"{g}_to_{t}"))
                loss = 100 * col(base, clean_eval(t)) - robust
                cell = {"attack": a.upper(), "generator": g, "target": t, "epsilon": base["epsilon"], "loss": loss}
                parts.append(_rows(base, robust, ATTACKED_IMAGES, **cell))
    return _concat(parts)


def xseed_matrix(trials: pd.DataFrame) -> pd.DataFrame:
    """Cross-seed transfer, for reading: one row per (dataset, arch, epsilon, attack, generator), one column per
    target, each cell 'robust ± CI / loss ± CI' (points, 95% CI over seeds); empty when nothing was measured."""
    rows = _xseed_long(dedupe_trials(trials))
    if rows.empty:
        return pd.DataFrame()
    by = ["dataset", "arch", "epsilon", "attack", "generator", "target"]
    # joined on the keys, not zipped: a group whose clean accuracy is missing has a robust value but no loss
    loss = summarize(rows, by, "loss").set_index(by)[["mean", "ci95"]].add_prefix("loss_")
    robust = summarize(rows, by).join(loss, on=by)
    robust["cell"] = [
        f"{fmt_ci(m, c)} / {fmt_ci(lm, lc)}"
        for m, c, lm, lc in zip(robust["mean"], robust["ci95"], robust["loss_mean"], robust["loss_ci95"])
    ]
    robust["generator"] = robust["generator"].map(MODEL_NAMES) + " (other seed)"
    robust["epsilon"] = robust["epsilon"].map(lambda e: f"{e:g}")
    # no columns name: the pivot's "target" would read as an empty column of the rendered table
    table = robust.pivot(index=by[:-1], columns="target", values="cell").reset_index().rename_axis(columns=None)
    return table.rename(columns={t: f"→ {t.replace('_', ' ')}" for t in TARGETS}).rename(columns={"epsilon": "ε"})


# --- the claims -------------------------------------------------------------------------------------------

_NO_THREAT = "private trials (epsilon set) with threat none"
_XSEED = f"{_NO_THREAT}, >= 2 seeds of each setting, and {XSEED_NEEDS}"
_ADV = (
    "trials with threat adv_training, adv_fraction > 0, beside threat none of the same seeds, arch and epsilon; "
    "eval_attacks with PGD"
)
_WB = "white-box PGD accuracy (the DP model attacked through itself; the non-private twin through itself)"
_FROM_OTHER_SEEDS = "generators: the models of other seeds of the same setting, never the target itself"
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
        archs=PAPER_ARCHS,  # 70% is the paper's ResNet number: a model with other layers shrinks by another share
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
        "DP models are not significantly more robust than non-private ones under partial white-box (transfer) "
        "attacks (paper: within 2 points), regardless of the privacy regime",
        "robust accuracy of the DP target − of the non-private target under the same examples, crafted on a "
        "separately trained generator (acc_xseed_<a>_<g>_to_dp − acc_xseed_<a>_<g>_to_nonprivate), PGD and FGSM",
        "points",
        "below",
        2.0,
        _XSEED,
        dp_vs_nonprivate_target,
        by=("epsilon", "generator"),
        beside="clean-accuracy gap DP − non-private on the same images",
        note=f"{_FROM_OTHER_SEEDS}; one-sided: the claim is that DP is not more robust by 2 points or more",
    ),
    Claim(
        "d",
        "int8 quantization improves robustness under transfer attacks (paper: up to +5 points for smaller models, "
        "+20 for larger ones)",
        "robust accuracy of the int8 target − of its float model, same examples crafted on a separately trained "
        "generator (acc_xseed_<a>_<g>_to_int8_<t> − acc_xseed_<a>_<g>_to_<t>), PGD and FGSM",
        "points",
        "above",
        QUANTIZATION_GAIN,
        _XSEED,
        quantized_target,
        by=("epsilon",),
        note=f"{_FROM_OTHER_SEEDS}; the bound is the paper's own ±1 point of 'not significantly altered' (claim b): "
        "a gain inside it is no improvement the paper reports, and a CI wholly below it rules the claim out",
    ),
    Claim(
        "e",
        "DP models are strong transfer generators against DP targets",
        "robust accuracy of the DP target under examples from a separately trained non-private model − from a "
        "separately trained DP model (acc_xseed_<a>_nonprivate_to_dp − acc_xseed_<a>_dp_to_dp), PGD and FGSM",
        "points",
        "above",
        0.0,
        _XSEED,
        dp_generator,
        by=("epsilon",),
        note=_FROM_OTHER_SEEDS,
    ),
    Claim(
        "f-robust",
        "Adversarial training improves robustness",
        f"{_WB}: adversarially trained − trained without a threat, per model, fraction and training attack",
        "points",
        "above",
        0.0,
        _ADV,
        adv_robust_gain,
        by=("model", "adv_fraction", "train_attack"),
    ),
    Claim(
        "f-cost",
        "... at a utility cost",
        "clean test accuracy: trained without a threat − adversarially trained, per model, fraction and "
        "training attack",
        "points",
        "above",
        0.0,
        _ADV,
        adv_clean_cost,
        by=("model", "adv_fraction", "train_attack"),
    ),
    Claim(
        "f-dp",
        "... and the cost is smaller with DP",
        "clean-accuracy cost of adversarial training for the non-private twin − for the DP model",
        "points",
        "above",
        0.0,
        "private " + _ADV,
        adv_cost_gap,
        by=("adv_fraction", "train_attack"),
        note="the twin is trained with the non-private recipe: where its schedule differs from the DP model's, "
        "the gap mixes the recipes with privacy",
    ),
    Claim(
        "f-20",
        "20% adversarial data usually gives the highest robustness",
        f"{_WB} at 20% adversarial data − at each other fraction; holds only if 20% beats every other one "
        "(the row shows the least favourable comparison)",
        "points",
        "above",
        0.0,
        "trials with threat adv_training at adv_fraction 0.2 and at least one other fraction, same seeds",
        best_fraction,
        by=("model", "train_attack"),
        every="vs",
    ),
    Claim(
        "g",
        "PGD adversarial training takes several (> 2) times FGSM's training (paper: up to 8× at 40%)",
        "forward+backward passes of training, adversarial generation included (passes_train + passes_adv_gen): "
        "adversarially trained with PGD ÷ with FGSM (same seed, fraction, arch, epsilon)",
        "×",
        "above",
        2.0,
        "trials with threat adv_training, attack PGD and attack FGSM at the same adv_fraction and seeds, that "
        "record passes_train and passes_adv_gen",
        pgd_fgsm_cost,
        by=("adv_fraction",),
        beside="wall-time ratio time_train_s (trials sharing cores blur it)",
    ),
    Claim(
        "h",
        "DP reduces the damage of a train-time attacker, even at 40%",
        f"drop of {_WB} from threat none to a train-time attacker: non-private twin's drop − DP model's drop",
        "points",
        "above",
        0.0,
        "private trials with threat train_time_attack or its reference-labelled variant (adv_fraction > 0), beside "
        "threat none of the same seeds, arch and epsilon",
        train_time_damage,
        by=("labels", "adv_fraction"),
        beside="the same for clean accuracy",
        note="one row per label rule: the adversarial examples, crafted against the current global model either way, "
        "are labelled by the global model's own predictions (the paper's) or by a reference model the adversary "
        "trained separately on its own clean data",
    ),
)


def measures(bold: bool = False) -> list[str]:
    """'c: what row c measures (its caveat)', one line per claim."""
    key = "**{}**" if bold else "{}"
    return [f"{key.format(c.key)}: {c.measure}" + (f" ({c.note})" if c.note else "") for c in CLAIMS]


MODEL_NAMES = {"dp": "DP", "nonprivate": "non-private"}
LABELS = {  # column -> (label, how one value reads)
    "epsilon": ("ε", lambda e: "non-private" if pd.isna(e) else f"{e:g}"),
    "generator": ("generator", MODEL_NAMES.get),
    "target": ("target", MODEL_NAMES.get),
    "model": ("model", MODEL_NAMES.get),
    "labels": ("labels from", str),
    "adv_fraction": ("adversarial fraction", lambda f: f"{f:.0%}"),
    "train_attack": ("training attack", str),
    "attack": ("attack", str),
}


def _split(by: tuple[str, ...], key: tuple) -> str:
    """'ε 3.4, generator DP': the row's own values of the claim's split columns."""
    return ", ".join(f"{LABELS[c][0]} {LABELS[c][1](v)}" for c, v in zip(by, key))


def _pooled(rows: pd.DataFrame, by: tuple[str, ...]) -> str:
    """'pooled over attack FGSM, PGD; at ε 3.4': what one row's per-seed values average over."""
    many, one = [], []
    for name, (label, fmt) in LABELS.items():
        if name in rows.columns and name not in by and not (name == "epsilon" and rows[name].isna().all()):
            values = sorted({fmt(v) for v in rows[name]})
            (many if len(values) > 1 else one).append(f"{label} {', '.join(values)}")
    return "; ".join(([f"pooled over {', '.join(many)}"] if many else []) + ([f"at {', '.join(one)}"] if one else []))


def _exact(value: float, kind: str, bound: float) -> tuple[float, float]:
    """(p, p_against) of a value without sampling error: 0 or 1."""
    holds = value > bound if kind == "above" else value < bound if kind == "below" else abs(value) < bound
    fails = value < bound if kind == "above" else value > bound if kind == "below" else abs(value) > bound
    return float(not holds), float(not fails)


def _per_seed(rows: pd.DataFrame, column: str = "value") -> list[float]:
    return rows.groupby("seed")[column].mean().tolist()


def _measured(claim: Claim, rows: pd.DataFrame) -> dict:
    """effect, CI, seeds, std and the two p-values of one row's long rows; with ``claim.every``, those of the
    least favourable part (largest p), p_against Bonferroni over the parts (any part refutes)."""
    parts = [g for _, g in rows.groupby(claim.every)] if claim.every else [rows]
    found = []
    for part in parts:
        values = _per_seed(part)
        mean, half, n, std = mean_ci(values)
        p, p_against = p_values(values, claim.kind, claim.bound)
        if claim.exact and len(set(values)) == 1:  # no seed dependence: read exactly
            half, (p, p_against) = 0.0, _exact(mean, claim.kind, claim.bound)
        found.append(
            {
                "effect": mean,
                "ci_low": mean - half,
                "ci_high": mean + half,
                "seeds": n,
                "std": std,
                "p": p,
                "p_against": p_against,
                "vs": part[claim.every].iloc[0] if claim.every else None,
            }
        )
    worst = max(found, key=lambda f: (f["p"] if np.isfinite(f["p"]) else math.inf, -f["effect"]))
    worst["p_against"] = min(1.0, len(found) * min(f["p_against"] for f in found))
    return worst


def _beside(claim: Claim, rows: pd.DataFrame) -> str:
    """'clean-accuracy gap ...: −15.0 [−17.5, −12.5] points' (mean and 95% CI over seeds)."""
    if not claim.beside or "beside" not in rows or not rows["beside"].notna().any():
        return ""
    mean, half, _, _ = mean_ci(_per_seed(rows, "beside"))
    row = {"effect": mean, "ci_low": mean - half, "ci_high": mean + half, "unit": claim.unit}
    return f"{claim.beside}: {fmt_effect(pd.Series(row))}"


def describe_test(claim: Claim) -> str:
    bound = f"{claim.bound:g}{' point' if claim.bound == 1 else UNIT_TEXT[claim.unit]}"
    name = {
        "above": f"one-sided t, H0 effect ≤ {bound}",
        "below": f"one-sided t, H0 effect ≥ {bound}",
        "within": f"TOST, H0 |effect| ≥ {bound}",
    }[claim.kind]
    return ("exact (no seed dependence)" if claim.exact else name) + (f"; every {claim.every}" if claim.every else "")


def _not_applicable(claim: Claim, arch) -> dict:
    """What a row of an arch the paper's statement is not about shows instead of a test: no p, no verdict."""
    about = ", ".join(claim.archs)
    return {
        "p": math.nan,
        "p_against": math.nan,
        "test": f"none: the paper's statement is about {about}",
        "verdict": NOT_APPLICABLE,
        "applicable": False,
        "why": f"the paper's statement and its bound are about {about} (not {arch}): the measured effect is shown, "
        "untested",
    }


def _group_row(claim: Claim, key: tuple, g: pd.DataFrame) -> dict:
    """One table row's measured columns, test and verdict, for one (dataset, arch, *claim.by) group."""
    found = _measured(claim, g)
    vs = found.pop("vs")
    vs = f"least favourable: against {LABELS['adv_fraction'][1](vs)}" if claim.every else ""
    found["verdict"] = decide(found["p"], found["p_against"])
    if not claim.applies(key[1]):
        found.update(_not_applicable(claim, key[1]))
    why = found.pop("why", "")
    return {
        **found,
        "dataset": key[0],
        "arch": key[1],
        "split": _split(claim.by, key[2:]),
        "images": g["n_img"].min() if g["n_img"].notna().any() else math.nan,
        "beside": _beside(claim, g),
        "note": "; ".join(x for x in (why, vs, _pooled(g, claim.by), claim.note) if x),
    }


def _summary(claim: Claim, rows: pd.DataFrame) -> list[dict]:
    """One table row per (dataset, arch, *claim.by) of a claim's long rows; one 'not measured' row if none."""
    base = {"claim": claim.key, "text": claim.text, "measure": claim.measure, "unit": claim.unit,
            "kind": claim.kind, "bound": claim.bound, "test": describe_test(claim), "applicable": True}  # fmt: skip
    if rows.empty:
        needs = f"not measured (needs {claim.needs})"
        return [{**base, "dataset": "–", "arch": "–", "split": "", "seeds": 0, "verdict": needs, "note": claim.note}]
    groups = rows.groupby(["dataset", "arch", *claim.by], sort=True, dropna=False)
    return [{**base, **_group_row(claim, key, g)} for key, g in groups]


def _holm(table: pd.DataFrame) -> pd.DataFrame:
    """p_holm, p_against_holm (Holm over the table's tested rows; exact and not applicable rows left out) and
    verdict_holm."""
    tested = ~table["test"].str.startswith("exact") & table["applicable"]
    for name in ("p", "p_against"):
        table[f"{name}_holm"] = table[name].where(~tested)
        table.loc[tested, f"{name}_holm"] = holm(table.loc[tested, name].to_numpy(dtype=float))
    decided = table["effect"].notna() & table["applicable"]
    table["verdict_holm"] = table["verdict"]
    table.loc[decided, "verdict_holm"] = [
        decide(p, q) for p, q in zip(table.loc[decided, "p_holm"], table.loc[decided, "p_against_holm"])
    ]
    return table


def claims_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and (dataset, arch, the claim's split): claim, text, dataset, arch, split, measure, effect,
    ci_low, ci_high (t-based 95% CI over seeds of per-seed paired values), unit, seeds, images (fewest images
    behind one accuracy of one trial; NaN for size and passes), test, p, p_holm, verdict, verdict_holm,
    p_against(_holm) (the reverse test), beside, applicable (False: the paper's statement is about other
    architectures, verdict "not applicable"), kind, bound, std (over seeds), note."""
    trials = dedupe_trials(trials)
    rows = [r for claim in CLAIMS for r in _summary(claim, claim.values(trials))]
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["applicable"] = table["applicable"].astype(bool)
    for name in ("effect", "ci_low", "ci_high", "images", "p", "p_against", "std"):
        table[name] = table[name].astype(float)
    return _holm(table)


# --- drawing ------------------------------------------------------------------------------------------------

UNIT_TEXT = {"points": " points", "%": "%", "×": "×"}
VERDICT_COLORS = {HOLDS: "#55A868", FAILS: "#C44E52", INCONCLUSIVE: "#8C8C8C", NOT_APPLICABLE: "#C8C8C8"}
PANELS = {
    "%": "model size reduction (%)",
    "points": "accuracy difference (percentage points)",
    "×": "training-cost ratio (×)",
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
    return {"within": f"within ±{bound}", "below": f"< {bound}"}.get(row["kind"], f"> {bound}")


def fmt_p(p: float) -> str:
    """'0.012', '<0.001', '–' (no test)."""
    if not np.isfinite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _data(row: pd.Series) -> str:
    if row["dataset"] == "–":
        return "–"
    return ", ".join(x for x in (row["dataset"], row["arch"], row["split"]) if x)


def format_claims(table: pd.DataFrame) -> pd.DataFrame:
    """The claims table for reading (strings); what each row measures is in ``table['measure']``."""
    return pd.DataFrame(
        {
            "claim": table["claim"],
            "paper's claim": table["text"],
            "data": [_data(r) for _, r in table.iterrows()],
            "effect [95% CI]": [fmt_effect(r) for _, r in table.iterrows()],
            "holds if": [criterion(r) for _, r in table.iterrows()],
            "test": table["test"],
            "p (Holm)": [
                f"{fmt_p(p)} ({fmt_p(q)})" if np.isfinite(p) else "–" for p, q in zip(table["p"], table["p_holm"])
            ],
            "verdict": table["verdict"],
            "verdict (Holm)": [v if np.isfinite(e) else "–" for v, e in zip(table["verdict_holm"], table["effect"])],
            "beside": table["beside"].fillna("").replace("", "–"),
            "seeds": table["seeds"].astype(int),
            "images/trial": [f"{int(v):,}" if np.isfinite(v) else "–" for v in table["images"].astype(float)],
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
        color = VERDICT_COLORS.get(r["verdict_holm"], "#8C8C8C")
        ax.errorbar(r["effect"], y, xerr=err, fmt="o", color=color, ecolor=color, capsize=3, markersize=6)
        if r["kind"] == "within":
            ax.fill_betweenx([y - 0.4, y + 0.4], -r["bound"], r["bound"], color="#55A868", alpha=0.15, linewidth=0)
        elif r["bound"]:
            ax.plot([r["bound"]] * 2, [y - 0.4, y + 0.4], color="#333333", linestyle="--", linewidth=1)
    ax.axvline(0, color="#999999", linewidth=0.8)
    ax.set_yticks(
        range(len(rows)),
        [" · ".join(x for x in (r.claim, r.arch, r.split) if x and x != "–") for r in rows.itertuples()],
    )
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(PANELS[unit])
    ax.grid(True, axis="x", alpha=0.3)


def plot_claims(table: pd.DataFrame, out_dir, stem: str = "claims") -> list:
    """Effect and 95% CI per claim row, coloured by the Holm-adjusted verdict (green holds, red does not hold, grey
    inconclusive, light grey not applicable), one panel per unit;
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
    shown = [v for v in VERDICT_COLORS if v != NOT_APPLICABLE or (table["verdict_holm"] == v).any()]
    handles = [Line2D([], [], marker="o", linestyle="none", color=VERDICT_COLORS[v], label=v) for v in shown]
    fig.suptitle("The paper's claims: measured effect and 95% CI over seeds (colour: Holm-adjusted verdict)")
    plots.legend_below(fig, handles, ns=table["seeds"], ncol=len(handles))
    return plots.save(fig, out_dir, stem)
