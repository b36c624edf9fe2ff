"""Adversaries during federated training: one file per threat, each registered in THREATS.

Three kinds, named by the entry's ``kind``:
- ``none``: every client is honest.
- ``data``: the malicious clients train honestly on data the threat rewrites
  (``poison(ctx) -> (x, y)``), once before training (``fresh_each_round=False``)
  or every round against the current global model (``fresh_each_round=True``).
- ``update``: the malicious clients' updates are replaced after local training
  (``corrupt(updates, malicious, ctx) -> updates``, all clients' rows in, the same
  shape out); an omniscient adversary sees the honest rows (ALIE, IPM). An update
  threat may also rewrite its clients' data first (metadata ``poison``, with
  ``fresh_each_round``): model replacement boosts a backdoored update.

Malicious clients are ``num_malicious`` clients starting at ``adversary_client``.
A threat with ``trigger`` metadata (a backdoor) also says how to stamp test
images, so the cycle can report its attack success rate.

Adding a threat is adding one file here::

    @THREATS.register("my_attack", kind="update", params={"scale": Param(...)})
    def corrupt(updates, malicious, ctx): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..baselines import NO_THREAT
from ..registry import Registry, discover

if TYPE_CHECKING:
    from ..registry import ConfigView

THREATS = Registry("threat")
KINDS = ("none", "data", "update")


@dataclass(frozen=True)
class PoisonContext:
    """What a data threat sees: its client's clean data and the current global model."""

    cfg: ConfigView
    model: nn.Module  # the plain global model (never the Opacus wrapper: the accountant is untouched)
    x: torch.Tensor
    y: torch.Tensor
    round: int  # 0 = before training (static poisoning), else the round about to be trained
    num_classes: int
    device: str
    seed: int
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UpdateContext:
    """What an update threat sees besides all clients' updates."""

    round: int
    global_vector: torch.Tensor
    generator: torch.Generator
    params: dict[str, Any] = field(default_factory=dict)


def data_poisoner(entry: Any) -> Any:
    """The function that rewrites the malicious clients' data under threat ``entry``, or None."""
    return entry.obj if entry.kind == "data" else entry.meta.get("poison")


def malicious_clients(cfg: ConfigView) -> list[int]:
    """The adversary's client ids (none without a threat)."""
    if cfg.threat == NO_THREAT:
        return []
    return [(cfg.adversary_client + i) % cfg.num_clients for i in range(cfg.num_malicious)]


discover(__name__, __path__)
