"""Krum and Multi-Krum (Blanchard et al., 2017, "Machine Learning with Adversaries:
Byzantine Tolerant Gradient Descent", NeurIPS).

Each update's score is the sum of its squared L2 distances to its n - f - 2 nearest other
updates; Krum returns the update with the lowest score, Multi-Krum the uniform mean of the
m lowest-scoring updates (m = n: the plain mean; m = 1: Krum).

f, the number of Byzantine clients assumed, defaults to the number the operator declared
(RoundContext.num_byzantine: the config's num_malicious under a threat, else 0). Krum's
guarantee needs n >= 2f + 3. With fewer clients (2 or 3 clients are common here) the rule
still runs, with max(1, n - f - 2) neighbours (capped at the n - 1 that exist), but offers
no guarantee; a single client's update is returned as is.

Both are unweighted, as in the paper: data sizes are the clients' own claims. Ties in score
go to the lower client index (deterministic; order-invariant whenever scores differ).
"""

from __future__ import annotations

import torch

from ..registry import Param, integer_at_least
from . import AGGREGATORS, RoundContext

_F = Param(None, integer_at_least(0), "an integer >= 0, or None for num_malicious (0 without a threat)")
_M = Param(None, integer_at_least(1), "an integer >= 1, or None for n - f")


def pairwise_sq_distances(updates: torch.Tensor) -> torch.Tensor:
    """[n, n] squared L2 distances, by the Gram trick ||a||^2 + ||b||^2 - 2 a.b in float64: one
    n x n matrix product and no [n, n, d] difference tensor (at a resnet18's 11M parameters
    and 50 clients that would be about 220 GB). The rounding error is ~1e-16 * (||a||^2 + ||b||^2),
    negligible unless two distinct updates lie within ~1e-8 of their norm of each other;
    clamped at 0, exactly symmetric, diagonal exactly 0."""
    x = updates.double()
    gram = x @ x.T
    sq = gram.diagonal()
    dist = (sq[:, None] + sq[None, :] - 2 * gram).clamp_min_(0)
    dist = (dist + dist.T) / 2  # exactly symmetric, whatever the BLAS did
    dist.fill_diagonal_(0)
    return dist


def krum_scores(updates: torch.Tensor, f: int) -> torch.Tensor:
    """Each update's sum of squared distances to its max(1, n - f - 2) nearest others."""
    n = len(updates)
    neighbours = min(max(1, n - f - 2), n - 1)
    dist = pairwise_sq_distances(updates)
    dist.fill_diagonal_(float("inf"))  # an update is not its own neighbour
    return dist.sort(dim=1).values[:, :neighbours].sum(dim=1)


def _assumed_byzantine(ctx: RoundContext) -> int:
    f = ctx.params.get("f")
    return ctx.num_byzantine if f is None else f


def _ranking(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    # stable sort: equal scores keep client order, so the result is deterministic
    return krum_scores(updates, _assumed_byzantine(ctx)).sort(stable=True).indices


@AGGREGATORS.register("krum", order=3, robust=True, params={"f": _F})
def krum(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    if len(updates) == 1:
        return updates[0].clone()
    return updates[_ranking(updates, ctx)[0]].clone()


@AGGREGATORS.register("multikrum", order=4, robust=True, params={"f": _F, "m": _M})
def multikrum(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    n = len(updates)
    if n == 1:
        return updates[0].clone()
    m = ctx.params.get("m")
    m = n - _assumed_byzantine(ctx) if m is None else m
    m = min(max(1, m), n)  # f >= n or m > n: still a mean of 1..n updates, never an empty one
    # Summed row by row, not updates[chosen].mean(0) (an [m, d] copy: 4 GB for 50 resnet18
    # updates) nor weights @ updates (0 * inf is nan, so a rejected non-finite row would leak in).
    out = torch.zeros_like(updates[0])
    for i in _ranking(updates, ctx)[:m].tolist():
        out += updates[i]
    return out / m
