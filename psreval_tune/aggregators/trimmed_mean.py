"""Coordinate-wise trimmed mean (Yin et al., 2018, "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML): in every coordinate, drop the k largest and the
k smallest client values and average the rest, with k = floor(trim_ratio * n).

trim_ratio is the paper's beta, and its guarantee needs beta >= f / n (f Byzantine of n): every
malicious value must be trimmable from either end. Left unset (None) it is f / n, i.e. k = f, with f
the Byzantine clients the server assumes this round (RoundContext.num_byzantine: the config's
num_malicious, capped by the round's clients, under a threat); without a threat it is the old fixed
0.2 (DEFAULT_RATIO). An explicit trim_ratio is used as given, including a misconfigured one: 0.2 with
3 of 10 clients malicious trims 2 per side and lets 1 attacker through, as the robust_fl grids show.

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
DEFAULT_RATIO = 0.2  # trim_ratio when it is unset and no Byzantine client is assumed


def trim_count(trim_ratio: float, n: int) -> int:
    """k, the values dropped from each end of every coordinate. The 1e-9 absorbs binary
    rounding (0.29 * 100 == 28.999999999999996); the cap keeps at least one value."""
    k = math.floor(trim_ratio * n + 1e-9)
    return max(0, min(k, (n - 1) // 2))


def round_trim_count(ctx: RoundContext, n: int) -> int:
    """k for this round: from trim_ratio when it is set, else f (= floor(f/n * n)) when the server
    assumes f > 0 Byzantine clients, else from DEFAULT_RATIO; capped like trim_count."""
    ratio = ctx.params.get("trim_ratio")
    if ratio is not None:
        return trim_count(ratio, n)
    if ctx.num_byzantine > 0:
        return max(0, min(ctx.num_byzantine, (n - 1) // 2))
    return trim_count(DEFAULT_RATIO, n)


@AGGREGATORS.register(
    "trimmed_mean",
    order=2,
    robust=True,
    params={
        "trim_ratio": Param(
            None,
            number_in(0, 0.5, high_open=True),
            "a number in [0, 0.5), or None for f/n (num_malicious under a threat, else 0.2)",
        )
    },
)
def trimmed_mean(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    n, d = updates.shape
    k = round_trim_count(ctx, n)
    if k == 0:
        return updates.mean(dim=0)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    step = max(1, _BLOCK_ELEMENTS // n)
    for start in range(0, d, step):  # d / step iterations, each a vectorised sort
        block = updates[:, start : start + step].sort(dim=0).values
        out[start : start + step] = block[k : n - k].mean(dim=0)
    return out
