"""Sign flipping: each malicious client sends its own honest update with the sign flipped,
``-scale * update``, pushing the global model uphill on its loss (the Byzantine baseline of
Damaskinos et al., "Asynchronous Byzantine Machine Learning", ICML 2018, and of Li et al.,
"RSA: Byzantine-Robust Stochastic Aggregation Methods", AAAI 2019). ``scale=1`` is the common
definition, a pure sign flip; larger values also enlarge the update's norm."""

from __future__ import annotations

import torch

from ..registry import Param, number_in
from . import THREATS, UpdateContext
from ._updates import malicious_index

SCALE = 1.0


@THREATS.register(
    "sign_flip",
    order=10,
    kind="update",
    needs_fraction=False,
    params={"scale": Param(SCALE, number_in(0.0, float("inf"), low_open=True), "a number > 0")},
)
def corrupt(updates: torch.Tensor, malicious: list[int], ctx: UpdateContext) -> torch.Tensor:
    scale = ctx.params.get("scale", SCALE)
    idx = malicious_index(updates, malicious)
    out = updates.clone()  # the caller's tensor stays as it was (it may still hold the honest updates)
    out[idx] = -scale * updates[idx]
    return out
