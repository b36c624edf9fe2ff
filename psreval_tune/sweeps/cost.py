"""What a sweep will cost, before it starts: ``psreval grid|search --dry-run``.

Nothing here starts Ray, opens a tracking store for writing or creates a file. The model (seconds per phase
of a trial, calibration, the estimate) is ``cost_model.py``; here: reading a store's finished trials and
its twin cache, and the dry run's report.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from ..config import RECIPE_ASKED, RECIPE_SET, CycleConfig
from .cost_model import (  # noqa: F401 - the model, importable from here as before
    ATTACK_PASS,
    EVAL_FIXED_S,
    INT8_COMPILE_S,
    LABELS,
    MIN_AREA,
    PHASES,
    ROUND_S,
    STEP_S,
    SWEEP_OVERHEAD_S,
    TRIAL_OVERHEAD_S,
    TWIN_ROUND_S,
    WORKER_WARMUP_S,
    Calibration,
    Estimate,
    StoredTrial,
    _arch,
    _dataset,
    _duration,
    _num,
    _seconds,
    attack_passes,
    attack_runs,
    calibrate,
    concurrency,
    estimate,
    eval_images,
    has_twin,
    int8_compiles,
    local_slots,
    local_steps,
    measured_phases,
    pass_seconds,
    reviewer_passes,
    train_images,
    train_seconds,
    trial_phases,
    twin_config,
)

# --- reading a store, and the dry run's report ---------------------------------------------


def config_from_params(params: dict[str, str]) -> CycleConfig:
    """A trial run's MLflow params (cfg.record(), as strings) back to its CycleConfig."""
    import dataclasses

    from ..analysis.load import _parse

    names = {f.name for f in dataclasses.fields(CycleConfig) if f.init}
    values = {k: _parse(v) for k, v in params.items() if k in names}
    if isinstance(values.get("eval_attacks"), str):
        values["eval_attacks"] = values["eval_attacks"].split(",")
    record = {k: params[k] for k in (RECIPE_SET, RECIPE_ASKED) if k in params}  # strings, as logged
    return CycleConfig.from_record({**values, **record})


def stored_trials(tracking_uri: str, experiment: str) -> list[StoredTrial]:
    """The FINISHED trial runs of an experiment with time metrics; runs whose params do not rebuild are skipped."""
    from ..analysis.load import _all_runs, _client, _experiment

    client, uri = _client(tracking_uri)
    exp = _experiment(client, experiment, uri)
    query = "tags.`psreval.kind` = 'trial' and attributes.status = 'FINISHED'"
    trials = []
    for run in _all_runs(client, exp.experiment_id, query):
        if "time_total_s" not in run.data.metrics:
            continue
        try:
            cfg = config_from_params(run.data.params)
        except (ValueError, TypeError, KeyError):
            continue
        end, start = run.info.end_time, run.info.start_time
        wall = (end - start) / 1000 if end and start else None
        trials.append(StoredTrial(cfg, dict(run.data.metrics), wall))
    return trials


def store_uri(args: Any) -> str | None:
    """--tracking-uri, else RUN_DIR/mlflow.db if it exists (never created here)."""
    from pathlib import Path

    if getattr(args, "tracking_uri", None):
        return args.tracking_uri
    db = Path(args.run_dir).expanduser().resolve() / "mlflow.db"
    return f"sqlite:///{db}" if db.is_file() else None


def calibration(args: Any) -> Calibration:
    """From the store's finished trials if there is a store with some; else the built-in defaults.
    A store that cannot be reached or read is refused in seconds, one line (SweepError)."""
    from ..analysis.load import AnalysisError
    from ..tracking import TrackingError, check_tracking_uri, one_line, redact
    from .failures import SweepError

    uri = store_uri(args)
    if uri is None:
        return Calibration()
    shown = redact(uri)
    try:
        check_tracking_uri(uri, must_exist=True)  # MLflow would retry an unreachable server for minutes
        trials = stored_trials(uri, args.experiment_name)
    except AnalysisError as exc:  # no such experiment, ...: nothing to calibrate from
        return Calibration(source=f"built-in defaults (store {shown}: {one_line(str(exc), 300)})")
    except TrackingError as exc:
        raise SweepError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a store MLflow cannot read: one line, not a traceback
        raise SweepError(f"--dry-run: cannot read the MLflow store {shown} ({one_line(str(exc), 300)})") from None
    if not trials:
        return Calibration(source=f"built-in defaults (store {shown} has no finished trials with times)")
    return calibrate(trials, f"MLflow store {shown}, experiment {args.experiment_name!r}")


def cached_twins(args: Any) -> tuple[set[str], str]:
    """Training keys of the twins already in the sweep's twin cache (STORAGE/twin-cache, for this
    code version: twin_cache.py), and where that cache is."""
    from ..twin_cache import cache_location, cached_training_keys
    from .checks import _storage

    where = cache_location(_storage(args))
    if "://" not in where and not os.path.isdir(where):
        return set(), where
    try:
        return cached_training_keys(where), where
    except OSError:  # an unreachable bucket: estimate as if nothing were cached
        return set(), where


def slots(args: Any) -> tuple[int | None, str]:
    """Trials that fit at once, and where that number comes from."""
    import os

    if args.address not in (None, "", "none", "local"):
        return None, f"slots of the cluster at --address {args.address}: not asked in a dry run"
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = local_slots(cpus, args.cpus_per_trial)
    note = f"{n} slots on this machine ({cpus} CPUs / {args.cpus_per_trial:g} per trial"
    return n, note + (", GPUs not counted)" if args.gpus_per_trial > 0 else ")")


def hours(est: Estimate, args: Any) -> tuple[float, str]:
    """Resource-hours the trials hold: GPU-hours with --gpus-per-trial, else CPU-hours."""
    if args.gpus_per_trial > 0:
        return est.total_s * args.gpus_per_trial / 3600, "GPU-hours"
    return est.total_s * args.cpus_per_trial / 3600, "CPU-hours"


def report(est: Estimate, args: Any, what: str, where: str) -> str:
    """The dry run's text."""
    n_slots, slot_note = slots(args)
    at_once = concurrency(est.trials, args.max_concurrent, n_slots)
    amount, unit = hours(est, args)
    lines = [
        "dry run: nothing started (no Ray, no MLflow run, no files written)",
        f"{what}: {est.trials} trials, {est.twins} distinct non-private twins ({est.twins_cached} already in {where})",
        f"estimate from: {est.source}",
    ]
    for phase in PHASES:
        share = 100 * est.phase_s[phase] / est.total_s if est.total_s else 0.0
        lines.append(f"  {LABELS[phase]:<14} {_seconds(est.phase_s[phase])} s  {share:5.1f}%")
    lines.append(f"  {'total':<14} {_seconds(est.total_s)} s  = {_num(amount)} {unit}")
    limit = args.max_concurrent if args.max_concurrent is not None else "none"
    lines.append(
        f"wall time: ~{_duration(est.wall_s(at_once))} with {at_once} trial(s) at once (the least of "
        f"--max-concurrent={limit}, {slot_note}, {est.trials} trials); assumes concurrent trials do not slow "
        "each other"
    )
    if args.gpus_per_trial > 0 and est.source.startswith("built-in"):
        lines.append("note: the built-in defaults are CPU measurements; calibrate from a GPU sweep's store")
    if args.price_per_hour is not None:
        price = args.price_per_hour
        lines.append(f"cost: {_num(amount)} {unit} x {price:g} per hour = {_num(amount * price)}")
    return "\n".join(lines)


def dry_run(args: Any, configs: Sequence[CycleConfig], n_trials: int, what: str) -> int:
    """Print the estimate of a sweep of ``n_trials`` trials drawn from ``configs``; exit status 0."""
    workers = concurrency(n_trials, args.max_concurrent, slots(args)[0])
    cached, where = cached_twins(args)
    est = estimate(configs, n_trials, calibration(args), cached, workers)
    print(report(est, args, what, where), flush=True)
    return 0
