"""Centered clipping (Karimireddy, He and Jaggi, 2021, "Learning from History for Byzantine
Robust Optimization", ICML), iterated L = ``iters`` times from a reference point v:

    v <- v + (1/n) * sum_i (x_i - v) * min(1, tau / ||x_i - v||)

The paper's reference is the previous round's aggregate momentum. RoundContext carries no
server momentum, so the reference here is the zero update, i.e. the previous global model;
each iteration then re-centres on the current estimate.

Why it is robust: every client's term moves v by at most tau / n per iteration, however far
away the client is. Two bounds follow (tests/test_aggregators.py asserts both for f = 1):
- if no honest update is ever clipped, f Byzantine clients leave the result within
  (f/n)**L * ||mu|| + f * tau * L / n of the honest mean mu (v_0 = 0: u_t = v_t - mu obeys
  u_{t+1} = (f/n) u_t + e_t with ||e_t|| <= f * tau / n);
- with no assumption, replacing f clients' updates by anything moves the result by at most
  2 * f * tau * L / n (each v -> v + clip(x_i - v) is 1-Lipschitz).
The flip side: starting from zero, the result's norm is at most tau * L, so tau must be near
the honest update norm or the rule shrinks honest progress.

tau is an L2 radius in the units of a model update (client weights minus the global weights,
all parameters flattened), the same units as the config's client_clip (default 1.0). The
default 1.0 with 3 iterations is sized for the digits CNN's updates: in three FedAvg rounds
with the digits.cnn.nonprivate recipe's lr, momentum, batch size and local epochs (no LR
schedule; the training split halved between 2 clients; measured once, seed 0) the update
norms were 0.9 to 3.1 and the distance between the two clients 0.8 to 1.5. Larger models take
larger steps and need a larger tau (aggregation_params={"tau": ...}).

The mean is uniform over clients, as in the paper (data sizes are the clients' own claims).
A client whose distance to v is not finite contributes nothing (its clipped direction is
undefined; 0 * inf would be nan).
"""

from __future__ import annotations

import torch

from ..registry import Param, integer_at_least, number_in
from . import AGGREGATORS, RoundContext

# Rows are processed a block at a time so the (x_i - v) temporary stays near 2**24 elements
# (128 MB); a resnet18 (11M parameters) takes one row per block, a small CNN all rows at once.
_BLOCK_ELEMENTS = 1 << 24


@AGGREGATORS.register(
    "centered_clipping",
    order=5,
    robust=True,
    params={
        "tau": Param(1.0, number_in(0, float("inf"), low_open=True, high_open=True), "a finite number > 0"),
        "iters": Param(3, integer_at_least(1), "an integer >= 1"),
    },
)
def centered_clipping(updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
    tau = float(ctx.params.get("tau", 1.0))
    iters = ctx.params.get("iters", 3)
    n, d = updates.shape
    rows = max(1, _BLOCK_ELEMENTS // max(d, 1))
    v = torch.zeros(d, dtype=updates.dtype, device=updates.device)  # reference: the previous global model
    for _ in range(iters):
        step = torch.zeros_like(v)
        for start in range(0, n, rows):  # n / rows iterations, each vectorised over its rows
            diff = updates[start : start + rows] - v
            # exact differences, not the Gram trick: the clip decision is made at ||x_i - v|| ~ tau,
            # where ||x||^2 + ||v||^2 - 2 x.v could lose the digits that matter
            norm = torch.linalg.vector_norm(diff, dim=1)
            scale = torch.where(norm > tau, tau / norm, torch.ones_like(norm))
            bad = ~torch.isfinite(norm)
            if bad.any():  # rare: zero the row itself, as 0 * inf in the product would be nan
                scale[bad] = 0
                diff[bad] = 0
            step += scale @ diff
        v = v + step / n
    return v
