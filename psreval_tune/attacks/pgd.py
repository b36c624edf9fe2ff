"""PGD (Madry et al., 2018): ``steps`` signed-gradient steps of ``alpha`` from a random start in the eps ball."""

from __future__ import annotations

from . import ATTACKS, AttackSpec


@ATTACKS.register("PGD", order=0, randomized=True, cost_passes=lambda steps: steps, uses_alpha=True, paper=True)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    return torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)
