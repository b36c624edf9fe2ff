"""What every sweep entry point shares: flags, Ray connection, the Tuner
(new or restored), the sweep's MLflow run, and the tables printed at the end.

``sweeps/paper_grid.py`` and ``sweeps/search.py`` only define their search
space (and searcher/scheduler) and call ``run_sweep``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from .config import ConfigError

SUMMARY_COLUMNS = ["epsilon", "threat", "adv_fraction", "attack", "attack_alpha", "arch", "lr", "seed"]
SUMMARY_METRICS = ["acc_clean_float", "acc_clean_int8", "acc_wb_pgd_mean", "acc_wb_fgsm_mean",
                   "epsilon_spent", "size_reduction_pct", "time_total_s"]


class SweepError(ConfigError):
    """A sweep cannot start as asked. One line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        self.exit(2, f"error: {message} (see --help)\n")


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            return [kind(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
    return parse


def parser(description: str) -> argparse.ArgumentParser:
    """The infrastructure flags both sweep scripts take; each adds its own."""
    p = _Parser(description=description)
    env = os.environ.get
    p.add_argument("--address", default=env("PSREVAL_RAY_ADDRESS", "none"),
                   help="Ray cluster: 'auto' (the cluster this machine belongs to), a ray:// or host:port address, "
                        "or 'none' to start a local Ray (default: none, or $PSREVAL_RAY_ADDRESS)")
    p.add_argument("--dataset", default="digits", help="digits | cifar10 | pneumonia | synthetic (default: digits)")
    p.add_argument("--data-root", default=env("PSREVAL_DATA_ROOT"), help="data folder (cifar10, pneumonia)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10")
    p.add_argument("--smoke", action="store_true", help="a tiny sweep on digits that finishes in minutes on 2 cores")
    p.add_argument("--max-concurrent", type=int, default=None, help="trials running at once (default: as resources allow)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0.0,
                   help="GPUs per trial, fractional to pack trials (e.g. 0.25); default 0 = CPU")
    p.add_argument("--run-dir", default=env("PSREVAL_RUN_DIR", "runs"),
                   help="local folder for the default MLflow store, Tune results and the twin cache (default: runs)")
    p.add_argument("--storage", default=env("PSREVAL_STORAGE"),
                   help="Tune storage: a local path or a URI such as s3://bucket/prefix (default: RUN_DIR/ray_results)")
    p.add_argument("--experiment-name", default="psreval", help="MLflow experiment (default: psreval)")
    p.add_argument("--name", default=None,
                   help="sweep name: Tune experiment folder and MLflow parent run (default: SCRIPT-TIMESTAMP)")
    p.add_argument("--tracking-uri", default=env("MLFLOW_TRACKING_URI"),
                   help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: sqlite store in RUN_DIR)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted sweep (--name, or the latest one of this script); finished trials are not re-run")
    p.add_argument("--attack-repeats", type=int, default=None, help="attack repeats per trial (paper: 10)")
    p.add_argument("--seeds", type=_csv(int), default=[0], help="comma-separated seeds (default: 0)")
    p.add_argument("--max-failures", type=int, default=3, help="retries of a failed trial from its checkpoint (default: 3)")
    return p


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


def _check_args(args: argparse.Namespace) -> None:
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag)
        if not math.isfinite(value) or value < 0 or (flag == "cpus_per_trial" and value == 0):
            raise SweepError(f"--{flag.replace('_', '-')}={value} is not allowed; expected a number "
                             f"{'> 0' if flag == 'cpus_per_trial' else '>= 0'}")
    if args.max_concurrent is not None and args.max_concurrent < 1:
        raise SweepError(f"--max-concurrent={args.max_concurrent} is not allowed; expected an integer >= 1")
    if args.attack_repeats is not None and args.attack_repeats < 1:
        raise SweepError(f"--attack-repeats={args.attack_repeats} is not allowed; expected an integer >= 1")
    if not args.seeds or any(s < 0 for s in args.seeds):
        raise SweepError(f"--seeds={','.join(map(str, args.seeds))} is not allowed; expected integers >= 0")
    if args.max_failures < 0:
        raise SweepError(f"--max-failures={args.max_failures} is not allowed; expected an integer >= 0")


def _storage(args: argparse.Namespace) -> str:
    if args.storage and "://" in args.storage:
        return args.storage
    return str(Path(args.storage or Path(args.run_dir) / "ray_results").resolve())


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


def connect(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address in (None, "", "none", "local"):
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        return
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, AuthenticationError) as exc:
        if _auth_failure(exc):
            raise SweepError(
                f"--address={address}: Ray token authentication failed (no token, or not the cluster's); "
                "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, a file named by "
                "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)") from None
        raise SweepError(
            f"--address={address}: no Ray cluster found; start one with `ray up cluster.yaml` "
            "(cloud) or `ray start --head` (this machine), or use --address none for a local Ray") from None


def _auth_failure(exc: BaseException | None) -> bool:
    """Whether a failed connection was refused for its token (Ray wraps that cause in text)."""
    from ray.exceptions import AuthenticationError

    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, AuthenticationError) or "AuthenticationError" in str(exc) or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _summary(results, extra_metrics: Sequence[str] = ()) -> "Any":
    import pandas as pd

    rows = []
    for res in results:
        cfg = res.config or {}
        flat = {}
        for key, value in cfg.items():
            flat.update(value if isinstance(value, dict) else {key: value})
        row = {k: flat.get(k) for k in SUMMARY_COLUMNS}
        metrics = res.metrics or {}
        row.update({k: metrics.get(k) for k in [*SUMMARY_METRICS, *extra_metrics]})
        row["status"] = "ERROR" if res.error else ("done" if metrics.get("cycle_complete") else "stopped early")
        row["trial_id"] = metrics.get("trial_id")
        rows.append(row)
    return pd.DataFrame(rows)


def _print_table(title: str, frame) -> None:
    import pandas as pd

    print(f"\n{title}")
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False) if len(frame) else "  (no trials)")


def run_sweep(args: argparse.Namespace, spec: SweepSpec):
    """Run (or resume) a sweep; returns (ResultGrid, summary DataFrame, tracking spec)."""
    from ray import tune

    from .tracking import Tracker, TrackingSpec, local_store
    from .trainable import TrackingCallback, TrialInfra, run_trial

    _check_args(args)
    # Tune snapshots the experiment's state (which trials are done) every 10 s or
    # more by default; a driver killed inside that window re-runs the trials that
    # finished in it on --resume. With worker reuse, trials can finish seconds
    # apart, so snapshot every second: a small JSON written locally (syncing to
    # remote storage keeps its own period). An explicit setting wins.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    storage = _storage(args)
    name = _sweep_name(args, spec.kind, storage)
    exp_path = f"{storage.rstrip('/')}/{name}"
    from ray.tune import Tuner

    if args.resume and not Tuner.can_restore(exp_path):
        raise SweepError(f"--resume: no restorable sweep at {exp_path}")
    if not args.resume and "://" not in storage and Path(exp_path).exists():
        raise SweepError(f"--name={name}: a sweep of that name exists in {storage}; pass --resume to continue it")
    connect(args.address)  # before anything is written: no cluster, no files
    run_dir = Path(args.run_dir).resolve()
    if args.tracking_uri:
        tracking = TrackingSpec(args.tracking_uri, args.experiment_name, name)
    else:
        uri, artifacts = local_store(run_dir)
        tracking = TrackingSpec(uri, args.experiment_name, name, artifacts)
    tracker = Tracker(tracking)
    parent = tracker.sweep_run({"kind": spec.kind, "storage": exp_path, **spec.sweep_params})
    print(f"sweep {name}: Tune results in {exp_path}; MLflow experiment {args.experiment_name!r} at {tracking.tracking_uri}",
          flush=True)
    infra = TrialInfra(tracking=tracking, parent_run_id=parent, cache_dir=str(run_dir / "cache"),
                       final_objectives=tuple(spec.summary_metrics))
    trainable = tune.with_resources(tune.with_parameters(run_trial, infra=infra),
                                    {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial})
    status = "FAILED"
    try:
        if args.resume:
            tuner = Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
        else:
            tuner = Tuner(
                trainable,
                param_space=spec.param_space,
                # reuse_actors: a finished trial's worker process runs the next trial, so
                # each trial does not pay a process start and the torch/Opacus imports
                # (~5 s here between 25 s trials). Trials share nothing else: every
                # cycle seeds itself and the only process-wide state is pure caches.
                tune_config=tune.TuneConfig(num_samples=spec.num_samples, search_alg=spec.search_alg,
                                            scheduler=spec.scheduler, max_concurrent_trials=args.max_concurrent,
                                            reuse_actors=True),
                run_config=tune.RunConfig(
                    name=name, storage_path=storage, verbose=1,
                    callbacks=[TrackingCallback(tracking, parent)],
                    failure_config=tune.FailureConfig(max_failures=args.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))
        results = tuner.fit()
        summary = _summary(results, spec.summary_metrics)
        _print_table(f"sweep {name}: {len(summary)} trials", summary)
        with_tmp_csv(tracker, parent, summary, "summary.csv")
        if spec.report is not None:
            write_report(spec.report, tracking, parent, run_dir / "reports" / name)
        status = "FINISHED" if not results.errors else "FAILED"
        return results, summary, tracking
    finally:
        tracker.finish(parent, status)
        where = "make ui" if not args.tracking_uri else f"open {args.tracking_uri}"
        print(f"\nresults: {where}  (MLflow UI, experiment {args.experiment_name!r}, run {name!r}); "
              f"Tune folder {exp_path}", flush=True)


def write_report(report: Callable[..., Any], tracking, parent_run_id: str, out_dir: Path) -> Path | None:
    """The sweep's report (tables, figures, report.html) into out_dir and onto its MLflow run.
    Any failure is one warning line: the trials are done and tracked whatever happens here."""
    try:
        full = report(tracking.tracking_uri, tracking.experiment_name, tracking.sweep_name, out_dir, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - the sweep's results must not depend on its report
        text = str(exc).strip().splitlines()
        print(f"\nwarning: no report for sweep {tracking.sweep_name!r} ({type(exc).__name__}: "
              f"{text[0] if text else 'no message'}); retry with: python -m analysis report "
              f"--tracking-uri {tracking.tracking_uri} --experiment {tracking.experiment_name} "
              f"--sweep {tracking.sweep_name} --out {out_dir}", file=sys.stderr, flush=True)
        return None
    html = getattr(full, "html", None)
    print(f"\nreport: {html} (tables and figures of the sweep; also in its MLflow run, artifacts report/)",
          flush=True)
    failed = getattr(full, "failed", [])
    if failed:
        print(f"warning: report parts failed: {', '.join(failed)} (tracebacks in {out_dir}/<part>.error.txt)",
              file=sys.stderr, flush=True)
    return html


def with_tmp_csv(tracker, run_id: str, frame, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        frame.to_csv(path, index=False)
        tracker.client.log_artifact(run_id, str(path))


def main_guard(fn: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Entry-point wrapper: user errors become one line on stderr and exit 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return wrapped
