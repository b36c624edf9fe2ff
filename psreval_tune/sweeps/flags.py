"""The flags every sweep entry point shares (parser, add_cost_flags) and the checks of their values.

A parsed sweep command line is checked at once: its values (_check_args, no file system or network),
then its infrastructure (checks.check_infrastructure), so a wrong flag is one line, exit 2, before a
script builds anything.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Any, Callable

from ..cli_parser import Parser
from .checks import check_infrastructure
from .connection import LOCALHOST
from .failures import SweepError

# A trial's checkpoint period. Each checkpoint costs ~0.1 s on 2 cores (torch.save of the federation, Tune's
# copy and its synchronous report): 7% of a 1.5 s digits round if taken every round, nothing to speak of
# against a minutes-long CIFAR-10 round, which is then checkpointed every round anyway.
CHECKPOINT_EVERY_S = 30.0
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


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
    _add_cluster_and_data_flags(p)
    _add_resource_flags(p)
    _add_storage_flags(p)
    _add_trial_flags(p)
    _add_console_flags(p)
    return p


def _add_cluster_and_data_flags(p: argparse.ArgumentParser) -> None:
    """--address (where Ray runs), the dataset and --smoke."""
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


def _add_resource_flags(p: argparse.ArgumentParser) -> None:
    """How many trials run at once, and what each asks of Ray."""
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


def _add_storage_flags(p: argparse.ArgumentParser) -> None:
    """Where the results go (Tune folder, MLflow store), the sweep's name, and --resume."""
    env = os.environ.get
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


def _add_trial_flags(p: argparse.ArgumentParser) -> None:
    """What each trial repeats and retries, and where a local Ray listens."""
    env = os.environ.get
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


def _add_console_flags(p: argparse.ArgumentParser) -> None:
    """What the console and the trial runs show."""
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
    p.add_argument(
        "--no-report",
        action="store_true",
        help="skip the report at the sweep's end (figures take seconds per report; a sweep run in segments needs "
        "it once): write it later with psreval report --sweep NAME",
    )


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


def _check_args(args: argparse.Namespace) -> None:
    """Flag values on their own (no file system, no network): run when the flags are parsed."""
    _check_resources(args)
    _check_numbers(args)
    _check_seeds(getattr(args, "seeds", None))
    _check_names(args)


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_resources(args: argparse.Namespace) -> None:
    """--cpus-per-trial > 0, --gpus-per-trial >= 0: whole numbers, or fractions below 1 to pack trials."""
    for flag in ("cpus_per_trial", "gpus_per_trial"):
        value = getattr(args, flag, None)
        if value is None:
            continue
        if not math.isfinite(value) or value < 0 or (flag == "cpus_per_trial" and value == 0):
            raise SweepError(
                f"{_flag(flag)}={value} is not allowed; expected a number "
                f"{'> 0' if flag == 'cpus_per_trial' else '>= 0'}"
            )
        if value > 1 and value != int(value):
            raise SweepError(
                f"{_flag(flag)}={value} is not allowed; expected a whole number, or a fraction below 1 to pack trials"
            )


INTEGER_FLOORS = (
    ("max_concurrent", 1),
    ("attack_repeats", 1),
    ("max_failures", 0),
    ("num_samples", 1),
    ("rounds", 1),
    ("asha_grace", 1),
)


def _check_numbers(args: argparse.Namespace) -> None:
    """Counts at or above their floor; seconds and prices finite and >= 0; --price-per-hour with --dry-run."""
    for flag, low in INTEGER_FLOORS:
        value = getattr(args, flag, None)
        if value is not None and value < low:
            raise SweepError(f"{_flag(flag)}={value} is not allowed; expected an integer >= {low}")
    for flag, expected in (("checkpoint_every_s", "a number of seconds >= 0"), ("price_per_hour", "a number >= 0")):
        value = getattr(args, flag, None)
        if value is not None and (not math.isfinite(value) or value < 0):
            raise SweepError(f"{_flag(flag)}={value} is not allowed; expected {expected}")
    if getattr(args, "price_per_hour", None) is not None and not getattr(args, "dry_run", False):
        raise SweepError("--price-per-hour is not allowed without --dry-run (it prices the estimate)")


def _check_seeds(seeds: list[int] | None) -> None:
    if seeds is None:
        return
    if not seeds or any(s < 0 for s in seeds):
        raise SweepError(f"--seeds={','.join(map(str, seeds))} is not allowed; expected integers >= 0")
    if len(set(seeds)) != len(seeds):
        raise SweepError(
            f"--seeds={','.join(map(str, seeds))} is not allowed; a seed is listed twice "
            "(expected distinct integers >= 0)"
        )


def _check_names(args: argparse.Namespace) -> None:
    """--name a folder name, --experiment-name not blank, no empty path or address, an IP address to listen on."""
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
            raise SweepError(f"{_flag(flag)}='' is not allowed; expected a value (or leave the flag out)")
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
