"""What a sweep checks before it starts anything, each refused in seconds with one line: its folders,
tracking store, Ray address and resources (check_infrastructure), and on --resume the flags recorded in
its Tune folder (SWEEP_FLAGS_FILE) against this run's."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ..config import ConfigError
from . import ray_procs
from .connection import _local_cpus, _local_gpus, _resources_error, check_address
from .failures import SweepError

# Flags that may change between a sweep and its --resume (how it runs, not what it computes).
RESUME_MAY_CHANGE = {
    "resume",
    "name",
    "address",
    "max_concurrent",
    "max_failures",
    "checkpoint_every_s",
    "node_ip_address",
    "wait_for_resources",
    "cpus_per_trial",
    "gpus_per_trial",
    "system_metrics",
    "verbose",
    "sweep_file",
    "dry_run",
    "price_per_hour",
    "max_trials",  # a guard on the sweep's size, not part of what it computes
}  # the file's path may change; its content (args.sweep) may not
SWEEP_FLAGS_FILE = ".psreval-sweep.json"  # in the Tune experiment folder: the flags the sweep started with
SWEEP_KEY = "sweep"  # args.sweep: what a sweep file resolved to (grid, search), recorded and compared like a flag
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az", "file", "mock")


def _check_storage(args: argparse.Namespace, storage: str) -> None:
    if "://" in storage:
        scheme = storage.split("://", 1)[0].lower()
        if scheme not in STORAGE_SCHEMES:
            raise SweepError(
                f"--storage={storage} is not allowed: unknown scheme {scheme!r}; expected a local "
                f"folder or a URI with one of {', '.join(s + '://' for s in STORAGE_SCHEMES)}"
            )
        return
    _check_dir(storage, "--storage")


def _check_dir(path: str | os.PathLike, flag: str) -> None:
    from ..artifacts import OutputError, check_writable_dir

    try:
        check_writable_dir(path, flag)
    except OutputError as exc:
        raise SweepError(str(exc)) from None


def _stored_flags(args: argparse.Namespace) -> dict[str, Any]:
    flags = {k: v for k, v in sorted(vars(args).items()) if k not in RESUME_MAY_CHANGE}
    if flags.get("run_dir") is not None:
        flags["run_dir"] = str(Path(flags["run_dir"]).expanduser().resolve())
    return json.loads(json.dumps(flags, default=str))


def _check_resume_flags(args: argparse.Namespace, exp_path: str) -> None:
    """--resume continues the sweep as it was started: flags that change what it computes must match."""
    path = Path(exp_path) / SWEEP_FLAGS_FILE
    if not path.is_file():
        return  # started before flags were recorded (or remote storage): nothing to compare
    try:
        before = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    now = _stored_flags(args)
    for key in sorted((set(before) | set(now)) - {SWEEP_KEY}):
        if before.get(key) != now.get(key):

            def show(v: Any) -> str:
                return ",".join(map(str, v)) if isinstance(v, list) else str(v)

            raise SweepError(
                f"--resume: --{key.replace('_', '-')}={show(now.get(key))} differs from the sweep's "
                f"--{key.replace('_', '-')}={show(before.get(key))}; resume with the flags it was "
                "started with, or start a new sweep (another --name)"
            )
    if SWEEP_KEY in before and before[SWEEP_KEY] != now.get(SWEEP_KEY):  # the sweep file counts as a flag
        where, was, is_now = _first_difference(before[SWEEP_KEY], now.get(SWEEP_KEY))
        raise SweepError(
            f"--resume: the sweep file's {where or 'content'}={json.dumps(is_now)} differs from the "
            f"sweep's {where or 'content'}={json.dumps(was)}; resume with the sweep file and flags it "
            "was started with (its sweep.yaml in MLflow), or start a new sweep (another --name)"
        )


def _first_difference(a: Any, b: Any, where: str = "") -> tuple[str, Any, Any]:
    """(dotted path, a's value, b's value) of the first place two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in [*a, *[k for k in b if k not in a]]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}" if where else str(key))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{where}[{i}]")
    return where, a, b


def _record_flags(args: argparse.Namespace, exp_path: str) -> None:
    if "://" in exp_path:
        return
    folder = Path(exp_path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SWEEP_FLAGS_FILE).write_text(json.dumps(_stored_flags(args), indent=2, sort_keys=True))


def _only_our_record(folder: Path) -> bool:
    """A sweep folder that holds nothing but our flags record never started: its name may be reused."""
    try:
        return {p.name for p in folder.iterdir()} <= {SWEEP_FLAGS_FILE, ray_procs.RECORD}
    except OSError:
        return False


def preflight(args: argparse.Namespace, storage: str, name: str, exp_path: str) -> None:
    """Everything that can be checked before Ray starts; raises SweepError (one line)."""
    check_infrastructure(args)
    if args.resume:
        _check_resume_flags(args, exp_path)


def check_infrastructure(args: argparse.Namespace) -> None:
    """Run dir, storage, tracking store, Ray address and local CPUs: each refused in seconds with one
    line. Run when the flags are parsed (before a script builds its search space) and again by run_sweep."""
    from ..deps import check_dependencies
    from ..tracking import TrackingError, check_tracking_uri

    try:
        check_dependencies()  # on this machine; a worker without them fails its trials with the same message
    except ConfigError as exc:
        raise SweepError(str(exc)) from None
    if getattr(args, "system_metrics", False):
        from ..tracking import system_metrics_missing

        if why := system_metrics_missing():  # one line, before anything starts
            raise SweepError(why)
    _check_dir(args.run_dir, "--run-dir")
    _check_storage(args, _storage(args))
    default_db = Path(args.run_dir).expanduser().resolve() / "mlflow.db"
    try:
        if args.tracking_uri:
            check_tracking_uri(args.tracking_uri)
        elif default_db.exists():  # else local_store creates run_dir and the store
            check_tracking_uri(f"sqlite:///{default_db}", flag="the store in --run-dir")
    except TrackingError as exc:
        raise SweepError(str(exc)) from None
    check_address(args.address)
    if args.address in (None, "", "none", "local") and not args.wait_for_resources:
        why = _resources_error(args, _local_cpus(), _local_gpus() if args.gpus_per_trial > 0 else 0.0, "this machine")
        if why:
            raise SweepError(why)


def _storage(args: argparse.Namespace) -> str:
    if args.storage and "://" in args.storage:
        return args.storage
    return str(Path(args.storage or Path(args.run_dir) / "ray_results").expanduser().resolve())
