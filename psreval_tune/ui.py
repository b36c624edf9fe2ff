"""``psreval ui``: the MLflow UI over the sweeps' store, bound to 127.0.0.1 unless --host says otherwise.

MLflow 3's UI keeps a workflow type (``genai`` or ``machine_learning``; the URL's
``workflowType`` wins over the one the browser remembers, and ``genai`` is its
default), which decides the side bar and where an experiment opens. The address
printed here, ``#/experiments/<id>/runs?workflowType=machine_learning``, opens the
experiment's runs table in the machine-learning view (MLflow 3.17's UI code;
tests/test_mlflow_ui.py opens it). Experiments the sweeps create also carry the tag
``mlflow.experimentKind`` = ``custom_model_development``, which that code treats
as a machine-learning experiment.
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


def experiment_runs_url(base: str, experiment_id: str | None) -> str:
    """The runs table of an experiment (or the experiment list) of the MLflow UI at ``base``."""
    base = base.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def runs_view_url(host: str, port: int, experiment_id: str | None) -> str:
    return experiment_runs_url(server_url(host, port), experiment_id)


def results_hint(tracking_uri: str, experiment_id: str | None, run_dir: str | None = None) -> str:
    """Where a sweep's runs are seen: the runs-table URL, and the command that serves it if it is a local
    store. ``run_dir``: the store is the default one in that folder (``psreval ui --run-dir``)."""
    from .tracking import redact

    scheme = tracking_uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        return experiment_runs_url(redact(tracking_uri), experiment_id)
    if scheme.startswith("databricks") or scheme == "uc":
        return f"the experiment {experiment_id} in the Databricks workspace of {tracking_uri}"
    url = runs_view_url(DEFAULT_HOST, DEFAULT_PORT, experiment_id)
    if run_dir is not None:
        return f"{url} after `psreval ui --run-dir {run_dir}` (or `make ui` in a checkout)"
    return f"{url} after `psreval ui --tracking-uri {redact(tracking_uri)}`"


def experiment_id(uri: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name(name)
    return None if exp is None else exp.experiment_id


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
    print(
        f"MLflow UI: {runs_view_url(args.host, args.port, experiment_id(uri, args.experiment))}  (Ctrl-C to stop)",
        flush=True,
    )
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
    ]
    os.execv(sys.executable, cmd)  # the UI is the process from here on: Ctrl-C stops it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
