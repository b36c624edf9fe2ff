"""Ray processes a killed driver leaves behind, found and ended on ``--resume``.

A local Ray's servers (GCS, raylet, agents, workers) are children of the sweep's driver. A driver
killed with SIGKILL cannot stop them, and some outlive it holding their memory. So after a local
Ray starts, the driver records its own id and every process below it in the sweep's folder; a
``--resume`` whose recorded driver is gone ends the recorded processes that are still alive.

A process is identified by (pid, start time) and its command line, never by pid alone: a recycled pid
is another process, and a process whose command line is no longer the recorded one is left alone and named
in the resume's line (a Ray worker's own retitling, ``ray::IDLE`` -> ``ray::ImplicitFunc.train``, still
matches). Nothing is ended while the recorded driver still runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RECORD = "ray_processes.json"
_GRACE_S = 3.0
RAY_TITLE = "ray::"  # a Ray worker's process title (setproctitle), renamed per task it runs
RAY_WORKER_ENTRY = "default_worker.py"  # a worker's command line before it retitles itself


def _psutil():
    """Ray's bundled psutil: importing ray first puts it on sys.path, as in every Ray worker."""
    import importlib

    importlib.import_module("ray")
    return importlib.import_module("psutil")


def _identity(proc) -> dict:
    return {"pid": proc.pid, "started": proc.create_time(), "name": proc.name(), "cmdline": proc.cmdline()}


def record(folder: str | os.PathLike) -> None:
    """Write this driver's id and its child processes (the local Ray it started) to ``folder``."""
    psutil = _psutil()

    me = psutil.Process()
    children = []
    for child in me.children(recursive=True):
        try:
            children.append(_identity(child))
        except psutil.Error:  # gone between listing and asking
            continue
    payload = {"driver": _identity(me), "processes": children}
    path = Path(folder) / RECORD
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def _alive(entry: dict):
    """The process ``entry`` names, if it still runs as that same process (pid and start time); else None."""
    psutil = _psutil()

    try:
        proc = psutil.Process(int(entry["pid"]))
        return proc if abs(proc.create_time() - float(entry["started"])) < 0.01 else None
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None


def same_command(recorded: list[str] | None, now: list[str]) -> bool:
    """Whether a process still runs the command line recorded for it (None: a record from before command
    lines were kept). A Ray worker retitles itself (ray::IDLE, ray::ImplicitFunc.train): still the same."""
    if recorded is None or now == recorded:
        return True
    return bool(now) and _ray_worker(recorded) and now[0].startswith(RAY_TITLE)


def _ray_worker(cmdline: list[str]) -> bool:
    """A Ray worker's command line: its ray:: title, or, recorded before it retitled itself, Ray's
    default_worker.py entry point."""
    return bool(cmdline) and (
        str(cmdline[0]).startswith(RAY_TITLE) or any(str(part).endswith(RAY_WORKER_ENTRY) for part in cmdline)
    )


def _shown(cmdline: list) -> str:
    return repr(" ".join(map(str, cmdline))[:60])


def _ours(entries: list[dict]) -> tuple[list, list[str]]:
    """The recorded processes still running as recorded, and 'PID (now CMD)' for each one alive under
    another command line (left alone)."""
    psutil = _psutil()
    procs, changed = [], []
    for entry in entries:
        proc = _alive(entry)
        if proc is None:
            continue
        try:
            now = proc.cmdline()
        except psutil.Error:
            continue
        if not now:  # exiting on its own (a zombie has no command line left): nothing to end or to name
            continue
        recorded = entry.get("cmdline")
        if not isinstance(recorded, (list, type(None))):  # a damaged record: not a process we can vouch for
            recorded = [str(recorded)]
        if same_command(recorded, now):
            procs.append(proc)
        else:
            changed.append(f"{proc.pid} (now {_shown(now)}, recorded {_shown(recorded)})")
    return procs, changed


def _with_descendants(procs: list) -> list:
    """``procs`` and the processes they started since (workers a raylet spawned after the record)."""
    psutil = _psutil()

    found = {p.pid: p for p in procs}
    for proc in procs:
        try:
            found.update({c.pid: c for c in proc.children(recursive=True)})
        except psutil.Error:
            continue
    found.pop(os.getpid(), None)
    return list(found.values())


def _signal(procs: list, how: str) -> list:
    """Send each process ``how`` (terminate or kill); the ones still running after the grace period."""
    psutil = _psutil()
    for proc in procs:
        try:
            getattr(proc, how)()
        except psutil.Error:
            pass
    return psutil.wait_procs(procs, timeout=_GRACE_S)[1]


def end_stale(folder: str | os.PathLike) -> str | None:
    """End the processes a dead driver recorded in ``folder``; one line saying what was done, or None."""
    path = Path(folder) / RECORD
    try:
        payload = json.loads(path.read_text())
        driver, entries = payload["driver"], list(payload["processes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None  # no record (a sweep from before it, or not a local Ray): nothing to end
    if _alive(driver) is not None:
        return f"note: the sweep's earlier driver (pid {driver['pid']}) still runs; its Ray processes were left alone"
    ours, changed = _ours(entries)
    procs = _with_descendants(ours)
    left = _signal(_signal(procs, "terminate"), "kill")  # SIGTERM, then SIGKILL what did not stop
    path.unlink(missing_ok=True)
    if not procs and not changed:
        return None
    ended = sorted(p.pid for p in procs if p not in left)
    parts = [f"ended {len(ended)} Ray process(es) left by the killed driver (pids {', '.join(map(str, ended))})"]
    if left:
        parts.append(f"still running: {', '.join(str(p.pid) for p in left)}")
    if changed:
        parts.append(f"left alone, their command line changed: {', '.join(changed)}")
    return "resume: " + "; ".join(parts)
