"""Means and t-based 95% confidence intervals over seeds, one-sided t tests, TOST, Holm, and Pareto sets."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd


def t_critical(n: int, level: float = 0.95) -> float:
    """Two-sided Student t quantile for n samples (n - 1 degrees of freedom)."""
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int, float]:
    """(mean, CI half-width, n, sample std) of the finite values; half-width NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, 0, math.nan
    if n == 1:
        return float(x[0]), math.nan, 1, math.nan
    std = float(x.std(ddof=1))
    return float(x.mean()), t_critical(n, level) * std / math.sqrt(n), n, std


def t_test(values: Sequence[float], bound: float, greater: bool) -> float:
    """One-sided one-sample t test of the finite ``values`` against ``bound``: the p-value of H0 "mean <= bound"
    (``greater``) or H0 "mean >= bound". NaN for fewer than 2 values; with no spread the test is exact
    (0 when the mean lies strictly on the alternative's side, else 1)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if len(x) < 2:
        return math.nan
    diff = float(x.mean()) - bound
    if np.allclose(x, x[0], rtol=1e-9, atol=1e-12):  # no spread (up to rounding): the mean is exact
        diff = 0.0 if math.isclose(diff, 0.0, abs_tol=1e-9 * max(1.0, abs(bound))) else diff
        return 0.0 if (diff > 0 if greater else diff < 0) else 1.0
    t = diff / (float(x.std(ddof=1)) / math.sqrt(len(x)))
    return float(stats.t.sf(t, len(x) - 1) if greater else stats.t.cdf(t, len(x) - 1))


def tost(values: Sequence[float], margin: float) -> float:
    """Two one-sided tests (Schuirmann 1987) of equivalence within ±``margin``: the p-value of H0
    "|mean| >= margin", the larger of the two one-sided p-values."""
    return max(t_test(values, -margin, greater=True), t_test(values, margin, greater=False))


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979), in the input's order; NaN entries are no test and stay
    NaN (the family is the finite ones)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    adjusted = np.maximum.accumulate([(m - i) * p[j] for i, j in enumerate(order)]) if m else []
    out[order] = np.minimum(adjusted, 1.0)
    return out


IMAGE_COLUMNS = ("img_lo", "img_hi", "n_img")  # optional inputs of summarize: a value's interval over images


def _images(group: pd.DataFrame, value: str, n: int) -> dict:
    """With one seed, the Wilson interval over images of that single value; the group's image count."""
    out = dict.fromkeys(IMAGE_COLUMNS, math.nan)
    finite = group[np.isfinite(pd.to_numeric(group[value], errors="coerce").astype(float))]
    if "n_img" in group and finite["n_img"].notna().any():
        out["n_img"] = float(finite["n_img"].min())
    if n == 1 and "img_lo" in group:
        out["img_lo"], out["img_hi"] = float(finite["img_lo"].iloc[0]), float(finite["img_hi"].iloc[0])
    return out


def summarize(frame: pd.DataFrame, by: Sequence[str], value: str = "value") -> pd.DataFrame:
    """One row per group: ``by`` columns, mean, ci95 (half-width), n, std of ``value``; and, where
    ``frame`` carries them, img_lo/img_hi (the Wilson interval over images, for n = 1 only) and
    n_img (fewest images behind one value of the group)."""
    rows = []
    for key, group in frame.groupby(list(by), dropna=False, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        mean, ci, n, std = mean_ci(group[value].tolist())
        if n:
            rows.append(
                {**dict(zip(by, key)), "mean": mean, "ci95": ci, "n": n, "std": std, **_images(group, value, n)}
            )
    return pd.DataFrame(rows, columns=[*by, "mean", "ci95", "n", "std", *IMAGE_COLUMNS])


def pareto_mask(values: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Rows of ``values`` (n x k) not dominated by another row: as good in every
    objective and better in one. NaN rows are never on the front."""
    v = np.asarray(values, dtype=float) * np.where(np.asarray(maximize), 1.0, -1.0)
    ok = ~np.isnan(v).any(axis=1)
    mask = np.zeros(len(v), dtype=bool)
    for i in np.flatnonzero(ok):
        others = v[ok]
        dominated = ((others >= v[i]).all(axis=1) & (others > v[i]).any(axis=1)).any()
        mask[i] = not dominated
    return mask


def fmt_ci(mean: float, ci: float, digits: int = 1) -> str:
    """'48.2 ± 3.1', or '48.2' when there is no CI (n = 1); '–' when there is no value."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if ci is None or not np.isfinite(ci):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {ci:.{digits}f}"


def fmt_cell(
    mean: float,
    ci: float,
    n: int,
    img_lo: float = math.nan,
    img_hi: float = math.nan,
    n_img: float = math.nan,
    digits: int = 1,
) -> str:
    """Over seeds as ``fmt_ci`` ('48.2 ± 3.1'); with a single seed, the Wilson interval over images and
    the image count where known ('48.2 [44.1, 52.3] (1,000 img)')."""
    if n != 1 or not (np.isfinite(mean) and np.isfinite(img_lo) and np.isfinite(img_hi)):
        return fmt_ci(mean, ci, digits)
    count = f" ({int(n_img):,} img)" if np.isfinite(n_img) else ""
    return f"{mean:.{digits}f} [{img_lo:.{digits}f}, {img_hi:.{digits}f}]{count}"


def n_note(ns: Sequence[int]) -> str:
    """What the error bars of a figure are, in one line."""
    ns = sorted({int(n) for n in ns if n})
    if not ns:
        return ""
    if ns == [1]:
        return "n=1 (a single seed): means only, no CI"
    if ns[0] == ns[-1]:
        return f"mean ± 95% CI (t) over seeds, n={ns[0]}"
    tail = "; n=1: no CI" if ns[0] == 1 else ""
    return f"mean ± 95% CI (t) over seeds, n={ns[0]}–{ns[-1]}{tail}"
