"""Whether a sweep's scale can support conclusions: the warning at the top of every report.

It warns, with the numbers, when
- a setting has fewer than ``MIN_SEEDS`` seeds (no useful CI over seeds);
- trials attack fewer than ``MIN_IMAGES`` images and accuracy differences of the claims table, whose 95%
  intervals are computed from the paired (per-seed) differences, reach across their bound;
- training is short: fewer than ``MIN_PASSES`` passes over each client's data (rounds × local epochs).
Smoke and demo sweeps always trip at least one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .claims import INCONCLUSIVE
from .frames import col, dedupe_trials, image_count, setting_columns
from .metrics import ATTACKED_IMAGES, CLEAN_IMAGES

MIN_SEEDS, MIN_IMAGES, MIN_PASSES = 3, 1000, 10
SCALE_HEADLINE = "This sweep's scale cannot support conclusions"


def _seeds(trials: pd.DataFrame) -> str | None:
    key = [c for c in setting_columns(trials) if c != "seed"]
    counts = trials.astype({c: str for c in key}).groupby(key, dropna=False)["seed"].nunique()
    few = counts[counts < MIN_SEEDS]
    if few.empty:
        return None
    return (
        f"too few seeds: {len(few)} of {len(counts)} settings have fewer than {MIN_SEEDS} seeds (fewest: "
        f"{int(counts.min())}), so most numbers have no confidence interval over seeds or a very wide one"
    )


def attacked_images(trials: pd.DataFrame) -> float:
    """Fewest images attacked in one trial (n_eval; eval_samples for runs older than n_eval); NaN if unknown."""
    n = image_count(trials, ATTACKED_IMAGES)
    return float(n.min()) if n.notna().any() else np.nan


def _paired(claims: pd.DataFrame | None) -> pd.DataFrame:
    """The claims table's accuracy differences that have a 95% CI over seeds (paired by seed)."""
    if claims is None or "effect" not in claims or claims.empty:
        return pd.DataFrame()
    low, high = claims["ci_low"].astype(float), claims["ci_high"].astype(float)
    applicable = claims["applicable"].astype(bool) if "applicable" in claims else True  # n/a rows judge nothing
    return claims[(claims["unit"] == "points") & np.isfinite(low) & np.isfinite(high) & applicable]


def _images(trials: pd.DataFrame, claims: pd.DataFrame | None) -> str | None:
    """Few attacked images, judged by the claims' paired differences: how wide their 95% intervals (over seeds,
    each seed's difference taken on the same images) are, and how many reach across their bound."""
    images = attacked_images(trials)
    if not np.isfinite(images) or images >= MIN_IMAGES:
        return None
    text = f"few images: {int(images):,} attacked images per trial (fewer than {MIN_IMAGES:,})"
    paired = _paired(claims)
    if paired.empty:
        return text
    open_ = paired[paired["verdict"] == INCONCLUSIVE]
    if open_.empty:
        return None
    half = float(np.median((paired["ci_high"] - paired["ci_low"]) / 2))
    text += (
        f"; the claims table's accuracy differences, paired by seed, have 95% intervals of about ±{half:.1f} points "
        f"(median) and {len(open_)} of the {len(paired)} reach across their bound"
    )
    same = image_count(trials, ATTACKED_IMAGES).eq(image_count(trials, CLEAN_IMAGES)).all()
    return text + (
        "; every seed is attacked on the same images, so these intervals leave out the image sample's own error"
        if same
        else ""
    )


def _passes(trials: pd.DataFrame) -> str | None:
    if "rounds" not in trials:
        return None
    rounds = pd.to_numeric(trials["rounds"], errors="coerce")
    epochs = pd.to_numeric(col(trials, "local_epochs"), errors="coerce").fillna(1)
    passes = rounds * epochs
    if not passes.notna().any() or passes.min() >= MIN_PASSES:
        return None
    i = passes.idxmin()
    return (
        f"short training: {int(rounds[i])} rounds × {int(epochs[i])} local epoch(s) = {int(passes[i])} passes "
        f"over each client's data (fewer than {MIN_PASSES}); models this short-trained may not have converged"
    )


def scale_warnings(trials: pd.DataFrame, claims: pd.DataFrame | None = None) -> list[str]:
    """What about this sweep's scale cannot support conclusions, one line each (empty: nothing).
    ``claims``: the claims table (``analysis.claims.claims_table``), computed here if not given."""
    trials = dedupe_trials(trials)
    if claims is None:
        from .claims import claims_table

        claims = claims_table(trials)
    return [w for w in (_seeds(trials), _images(trials, claims), _passes(trials)) if w]


def scale_markdown(warnings: list[str]) -> list[str]:
    """The warning block at the top of a markdown page (nothing when the scale is adequate)."""
    if not warnings:
        return []
    return [f"> **{SCALE_HEADLINE}:**", ">"] + [f"> - {w}" for w in warnings] + [""]
