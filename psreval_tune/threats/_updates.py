"""Shared by the update threats: the honest rows an omniscient adversary looks at."""

from __future__ import annotations

import torch


def malicious_index(updates: torch.Tensor, malicious: list[int]) -> torch.Tensor:
    """The malicious row indices as a tensor on the updates' device; one-line ValueError if out of range."""
    n = len(updates)
    bad = [i for i in malicious if not 0 <= i < n]
    if bad:
        raise ValueError(f"malicious row {bad[0]} is out of range for {n} client updates")
    return torch.as_tensor(sorted(set(malicious)), dtype=torch.long, device=updates.device)


def honest_rows(updates: torch.Tensor, malicious: list[int]) -> torch.Tensor:
    """The rows of the honest clients; all rows when every sampled client is malicious (so the
    statistics an omniscient attack needs stay defined, from the adversary's own updates)."""
    keep = torch.ones(len(updates), dtype=torch.bool, device=updates.device)
    keep[malicious_index(updates, malicious)] = False
    return updates[keep] if bool(keep.any()) else updates
