"""APGD-CE (Croce and Hein, 2020): step-size-free PGD on the cross-entropy, 100 iterations, one random start.

The first part of AutoAttack, as its paper runs it: ``APGD_STEPS`` iterations whatever ``attack_steps``
says (AutoAttack is parameter-free by design), so the numbers compare with published AutoAttack tables.
Randomised (a seeded random start): evaluation repeats it ``attack_repeats`` times and reports the worst
case per image. Opt-in (``default_eval=False``): name it in ``--eval-attacks``.
"""

from __future__ import annotations

from . import ATTACKS, AttackSpec

APGD_STEPS = 100  # AutoAttack's APGD iterations (Croce and Hein, 2020, section 5)


@ATTACKS.register(
    "APGDCE",
    order=10,
    randomized=True,
    cost_passes=lambda steps: APGD_STEPS,
    uses_alpha=False,
    default_eval=False,
)
def build(spec: AttackSpec, model, num_classes: int, seed: int):
    import torchattacks

    return torchattacks.APGD(model, norm="Linf", eps=spec.eps, steps=APGD_STEPS, n_restarts=1, seed=seed, loss="ce")
