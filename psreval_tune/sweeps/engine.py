"""What every sweep entry point shares: flags, Ray connection, the Tuner
(new or restored), the sweep's MLflow run, and the tables printed at the end.

``sweeps/paper_grid.py`` and ``sweeps/search.py`` only define their search
space (and searcher/scheduler) and call ``run_sweep``.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import math
import os
import re
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..cli_parser import Parser
from ..config import ConfigError
from . import ray_procs

SUMMARY_COLUMNS = ["epsilon", "threat", "adv_fraction", "attack", "attack_alpha", "arch", "lr", "seed"]
SUMMARY_METRICS = [
    "acc_clean_float",
    "acc_clean_int8",
    "acc_wb_pgd_worst",  # the headline robust accuracies: worst case over restarts (older trials: their _mean)
    "acc_wb_fgsm_worst",
    "epsilon_spent",
    "size_reduction_pct",
    "time_total_s",
]


class SweepError(ConfigError):
    """A sweep cannot start as asked. One line, exit 2."""


class _SweepParser(Parser):
    """The sweep scripts' parser: also checks the flags' values (and the infrastructure) once parsed."""

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed = super().parse_args(args, namespace)
        try:
            _check_args(parsed)  # every number and name flag, before the script builds anything
            if hasattr(parsed, "run_dir") and hasattr(parsed, "address") and not getattr(parsed, "dry_run", False):
                check_infrastructure(parsed)  # folders, tracking store, Ray address, CPUs: seconds at most
        except SweepError as exc:
            self.exit(2, f"error: {exc}\n")
        return parsed


def _csv(kind: Callable[[str], Any]) -> Callable[[str], list]:
    """A comma-separated list: non-empty, no value twice."""

    def parse(text: str) -> list:
        try:
            values = [kind(part.strip()) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} is an empty list; expected at least one {kind.__name__}")
        seen: list = []
        for value in values:
            if value in seen:
                raise argparse.ArgumentTypeError(f"{text!r} lists {value} twice; expected distinct values")
            seen.append(value)
        return values

    return parse


def parser(description: str) -> argparse.ArgumentParser:
    """The infrastructure flags both sweep scripts take; each adds its own."""
    p = _SweepParser(description=description)
    env = os.environ.get
    p.add_argument(
        "--address",
        default=env("PSREVAL_RAY_ADDRESS", "none"),
        help="Ray cluster: 'auto' (the cluster this machine belongs to), a ray:// or host:port address, "
        "or 'none' to start a local Ray (default: none, or $PSREVAL_RAY_ADDRESS)",
    )
    from ..datasets import DATASETS  # the dataset registry (its names and metadata load without torch)

    p.add_argument("--dataset", default="digits", help=" | ".join(DATASETS.names()) + " (default: digits)")
    rooted = ", ".join(e.name for e in DATASETS if e.needs_data_root)
    p.add_argument("--data-root", default=env("PSREVAL_DATA_ROOT"), help=f"data folder ({rooted})")
    downloadable = ", ".join(e.name for e in DATASETS if e.meta.get("downloadable"))
    p.add_argument("--download", action="store_true", help=f"let torchvision download {downloadable}")
    p.add_argument("--smoke", action="store_true", help="a tiny sweep on digits that finishes in minutes on 2 cores")
    p.add_argument(
        "--max-concurrent", type=int, default=None, help="trials running at once (default: as resources allow)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial (default: 1)")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        default=0.0,
        help="GPUs per trial, fractional to pack trials (e.g. 0.25); default 0 = CPU",
    )
    p.add_argument(
        "--run-dir",
        default=env("PSREVAL_RUN_DIR", "runs"),
        help="local folder for the default MLflow store and Tune results (default: runs)",
    )
    p.add_argument(
        "--storage",
        default=env("PSREVAL_STORAGE"),
        help="Tune storage and the shared twin cache (STORAGE/twin-cache): a local path or a URI such as "
        "s3://bucket/prefix (default: RUN_DIR/ray_results)",
    )
    p.add_argument("--experiment-name", default="psreval", help="MLflow experiment (default: psreval)")
    p.add_argument(
        "--name",
        default=None,
        help="sweep name: Tune experiment folder and MLflow parent run (default: SCRIPT-TIMESTAMP)",
    )
    p.add_argument(
        "--tracking-uri",
        default=env("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI, e.g. http://127.0.0.1:5000 (default: sqlite store in RUN_DIR)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep (--name, or the latest one of this script); finished trials are not re-run",
    )
    p.add_argument("--attack-repeats", type=int, default=None, help="attack repeats per trial (paper: 10)")
    p.add_argument("--seeds", type=_csv(int), default=[0], help="comma-separated seeds (default: 0)")
    p.add_argument(
        "--max-failures", type=int, default=3, help="retries of a failed trial from its checkpoint (default: 3)"
    )
    p.add_argument(
        "--checkpoint-every-s",
        type=float,
        default=env("PSREVAL_CHECKPOINT_EVERY_S", str(CHECKPOINT_EVERY_S)),
        help="a trial checkpoints after the first FL round that ends this many seconds after its last "
        "checkpoint (or its start), and after its last round; 0: after every round. A retried trial "
        f"repeats at most this much training (default: {CHECKPOINT_EVERY_S:g}, or $PSREVAL_CHECKPOINT_EVERY_S)",
    )
    p.add_argument(
        "--node-ip-address",
        default=env("PSREVAL_NODE_IP", LOCALHOST),
        help="with --address none: the address the local Ray listens on (default: 127.0.0.1, this "
        "machine only; another of this machine's IPs opens it to the network)",
    )
    p.add_argument(
        "--wait-for-resources",
        action="store_true",
        help="start even if no node has --cpus-per-trial/--gpus-per-trial free now (an autoscaling "
        "cluster that will add nodes); without it such a sweep is refused",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="Ray's full output: Tune's status and result tables, the trials' own log lines and Ray's "
        "start-up messages (default: one compact table of the trials, and the summary at the end)",
    )
    p.add_argument(
        "--system-metrics",
        action="store_true",
        help="log MLflow's system metrics (CPU, memory, disk, network; GPU with nvidia-ml-py) on every "
        "trial run, every $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL s (default 10); needs psutil",
    )
    return p


def add_cost_flags(p: argparse.ArgumentParser) -> None:
    """--dry-run and --price-per-hour (psreval grid and search; sweeps/cost.py computes the estimate)."""
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="start nothing: print the trial count, the distinct non-private twins and the estimated seconds "
        "per phase, CPU- or GPU-hours and wall time (calibrated from the finished trials in --tracking-uri or "
        "RUN_DIR/mlflow.db when there are some, else from built-in 2-core CPU measurements)",
    )
    p.add_argument(
        "--price-per-hour",
        type=float,
        default=None,
        help="with --dry-run: the price of one CPU-hour (one GPU-hour with --gpus-per-trial) for the cost line",
    )


LOCALHOST = "127.0.0.1"
# A trial's checkpoint period. Each checkpoint costs ~0.1 s on 2 cores (torch.save of the federation, Tune's
# copy and its synchronous report): 7% of a 1.5 s digits round if taken every round, nothing to speak of
# against a minutes-long CIFAR-10 round, which is then checkpointed every round anyway.
CHECKPOINT_EVERY_S = 30.0
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
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
STORAGE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "abfs", "abfss", "az", "file", "mock")
PROBE_TIMEOUT_S = 3.0


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


def _check_args(args: argparse.Namespace) -> None:
    """Flag values on their own (no file system, no network): run when the flags are parsed."""
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (flag == "cpus_per_trial" and value == 0):
            raise SweepError(
                f"--{flag.replace('_', '-')}={value} is not allowed; expected a number "
                f"{'> 0' if flag == 'cpus_per_trial' else '>= 0'}"
            )
        if value > 1 and value != int(value):
            raise SweepError(
                f"--{flag.replace('_', '-')}={value} is not allowed; expected a whole number, "
                "or a fraction below 1 to pack trials"
            )
    for flag, low in (
        ("max_concurrent", 1),
        ("attack_repeats", 1),
        ("max_failures", 0),
        ("num_samples", 1),
        ("rounds", 1),
        ("asha_grace", 1),
    ):
        value = getattr(args, flag, None)
        if value is not None and value < low:
            raise SweepError(f"--{flag.replace('_', '-')}={value} is not allowed; expected an integer >= {low}")
    for flag, expected in (("checkpoint_every_s", "a number of seconds >= 0"), ("price_per_hour", "a number >= 0")):
        value = getattr(args, flag, None)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise SweepError(f"--{flag.replace('_', '-')}={value} is not allowed; expected {expected}")
    if getattr(args, "price_per_hour", None) is not None and not getattr(args, "dry_run", False):
        raise SweepError("--price-per-hour is not allowed without --dry-run (it prices the estimate)")
    seeds = getattr(args, "seeds", None)
    if seeds is not None:
        if not seeds or any(s < 0 for s in seeds):
            raise SweepError(f"--seeds={','.join(map(str, seeds))} is not allowed; expected integers >= 0")
        if len(set(seeds)) != len(seeds):
            raise SweepError(
                f"--seeds={','.join(map(str, seeds))} is not allowed; a seed is listed twice "
                "(expected distinct integers >= 0)"
            )
    name = getattr(args, "name", None)
    if name is not None and (not NAME_RE.fullmatch(name) or ".." in name):
        raise SweepError(
            f"--name={name!r} is not allowed; expected letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 128 characters, not starting with '.' or '-')"
        )
    experiment = getattr(args, "experiment_name", None)
    if experiment is not None and not experiment.strip():
        raise SweepError("--experiment-name='' is not allowed; expected a non-empty MLflow experiment name")
    for flag in ("run_dir", "storage", "tracking_uri", "address", "data_root"):
        value = getattr(args, flag, None)
        if value is not None and not str(value).strip():
            raise SweepError(f"--{flag.replace('_', '-')}='' is not allowed; expected a value (or leave the flag out)")
    node_ip = getattr(args, "node_ip_address", None)
    if node_ip is not None:
        import ipaddress

        try:
            ipaddress.ip_address(node_ip)
        except ValueError:
            raise SweepError(
                f"--node-ip-address={node_ip!r} is not allowed; expected an IP address of this "
                "machine (default 127.0.0.1)"
            ) from None


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


SWEEP_KEY = "sweep"  # args.sweep: what a sweep file resolved to (grid, search), recorded and compared like a flag


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


def probe_tcp(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if something accepts a TCP connection at host:port within ``timeout``, else why not."""
    from ..tracking import probe_tcp as probe  # stdlib-only at import: no MLflow loaded here

    return probe(host, port, timeout)


def _split_host_port(text: str) -> tuple[str, int] | None:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def check_address(address: str | None) -> None:
    """--address HOST:PORT or ray://HOST:PORT: refuse in seconds when nothing listens there (Ray would
    retry for minutes). 'auto' and 'none' are Ray's to resolve."""
    if address in (None, "", "none", "local", "auto"):
        return
    target = address.split("://", 1)[1] if address.startswith("ray://") else address
    if "://" in target:
        raise SweepError(f"--address={address} is not allowed; expected none, auto, HOST:PORT or ray://HOST:PORT")
    parsed = _split_host_port(target)
    if parsed is None or not 0 < parsed[1] < 65536:
        raise SweepError(f"--address={address} is not allowed; expected none, auto, HOST:PORT or ray://HOST:PORT")
    why = probe_tcp(*parsed)
    if why:
        raise SweepError(
            f"--address={address}: no Ray cluster there ({why}); start one with `ray start --head` "
            "or `ray up cluster.yaml`, or use --address none for a local Ray"
        )


def _local_cpus() -> float:
    try:
        from ray._private.utils import get_num_cpus  # what a local Ray will offer (cgroup-aware)

        return float(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private API; the affinity mask is close enough
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _local_gpus() -> float:
    """The GPUs a local Ray would offer, counted as Ray counts them, without starting it."""
    try:
        from ray._private.accelerators import get_accelerator_manager_for_resource

        manager = get_accelerator_manager_for_resource("GPU")
        count = manager.get_current_node_num_accelerators()
        visible = manager.get_current_process_visible_accelerator_ids()
        return float(count if visible is None else min(count, len(visible)))
    except Exception:  # noqa: BLE001 - a private API: leave the check to the running Ray
        return float("inf")


def _resources_error(args: argparse.Namespace, cpus: float, gpus: float, where: str) -> str | None:
    short = []
    if args.cpus_per_trial > cpus:
        short.append(f"--cpus-per-trial={args.cpus_per_trial:g} but {where} has {cpus:g} CPUs")
    if args.gpus_per_trial > gpus:
        short.append(f"--gpus-per-trial={args.gpus_per_trial:g} but {where} has {gpus:g} GPUs")
    if not short:
        return None
    return (
        f"{'; '.join(short)}: no trial could ever start; allowed: at most what {where} has, or "
        "--wait-for-resources on an autoscaling cluster that will add nodes"
    )


def check_cluster_resources(args: argparse.Namespace, started_here: bool) -> None:
    """After connecting: per-trial resources must fit the cluster (else trials pend forever)."""
    if args.wait_for_resources:
        return
    import ray

    total = ray.cluster_resources()
    why = _resources_error(
        args,
        float(total.get("CPU", 0)),
        float(total.get("GPU", 0)),
        "this machine's Ray" if started_here else "the Ray cluster",
    )
    if why:
        if started_here:
            ray.shutdown()
        raise SweepError(why)


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


def connect(address: str | None, node_ip_address: str = LOCALHOST, log_to_driver: bool = False) -> None:
    """``log_to_driver``: the trials' own output on this console (--verbose)."""
    import ray

    if ray.is_initialized():
        return
    if address in (None, "", "none", "local"):
        _local_ray(node_ip_address, log_to_driver)
        return
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
    except (ConnectionError, AuthenticationError) as exc:
        if _auth_failure(exc):
            raise SweepError(
                f"--address={address}: Ray token authentication failed (no token, or not the cluster's); "
                "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, a file named by "
                "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token (`ray get-auth-token` on the head node prints it)"
            ) from None
        raise SweepError(
            f"--address={address}: no Ray cluster found; start one with `ray up cluster.yaml` "
            "(cloud) or `ray start --head` (this machine), or use --address none for a local Ray"
        ) from None


def _local_ray(node_ip_address: str, log_to_driver: bool = False) -> None:
    """Start a local Ray whose servers (GCS, raylet, workers, agents) listen on ``node_ip_address`` only.

    Ray maps a loopback node address to the machine's routable IP unless it runs
    as a single-machine install (ray_constants.ENABLE_RAY_CLUSTER off, the
    default on macOS/Windows); then every server binds the node address. The
    environment variable carries that to the processes Ray starts; the module
    attribute to this one, whose ray is already imported.
    """
    import ipaddress

    import ray

    if ipaddress.ip_address(node_ip_address).is_loopback:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        except ImportError:  # a Ray without it: _node_ip_address alone
            pass
    ray.init(
        include_dashboard=False, log_to_driver=log_to_driver, configure_logging=False, _node_ip_address=node_ip_address
    )


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


def _metric(metrics: dict, name: str) -> Any:
    """``metrics[name]``; a headline robust accuracy (``_worst``) a trial from before it lacks: its ``_mean``."""
    from ..analysis.metrics import legacy_robust

    value = metrics.get(name)
    return metrics.get(legacy_robust(name)) if value is None else value


def _summary(results, extra_metrics: Sequence[str] = ()) -> Any:
    import pandas as pd

    rows = []
    for res in results:
        cfg = res.config or {}
        flat = {}
        for key, value in cfg.items():
            flat.update(value if isinstance(value, dict) else {key: value})
        row = {k: flat.get(k) for k in SUMMARY_COLUMNS}
        metrics = res.metrics or {}
        row.update({k: _metric(metrics, k) for k in [*SUMMARY_METRICS, *extra_metrics]})
        row["status"] = "ERROR" if res.error else ("done" if metrics.get("cycle_complete") else "stopped early")
        row["trial_id"] = metrics.get("trial_id")
        rows.append(row)
    return pd.DataFrame(rows)


def _print_table(title: str, frame) -> None:
    import pandas as pd

    print(f"\n{title}")
    with pd.option_context("display.max_columns", None, "display.width", 200, "display.float_format", "{:.4f}".format):
        print(frame.to_string(index=False) if len(frame) else "  (no trials)")


def _tracking_spec(args: argparse.Namespace, name: str, run_dir: Path, code: dict):
    """--tracking-uri's store, else the one in --run-dir (created if new)."""
    from ..tracking import TrackingSpec, local_store

    if args.tracking_uri:
        return TrackingSpec(args.tracking_uri, args.experiment_name, name, **code)
    uri, artifacts = local_store(run_dir)
    return TrackingSpec(uri, args.experiment_name, name, artifacts, **code)


def run_sweep(args: argparse.Namespace, spec: SweepSpec):
    """Run (or resume) a sweep; returns (ResultGrid, summary DataFrame, tracking spec)."""
    _check_args(args)  # again: run_sweep may be called with a Namespace not from parser()
    # Tune snapshots the experiment's state (which trials are done) every 10 s or
    # more by default; a driver killed inside that window re-runs the trials that
    # finished in it on --resume. With worker reuse, trials can finish seconds
    # apart, so snapshot every second: a small JSON written locally (syncing to
    # remote storage keeps its own period). An explicit setting wins.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # With that period, every snapshot a trial's checkpoints force (CheckpointConfig.num_to_keep) comes
    # within 5 s of a periodic one, and Tune warns "Experiment state snapshotting has been triggered
    # multiple times in the last 5.0 seconds" each time. Tune's threshold for exactly that warning,
    # 0, turns it off (the warning says so); nothing else reads it.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    verbose = bool(getattr(args, "verbose", False))
    storage = _storage(args)
    name = _sweep_name(args, spec.kind, storage)
    exp_path = f"{storage.rstrip('/')}/{name}"
    preflight(args, storage, name, exp_path)  # flags, folders, tracking store, address: before Ray starts
    # Imported after the checks: torch, Ray Tune and MLflow take seconds to load.
    from ray import tune
    from ray.tune import Tuner
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from ..tracking import Tracker, source_provenance
    from ..trainable import TrackingCallback, TrialInfra, run_trial
    from ..twin_cache import cache_location
    from ..ui import results_hint
    from . import progress

    if args.resume and not Tuner.can_restore(exp_path):
        raise SweepError(f"--resume: no restorable sweep at {exp_path}")
    if not args.resume and "://" not in storage and Path(exp_path).exists() and not _only_our_record(Path(exp_path)):
        raise SweepError(f"--name={name}: a sweep of that name exists in {storage}; pass --resume to continue it")
    local = args.address in (None, "", "none", "local")
    progress.quiet_logs(verbose)  # before Ray starts: its start-up banners
    run_dir = Path(args.run_dir).expanduser().resolve()
    # the code, looked up once here (in the package's folder, not the cwd) and tagged on every run
    code = dict(provenance=tuple(source_provenance().items()), system_metrics=getattr(args, "system_metrics", False))
    on_disk = local and "://" not in storage
    if args.resume and on_disk:  # a killed driver's local Ray may still hold its memory
        ended = ray_procs.end_stale(exp_path)
        if ended:
            print(ended, flush=True)
    with ThreadPoolExecutor(1) as side:
        # A local Ray and a new MLflow store (its tables) each take ~2 s to start here: side by side. A cluster's
        # address is checked first, so that a wrong one leaves nothing written.
        opening = side.submit(Tracker, _tracking_spec(args, name, run_dir, code)) if local else None
        connect(args.address, args.node_ip_address, log_to_driver=verbose)
        check_cluster_resources(args, started_here=local)
        tracker = opening.result() if opening is not None else Tracker(_tracking_spec(args, name, run_dir, code))
    tracking = tracker.spec
    parent = tracker.sweep_run({"kind": spec.kind, "storage": exp_path, **spec.sweep_params})
    where = results_hint(tracking.tracking_uri, tracker.experiment_id, None if args.tracking_uri else args.run_dir)
    results_line = (
        f"\nresults: {where}  (MLflow UI, experiment {args.experiment_name!r}, run {name!r}); Tune folder {exp_path}"
    )
    status, fitting = "FAILED", False
    try:
        if not args.resume:
            _record_flags(args, exp_path)
        if on_disk:
            ray_procs.record(exp_path)  # what a --resume after a killed driver ends
        for file_name, text in spec.files.items():  # e.g. sweep.yaml: the resolved sweep file
            tracker.client.log_text(parent, text, file_name)
        print(
            f"sweep {name}: Tune results in {exp_path}; MLflow experiment {args.experiment_name!r} at "
            f"{tracking.tracking_uri}",
            flush=True,
        )
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
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, infra=infra), {"cpu": args.cpus_per_trial, "gpu": args.gpus_per_trial}
        )
        # Tune's result.json and progress.csv, not its TensorBoard files (and hint): MLflow is the record.
        # The live table's callback finds the sweep's board by name (also when restored from tuner.pkl).
        console_callbacks = [CSVLoggerCallback(), JsonLoggerCallback(), progress.BoardCallback(name)]
        fitting = True
        if args.resume:
            tuner = Tuner.restore(exp_path, trainable=trainable, resume_unfinished=True, resume_errored=True)
            loggers_set = _restored_console(tuner, int(verbose), console_callbacks)
        else:
            loggers_set = True
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
        # Without --verbose: Tune's legacy output engine at verbosity 0 prints nothing (the new one still
        # prints its configuration box, paths and hints); the live table shows the trials instead.
        quiet = {"RAY_AIR_NEW_OUTPUT": "0"} if not verbose else {}
        with (
            progress.console(name, verbose),
            _environ(**quiet, **({"TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1"} if loggers_set else {})),
        ):
            results = tuner.fit()
        fitting = False
        full = [r for r in results if r.error is not None and _disk_full(r.error)]
        if full:
            raise _Stopped(f"disk full: {len(full)} trial(s) failed with {_disk_full_line(full[0].error)}")
        summary = _summary(results, spec.summary_metrics)
        _print_table(f"sweep {name}: {len(summary)} trials", summary)
        with_tmp_csv(tracker, parent, summary, "summary.csv")
        if spec.report is not None:
            write_report(spec.report, tracking, parent, run_dir / "reports" / name)
        status = "FINISHED" if not results.errors else "FAILED"
    except Exception as exc:  # noqa: BLE001 - disk full anywhere, or anything escaping Tune: one line
        if isinstance(exc, _Stopped):
            reason = str(exc)
        elif _disk_full(exc):
            reason = f"disk full: {_disk_full_line(exc)}"
        elif _no_space(run_dir, exp_path):  # Tune read back a file the full disk cut short (EOFError, ...)
            reason = f"disk full: {_no_space(run_dir, exp_path)} ({_first_line(exc)})"
        elif fitting:
            reason = f"Ray Tune stopped with {_first_line(exc)}"
        else:
            _end_quietly(tracker, parent, "FAILED")
            print(results_line, flush=True)
            raise
        closed = close_runs(tracker, parent, reason)
        raise SweepError(f"sweep {name} stopped, {reason}; {closed}; Tune folder {exp_path}") from None
    except BaseException:  # Ctrl-C: the sweep run does not stay RUNNING
        _end_quietly(tracker, parent, "FAILED")
        print(results_line, flush=True)
        raise
    tracker.finish(parent, status)
    print(results_line, flush=True)
    return results, summary, tracking


def _restored_console(tuner, verbose: int, callbacks: list) -> bool:
    """Tuner.restore brings back the RunConfig the sweep started with (its tuner.pkl), console settings and
    callbacks included: a resumed sweep gets this run's instead (``callbacks`` replace those of the same
    classes; the tracking callback stays). Ray has no public setter on restore, so the restored run config
    is changed in place where it can be reached (not through Ray Client). Returns whether it was."""
    get = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", None)
    run_config = get() if callable(get) else None
    if run_config is None:
        return False
    replaced = tuple(type(c) for c in callbacks)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, replaced)] + list(callbacks)
    run_config.verbose = verbose
    return True


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


def report(*args: Any, **kwargs: Any):
    """analysis.report_sweep, imported when the trials are done (a broken analysis costs the
    report, never the sweep)."""
    from ..analysis import report_sweep

    return report_sweep(*args, **kwargs)


FRAGMENTED = (
    r"DataFrame is highly fragmented\.  This is usually the result of calling `frame\.insert` many times, "
    r"which has poor performance\."
)


def write_report(report: Callable[..., Any], tracking, parent_run_id: str, out_dir: Path) -> Path | None:
    """The sweep's report (tables, figures, report.html) into out_dir and onto its MLflow run.
    Any failure is one warning line: the trials are done and tracked whatever happens here."""
    try:
        with warnings.catch_warnings():
            # pandas' speed hint about the report's own frame building (psreval_tune/analysis/reports.py),
            # one per table of the report: not the user's to act on. Exactly that message.
            warnings.filterwarnings("ignore", message=FRAGMENTED)
            full = report(tracking.tracking_uri, tracking.experiment_name, tracking.sweep_name, out_dir, parent_run_id)
    except Exception as exc:  # noqa: BLE001 - the sweep's results must not depend on its report
        text = str(exc).strip().splitlines()
        print(
            f"\nwarning: no report for sweep {tracking.sweep_name!r} ({type(exc).__name__}: "
            f"{text[0] if text else 'no message'}); retry with: psreval report "
            f"--tracking-uri {tracking.tracking_uri} --experiment {tracking.experiment_name} "
            f"--sweep {tracking.sweep_name} --out {out_dir}",
            file=sys.stderr,
            flush=True,
        )
        return None
    html = getattr(full, "html", None)
    print(f"\nreport: {html} (tables and figures of the sweep; also in its MLflow run, artifacts report/)", flush=True)
    failed = getattr(full, "failed", [])
    if failed:
        print(
            f"warning: report parts failed: {', '.join(failed)} (tracebacks in {out_dir}/<part>.error.txt)",
            file=sys.stderr,
            flush=True,
        )
    return html


def with_tmp_csv(tracker, run_id: str, frame, name: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        frame.to_csv(path, index=False)
        tracker.client.log_artifact(run_id, str(path))


def exit_status(results) -> int:
    """A finished sweep's exit status: 0 when no trial ended in ERROR, else 1 after one line on stderr
    saying how many (a script or CI job running the sweep sees it; the table above says which)."""
    errors = len(getattr(results, "errors", None) or [])
    if not errors:
        return 0
    print(
        f"error: {errors} of {len(results)} trials failed (status ERROR in the table above; "
        "their errors are in the Tune folder and on their MLflow runs, tag psreval.failure)",
        file=sys.stderr,
    )
    return 1


def main_guard(fn: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Entry-point wrapper: user errors become one line on stderr and exit 2."""

    def wrapped(argv: Sequence[str] | None = None) -> int:
        try:
            return fn(argv)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return wrapped
