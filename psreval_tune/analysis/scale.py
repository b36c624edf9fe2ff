"""Whether a sweep's scale can support conclusions: the warning at the top of every report.

It warns, with the numbers, when
- a setting has fewer than ``MIN_SEEDS`` seeds (no useful CI over seeds);
- trials attack fewer than ``MIN_IMAGES`` images and the 95% interval over images of a robust accuracy
  is wider than accuracy differences the claims table shows (so the image sample alone could make them);
- training is short: fewer than ``MIN_PASSES`` passes over each client's data (rounds × local epochs).
Smoke and demo sweeps always trip at least one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema
from .frames import col, dedupe_trials, image_count, setting_columns
from .load import metric_columns
from .metrics import ATTACKED_IMAGES, ci_high, ci_low, wilson

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


def _white_box(name: str) -> bool:
    """A white-box robust accuracy (float, int8 or BPDA), as ``psreval_tune.schema`` declares it."""
    match = schema.lookup(name)
    return match is not None and match.statistic == "value" and match.template.startswith("acc_wb_")


def image_half_width(trials: pd.DataFrame, images: float) -> float:
    """Median half-width, in points, of the 95% interval over images of the white-box robust accuracies
    (from their recorded Wilson bounds; for older runs, Wilson at ``images``)."""
    robust = [c for c in metric_columns(trials) if _white_box(c)]
    widths = []
    for name in robust:
        lo, hi = col(trials, ci_low(name)), col(trials, ci_high(name))
        if lo.notna().any():
            widths += list(((hi - lo) / 2).dropna())
        else:
            widths += [(b - a) / 2 for a, b in (wilson(p, images) for p in trials[name].dropna())]
    if not widths:  # no robust accuracy recorded: the widest interval a proportion can have
        lo, hi = wilson(0.5, images)
        widths = [(hi - lo) / 2]
    return 100 * float(np.median(widths))


def _images(trials: pd.DataFrame, claims: pd.DataFrame | None) -> str | None:
    images = attacked_images(trials)
    if not np.isfinite(images) or images >= MIN_IMAGES:
        return None
    width = image_half_width(trials, images)
    shown = (
        claims[(claims["unit"] == "points") & np.isfinite(claims["effect"].astype(float))]
        if claims is not None and "effect" in claims
        else pd.DataFrame()
    )
    text = (
        f"few images: {int(images):,} attacked images per trial (fewer than {MIN_IMAGES:,}); a robust "
        f"accuracy's 95% interval over images is about ±{width:.1f} points"
    )
    if shown.empty:
        return text + ", wider than the 1–2 point differences the paper's claims rest on"
    smaller = int((shown["effect"].abs() < width).sum())
    if not smaller:
        return None
    return (
        text + f", wider than {smaller} of the {len(shown)} accuracy differences in the claims table "
        f"(|effect| < {width:.1f} points)"
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
