"""Bucketing (Karimireddy, He and Jaggi, 2022, "Byzantine-Robust Learning on Heterogeneous Datasets
via Bucketing", ICLR), Algorithm 1: shuffle the n updates with a random permutation, split them in
order into ceil(n/s) buckets of s (the last one smaller when s does not divide n), and hand the
buckets' means to the robust rule. Averaging s updates shrinks the honest updates' spread
(heterogeneity) by about sqrt(s), while f Byzantine updates still reach at most f buckets.

The bucket mean is uniform, as in the paper; each bucket's weight (for a data-weighted inner rule
such as fedavg or geometric_median) is the sum of its clients' weights, so the weights still sum
to 1 and s = n gives the plain mean whatever the inner rule.
"""

from __future__ import annotations

import math

import torch


def bucketed(
    updates: torch.Tensor, weights: torch.Tensor, s: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ceil(n/s) bucket means [buckets, d] of the shuffled ``updates`` and the buckets' weights."""
    n = len(updates)
    order = torch.randperm(n, generator=generator)
    count = math.ceil(n / s)
    means = updates.new_empty((count, updates.shape[1]))
    bucket_weights = weights.new_empty(count)
    for b in range(count):  # ceil(n/s) iterations: one index_select and mean per bucket
        idx = order[b * s : (b + 1) * s].to(updates.device)
        means[b] = updates.index_select(0, idx).mean(dim=0)
        bucket_weights[b] = weights[idx.to(weights.device)].sum()
    return means, bucket_weights
