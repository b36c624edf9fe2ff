"""Square (Andriushchenko et al., 2020): a gradient-free, score-based random search, 5,000 queries.

It never looks at a gradient, so a model that is "robust" only because its gradients are useless
(gradient masking: a rounding layer, a saturated softmax, DP noise) falls to Square but not to PGD.
That is the gradient-masking check ``masking_suspect_square`` (evaluate.masking_checks). Randomised
(seeded random squares), opt-in. Cost: forward passes only, and it stops on an image once fooled;
``cost_passes`` counts its queries as a third of a forward+backward pass each (an upper bound).
"""

from __future__ import annotations

from . import ATTACKS, AttackSpec

SQUARE_QUERIES = 5000  # AutoAttack's budget (Croce and Hein, 2020)
FORWARD_SHARE = 1 / 3  # a forward pass / a forward+backward pass


@ATTACKS.register(
    "Square",
    order=12,
    randomized=True,
    cost_passes=lambda steps: SQUARE_QUERIES * FORWARD_SHARE,
    uses_alpha=False,
    default_eval=False,
)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    return torchattacks.Square(model, norm="Linf", eps=spec.eps, n_queries=SQUARE_QUERIES, n_restarts=1, seed=seed)
