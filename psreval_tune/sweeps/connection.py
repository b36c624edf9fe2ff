"""Ray itself: probing a cluster's address, the resources a trial may ask for, connecting to a cluster or
starting a local Ray, a restored Tuner's console settings, and the exact log messages of Ray (and Optuna)
a sweep silences.

Every use of Ray's private API in psreval_tune is here, each marked ``PRIVATE API`` with the Ray version
it was checked on and what happens without it. Checked on Ray 2.60.0 (``ray.__version__``).
"""

from __future__ import annotations

import argparse
import logging
import os
import re

from .failures import SweepError

LOCALHOST = "127.0.0.1"


PROBE_TIMEOUT_S = 3.0


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
    """--address HOST:PORT, ray://HOST:PORT or auto: refuse in seconds when nothing listens there (Ray would
    retry for minutes). 'none' starts a local Ray; for 'auto', the address Ray's own discovery finds."""
    if address in (None, "", "none", "local"):
        return
    if address == "auto":
        _check_auto()
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


def _check_auto() -> None:
    """--address auto: probe the address Ray's discovery picks. A stopped or dying cluster leaves its address
    behind (the address file of a `ray start`, a raylet still exiting), and ray.init(address="auto") retries
    that GCS for minutes before it gives up."""
    found = _auto_address()
    if found is None:
        return  # none found: ray.init says so at once, and connect() turns that into its one line
    raw, target = found
    parsed = _split_host_port(target.split("://", 1)[-1])
    if parsed is None:
        return  # not HOST:PORT: Ray's to judge, as before
    why = probe_tcp(*parsed)
    if why:
        source = "RAY_ADDRESS" if os.environ.get("RAY_ADDRESS") else "the address file of a `ray start` or a raylet"
        connects = "" if raw == target else f", which Ray connects to as {target},"
        raise SweepError(
            f"--address=auto: Ray found the cluster address {raw} in {source}{connects} but no Ray cluster answers "
            f"there ({why}): a stopped or dying cluster; start one with `ray start --head`, or use --address none "
            "for a local Ray"
        )


def _auto_address() -> tuple[str, str] | None:
    """(the address Ray's discovery finds for address="auto", the HOST:PORT ray.init connects to), or None
    where it finds none or would start a local Ray."""
    env = os.environ.get("RAY_ADDRESS")
    if env and "://" in env:
        return env, env  # ray.init hands RAY_ADDRESS with a scheme to Ray Client as it is
    # PRIVATE API (checked on Ray 2.60.0): ray._private.services.get_ray_address_from_environment and
    # canonicalize_bootstrap_address, with which ray.init(address="auto") finds its GCS: RAY_ADDRESS; else
    # the address file of the last `ray start` (ray_current_cluster in $RAY_TMPDIR/ray, $TMPDIR/ray or
    # /tmp/ray), unless this machine's raylets name exactly one cluster (then theirs; several and no file:
    # any one of them); localhost mapped to the node IP as ray.init maps it. Without them: None, and a stale
    # address is again ray.init's to retry (minutes).
    try:
        from ray._private import services
    except ImportError:
        return None
    clear = getattr(services.find_gcs_addresses, "cache_clear", None)
    if callable(clear):
        clear()  # as ray.init does: a scan cached earlier in this process may name a cluster since stopped
    try:
        raw = services.get_ray_address_from_environment("auto", None)
        target = services.canonicalize_bootstrap_address(raw) if raw else None
    except Exception:  # noqa: BLE001 - none found (ConnectionError), or a malformed one: Ray's to report
        return None
    return (raw, target) if target else None


def _local_cpus() -> float:
    # PRIVATE API (checked on Ray 2.60.0): ray._private.utils.get_num_cpus, the CPUs a local Ray will offer
    # (cgroup-aware). Without it: this process's affinity mask (os.cpu_count where there is none).
    try:
        from ray._private.utils import get_num_cpus

        return float(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private API; the affinity mask is close enough
        return float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _local_gpus() -> float:
    """The GPUs a local Ray would offer, counted as Ray counts them, without starting it."""
    # PRIVATE API (checked on Ray 2.60.0): ray._private.accelerators' GPU manager, which counts the GPUs
    # as a local Ray will. Without it: infinity, i.e. no check here; the running Ray's
    # check_cluster_resources still refuses a sweep whose trials could never start.
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
        # PRIVATE API (checked on Ray 2.60.0): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER, the variable ray_constants
        # reads ENABLE_RAY_CLUSTER from (ENABLE_RAY_CLUSTERS_ENV_VAR), for the processes Ray starts; and
        # ray._private.ray_constants.ENABLE_RAY_CLUSTER, patched for this process, whose ray is imported.
        # Without them (ImportError, or a variable no longer read): _node_ip_address alone, and Ray's
        # servers may listen on the machine's routable IP as well.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        try:
            from ray._private import ray_constants

            ray_constants.ENABLE_RAY_CLUSTER = False
        except ImportError:  # a Ray without it: _node_ip_address alone
            pass
    # PRIVATE API (checked on Ray 2.60.0): ray.init's _node_ip_address keyword. No fallback: a Ray without
    # it stops here (ray.init raises RuntimeError on an unknown keyword) rather than listen elsewhere.
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


def _restored_console(tuner, verbose: int, callbacks: list) -> bool:
    """Tuner.restore brings back the RunConfig the sweep started with (its tuner.pkl), console settings and
    callbacks included: a resumed sweep gets this run's instead (``callbacks`` replace those of the same
    classes; the tracking callback stays). Ray has no public setter on restore, so the restored run config
    is changed in place where it can be reached (not through Ray Client). Returns whether it was."""
    # PRIVATE API (checked on Ray 2.60.0): Tuner._local_tuner.get_run_config(), the restored RunConfig
    # itself. Without it (or through Ray Client, where there is no _local_tuner): False, and the resumed
    # sweep runs with the console settings and callbacks it started with (Tune's auto loggers stay on).
    get = getattr(getattr(tuner, "_local_tuner", None), "get_run_config", None)
    run_config = get() if callable(get) else None
    if run_config is None:
        return False
    replaced = tuple(type(c) for c in callbacks)
    run_config.callbacks = [c for c in run_config.callbacks or [] if not isinstance(c, replaced)] + list(callbacks)
    run_config.verbose = verbose
    return True


# --- log messages a sweep silences, by their exact text ----------------------------------------------


class DropExact(logging.Filter):
    """Drops the records of one logger whose whole message matches one of ``patterns``."""

    def __init__(self, *patterns: str):
        super().__init__()
        self.patterns = [re.compile(p, re.S) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001
            return True
        return not any(p.fullmatch(message) for p in self.patterns)


# Always: messages about what the sweep does on purpose.
ALWAYS = {
    # Per-round results carry the final objectives as NaN (TrialInfra.final_objectives); a plain
    # OptunaSearch tells those of a trial ASHA stopped to Optuna, which refuses them, and Ray logs it.
    # search.PsrevalOptunaSearch tells such a trial PRUNED instead; this covers a search resumed with
    # the plain one (its searcher state is restored from before).
    "ray.tune.search.optuna.optuna_search": (r"The value nan is not acceptable(; The value nan is not acceptable)*",),
}
# Without --verbose: Ray's start-up banners.
# PRIVATE API (checked on Ray 2.60.0): the names of the ray._private modules that log these banners.
# Without them (a module renamed or moved): the filter is on a logger nobody uses, and the banner shows.
BANNERS = {
    "ray._private.authentication.authentication_token_setup": (
        r"Token authentication is enabled for this Ray cluster\. Set RAY_AUTH_MODE=disabled to opt out\. "
        r"For more information, see \S+",
    ),
    "ray._private.worker": (
        r"Connecting to existing Ray cluster at address: \S+\.\.\.",
        r"(Started a local Ray instance|Connected to Ray cluster)\.( View the dashboard at .*)?",
    ),
}


def quiet_logs(verbose: bool) -> None:
    """Install the filters (once per process) on exactly the loggers that log those messages."""
    for table_ in (ALWAYS,) if verbose else (ALWAYS, BANNERS):
        for name, patterns in table_.items():
            logger = logging.getLogger(name)
            if not any(
                isinstance(f, DropExact) and [p.pattern for p in f.patterns] == list(patterns) for f in logger.filters
            ):
                logger.addFilter(DropExact(*patterns))
