"""Adversarial training (the paper's defence): the client's data is replaced every round by
adversarial examples of it against the current global model, with their true labels."""

from __future__ import annotations

import torch

from . import THREATS, PoisonContext
from ._adversarial import adversarial_examples


@THREATS.register("adv_training", order=1, kind="data", fresh_each_round=True, needs_fraction=True, uses_attack=True)
def poison(ctx: PoisonContext) -> tuple[torch.Tensor, torch.Tensor]:
    return adversarial_examples(ctx), ctx.y
