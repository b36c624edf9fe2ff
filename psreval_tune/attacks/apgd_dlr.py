"""APGD-DLR (Croce and Hein, 2020): APGD on the difference-of-logits-ratio loss, 100 iterations.

The DLR loss is invariant to shifting and rescaling the logits, so it still has a useful gradient where a
saturated softmax (a classic source of gradient masking) leaves cross-entropy flat. Randomised, opt-in.
"""

from __future__ import annotations

from . import ATTACKS, AttackSpec
from .apgd import APGD_STEPS


@ATTACKS.register(
    "APGDDLR",
    order=11,
    randomized=True,
    cost_passes=lambda steps: APGD_STEPS,
    uses_alpha=False,
    default_eval=False,
)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    if num_classes < 3:  # DLR divides by the gap between the first and third logit
        raise ValueError(f"APGDDLR needs at least 3 classes; this dataset has {num_classes}")
    return torchattacks.APGD(model, norm="Linf", eps=spec.eps, steps=APGD_STEPS, n_restarts=1, seed=seed, loss="dlr")
