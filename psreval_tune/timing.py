"""Wall time per phase of a cycle."""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Iterator

import torch


class PhaseTimer:
    """Accumulates seconds per named phase; phases may nest (train contains adv_gen)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()  # CUDA work is async; count it in its own phase
            self.seconds[name] += time.perf_counter() - start

    def as_metrics(self) -> dict[str, float]:
        return {f"time_{name}_s": round(value, 4) for name, value in sorted(self.seconds.items())}
