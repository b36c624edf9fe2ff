"""The Ray Tune run every sweep entry point shares: ``run_sweep(args, SweepSpec)``.

It reads like a Ray Tune example: check the flags and folders, connect to Ray and open the sweep's MLflow
run, build the trainable with its resources, build (or restore) the Tuner from the param space, TuneConfig
and RunConfig, fit, then print and log the summary and the report. ``sweeps/paper_grid.py`` and
``sweeps/search.py`` only define their search space (and searcher/scheduler) and call ``run_sweep``.

The pieces live beside it: ``flags.py`` (the shared parser and its value checks), ``checks.py`` (folders,
tracking store, address, resources; --resume's recorded flags), ``connection.py`` (Ray itself, and every
use of its private API), ``failures.py`` (SweepError, a full disk, closing the runs of a stopped sweep)
and ``results.py`` (summary table, report, exit status). Their public names are importable from here too.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from . import ray_procs
from .checks import (  # noqa: F401 - re-exported: callers and tests import these from engine
    RESUME_MAY_CHANGE,
    STORAGE_SCHEMES,
    SWEEP_FLAGS_FILE,
    SWEEP_KEY,
    _check_dir,
    _check_resume_flags,
    _check_storage,
    _first_difference,
    _only_our_record,
    _record_flags,
    _storage,
    _stored_flags,
    check_infrastructure,
    preflight,
)
from .connection import (  # noqa: F401 - re-exported
    LOCALHOST,
    PROBE_TIMEOUT_S,
    _auth_failure,
    _local_cpus,
    _local_gpus,
    _local_ray,
    _resources_error,
    _restored_console,
    _split_host_port,
    check_address,
    check_cluster_resources,
    connect,
    probe_tcp,
    quiet_logs,
)
from .failures import (  # noqa: F401 - re-exported
    DISK_FULL_TEXT,
    SweepError,
    _disk_full,
    _disk_full_line,
    _end_quietly,
    _first_line,
    _no_space,
    _stop_reason,
    _Stopped,
    close_late,
    close_runs,
    end_interrupted,
    interrupted_fit,
    main_guard,
)
from .flags import CHECKPOINT_EVERY_S, NAME_RE, _check_args, _csv, _SweepParser, add_cost_flags, parser  # noqa: F401
from .results import (  # noqa: F401 - re-exported
    FRAGMENTED,
    SUMMARY_COLUMNS,
    SUMMARY_METRICS,
    _metric,
    _print_table,
    _summary,
    exit_status,
    print_trial_warnings,
    report,
    with_tmp_csv,
    write_report,
)


@dataclass
class SweepSpec:
    """One sweep as the entry point defines it."""

    kind: str  # "paper_grid" | "search": default name prefix
    param_space: dict[str, Any]
    num_samples: int = 1
    search_alg: Any = None
    scheduler: Any = None
    sweep_params: dict[str, Any] = field(default_factory=dict)  # logged on the sweep's MLflow run
    summary_metrics: list[str] = field(default_factory=list)  # extra columns of the summary table
    # Called when the trials are done, as report(tracking_uri, experiment_name, sweep_name, out_dir,
    # parent_run_id), to write the sweep's report into out_dir and log it to the parent run; returns
    # something with an ``html`` path. The entry points pass analysis.report_sweep (psreval_tune
    # never imports analysis/). Its failure is a warning, never the sweep's.
    report: Callable[..., Any] | None = None
    # Text artifacts of the sweep's MLflow run, name -> text (e.g. the resolved sweep file, sweep.yaml).
    files: dict[str, str] = field(default_factory=dict)


def run_sweep(args: argparse.Namespace, spec: SweepSpec):
    """Run (or resume) a sweep; returns (ResultGrid, summary DataFrame, tracking spec)."""
    _check_args(args)  # again: run_sweep may be called with a Namespace not from parser()
    _tune_environment()
    if getattr(args, "no_report", False):
        spec = replace(spec, report=None)
    verbose = bool(getattr(args, "verbose", False))
    storage = _storage(args)
    name = _sweep_name(args, spec.kind, storage)
    exp_path = _exp_path(storage, name)
    preflight(args, storage, name, exp_path)  # flags, folders, tracking store, address: before Ray starts
    _check_experiment(args, storage, name, exp_path)
    run_dir = Path(args.run_dir).expanduser().resolve()
    tracker = _connect_and_track(args, name, run_dir, storage, exp_path, verbose)
    parent = tracker.sweep_run({"kind": spec.kind, "storage": exp_path, **spec.sweep_params})
    results_line = _results_line(args, tracker, name, exp_path)
    status, fitting = "FAILED", False
    try:
        _record_start(args, spec, tracker, parent, name, storage, exp_path)
        trainable = _trainable(args, spec, tracker.spec, parent, storage)
        fitting = True
        tuner, loggers_set = _tuner(args, spec, trainable, tracker.spec, parent, name, storage, verbose)
        results = _fit(tuner, name, verbose, loggers_set)
        fitting = False
        interrupted = interrupted_fit(results, tracker, parent, name)
        summary = _summarize(results, spec, tracker, parent, name, run_dir)
        status = "KILLED" if interrupted else "FINISHED" if not results.errors else "FAILED"
    except Exception as exc:  # noqa: BLE001 - disk full anywhere, or anything escaping Tune: one line
        reason = _stop_reason(exc, fitting, run_dir, exp_path)
        if reason is None:
            _end_quietly(tracker, parent, "FAILED")
            print(results_line, flush=True)
            raise
        closed = close_runs(tracker, parent, reason)
        raise SweepError(f"sweep {name} stopped, {reason}; {closed}; Tune folder {exp_path}") from None
    except BaseException as exc:  # a Ctrl-C Tune did not catch (a second one, or one outside fit): no run stays RUNNING
        end_interrupted(tracker, parent, f"interrupted ({type(exc).__name__}); --resume continues it")
        print(results_line, flush=True)
        raise
    tracker.finish(parent, status)
    close_late(tracker, parent, status)
    print(results_line, flush=True)
    return results, summary, tracker.spec


def _tune_environment() -> None:
    """Tune's settings for every sweep (an explicit setting in the environment wins)."""
    # Tune snapshots the experiment's state (which trials are done) every 10 s or
    # more by default; a driver killed inside that window re-runs the trials that
    # finished in it on --resume. With worker reuse, trials can finish seconds
    # apart, so snapshot every second: a small JSON written locally (syncing to
    # remote storage keeps its own period).
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # With that period, every snapshot a trial's checkpoints force (CheckpointConfig.num_to_keep) comes
    # within 5 s of a periodic one, and Tune warns "Experiment state snapshotting has been triggered
    # multiple times in the last 5.0 seconds" each time. Tune's threshold for exactly that warning,
    # 0, turns it off (the warning says so); nothing else reads it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _sweep_name(args: argparse.Namespace, kind: str, storage: str) -> str:
    if args.name:
        return args.name
    if not args.resume:
        return f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "://" in storage:
        raise SweepError(f"--resume with --storage={storage} needs --name (the sweep to continue)")
    previous = sorted(p.name for p in Path(storage).glob(f"{kind}-*") if p.is_dir())
    if not previous:
        raise SweepError(f"--resume found no earlier {kind} sweep in {storage}; pass --name")
    return previous[-1]


def _exp_path(storage: str, name: str) -> str:
    """The sweep's Tune experiment folder."""
    return f"{storage.rstrip('/')}/{name}"


def _check_experiment(args: argparse.Namespace, storage: str, name: str, exp_path: str) -> None:
    """--resume needs a sweep Tune can restore; a new sweep, a name not taken."""
    # Imported after the checks: Ray Tune takes seconds to load.
    from ray.tune import Tuner

    if args.resume and not Tuner.can_restore(exp_path):
        raise SweepError(f"--resume: no restorable sweep at {exp_path}")
    if not args.resume and "://" not in storage and Path(exp_path).exists() and not _only_our_record(Path(exp_path)):
        raise SweepError(f"--name={name}: a sweep of that name exists in {storage}; pass --resume to continue it")


def _is_local(args: argparse.Namespace) -> bool:
    """Whether the sweep starts its own Ray on this machine (--address none)."""
    return args.address in (None, "", "none", "local")


def _connect_and_track(args: argparse.Namespace, name: str, run_dir: Path, storage: str, exp_path: str, verbose: bool):
    """Connect to Ray (or start a local one) and open the MLflow store: the sweep's Tracker."""
    from ..tracking import Tracker, source_provenance

    local = _is_local(args)
    quiet_logs(verbose)  # before Ray starts: its start-up banners
    # the code, looked up once here (in the package's folder, not the cwd) and tagged on every run
    code = dict(provenance=tuple(source_provenance().items()), system_metrics=getattr(args, "system_metrics", False))
    if args.resume and local and "://" not in storage:  # a killed driver's local Ray may still hold its memory
        ended = ray_procs.end_stale(exp_path)
        if ended:
            print(ended, flush=True)
    with ThreadPoolExecutor(1) as side:
        # A local Ray and a new MLflow store (its tables) each take ~2 s to start here: side by side. A cluster's
        # address is checked first, so that a wrong one leaves nothing written.
        opening = side.submit(Tracker, _tracking_spec(args, name, run_dir, code)) if local else None
        connect(args.address, args.node_ip_address, log_to_driver=verbose)
        check_cluster_resources(args, started_here=local)
        return opening.result() if opening is not None else Tracker(_tracking_spec(args, name, run_dir, code))


def _tracking_spec(args: argparse.Namespace, name: str, run_dir: Path, code: dict):
    """--tracking-uri's store, else the one in --run-dir (created if new)."""
    from ..tracking import TrackingSpec, local_store

    if args.tracking_uri:
        return TrackingSpec(args.tracking_uri, args.experiment_name, name, **code)
    uri, artifacts = local_store(run_dir)
    return TrackingSpec(uri, args.experiment_name, name, artifacts, **code)


def _results_line(args: argparse.Namespace, tracker, name: str, exp_path: str) -> str:
    """Where the results are, printed last whatever happens."""
    from ..ui import results_hint

    run_dir = None if args.tracking_uri else args.run_dir
    where = results_hint(tracker.spec.tracking_uri, tracker.experiment_id, run_dir, sweep=name)  # its trials' view
    return f"\nresults: {where}  (MLflow UI, experiment {args.experiment_name!r}, run {name!r}); Tune folder {exp_path}"


def _record_start(
    args: argparse.Namespace, spec: SweepSpec, tracker, parent: str, name: str, storage: str, exp_path: str
):
    """The flags (for --resume), the local Ray's processes and the sweep's files, recorded before any trial."""
    if not args.resume:
        _record_flags(args, exp_path)
    if _is_local(args) and "://" not in storage:
        ray_procs.record(exp_path)  # what a --resume after a killed driver ends
    for file_name, text in spec.files.items():  # e.g. sweep.yaml: the resolved sweep file
        tracker.client.log_text(parent, text, file_name)
    print(
        f"sweep {name}: Tune results in {exp_path}; MLflow experiment {args.experiment_name!r} at "
        f"{tracker.spec.tracking_uri}",
        flush=True,
    )


def _trainable(args: argparse.Namespace, spec: SweepSpec, tracking, parent: str, storage: str):
    """run_trial with what every trial shares (tune.with_parameters) and the resources each asks for."""
    from ray import tune

    from ..trainable import TrialInfra, run_trial
    from ..twin_cache import cache_location
    from . import progress

    infra = TrialInfra(
        tracking=tracking,
        parent_run_id=parent,
        # beside the sweeps in their storage: every node reaches it, --resume and later sweeps find it
        cache_dir=cache_location(storage),
        final_objectives=tuple(spec.summary_metrics),
        checkpoint_every_s=args.checkpoint_every_s,
        # Each result Tune receives holds the trial until the driver has taken it (Tune's function runner
        # reports synchronously): a FIFO grid gets one per checkpoint and the final one, a scheduler that
        # stops trials early (ASHA) one per round.
        report_every_round=spec.scheduler is not None,
        progress=progress.trial_progress,  # printed, and each trial's phase (and warnings) to the live table
    )
    return tune.with_resources(
        tune.with_parameters(run_trial, infra=infra), {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
    )


def _tuner(args, spec: SweepSpec, trainable, tracking, parent: str, name: str, storage: str, verbose: bool):
    """Tuner(trainable, param_space, tune_config, run_config), or the sweep's Tuner restored on --resume.
    Returns it and whether its callbacks are this run's (then Tune adds no logger callbacks of its own)."""
    from ray import tune
    from ray.tune import Tuner
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from ..trainable import TrackingCallback
    from . import progress

    # Tune's result.json and progress.csv, not its TensorBoard files (and hint): MLflow is the record.
    # The live table's callback finds the sweep's board by name (also when restored from tuner.pkl).
    console_callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), progress.BoardCallback(name)]
    if args.resume:
        tuner = Tuner.restore(
            _exp_path(storage, name), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
        return tuner, _restored_console(tuner, int(verbose), console_callbacks)
    tuner = Tuner(
        trainable,
        param_space=spec.param_space,
        # reuse_actors: a finished trial's worker process runs the next trial, so
        # each trial does not pay a process start and the torch/Opacus imports
        # (~5 s here between 25 s trials). Trials share nothing else: every
        # cycle seeds itself and the only process-wide state is pure caches.
        tune_config=tune.TuneConfig(
            num_samples=spec.num_samples,
            search_alg=spec.search_alg,
            scheduler=spec.scheduler,
            max_concurrent_trials=args.max_concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=int(verbose),
            callbacks=[TrackingCallback(tracking, parent), *console_callbacks],
            failure_config=tune.FailureConfig(max_failures=args.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner, True


def _fit(tuner, name: str, verbose: bool, loggers_set: bool):
    """tuner.fit() under the live table; a trial failed by a full disk stops the sweep."""
    from . import progress

    # Without --verbose: Tune's legacy output engine at verbosity 0 prints nothing (the new one still
    # prints its configuration box, paths and hints); the live table shows the trials instead.
    quiet = {"RAY_AIR_NEW_OUTPUT": "0"} if not verbose else {}
    with (
        progress.console(name, verbose),
        _environ(**quiet, **({"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"} if loggers_set else {})),
    ):
        results = tuner.fit()
    full = [r for r in results if r.error is not None and _disk_full(r.error)]
    if full:
        raise _Stopped(f"disk full: {len(full)} trial(s) failed with {_disk_full_line(full[0].error)}")
    return results


def _summarize(results, spec: SweepSpec, tracker, parent: str, name: str, run_dir: Path):
    """The summary table, printed and logged (summary.csv), and the sweep's report."""
    summary = _summary(results, spec.summary_metrics)
    _print_table(f"sweep {name}: {len(summary)} trials", summary)
    print_trial_warnings(tracker, parent)
    with_tmp_csv(tracker, parent, summary, "summary.csv")
    if spec.report is not None:
        write_report(spec.report, tracker.spec, parent, run_dir / "reports" / name)
    return summary


@contextlib.contextmanager
def _environ(**values: str):
    """Environment variables set for the block only (Tune reads these when the sweep starts)."""
    before = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in before.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
