"""The trials frame reshaped for the reports and the claims: settings, one row per trained model, and
accuracies with their interval over images (``value``, ``img_lo``, ``img_hi``, ``n_img``, in the units
``stats.summarize`` reads)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from .load import EVAL_ONLY, config_columns
from .metrics import ATTACKED_IMAGES, CLEAN_IMAGES, ci_high, ci_low, clean_eval, images, legacy_robust

PRIVACY_ONLY = {"epsilon", "delta", "max_grad_norm", "accountant"}  # do not change a non-private model
OWN_ONLY = ("size_bytes_float", "size_bytes_int8", "size_reduction_pct", "time_train_s", "time_adv_gen_s")


def col(frame: pd.DataFrame, name: str) -> pd.Series:
    """``frame[name]``, or NaN where the sweep did not record it. A headline robust accuracy (``..._worst``, the
    worst case over restarts) falls back, per trial, to the mean over restarts that runs from before it
    recorded (``..._mean``; its interval ``..._ci_low``/``_ci_high``): for deterministic attacks they agree."""
    legacy = legacy_robust(name)
    if name in frame.columns:
        values = frame[name]
        return values.where(values.notna(), frame[legacy]) if legacy in frame.columns else values
    if legacy in frame.columns:
        return frame[legacy]
    return pd.Series(np.nan, index=frame.index, dtype=float)


def image_count(frame: pd.DataFrame, which: str) -> pd.Series:
    """Images behind one accuracy (``metrics.CLEAN_IMAGES`` or ``ATTACKED_IMAGES``); attacked images of runs
    older than n_eval come from their eval_samples config."""
    n = col(frame, which)
    if which == ATTACKED_IMAGES:
        n = n.where(n.notna(), pd.to_numeric(col(frame, "eval_samples"), errors="coerce"))
    return n.astype(float)


def setting_columns(trials: pd.DataFrame) -> list[str]:
    """Config columns that determine a trained model (seed included), privacy fields included."""
    return [c for c in config_columns(trials) if c not in EVAL_ONLY]


def dedupe_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per (setting, seed): reruns of the same trial (a sweep run twice, several sweeps of an
    experiment) are averaged rather than counted as more seeds."""
    key = setting_columns(trials)
    if trials.duplicated(subset=key).sum() == 0:
        return trials
    numeric = [
        c
        for c in trials.columns
        if c not in key and pd.api.types.is_numeric_dtype(trials[c]) and not pd.api.types.is_bool_dtype(trials[c])
    ]
    agg = {c: "mean" for c in numeric}
    agg.update({c: "first" for c in trials.columns if c not in key and c not in numeric})
    return trials.groupby(key, dropna=False, sort=False).agg(agg).reset_index()[list(trials.columns)]


def model_sources(attacks: Sequence[str] = ()) -> dict[str, tuple[str, str, str]]:
    """Model-row value -> the metric it comes from for (a private trial's own DP model, a non-private
    trial's own model, a private trial's non-private twin)."""
    src = {
        "acc_float": ("acc_clean_float", "acc_clean_float", "acc_clean_float_nonprivate"),
        "acc_int8": ("acc_clean_int8", "acc_clean_int8", "acc_clean_int8_nonprivate"),
        "clean_eval": (clean_eval("dp"), clean_eval("nonprivate"), clean_eval("nonprivate")),
        "clean_eval_int8": (clean_eval("int8_dp"), clean_eval("int8_nonprivate"), clean_eval("int8_nonprivate")),
    }
    for a in attacks:
        # the headline: worst case over restarts (col() falls back to the mean for older runs)
        src[f"robust_{a}"] = (
            f"acc_wb_{a}_worst",
            f"acc_wb_{a}_worst",
            f"acc_transfer_{a}_nonprivate_to_nonprivate_worst",
        )
        src[f"robust_{a}_int8"] = (
            f"acc_wb_{a}_int8_worst",
            f"acc_wb_{a}_int8_worst",
            f"acc_transfer_{a}_nonprivate_to_int8_nonprivate_worst",
        )
    return src


def _fill(rows: pd.DataFrame, trials: pd.DataFrame, sources: dict, twin: bool) -> pd.DataFrame:
    """Each source's value and its Wilson bounds (``<value>_lo``, ``<value>_hi``), and the image counts."""
    for value, (dp, nonprivate, twin_metric) in sources.items():
        for suffix, name in (("", str), ("_lo", ci_low), ("_hi", ci_high)):
            if twin:
                rows[value + suffix] = col(trials, name(twin_metric)).to_numpy()
            else:
                rows[value + suffix] = np.where(trials["private"], col(trials, name(dp)), col(trials, name(nonprivate)))
    for name in (CLEAN_IMAGES, ATTACKED_IMAGES):
        rows[name] = image_count(trials, name).to_numpy()
    return rows


def model_rows(trials: pd.DataFrame, attacks: Sequence[str] = ()) -> pd.DataFrame:
    """One row per trained model and seed: each trial's own model, plus the non-private twin of a
    private trial. A twin is shared by every epsilon of its setting, so twins are deduplicated
    (one row per setting and seed). Values are fractions: acc_float, acc_int8 (whole test split),
    clean_eval, clean_eval_int8 (the attacked images), robust_<a> (white-box, float), robust_<a>_int8
    (same examples on int8), each with ``_lo``/``_hi`` (Wilson, over images); n_test, n_eval;
    size/time for own models."""
    cfg = setting_columns(trials)
    sources = model_sources(attacks)
    own = trials[cfg].copy()
    own["privacy"], own["model"] = trials["privacy"], np.where(trials["private"], "dp", "nonprivate")
    own = _fill(own, trials, sources, twin=False)
    for name in OWN_ONLY:
        own[name] = col(trials, name)
    twin_src = trials[trials["private"] & col(trials, "acc_clean_float_nonprivate").notna()]
    twin = twin_src[cfg].copy()
    twin["epsilon"] = np.nan
    twin["privacy"], twin["model"] = "non-private", "nonprivate"
    twin = _fill(twin, twin_src, sources, twin=True)
    models = pd.concat([own, twin], ignore_index=True) if len(twin) else own.reset_index(drop=True)
    key = [c for c in cfg if c not in PRIVACY_ONLY] + ["privacy"]
    values = [c for c in models.columns if c not in key and c not in ("model",) and c not in PRIVACY_ONLY]
    agg = {c: "mean" for c in values}
    agg.update({"model": "first", **{c: "first" for c in PRIVACY_ONLY if c in models.columns}})
    return models.groupby(key, dropna=False, sort=False).agg(agg).reset_index()


def interval(frame: pd.DataFrame, value: str, lo: str, hi: str, n_img: pd.Series, scale: float = 100.0) -> dict:
    """Columns for ``frame.assign(**...)``: value, img_lo, img_hi (Wilson, over images), n_img."""
    return {
        "value": scale * col(frame, value),
        "img_lo": scale * col(frame, lo),
        "img_hi": scale * col(frame, hi),
        "n_img": n_img,
    }


def metric_values(trials: pd.DataFrame, metric: str, scale: float = 100.0) -> dict:
    """A trial metric (e.g. acc_transfer_pgd_dp_to_dp_mean) with its interval over images."""
    return interval(trials, metric, ci_low(metric), ci_high(metric), image_count(trials, images(metric)), scale)


def model_values(models: pd.DataFrame, value: str, scale: float = 100.0) -> dict:
    """A model_rows value (e.g. robust_pgd) with its interval over images."""
    n_img = CLEAN_IMAGES if value in ("acc_float", "acc_int8") else ATTACKED_IMAGES
    return interval(models, value, f"{value}_lo", f"{value}_hi", col(models, n_img), scale)


def loss_reference(models: pd.DataFrame, int8: bool = False) -> tuple[pd.Series, bool]:
    """Clean accuracy to subtract a robust accuracy from: on the attacked images (clean_eval) where the
    trial recorded it, else (older runs) on the whole test split. Returns (values, fell back anywhere)."""
    same = col(models, "clean_eval_int8" if int8 else "clean_eval")
    whole = col(models, "acc_int8" if int8 else "acc_float")
    fallback = same.isna() & whole.notna()
    return same.where(~fallback, whole), bool(fallback.any())
