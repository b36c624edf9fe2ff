"""Coordinate-wise median (Yin et al., 2018): robust to a minority of arbitrary updates."""

from __future__ import annotations

import torch

from . import AGGREGATORS, RoundContext


@AGGREGATORS.register("median", order=1, robust=True)
def median(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    # For an even count the mean of the two middle values (torch.median would return the lower
    # one: with 2 clients, the coordinate-wise minimum). sort, not quantile: quantile refuses
    # inputs over 2**24 elements, a resnet18 with two clients.
    n = len(updates)
    ordered = updates.sort(dim=0).values
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2
