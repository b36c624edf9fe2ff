"""The Wilson score interval every accuracy is reported with (the cycle's ``<metric>_ci_low`` /
``_ci_high``, cross-seed transfer, the recipe check, the analysis).

This module imports nothing from the package, nor torch.
"""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``p`` measured on ``n`` images, within [0, 1].

    Better than p +- z*sqrt(p(1-p)/n) near 0 and 1, where robust accuracies
    live. For a mean over attack runs on the same images, n is still the
    number of images: the runs are not independent samples. (NaN, NaN) when
    there are no images (n missing or not > 0) or ``p`` is not a finite number.
    """
    if not (n and n > 0) or p is None or not math.isfinite(p):
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # rounding leaves the bounds a hair outside [0, 1] at p = 0 and p = 1
    return max(0.0, centre - half), min(1.0, centre + half)
