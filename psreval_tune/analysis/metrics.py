"""The cycle's metric names, declared once for analysis/ (README, "Metrics").

``load.py`` uses ``is_metric`` to tell a trial's metrics from its config: a final metric
that were taken for a config field would become a grouping key and silently split seeds.
Everything else here names one metric family, so no report spells a name by hand:
``ci_low``/``ci_high`` (the Wilson 95% interval over images beside every accuracy),
``clean_eval`` (clean accuracy on exactly the attacked images) and the image counts.
"""

from __future__ import annotations

import math
import re

# Final metrics that do not start with acc_/size_/time_
EXACT = frozenset(
    {
        "n_test",
        "n_eval",
        "n_val",
        "epsilon_spent",
        "noise_multiplier",
        "sample_rate",
        "dp_steps",
        "dp_bookkeeping",  # 1: book-keeping clipping trained the DP model, 0: Opacus' hooks (a number, not a config)
        "final_train_loss",
    }
)
PATTERNS = tuple(
    re.compile(p)
    for p in (
        r"acc_.+",  # accuracies (fractions), their _std, _ci_low, _ci_high; acc_loss_*; acc_val_*
        r"size_.+",  # size_bytes_float, size_bytes_int8, size_reduction_pct
        r"time_.+_s",  # wall seconds per phase
        r"attack_runs_[a-z]+",  # runs a robust accuracy's mean is over (1 for deterministic attacks)
    )
)
# Per-round values (their last value is not a final metric); acc_clean is the old per-round name
PER_ROUND = frozenset({"round", "train_loss", "acc_val", "acc_clean", "epsilon", "lr"})

TARGETS = ("nonprivate", "dp", "int8_nonprivate", "int8_dp")
CLEAN_IMAGES = "n_test"  # clean accuracies (acc_clean_float, ...) use the whole test split
ATTACKED_IMAGES = "n_eval"  # robust accuracies and acc_clean_eval_* use the attacked images
Z95 = 1.959963984540054


def is_metric(name: str) -> bool:
    return name in EXACT or any(p.fullmatch(name) for p in PATTERNS)


def _stem(name: str) -> str:
    return name[: -len("_mean")] if name.endswith("_mean") else name


def ci_low(name: str) -> str:
    """'acc_wb_pgd_mean' -> 'acc_wb_pgd_ci_low'; 'acc_clean_float' -> 'acc_clean_float_ci_low'."""
    return f"{_stem(name)}_ci_low"


def ci_high(name: str) -> str:
    return f"{_stem(name)}_ci_high"


def clean_eval(target: str) -> str:
    """Clean accuracy of ``target`` (TARGETS) on exactly the images that were attacked."""
    return f"acc_clean_eval_{target}"


def images(name: str) -> str:
    """The image-count metric behind accuracy ``name``."""
    return CLEAN_IMAGES if name.startswith(("acc_clean_float", "acc_clean_int8")) else ATTACKED_IMAGES


def wilson(p: float, n: float, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` measured on ``n`` images."""
    if not (n and n > 0) or not math.isfinite(p):
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half
