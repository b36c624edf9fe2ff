"""Shared by adv_training and train_time_attack: adversarial examples of a client's data."""

from __future__ import annotations

import torch

from ..attacks import AttackSpec, generate
from . import PoisonContext


def adversarial_examples(ctx: PoisonContext) -> torch.Tensor:
    return generate(
        ctx.model,
        ctx.x,
        ctx.y,
        AttackSpec.from_config(ctx.cfg),
        num_classes=ctx.num_classes,
        seed=ctx.cfg.seed * 1000 + ctx.round,
        device=ctx.device,
    )
