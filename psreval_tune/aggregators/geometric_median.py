"""Geometric median of the client updates (Pillutla, Kakade and Harchaoui, 2022, "Robust
Aggregation for Federated Learning", IEEE TSP: RFA), by the smoothed Weiszfeld algorithm.

The geometric median minimises the sum of Euclidean distances to the updates, so a minority of
clients moves it by a bounded amount however far away they are (breakdown point 1/2), while,
unlike the coordinate-wise median, it is rotation-invariant. Weiszfeld's iteration reweights each
update by 1 / distance to the current estimate; ``nu`` smooths the distance so an estimate that
lands on an update does not divide by zero. Weighted by data size, as RFA is.
"""

from __future__ import annotations

import torch

from ..registry import Param, integer_at_least, number_in
from . import AGGREGATORS, RoundContext


@AGGREGATORS.register(
    "geometric_median",
    order=6,
    robust=True,
    params={
        "iters": Param(10, integer_at_least(1), "an integer >= 1"),  # RFA reports 3-5 suffice
        "nu": Param(1e-6, number_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    },
)
def geometric_median(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    weights = ctx.weights.to(updates.dtype)
    z = weights @ updates  # start from the weighted mean
    for _ in range(ctx.params.get("iters", 10)):
        dist = torch.linalg.vector_norm(updates - z, dim=1).clamp_min(ctx.params.get("nu", 1e-6))
        beta = weights / dist
        z = (beta / beta.sum()) @ updates
    return z
