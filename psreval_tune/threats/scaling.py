"""Model replacement by scaling (Bagdasaryan et al., "How To Backdoor Federated Learning",
AISTATS 2020): each malicious client multiplies its own update by ``boost``. With plain
averaging over n clients, a boost of n / m (m malicious) makes the malicious updates outweigh
the honest ones as if the adversary's model replaced the global one; that is the default."""

from __future__ import annotations

import torch

from ..registry import Param, number_in
from . import THREATS, UpdateContext
from ._updates import malicious_index


@THREATS.register(
    "scaling",
    order=11,
    kind="update",
    needs_fraction=False,
    params={
        "boost": Param(
            None, number_in(0.0, float("inf"), low_open=True), "a number > 0, or none for n / m (clients / malicious)"
        )
    },
)
def corrupt(updates: torch.Tensor, malicious: list[int], ctx: UpdateContext) -> torch.Tensor:
    idx = malicious_index(updates, malicious)
    out = updates.clone()
    if len(idx) == 0:  # no malicious client sampled this round: nothing to boost (and n / 0 is undefined)
        return out
    boost = ctx.params.get("boost")
    if boost is None:
        # n / m over the rows of this round: the sampled clients are the ones FedAvg divides by
        boost = len(updates) / len(idx)
    out[idx] = boost * updates[idx]
    return out
