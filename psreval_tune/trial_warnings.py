"""Warnings a trial's numbers need beside them, where people look: the sweep's console table and the
trial's MLflow run (a tag per kind), besides the trial's own log. Nothing here imports Ray or MLflow:
the cycle's callers (trainable.py for a sweep trial, cli.py for ``psreval run``) print and tag.

- ``small_data``: data too small for the intervals the report prints (few test or attacked images: a
  95% interval of tens of points; a client with fewer examples than the batch size);
- a resume that fell back to an older checkpoint, or to round 1 (trainable.load_checkpoint); every resume
  also says where it continued (TAG_RESUMED_FROM).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

PREFIX = "! "  # what the console table shows (console_table.TrialPhase); not the log's other "warning:" lines

# Below 100 images an accuracy's 95% interval is wider than ±9.8 points (Wilson, p = 0.5), wider than most
# differences the report compares (int8 vs float, DP vs its twin): every interval then reads as noise.
MIN_TEST_IMAGES = 100
# A client with fewer examples than the batch size never takes a full batch: each local step is its whole
# data (Opacus' sample rate is 1, no privacy amplification by sampling), so "batch size B" in the record is not
# what trained. The threshold is the trial's own (expected) batch size, cfg.batch_size.

TAG_SMALL_DATA = "psreval.warning.small_data"
TAG_RESUME = "psreval.warning.resume"  # the fallback's warning line
TAG_RESUMED_FROM = "psreval.resumed_from"  # where every resumed attempt continued (resumed_from_tag)
TAGS = (TAG_SMALL_DATA, TAG_RESUME)  # the warnings a sweep lists under its summary table (sweep_lines)


def half_width(n: int) -> float:
    """The widest 95% interval half-width of an accuracy over ``n`` images (normal approximation, p = 0.5)."""
    return 1.96 * math.sqrt(0.25 / max(n, 1))


def _images(n: int, kind: str) -> str:
    return (
        f"{n} {kind} image{'s' if n != 1 else ''} (fewer than {MIN_TEST_IMAGES}: a 95% interval spans up to "
        f"±{100 * min(half_width(n), 1):.0f} points)"
    )


def small_data(
    n_test: int, client_sizes: Sequence[int], batch_size: int | None, n_attacked: int | None = None
) -> str | None:
    """One warning line, or None when the data can carry the intervals. ``n_attacked``: the images attacked
    when fewer than the test split (eval_samples)."""
    problems = []
    if n_test < MIN_TEST_IMAGES:
        problems.append(_images(n_test, "test"))
    elif n_attacked is not None and n_attacked < MIN_TEST_IMAGES:
        problems.append(_images(n_attacked, "attacked"))
    short = [i for i, n in enumerate(client_sizes) if batch_size and n < batch_size]
    if short:
        who = f"client {short[0]}" if len(short) == 1 else f"{len(short)} clients ({', '.join(map(str, short))})"
        problems.append(
            f"{who} {'holds' if len(short) == 1 else 'hold as few as'} {min(client_sizes[i] for i in short)} "
            f"examples, fewer than the batch size {batch_size}"
        )
    return f"{PREFIX}data too small for the intervals: {'; '.join(problems)}" if problems else None


def of_federation(cfg, fed) -> str | None:
    """``small_data`` of the data as a cycle loaded it (a CycleConfig and its Federation; None without data)."""
    data = getattr(fed, "data", None)
    if data is None:  # a fake cycle in a test
        return None
    n_test = len(data.test)
    n_attacked = None if cfg.eval_samples is None else min(cfg.eval_samples, n_test)
    return small_data(n_test, [len(c.y_clean) for c in fed.clients], cfg.batch_size, n_attacked)


def resumed_from(path: str, rnd: int) -> str:
    return f"{PREFIX}resumed from the older checkpoint {path} (after round {rnd}): the latest did not load"


def restarted(latest: str) -> str:
    return f"{PREFIX}resumed from round 1: no checkpoint of this trial loads (latest: {latest})"


def resumed_from_tag(state: Mapping | None, fell_back: Sequence[str]) -> str | None:
    """TAG_RESUMED_FROM's value for an attempt that had a checkpoint (``state``: what loaded; ``fell_back``:
    load_checkpoint's warning lines), the round training continued at: 'round 3 (checkpoint after round 2)',
    'round 3 (older checkpoint after round 2: the latest is damaged)', 'round 1 (checkpoint damaged)'.
    None: nothing to resume (a trial's first attempt)."""
    if state is None:
        return "round 1 (checkpoint damaged)" if fell_back else None
    rnd = int(state["round"])
    if fell_back:
        return f"round {rnd + 1} (older checkpoint after round {rnd}: the latest is damaged)"
    return f"round {rnd + 1} (checkpoint after round {rnd})"


def sweep_lines(trials: Mapping[str, Mapping[str, str]]) -> list[str]:
    """'! TRIAL: warning' for each warning tag (TAGS) of each trial run (trial id -> its run's tags), as the
    live console shows them (console_table.warning_lines): listed again under the sweep's summary table."""
    lines = []
    for trial, tags in sorted(trials.items()):
        for tag in TAGS:
            if tags.get(tag):
                text = tags[tag]
                lines.append(f"{PREFIX}{trial}: {text[len(PREFIX) :] if text.startswith(PREFIX) else text}")
    return lines
