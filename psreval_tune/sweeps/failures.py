"""How a sweep fails: SweepError (one line, exit 2), a full disk recognised wherever it shows up, and the
MLflow runs a stopped sweep closes as FAILED with its reason."""

from __future__ import annotations

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


def main_guard(fn: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Entry-point wrapper: user errors become one line on stderr and exit 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

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
