"""FAB (Croce and Hein, 2020), L-inf, one restart: deterministic for a given seed, no step size."""

from __future__ import annotations

from . import ATTACKS, AttackSpec

# benchmarks/results/attacks.json (the --dry-run cost model, sweeps/cost.py).
FAB_COST = 6.6  # its C backward passes per step: FAB time / (steps x fwd+bwd)


@ATTACKS.register("FAB", order=2, randomized=False, cost_passes=lambda steps: steps * FAB_COST, uses_alpha=False)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    return torchattacks.FAB(model, norm="Linf", eps=spec.eps, steps=spec.steps, n_classes=num_classes, seed=seed)
