"""Model replacement by scaling (Bagdasaryan et al., "How To Backdoor Federated Learning",
AISTATS 2020): each malicious client trains on backdoored data (backdoor.py's BadNets trigger,
with its parameters) and multiplies its update by ``boost``. With plain averaging over n
clients, a boost of n / m (m malicious) makes the malicious updates outweigh the honest ones as
if the adversary's backdoored model replaced the global one; that is the default. Boosting an
honest update would only take a larger step along the honest direction: the backdoor is what the
replacement carries, and its attack success rate is what the cycle reports."""

from __future__ import annotations

import torch

from ..registry import Param, number_in
from . import THREATS, UpdateContext
from ._updates import malicious_index
from .backdoor import PARAMS, apply_trigger, attack_success_rate, check_config
from .backdoor import poison as backdoor_poison


@THREATS.register(
    "scaling",
    order=11,
    kind="update",
    needs_fraction=False,
    poison=backdoor_poison,  # the data the malicious clients train on, poisoned once before training
    fresh_each_round=False,
    trigger=apply_trigger,
    asr=attack_success_rate,
    check=check_config,  # the backdoor's data-bound parameters
    params={
        "boost": Param(
            None, number_in(0.0, float("inf"), low_open=True), "a number > 0, or none for n / m (clients / malicious)"
        ),
        **PARAMS,
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
