"""A little is enough (Baruch, Baruch and Goldberg, "A Little Is Enough: Circumventing Defenses For
Distributed Learning", NeurIPS 2019): every malicious client sends mu - z * sigma, the honest
updates' coordinate-wise mean shifted by z of their standard deviations. The shift is small enough
that each coordinate stays within the spread of honest values (so median, trimmed mean and Krum keep
it) yet consistent across coordinates and clients, so it biases the aggregate every round.

z defaults to the paper's z_max for this round's n updates of which m are malicious (``default_z``):
s = floor(n/2 + 1) - m, z = Phi^-1((n - s) / n); e.g. n = 10, m = 3: z = 0.524; n = 50, m = 10:
z = 0.468. ``z`` set explicitly overrides it: a "loud" setting such as the robust_fl grids' z = 5
moves every coordinate five standard deviations and is no longer the paper's stealthy attack."""

from __future__ import annotations

import math
from statistics import NormalDist

import torch

from ..registry import Param, number_in
from . import THREATS, UpdateContext
from ._updates import honest_rows, malicious_index


def default_z(n: int, m: int) -> float:
    """The paper's z_max for n clients of which m are malicious: s = floor(n/2 + 1) - m honest
    clients must be "won over" for the malicious value to sit past the median, so z is the largest
    value with Phi(z) < (n - s) / n, i.e. z = Phi^-1((n - s) / n).

    Edge cases, so z is finite and >= 0: with a malicious majority s <= 0 and the paper's bound is
    vacuous (Phi^-1(>= 1) = inf); s is then taken as 1 (one supporter still needed), giving the
    largest finite z the formula produces for this n. (n - s) / n below 1/2 (only for n = 1) would give
    a negative z, a shift the other way; it is clamped to 1/2, i.e. z = 0 (send the mean).
    """
    s = max(math.floor(n / 2 + 1) - m, 1)
    p = max((n - s) / n, 0.5)
    return NormalDist().inv_cdf(p)


@THREATS.register(
    "alie",
    order=12,
    kind="update",
    needs_fraction=False,
    params={
        "z": Param(
            None,
            number_in(0.0, float("inf")),
            "a number >= 0, or none for the paper's z from n clients and m malicious",
        )
    },
)
def corrupt(updates: torch.Tensor, malicious: list[int], ctx: UpdateContext) -> torch.Tensor:
    idx = malicious_index(updates, malicious)
    out = updates.clone()
    if len(idx) == 0:
        return out
    z = ctx.params.get("z")
    if z is None:
        z = default_z(len(updates), len(idx))
    honest = honest_rows(updates, malicious)
    mu = honest.mean(dim=0)
    # unbiased std as in the authors' code (torch.std); one row has no spread, so sigma = 0 there
    # rather than the NaN torch.std would return
    sigma = honest.std(dim=0) if len(honest) > 1 else torch.zeros_like(mu)
    out[idx] = mu - z * sigma
    return out
