"""Aggregation rules: one file per rule, each registered in AGGREGATORS.

The seam (like Flower's Strategy): each round the server hands a rule the
clients' *updates* (client weights minus the previous global weights, one
flat float64 row per client, in client order), the clients' data sizes and a
RoundContext (the round, the previous global vector, the number of Byzantine
clients the rule may assume, the rule's own parameters, the server's previous
aggregated update). The rule returns one aggregated update; the server adds it
to the previous global model.

Rules are plain functions: the one piece of server state a rule may read, the
previous round's aggregate (centered clipping's centre), is kept by the
Federation for a rule registered with ``uses_history=True``, checkpointed with
it, and handed in as ``previous_update``.

Bucketing (Karimireddy, He and Jaggi, 2022) wraps any rule: with
``bucket_size`` s set, ``aggregate`` shuffles the updates (seeded by
``seed``), averages them in ceil(n/s) buckets of s and runs the rule on the
bucket means (_bucketing.py). The config's ``bucketing`` field sets s.

Adding a rule is adding one file here::

    @AGGREGATORS.register("my_rule", params={"beta": Param(0.1, number_in(0, 1), "a number in [0, 1]")})
    def my_rule(updates, ctx): ...
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    # the server's aggregated update of the previous round (None before the first): the centre of
    # centered clipping, the paper's server momentum
    previous_update: torch.Tensor | None = None
    bucket_size: int | None = None  # bucketing's s (config field bucketing); None: no bucketing
    seed: int = 0  # seeds the round's randomness (bucketing's shuffle)


Rule = Callable[[torch.Tensor, RoundContext], torch.Tensor]


def aggregate(name: str, updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    """Run rule ``name`` on ``updates`` [n, d] and return the aggregated update [d]; with
    ``ctx.bucket_size`` > 1, on the bucket means of the shuffled updates instead."""
    rule = AGGREGATORS.get(name).obj
    if ctx.bucket_size is None or ctx.bucket_size <= 1 or len(updates) <= 1:
        return rule(updates, ctx)  # s = 1: every bucket is one update, the rule itself
    from ._bucketing import bucketed

    means, weights = bucketed(updates, ctx.weights, ctx.bucket_size, torch.Generator().manual_seed(ctx.seed))
    inner = replace(ctx, weights=weights, num_byzantine=min(ctx.num_byzantine, len(means)), bucket_size=None)
    return rule(means, inner)


discover(__name__, __path__)
