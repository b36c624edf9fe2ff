"""``psreval ui``: the MLflow UI over the sweeps' store, bound to 127.0.0.1 unless --host says otherwise.

It prints the address of the runs table of a sweep (--sweep, default the experiment's latest): one row per
run of the sweep (its trials and the sweep's own run), the key metrics and params as columns, sorted by
acc_wb_pgd_worst, best first. A sweep ends by printing the same address for its own runs.

How (MLflow 3.17's UI code): the address is
``#/experiments/<id>/runs?viewStateShareKey=<key>&workflowType=machine_learning``. ``viewStateShareKey``
names a view stored in the experiment's tag ``mlflow.sharedViewState.<key>`` (psreval_tune.tracking
stores it when the sweep run opens, and here if missing): its search filter on the sweep's tag
(``tags.`psreval.sweep` = '<name>'``), which also makes the table flat (MLflow nests child runs under a
collapsed parent only without a filter and sorted by creation time), its sort, and the columns shown
(``selectedColumns``, which the URL cannot set and which by default hold no metric). Without the tag
(a store that refused it) the address carries ``searchFilter``, ``orderByKey`` and ``orderByAsc``
instead: flat and sorted, but with MLflow's default columns. ``workflowType=machine_learning`` picks MLflow
3's machine-learning view over its GenAI one (the URL's wins over the one the browser remembers);
experiments the sweeps create also carry ``mlflow.experimentKind`` = ``custom_model_development``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .cli_parser import Parser
from .config import ConfigError

DEFAULT_EXPERIMENT = "psreval"
NO_JOB_RUNNER = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"  # a user's own setting of it wins


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="psreval ui", description=__doc__.splitlines()[0])
    p.add_argument(
        "--run-dir", default="runs", help="folder of the sweeps' local store, runs/mlflow.db (default: runs)"
    )
    p.add_argument(
        "--tracking-uri",
        default=None,
        help="another store (sqlite:///path/mlflow.db); default: sqlite:///RUN_DIR/mlflow.db",
    )
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"experiment the printed address opens (default: {DEFAULT_EXPERIMENT})",
    )
    p.add_argument(
        "--sweep",
        default=None,
        help="sweep whose runs the printed address lists (default: the experiment's latest sweep)",
    )
    p.add_argument("--workers", type=int, default=None, help="MLflow UI worker processes (default: MLflow's, 4)")
    p.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to listen on (default: {DEFAULT_HOST}, this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default: {DEFAULT_PORT})")
    return p


def store_uri(args: argparse.Namespace) -> str:
    if args.tracking_uri:
        from .tracking import TrackingError, check_tracking_uri

        try:
            check_tracking_uri(args.tracking_uri, must_exist=True)
        except TrackingError as exc:
            raise ConfigError(str(exc)) from None
        return args.tracking_uri
    db = Path(args.run_dir).expanduser().resolve() / "mlflow.db"
    if not db.is_file():
        raise ConfigError(
            f"--run-dir={args.run_dir!r} holds no MLflow store ({db} is missing); run a sweep "
            "first (make demo), or name the store with --tracking-uri"
        )
    return f"sqlite:///{db}"


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 5000


def server_url(host: str, port: int) -> str:
    """The address a browser on this machine uses for a UI listening on host:port."""
    if host in ("0.0.0.0", "::", ""):  # every interface: this machine's loopback works
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def experiment_runs_url(base: str, experiment_id: str | None, query: str | None = None) -> str:
    """The runs table of an experiment (or the experiment list) of the MLflow UI at ``base``; ``query``:
    URL parameters of the table (a sweep's: tracking.sweep_view_url_query)."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    extra = f"{query}&" if query else ""
    return f"{base}/#/experiments/{experiment_id}/runs?{extra}workflowType=machine_learning"


def runs_view_url(host: str, port: int, experiment_id: str | None, query: str | None = None) -> str:
    return experiment_runs_url(server_url(host, port), experiment_id, query)


def sweep_query(tracking_uri: str, experiment_id: str | None, sweep: str | None) -> str | None:
    """The runs-table parameters of ``sweep`` (None: of the sweep run this process opened last there)."""
    from .tracking import opened_view, sweep_view_key, sweep_view_url_query

    if experiment_id is None:
        return None
    view = opened_view(tracking_uri, experiment_id)
    if sweep is None:
        return sweep_view_url_query("", view) if view else None
    return sweep_view_url_query(sweep, view if view == sweep_view_key(sweep) else None)


def results_hint(
    tracking_uri: str, experiment_id: str | None, run_dir: str | None = None, sweep: str | None = None
) -> str:
    """Where a sweep's runs are seen: the runs-table URL of ``sweep`` (None: the sweep run this process opened
    last in the experiment, if any), and the command that serves it if it is a local store. ``run_dir``: the
    store is the default one in that folder (``psreval ui --run-dir``)."""
    from .tracking import redact

    query = sweep_query(tracking_uri, experiment_id, sweep)
    scheme = tracking_uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return experiment_runs_url(redact(tracking_uri), experiment_id, query)
    if scheme.startswith("databricks") or scheme == "uc":
        return f"the experiment {experiment_id} in the Databricks workspace of {tracking_uri}"
    url = runs_view_url(DEFAULT_HOST, DEFAULT_PORT, experiment_id, query)
    if run_dir is not None:
        return f"{url} after `psreval ui --run-dir {run_dir}` (or `make ui` in a checkout)"
    return f"{url} after `psreval ui --tracking-uri {redact(tracking_uri)}`"


def latest_sweep(uri: str, experiment_id: str) -> str | None:
    """The name of the experiment's most recently started sweep, None if it has none."""
    from mlflow.tracking import MlflowClient

    from .tracking import TAG_KIND, TAG_SWEEP

    runs = MlflowClient(tracking_uri=uri).search_runs(
        [experiment_id],
        filter_string=f"tags.`{TAG_KIND}` = 'sweep'",
        max_results=1,
        order_by=["attributes.start_time DESC"],
    )
    return runs[0].data.tags.get(TAG_SWEEP) if runs else None


def sweep_view_query(uri: str, experiment_id: str, sweep: str) -> str:
    """The runs-table parameters of ``sweep``, its view stored first if the experiment lacks it (sweeps
    tracked before views were)."""
    from mlflow.tracking import MlflowClient

    from .tracking import VIEW_TAG_PREFIX, store_sweep_view, sweep_view_key, sweep_view_url_query

    client = MlflowClient(tracking_uri=uri)
    key = sweep_view_key(sweep)
    if VIEW_TAG_PREFIX + key not in client.get_experiment(experiment_id).tags:
        key = store_sweep_view(client, experiment_id, sweep)
    return sweep_view_url_query(sweep, key)


def experiment_id(uri: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if exp is None else exp.experiment_id


def _has_sweep(uri: str, experiment_id: str, sweep: str) -> bool:
    from mlflow.tracking import MlflowClient

    from .tracking import TAG_KIND, TAG_SWEEP, sweep_filter

    where = sweep_filter(sweep)
    if where is None:
        return False
    runs = MlflowClient(tracking_uri=uri).search_runs(
        [experiment_id], filter_string=f"{where} and tags.`{TAG_KIND}` = 'sweep'", max_results=1
    )
    return bool(runs) and runs[0].data.tags.get(TAG_SWEEP) == sweep


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"error: --port={args.port} is not a port; expected 1..65535", file=sys.stderr)
        return 2
    try:
        uri = store_uri(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers={args.workers} is not a number of processes; expected 1 or more", file=sys.stderr)
        return 2
    exp_id = experiment_id(uri, args.experiment)
    query = None
    if exp_id is not None:
        sweep = args.sweep if args.sweep is not None else latest_sweep(uri, exp_id)
        if args.sweep is not None and not _has_sweep(uri, exp_id, args.sweep):
            print(f"error: --sweep={args.sweep!r}: no such sweep in experiment {args.experiment!r}", file=sys.stderr)
            return 2
        if sweep is not None:
            query = sweep_view_query(uri, exp_id, sweep)
    elif args.sweep is not None:
        print(f"error: --sweep={args.sweep!r}: no experiment {args.experiment!r} in {uri}", file=sys.stderr)
        return 2
    print(f"MLflow UI: {runs_view_url(args.host, args.port, exp_id, query)}  (Ctrl-C to stop)", flush=True)
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        args.host,
        "--port",
        str(args.port),
        *(["--workers", str(args.workers)] if args.workers is not None else []),
    ]
    # MLflow's server also starts a GenAI job runner (a second process that loads all of MLflow) unless told not
    # to; the runs table needs none, and without it the UI answers in about half the time on 2 busy cores
    env = {**os.environ, NO_JOB_RUNNER: os.environ.get(NO_JOB_RUNNER, "false")}
    os.execve(sys.executable, cmd, env)  # the UI is the process from here on: Ctrl-C stops it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
