"""Warnings a trial's numbers need beside them, where people look: the sweep's console table and the
trial's MLflow run (a tag per kind), besides the trial's own log.

- ``small_data``: data too small for the intervals the report prints (few test images: a 95% interval
  of tens of points; a client with fewer examples than the batch size: not one full batch per step);
- a resume that fell back to an older checkpoint, or to round 1 (trainable.load_checkpoint).
"""

from __future__ import annotations

import math
from typing import Sequence

PREFIX = "! "  # what the console table shows (console_table.TrialPhase); not the log's other "warning:" lines
MIN_TEST_IMAGES = 100
TAG_SMALL_DATA = "psreval.warning.small_data"
TAG_RESUME = "psreval.warning.resume"


def half_width(n: int) -> float:
    """The widest 95% interval half-width of an accuracy over ``n`` images (normal approximation, p = 0.5)."""
    return 1.96 * math.sqrt(0.25 / max(n, 1))


def small_data(n_test: int, client_sizes: Sequence[int], batch_size: int | None) -> str | None:
    """One warning line, or None when the data can carry the intervals."""
    problems = []
    if n_test < MIN_TEST_IMAGES:
        problems.append(
            f"{n_test} test images (fewer than {MIN_TEST_IMAGES}: a 95% interval spans up to "
            f"±{100 * min(half_width(n_test), 1):.0f} points)"
        )
    short = [i for i, n in enumerate(client_sizes) if batch_size and n < batch_size]
    if short:
        problems.append(
            f"client {', '.join(map(str, short))} holds {min(client_sizes[i] for i in short)} examples, "
            f"fewer than the batch size {batch_size}"
        )
    return f"{PREFIX}data too small for the intervals: {'; '.join(problems)}" if problems else None


def of_federation(cfg, fed) -> str | None:
    """``small_data`` of the data as a cycle loaded it (a CycleConfig and its Federation; None without data)."""
    data = getattr(fed, "data", None)
    if data is None:  # a fake cycle in a test
        return None
    n_test = len(data.test) if cfg.eval_samples is None else min(cfg.eval_samples, len(data.test))
    return small_data(n_test, [len(c.y_clean) for c in fed.clients], cfg.batch_size)


def resumed_from(path: str, rnd: int) -> str:
    return f"{PREFIX}resumed from the older checkpoint {path} (after round {rnd}): the latest did not load"


def restarted(latest: str) -> str:
    return f"{PREFIX}resumed from round 1: no checkpoint of this trial loads (latest: {latest})"
