"""The paper's train-time attack (poisoning): the client's data is replaced every round by
adversarial examples against the current global model, labelled with that model's own
predictions on them, so the federation learns the adversary's mistakes as truth."""

from __future__ import annotations

import torch

from ..evaluate import predict
from . import THREATS, PoisonContext
from ._adversarial import adversarial_examples


@THREATS.register(
    "train_time_attack", order=2, kind="data", fresh_each_round=True, needs_fraction=True, uses_attack=True
)
def poison(ctx: PoisonContext) -> tuple[torch.Tensor, torch.Tensor]:
    adv = adversarial_examples(ctx)
    return adv, predict(ctx.model, adv)
