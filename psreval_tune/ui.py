"""``psreval ui``: the MLflow UI over the sweeps' store, bound to 127.0.0.1 unless --host says otherwise.

MLflow 3 opens on its GenAI overview; the address printed here goes straight to the
runs table of the experiment (``workflowType=machine_learning``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from .cli import _Parser
from .config import ConfigError

DEFAULT_EXPERIMENT = "psreval"


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="psreval ui", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs", help="folder of the sweeps' local store, runs/mlflow.db (default: runs)")
    p.add_argument("--tracking-uri", default=None,
                   help="another store (sqlite:///path/mlflow.db); default: sqlite:///RUN_DIR/mlflow.db")
    p.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment the printed address opens "
                                                                    f"(default: {DEFAULT_EXPERIMENT})")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=5000, help="port (default: 5000)")
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
        raise ConfigError(f"--run-dir={args.run_dir!r} holds no MLflow store ({db} is missing); run a sweep "
                          "first (make demo), or name the store with --tracking-uri")
    return f"sqlite:///{db}"


def runs_view_url(host: str, port: int, experiment_id: str | None) -> str:
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if experiment_id is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    return f"{base}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


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
    print(f"MLflow UI: {runs_view_url(args.host, args.port, experiment_id(uri, args.experiment))}  (Ctrl-C to stop)",
          flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", args.host,
           "--port", str(args.port)]
    os.execv(sys.executable, cmd)  # the UI is the process from here on: Ctrl-C stops it directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
