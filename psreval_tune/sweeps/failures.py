"""How a sweep fails: SweepError (one line, exit 2), a full disk recognised wherever it shows up, the
MLflow runs a stopped sweep closes as FAILED with its reason, and those an interrupted (Ctrl-C) one
closes as KILLED."""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from ..config import ConfigError


class SweepError(ConfigError):
    """A sweep cannot start as asked. One line, exit 2."""


class _Stopped(Exception):
    """The sweep cannot go on; the reason, one line."""


def _first_line(exc: BaseException | str) -> str:
    from ..tracking import one_line

    text = one_line(str(exc), 500) if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if isinstance(exc, BaseException) else text


def _disk_full(exc: BaseException | str | None) -> bool:
    """ENOSPC anywhere in an exception's chain, or in the text of an error a Ray worker sent back."""
    seen: set[int] = set()
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
            return True
        if any(marker in str(exc) for marker in DISK_FULL_TEXT):
            return True
        exc = exc.__cause__ or exc.__context__
    return isinstance(exc, str) and any(marker in exc for marker in DISK_FULL_TEXT)


DISK_FULL_TEXT = ("No space left on device", "[Errno 28]", "database or disk is full")


def _disk_full_line(exc: BaseException | str) -> str:
    """The line of an error (or of its chain) that says the disk is full, else its first line."""
    seen: set[int] = set()
    chain: list = []
    while isinstance(exc, BaseException) and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    for item in chain or [exc]:
        if isinstance(item, OSError) and item.errno == errno.ENOSPC:
            return f"{type(item).__name__}: {item}"[:500]
        for line in str(item).splitlines():
            if any(marker in line for marker in DISK_FULL_TEXT):
                return line.strip()[:500]
    return _first_line(chain[0] if chain else str(exc))


def _no_space(*paths: str | os.PathLike, below: int = 1 << 20) -> str | None:
    """'PATH has N bytes free' for the first local path whose file system has less than ``below`` free."""
    for path in paths:
        if "://" in str(path):
            continue
        folder = Path(path)
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            st = os.statvfs(folder)
        except (OSError, AttributeError):
            continue
        if st.f_bavail * st.f_frsize < below:
            return f"{path} has {st.f_bavail * st.f_frsize} bytes free"
    return None


def _end_quietly(tracker, run_id: str, status: str) -> bool:
    try:
        tracker.finish(run_id, status)
        return True
    except Exception:  # noqa: BLE001 - the store itself may be what failed
        return False


def close_runs(tracker, parent_run_id: str, reason: str) -> str:
    """Every trial run of the sweep that is not FINISHED and the sweep's run: FAILED, with ``reason`` in
    the psreval.failure tag (FINISHED runs are never changed). Returns what was done, one phrase."""
    from ..tracking import TAG_FAILURE, one_line

    reason = one_line(reason)
    failed, closed = [], 0
    try:
        runs = tracker.unfinished_trial_runs(parent_run_id)
    except Exception as exc:  # noqa: BLE001
        runs = []
        failed.append(f"the trial runs could not be listed ({_first_line(exc)})")
    for run in runs:
        try:
            if run.info.status == "RUNNING":
                tracker.fail(run.info.run_id, reason)
                closed += 1
            elif run.info.status == "FAILED" and TAG_FAILURE not in run.data.tags:
                tracker.client.set_tag(run.info.run_id, TAG_FAILURE, reason)
        except Exception as exc:  # noqa: BLE001 - e.g. the store is on the full disk
            failed.append(f"run {run.info.run_id} ({_first_line(exc)})")
    try:
        tracker.fail(parent_run_id, reason)
    except Exception as exc:  # noqa: BLE001
        failed.append(f"the sweep run {parent_run_id} ({_first_line(exc)})")
    if failed:
        return (
            f"{closed} running trial run(s) marked FAILED; could not update {len(failed)}: {'; '.join(failed)[:1000]}"
        )
    return f"{closed} running trial run(s) and the sweep's run marked FAILED (reason in tag psreval.failure)"


def close_interrupted(tracker, parent_run_id: str, reason: str | None = None) -> int:
    """Every trial run of the sweep still RUNNING: KILLED, with ``reason`` (default tracking.INTERRUPTED_TRIAL)
    in tag psreval.interrupted; runs that ended are never changed. Returns how many; a store that fails is a
    warning line, never an error (this runs while a Ctrl-C propagates)."""
    from ..tracking import INTERRUPTED_TRIAL

    reason = reason or INTERRUPTED_TRIAL
    try:
        runs = [r for r in tracker.unfinished_trial_runs(parent_run_id) if r.info.status == "RUNNING"]
    except Exception as exc:  # noqa: BLE001
        print(f"warning: the sweep's trial runs could not be listed ({_first_line(exc)})", file=sys.stderr)
        return 0
    closed = 0
    for run in runs:
        try:
            closed += tracker.interrupt(run.info.run_id, reason)
        except Exception as exc:  # noqa: BLE001
            print(f"warning: run {run.info.run_id} stays RUNNING ({_first_line(exc)})", file=sys.stderr)
    return closed


def end_interrupted(tracker, parent_run_id: str, reason: str) -> int:
    """An interrupted sweep's run KILLED (tag psreval.interrupted), then its trial runs still RUNNING
    (close_interrupted); returns how many of those. The sweep's run first: a trial worker that outlives the
    sweep (Tune's kill of it still on its way) and opens its run after the listing finds the sweep's run
    ended and closes its own (trainable._open_record). Never raises."""
    from ..tracking import TAG_INTERRUPTED, one_line

    try:
        tracker.client.set_tag(parent_run_id, TAG_INTERRUPTED, one_line(reason))
    except Exception:  # noqa: BLE001 - the store itself may be what failed
        pass
    _end_quietly(tracker, parent_run_id, "KILLED")
    return close_interrupted(tracker, parent_run_id)


def interrupted_fit(results, tracker, parent: str, name: str) -> bool:
    """Whether tuner.fit() returned because the sweep was interrupted; the runs that say so are KILLED.

    Tune catches the first Ctrl-C (SIGINT) itself: fit() returns as if done, having stopped the running trials
    without on_trial_complete / on_trial_error, so TrackingCallback never hears of them, and a trial stopped
    in its setup (just started: killed before any result) or in tune.report ends with its run RUNNING; trials
    not started yet stay PENDING. No trial runs once fit() has returned, so every trial run still RUNNING is
    such a trial's: KILLED, tag psreval.interrupted (close_interrupted); --resume reopens it (Tracker.trial_run).
    """
    from ..tracking import TAG_INTERRUPTED

    closed = close_interrupted(tracker, parent)
    ended = getattr(results, "num_terminated", len(results)) + getattr(results, "num_errors", 0)
    unstarted = max(0, len(results) - ended)
    if not closed and not unstarted:
        return False
    why = f"interrupted (Ctrl-C): {closed} running trial(s) stopped, {unstarted} not started; --resume continues it"
    with contextlib.suppress(Exception):  # the run still ends KILLED (engine.run_sweep)
        tracker.client.set_tag(parent, TAG_INTERRUPTED, why)
    print(
        f"sweep {name} interrupted: {closed} running trial run(s) marked KILLED (tag {TAG_INTERRUPTED}), "
        f"{unstarted} trial(s) not started; continue it with --resume --name {name}",
        flush=True,
    )
    return True


def close_late(tracker, parent: str, status: str) -> None:
    """Once the sweep's run has ended: a trial run opened after interrupted_fit looked (by a trial worker whose kill
    by Tune was still on its way) is KILLED here, and the sweep's run with it; a worker that opens its run
    after this finds the sweep's run ended and closes its own (trainable._open_record)."""
    if close_interrupted(tracker, parent) and status != "KILLED":
        end_interrupted(tracker, parent, "interrupted (Ctrl-C); --resume continues it")


def main_guard(fn: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Entry-point wrapper: user errors become one line on stderr and exit 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            if argv is None:  # the process is this script (python sweeps/NAME.py): it ends now
                from ..console import ending_process

                ending_process()

    return wrapped


def _stop_reason(exc: BaseException, fitting: bool, *paths: str | os.PathLike) -> str | None:
    """Why a sweep stopped, one line, for an exception that ends it: a full disk (in the exception, or on
    one of ``paths``: Tune read back a file the full disk cut short), or Ray Tune failing while it built
    or ran the trials. None: any other error, raised as it is."""
    if isinstance(exc, _Stopped):
        return str(exc)
    if _disk_full(exc):
        return f"disk full: {_disk_full_line(exc)}"
    if _no_space(*paths):  # EOFError and the like from a file the full disk cut short
        return f"disk full: {_no_space(*paths)} ({_first_line(exc)})"
    if fitting:
        return f"Ray Tune stopped with {_first_line(exc)}"
    return None
