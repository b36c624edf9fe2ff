"""FGSM (Goodfellow et al., 2015): one signed-gradient step of eps; deterministic, no step size."""

from __future__ import annotations

from . import ATTACKS, AttackSpec


@ATTACKS.register("FGSM", order=1, randomized=False, cost_passes=lambda steps: 1, uses_alpha=False, paper=True)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    return torchattacks.FGSM(model, eps=spec.eps)
