"""Aggregation rules: one file per rule, each registered in AGGREGATORS.

The seam (like Flower's Strategy): each round the server hands a rule the
clients' *updates* (client weights minus the previous global weights, one
flat float64 row per client, in client order), the clients' data sizes and a
RoundContext (the round, the previous global vector, the number of Byzantine
clients the rule may assume, the rule's own parameters). The rule returns
one aggregated update; the server adds it to the previous global model.

Adding a rule is adding one file here::

    @AGGREGATORS.register("my_rule", params={"beta": Param(0.1, number_in(0, 1), "a number in [0, 1]")})
    def my_rule(updates, ctx): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..registry import Registry, discover

AGGREGATORS = Registry("aggregation")


@dataclass(frozen=True)
class RoundContext:
    round: int
    global_vector: torch.Tensor  # the previous global model, flattened like the updates
    weights: torch.Tensor  # float64 [n], client data sizes / their sum
    num_byzantine: int = 0  # Byzantine clients the rule may assume (Krum's f); the config's num_malicious
    params: dict[str, Any] = field(default_factory=dict)  # the rule's parameters, defaults filled in


Rule = Callable[[torch.Tensor, RoundContext], torch.Tensor]


def aggregate(name: str, updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """Run rule ``name`` on ``updates`` [n, d] and return the aggregated update [d]."""
    return AGGREGATORS.get(name).obj(updates, ctx)


discover(__name__, __path__)
