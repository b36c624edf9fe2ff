"""Metric-name helpers for analysis/; the names themselves are declared once, in ``psreval_tune.schema``.

Which columns of a trials frame are metrics comes from the source (``load.py``), not from here.
Everything here names one metric family, so no report spells a name by hand:
``ci_low``/``ci_high`` (the Wilson 95% interval over images beside every accuracy),
``clean_eval`` (clean accuracy on exactly the attacked images) and the image counts.
"""

from __future__ import annotations

from .. import schema
from ..intervals import wilson  # noqa: F401 - metrics.wilson: the one Wilson interval (as evaluate.wilson)

# Per-round values (their last value is not a final metric)
PER_ROUND = frozenset(m.template for m in schema.METRICS if m.when == schema.PER_ROUND)


def is_metric(name: str) -> bool:
    """Whether ``psreval_tune.schema`` declares ``name`` (any metric, per-round ones included)."""
    return schema.is_metric(name)


TARGETS = schema.TARGETS
GENERATORS = schema.GENERATORS
CLEAN_IMAGES = "n_test"  # clean accuracies (acc_clean_float, ...) use the whole test split
ATTACKED_IMAGES = "n_eval"  # robust accuracies and acc_clean_eval_* use the attacked images


def better(name: str) -> str:
    """'higher is better' / 'lower is better' for metric ``name``, from its direction in ``psreval_tune.schema``;
    '' where neither (or unknown)."""
    direction = schema.direction(name)
    return f"{direction} is better" if direction in (schema.HIGHER, schema.LOWER) else ""


def maximize(names: list[str]) -> list[bool]:
    """Per metric: whether higher is better (``psreval_tune.schema``), for ``stats.pareto_mask``."""
    return [schema.direction(n) == schema.HIGHER for n in names]


def _stem(name: str) -> str:
    return name[: -len("_mean")] if name.endswith("_mean") else name


def ci_low(name: str) -> str:
    """'acc_wb_pgd_mean' -> 'acc_wb_pgd_ci_low'; 'acc_clean_float' -> 'acc_clean_float_ci_low'."""
    return f"{_stem(name)}_ci_low"


def ci_high(name: str) -> str:
    return f"{_stem(name)}_ci_high"


def legacy_robust(name: str) -> str:
    """The pre-headline name of a headline robust accuracy: ``acc_wb_pgd_worst`` -> ``acc_wb_pgd_mean`` (the mean
    over restarts), ``..._worst_ci_low`` -> ``..._ci_low``; any other name unchanged."""
    if name.endswith("_worst"):
        return name[: -len("_worst")] + "_mean"
    for tail in ("_ci_low", "_ci_high"):
        if name.endswith("_worst" + tail):
            return name[: -len("_worst" + tail)] + tail
    return name


def clean_eval(target: str) -> str:
    """Clean accuracy of ``target`` (TARGETS) on exactly the images that were attacked."""
    return f"acc_clean_eval_{target}"


def images(name: str) -> str:
    """The image-count metric behind accuracy ``name``."""
    return CLEAN_IMAGES if name.startswith(("acc_clean_float", "acc_clean_int8")) else ATTACKED_IMAGES
