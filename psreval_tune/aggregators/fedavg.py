"""FedAvg (McMahan et al., 2017): the data-size-weighted mean of client updates."""

from __future__ import annotations

import torch

from ..baselines import PLAIN_MEAN
from . import AGGREGATORS, RoundContext


@AGGREGATORS.register(PLAIN_MEAN, order=0, robust=False)
def fedavg(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    return ctx.weights @ updates
