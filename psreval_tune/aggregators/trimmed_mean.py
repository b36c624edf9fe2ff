"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML): in every coordinate, drop the k largest and the
k smallest client values and average the rest, with k = floor(trim_ratio * n).

Unweighted, as in the paper: a client's data size is its own claim, and a Byzantine client
could inflate it. With k == 0 (few clients or trim_ratio == 0) it is the plain uniform mean.
"""

from __future__ import annotations

import math

import torch

from ..registry import Param, number_in
from . import AGGREGATORS, RoundContext

# Columns are sorted a block at a time so the sort's values + int64 indices stay near
# 2**24 elements (~400 MB) however large the model: 50 clients of a resnet18 (11M
# parameters) sorted at once would need ~9 GB.
_BLOCK_ELEMENTS = 1 << 24


def trim_count(trim_ratio: float, n: int) -> int:
    """k, the values dropped from each end of every coordinate. The 1e-9 absorbs binary
    rounding (0.29 * 100 == 28.999999999999996); the cap keeps at least one value."""
    k = math.floor(trim_ratio * n + 1e-9)
    return max(0, min(k, (n - 1) // 2))


@AGGREGATORS.register(
    "trimmed_mean",
    order=2,
    robust=True,
    params={"trim_ratio": Param(0.2, number_in(0, 0.5, high_open=True), "a number in [0, 0.5)")},
)
def trimmed_mean(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    n, d = updates.shape
    k = trim_count(ctx.params.get("trim_ratio", 0.2), n)
    if k == 0:
        return updates.mean(dim=0)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, d, step):  # d / step iterations, each a vectorised sort
        block = updates[:, start : start + step].sort(dim=0).values
        out[start : start + step] = block[k : n - k].mean(dim=0)
    return out
