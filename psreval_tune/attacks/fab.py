"""FAB-T (Croce and Hein, 2020), L-inf: targeted, ``FAB_STEPS`` iterations per target, the top
``FAB_TARGETS`` other classes in turn, as AutoAttack runs it. Deterministic for a given seed, no step size.

FAB is a *minimum-norm* attack: it looks for the smallest perturbation that crosses the decision boundary
of the model it runs on, and keeps it only when it is within eps (else the clean image). Its robust
accuracy is white-box only: examples that sit just across one model's boundary say nothing about another
model's, so FAB is kept out of the transfer rows (``transfers=False``).

Before this file followed the paper, FAB ran untargeted with ``attack_steps`` (10) iterations, which is
weaker than AutoAttack's FAB-T; ``attack_steps`` no longer changes FAB.
"""

from __future__ import annotations

from . import ATTACKS, AttackSpec

# benchmarks/results/attacks.json (the --dry-run cost model, sweeps/cost.py).
FAB_COST = 6.6  # its C backward passes per step, untargeted: FAB time / (steps x fwd+bwd)
FAB_STEPS = 100  # iterations per target class (AutoAttack's FAB-T)
FAB_TARGETS = 9  # target classes, the most likely first (AutoAttack's FAB-T); fewer when the data has fewer
FAB_TARGETED_COST = 2.0  # a targeted step differentiates one logit difference: ~2 fwd+bwd (forward + JVP)


def fab_passes(steps: int, num_classes: int = 10) -> float:
    """Forward+backward passes per image of FAB-T (an upper bound: images already fooled are skipped)."""
    return FAB_STEPS * min(FAB_TARGETS, num_classes - 1) * FAB_TARGETED_COST


@ATTACKS.register(
    "FAB",
    order=2,
    randomized=False,
    cost_passes=fab_passes,
    uses_alpha=False,
    transfers=False,
    minimum_norm=True,
    default_eval=False,
    paper=True,
)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    attack = torchattacks.FAB(
        model, norm="Linf", eps=spec.eps, steps=FAB_STEPS, n_classes=num_classes, seed=seed, multi_targeted=True
    )
    attack.n_target_classes = min(FAB_TARGETS, num_classes - 1)
    return attack
