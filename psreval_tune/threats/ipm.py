"""Inner-product manipulation (Xie, Koyejo and Gupta, "Fall of Empires: Breaking Byzantine-tolerant
SGD by Inner Product Manipulation", UAI 2020): every malicious client sends ``-epsilon`` times the
honest clients' mean update. A small epsilon (the paper's 0.1 to 0.5) keeps the malicious updates
close to the honest ones, so median/Krum-style rules do not discard them, while the aggregate's
inner product with the true descent direction shrinks; under plain averaging of n rows with m
malicious it turns negative once epsilon > (n - m) / m.

Two regimes, set with ``threat_params={"epsilon": ...}`` (CLI ``--threat-params epsilon=4``):
- stealthy, the paper's: epsilon in [0.1, 0.5] (STEALTHY), small rows near the origin aimed at median,
  Krum and trimmed mean. The default, EPSILON = 0.5, is this regime's upper end.
- loud: epsilon > (n - m) / m reverses even the plain mean (n = 10, m = 3: epsilon > 7/3). The
  robust_fl grids run epsilon = 4 (set explicitly there), a setting every distance-based rule can spot."""

from __future__ import annotations

import torch

from ..registry import Param, number_in
from . import THREATS, UpdateContext
from ._updates import honest_rows, malicious_index

EPSILON = 0.5
STEALTHY = (0.1, 0.5)  # the paper's range of epsilon


@THREATS.register(
    "ipm",
    order=13,
    kind="update",
    needs_fraction=False,
    params={
        "epsilon": Param(
            EPSILON,
            number_in(0.0, float("inf"), low_open=True),
            "a number > 0 (stealthy, the paper's: 0.1 to 0.5; loud: > (n - m) / m)",
        )
    },
)
def corrupt(updates: torch.Tensor, malicious: list[int], ctx: UpdateContext) -> torch.Tensor:
    idx = malicious_index(updates, malicious)
    out = updates.clone()
    if len(idx) == 0:
        return out
    epsilon = ctx.params.get("epsilon", EPSILON)
    # omniscient: the adversary sees the honest updates (all rows if none are honest this round)
    out[idx] = -epsilon * honest_rows(updates, malicious).mean(dim=0)
    return out
