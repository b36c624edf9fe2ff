"""MLflow: one parent run per sweep, one nested run per trial.

Runs are found again by tags rather than remembered in memory, so a resumed
sweep or a retried trial writes into the run it already has, never a
duplicate: the sweep run is keyed by (experiment, sweep name), a trial run
by (sweep run, Ray trial id).

With no tracking URI, a SQLite store and an artifact folder inside the run
directory are used, so a fresh machine needs no server.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    from mlflow.entities import Metric

# MLflow is imported where it is used: check_tracking_uri must answer before it has loaded.

TAG_SWEEP = "psreval.sweep"
TAG_KIND = "psreval.kind"  # "sweep" | "trial"
TAG_TRIAL = "psreval.trial_id"
TAG_PARENT = "mlflow.parentRunId"  # what the MLflow UI nests by
TAG_COMMIT = "git_commit"
TAG_FAILURE = "psreval.failure"  # why a run ended FAILED (one line)


@dataclass(frozen=True)
class TrackingSpec:
    """Where a sweep logs; plain data so it travels to Ray workers."""

    tracking_uri: str
    experiment_name: str
    sweep_name: str
    artifact_location: str | None = None  # only for a local store


class TrackingError(ValueError):
    """A tracking URI that cannot work. One line, naming the URI."""


SQLITE_MAGIC = b"SQLite format 3\x00"
DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}
URI_FORMS = ("http(s)://HOST:PORT, sqlite:///PATH, file:///PATH (or a folder), postgresql://, mysql://, "
             "mssql://, databricks")
PROBE_TIMEOUT_S = 3.0


def redact(uri: str) -> str:
    """The URI with any password replaced, for messages."""
    return re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", uri)


def probe_tcp(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None if something accepts a TCP connection at host:port within ``timeout``, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror:
        return f"host {host!r} is not known"
    except (socket.timeout, TimeoutError):
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def _sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else uri[len("sqlite://"):]


def check_tracking_uri(uri: str, flag: str = "--tracking-uri", must_exist: bool = False,
                       timeout: float = PROBE_TIMEOUT_S) -> None:
    """Refuse, in seconds, a tracking URI MLflow would retry for minutes or fail on mid-sweep.

    http(s): something must accept a connection and answer HTTP without a 5xx;
    sqlite: the folder must exist and be writable, an existing file must be an
    SQLite database; file: a folder (or a new path in an existing folder);
    databases: their port must accept a connection. ``must_exist``: the store
    must already be there (reading, never creating one)."""
    shown = redact(uri)
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    base = scheme.split("+", 1)[0]
    if scheme in ("http", "https"):
        if not parsed.hostname:
            raise TrackingError(f"{flag}={shown} is not allowed: no host; expected {URI_FORMS}")
        try:
            port = parsed.port or (443 if scheme == "https" else 80)
        except ValueError:
            raise TrackingError(f"{flag}={shown} is not allowed: bad port; expected {URI_FORMS}") from None
        why = probe_tcp(parsed.hostname, port, timeout)
        if why is None:
            try:
                with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout + 2) as resp:
                    status = resp.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                why = f"no HTTP answer ({reason})"
                status = None
            # 200: an MLflow server; 401/403: one behind authentication. Anything else (404 from some
            # other web server, 5xx that MLflow would retry for minutes) is not a tracking server.
            if status is not None and status not in (200, 401, 403):
                why = f"{uri.rstrip('/')}/health answers HTTP {status}, not an MLflow server"
                why = why.replace(uri, shown)
        if why:
            raise TrackingError(f"{flag}={shown}: no MLflow server reachable ({why}); start it (`make ui`, "
                                "`mlflow server`) or pass another tracking URI")
        return
    if scheme == "sqlite":
        raw = _sqlite_path(uri)
        if raw in ("", ":memory:"):
            raise TrackingError(f"{flag}={shown} is not allowed: an in-memory store is not shared with the "
                                "trials; expected sqlite:///PATH")
        path = Path(raw).expanduser()
        if must_exist and not path.exists():
            raise TrackingError(f"{flag}={shown}: no MLflow store at {path} (run a sweep first, or pass the "
                                "store's --tracking-uri)")
        if not path.parent.is_dir():
            raise TrackingError(f"{flag}={shown}: folder {path.parent} does not exist; create it or point the "
                                "URI at an existing folder")
        if path.exists():
            if not path.is_file():
                raise TrackingError(f"{flag}={shown}: {path} is not a file; expected an SQLite database")
            try:
                with open(path, "rb") as fh:
                    head = fh.read(16)
            except OSError as exc:
                raise TrackingError(f"{flag}={shown}: {path} is not readable ({exc.strerror})") from None
            if head and head != SQLITE_MAGIC:
                raise TrackingError(f"{flag}={shown}: {path} is not an SQLite database (it does not start with "
                                    "SQLite's header); point the URI at an MLflow store or a new file")
        if not must_exist and not os.access(path.parent, os.W_OK | os.X_OK):
            raise TrackingError(f"{flag}={shown}: folder {path.parent} is not writable by this user")
        return
    if scheme in ("", "file") or (len(scheme) == 1 and uri[1:2] == ":"):  # a path (or a Windows drive)
        path = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri).expanduser()
        if path.exists() and not path.is_dir():
            raise TrackingError(f"{flag}={shown}: {path} is not a folder; a file store is a folder")
        if not path.exists() and (must_exist or not path.parent.is_dir()):
            raise TrackingError(f"{flag}={shown}: {path if must_exist else path.parent} does not exist")
        return
    if base in DB_PORTS:
        if not parsed.hostname:
            raise TrackingError(f"{flag}={shown} is not allowed: no host; expected {URI_FORMS}")
        why = probe_tcp(parsed.hostname, parsed.port or DB_PORTS[base], timeout)
        if why:
            raise TrackingError(f"{flag}={shown}: the database is not reachable ({why})")
        return
    if base in ("databricks", "databricks-uc", "uc"):
        return
    raise TrackingError(f"{flag}={shown} is not allowed: unknown scheme {parsed.scheme!r}; expected {URI_FORMS}")


@contextlib.contextmanager
def store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise the first use of a local SQLite store across processes: MLflow creates its tables
    on first use, and two processes doing that at once crash on the race. No-op for other stores."""
    if not tracking_uri.startswith("sqlite:"):
        yield
        return
    path = Path(_sqlite_path(tracking_uri)).expanduser()
    try:
        import fcntl

        fh = open(f"{path}.lock", "a")
    except (ImportError, OSError):  # no fcntl, or a read-only folder: nothing to create anyway
        yield
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
    finally:
        fh.close()  # releases the lock


def local_store(run_dir: str | os.PathLike) -> tuple[str, str]:
    """(tracking URI, artifact location) of the default store in ``run_dir``."""
    root = Path(run_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dicts -> dotted keys; values as MLflow stores them (strings)."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(map(str, value))
        else:
            flat[name] = str(value)
    return flat


def _metrics(values: Mapping[str, Any], step: int) -> list[Metric]:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]


class Tracker:
    def __init__(self, spec: TrackingSpec):
        self.spec = spec
        from mlflow import MlflowClient

        with store_lock(spec.tracking_uri):  # table creation and the experiment: one process at a time
            self.client = MlflowClient(tracking_uri=spec.tracking_uri)
            self.experiment_id = self._experiment()

    def _experiment(self) -> str:
        exp = self.client.get_experiment_by_name(self.spec.experiment_name)
        if exp is not None:
            return exp.experiment_id
        try:
            return self.client.create_experiment(self.spec.experiment_name,
                                                 artifact_location=self.spec.artifact_location)
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(self.spec.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=2,
                                       order_by=["attributes.start_time ASC"])
        return runs[0].info.run_id if runs else None

    def _reopen(self, run_id: str) -> str:
        from mlflow.entities import RunStatus

        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        return run_id

    def sweep_run(self, params: Mapping[str, Any] | None = None) -> str:
        """The sweep's parent run: found again on resume, created otherwise."""
        found = self._find(**{TAG_SWEEP: self.spec.sweep_name, TAG_KIND: "sweep"})
        if found:
            return self._reopen(found)
        run = self.client.create_run(self.experiment_id, run_name=self.spec.sweep_name, tags={
            TAG_SWEEP: self.spec.sweep_name, TAG_KIND: "sweep", TAG_COMMIT: git_commit()})
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def trial_run(self, parent_id: str, trial_id: str, run_name: str) -> tuple[str, bool]:
        """(run id, True if it already existed) of a trial, nested under the sweep."""
        found = self._find(**{TAG_PARENT: parent_id, TAG_TRIAL: trial_id})
        if found:
            return self._reopen(found), True
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags={
            TAG_PARENT: parent_id, TAG_SWEEP: self.spec.sweep_name, TAG_KIND: "trial",
            TAG_TRIAL: trial_id, TAG_COMMIT: git_commit()})
        return run.info.run_id, False

    def trial_run_id(self, parent_id: str, trial_id: str) -> str | None:
        return self._find(**{TAG_PARENT: parent_id, TAG_TRIAL: trial_id})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        logged = self.client.get_run(run_id).data.params
        # MLflow params are write-once: a retried trial logs only what is missing.
        from mlflow.entities import Param

        new = [Param(k, v[:6000]) for k, v in flat.items() if k not in logged]
        for start in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[start:start + 100])

    def log_metrics(self, run_id: str, values: Mapping[str, Any], step: int) -> None:
        metrics = _metrics(values, step)
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start:start + 500])

    def log_artifacts(self, run_id: str, folder: str | os.PathLike) -> None:
        self.client.log_artifacts(run_id, str(folder))

    def log_dict(self, run_id: str, payload: Any, name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=str), name)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def status(self, run_id: str) -> str:
        return self.client.get_run(run_id).info.status

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which ``key`` is already logged (a retried trial skips them)."""
        return {m.step for m in self.client.get_metric_history(run_id, key)}

    def fail(self, run_id: str, reason: str) -> None:
        """FAILED with the reason as a tag; a FINISHED run is never changed."""
        if self.status(run_id) == "FINISHED":
            return
        self.client.set_tag(run_id, TAG_FAILURE, one_line(reason))
        self.client.set_terminated(run_id, status="FAILED")

    def unfinished_trial_runs(self, parent_id: str) -> list:
        """The sweep's trial runs that are not FINISHED (RUNNING, FAILED, KILLED)."""
        runs = self.client.search_runs([self.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'",
                                       max_results=10000)
        return [r for r in runs if r.info.status != "FINISHED"]


def one_line(text: str, limit: int = 4000) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (MLflow tags hold 8000)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]
