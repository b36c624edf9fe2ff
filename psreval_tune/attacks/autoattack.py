"""AutoAttack, standard version (Croce and Hein, 2020): APGD-CE, APGD-T, FAB-T and Square in turn, each on
the images the previous ones left correctly classified; an image counts as robust only if all four fail.

As the paper runs it, not as torchattacks' ``AutoAttack`` defaults (10 iterations): APGD-CE 100
iterations, APGD-T 100 iterations x 9 target classes, FAB-T 100 iterations x 9 targets, Square 5,000
queries, one restart each, one fixed seed. Deterministic for a given seed (``randomized=False``: the
standard version is run once). White-box only (``transfers=False``): its examples come from four
attacks, one of them minimum-norm. Opt-in, and expensive: the cycle runs it on a fixed, seeded subset of
the attacked images (``autoattack_samples``, cycle.autoattack_metrics), reported as ``acc_wb_autoattack``.
"""

from __future__ import annotations

from . import ATTACKS, AttackSpec
from .apgd import APGD_STEPS
from .fab import FAB_STEPS, FAB_TARGETED_COST, FAB_TARGETS
from .square import FORWARD_SHARE, SQUARE_QUERIES


def autoattack_passes(steps: int, num_classes: int = 10) -> float:
    """Forward+backward passes per image if every part ran on every image (an upper bound: each part
    only attacks the images the previous ones did not fool)."""
    targets = min(FAB_TARGETS, num_classes - 1)
    return APGD_STEPS * (1 + targets) + FAB_STEPS * targets * FAB_TARGETED_COST + SQUARE_QUERIES * FORWARD_SHARE


@ATTACKS.register(
    "AutoAttack",
    order=13,
    randomized=False,
    cost_passes=autoattack_passes,
    uses_alpha=False,
    default_eval=False,
    transfers=False,
)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    targets = min(FAB_TARGETS, num_classes - 1)
    apgd_ce = torchattacks.APGD(model, norm="Linf", eps=spec.eps, steps=APGD_STEPS, n_restarts=1, seed=seed, loss="ce")
    apgd_t = torchattacks.APGDT(
        model, norm="Linf", eps=spec.eps, steps=APGD_STEPS, n_restarts=1, seed=seed, n_classes=num_classes
    )
    apgd_t.n_target_classes = targets
    fab_t = torchattacks.FAB(
        model, norm="Linf", eps=spec.eps, steps=FAB_STEPS, n_classes=num_classes, seed=seed, multi_targeted=True
    )
    fab_t.n_target_classes = targets
    square = torchattacks.Square(model, norm="Linf", eps=spec.eps, n_queries=SQUARE_QUERIES, n_restarts=1, seed=seed)
    return torchattacks.MultiAttack([apgd_ce, apgd_t, fab_t, square])
