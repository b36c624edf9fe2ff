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
import os
import re
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from .checks import finite_number
from .hardware import cpu_tags

if TYPE_CHECKING:
    from mlflow.entities import Metric

# MLflow is imported where it is used: check_tracking_uri must answer before it has loaded.

TAG_SWEEP = "psreval.sweep"
TAG_KIND = "psreval.kind"  # "sweep" | "trial"
TAG_TRIAL = "psreval.trial_id"
TAG_PARENT = "mlflow.parentRunId"  # what the MLflow UI nests by
TAG_COMMIT = "git_commit"  # of the checkout the sweep's driver imported psreval_tune from; "unknown" if installed
TAG_DIRTY = "git_dirty"  # "true": that checkout had changes (git status --porcelain); absent when not a checkout
TAG_VERSION = "psreval_version"  # the package version, always
TAG_MODEL_ERROR = "psreval.model_error"  # why the float model could not be logged as an MLflow model (one line)
MODEL_NAME = "model_float"  # the trial's float model: mlflow.pytorch.load_model("runs:/<run id>/model_float")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens it on the runs table
PACKAGE_DIR = Path(__file__).resolve().parent
TAG_FAILURE = "psreval.failure"  # why a run ended FAILED (one line)
# Why a run ended KILLED because its sweep was interrupted (Ctrl-C) while it ran; a resumed run drops it (_reopen).
TAG_INTERRUPTED = "psreval.interrupted"
INTERRUPTED_TRIAL = "the sweep was interrupted (Ctrl-C) before this trial ended; --resume continues it"
TAG_NOTE = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)

# The runs table a sweep's printed address opens (psreval_tune.ui): a view of the MLflow UI stored as the
# experiment tag VIEW_TAG_PREFIX + key, which MLflow 3's UI (3.17: its saved/shared views) loads when the
# address carries ``viewStateShareKey=<key>``. Its search facets and table settings: the sweep's runs only
# (a filter on TAG_SWEEP, which also makes the table flat: MLflow nests child runs under a collapsed parent
# only when there is neither a filter nor a sort other than by creation time), the headline metric first
# (best first), and the key metrics and params as columns (MLflow shows none of them by default).
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
HEADLINE_METRIC = "acc_wb_pgd_worst"
KEY_METRICS = (
    "acc_clean_float",
    "acc_clean_int8",
    "acc_wb_pgd_worst",
    "acc_wb_fgsm_worst",
    "epsilon_spent",
    "size_reduction_pct",
)
LOWER_IS_BETTER = frozenset({"epsilon_spent", "time_total_s"})  # the rest: accuracies, size reduction
KEY_PARAMS = ("epsilon", "threat", "adv_fraction", "attack", "arch", "seed")
_OPENED_VIEWS: dict[tuple[str, str], str] = {}  # (tracking URI, experiment id) -> view key of the last sweep run


def sweep_view_key(sweep_name: str) -> str:
    """The key of a sweep's runs-table view: ``psreval-`` and 16 hex digits of SHA-256 of the sweep's name
    (a tag key and a URL parameter whatever the name holds)."""
    import hashlib

    return "psreval-" + hashlib.sha256(sweep_name.encode()).hexdigest()[:16]


def sweep_filter(sweep_name: str) -> str | None:
    """The MLflow search filter of a sweep's runs (its run and its trials); None for a name that no quoting
    of MLflow's filter language holds (both quote characters)."""
    for quote in ("'", '"'):
        if quote not in sweep_name:
            return f"tags.`{TAG_SWEEP}` = {quote}{sweep_name}{quote}"
    return None


def sweep_view_state(sweep_name: str) -> dict[str, Any] | None:
    """What the sweep's view sets in the runs table (keys of MLflow's UI: search facets and UI state)."""
    where = sweep_filter(sweep_name)
    if where is None:
        return None
    return {
        "searchFilter": where,
        "orderByKey": f"metrics.`{HEADLINE_METRIC}`",
        "orderByAsc": False,
        "selectedColumns": [
            *(f"metrics.`{m}`" for m in KEY_METRICS),
            *(f"params.`{p}`" for p in KEY_PARAMS),
            "attributes.`Models`",
        ],
        "runsHiddenMode": "SHOW_ALL",  # charts: every trial, not MLflow's first 10
    }


def sweep_view_url_query(sweep_name: str, key: str | None) -> str:
    """The query of the runs-table address of a sweep: its view's key, or (no view stored) the view's filter
    and sort as URL parameters (flat, but MLflow's default columns)."""
    from urllib.parse import urlencode

    if key is not None:
        return urlencode({"viewStateShareKey": key})
    state = sweep_view_state(sweep_name)
    if state is None:
        return ""
    return urlencode({"searchFilter": state["searchFilter"], "orderByKey": state["orderByKey"], "orderByAsc": "false"})


def store_sweep_view(client: Any, experiment_id: str, sweep_name: str) -> str | None:
    """Store (or refresh) the runs-table view of a sweep as the experiment's tag VIEW_TAG_PREFIX + key, in the
    envelope MLflow's UI reads (name, createdAt, updatedAt, state: the view's JSON); it is also listed among
    the experiment's saved views. Returns the key; None if the store refused it (the address then carries
    the filter instead, without the columns) or the name cannot be filtered on."""
    state = sweep_view_state(sweep_name)
    if state is None:
        return None
    key = sweep_view_key(sweep_name)
    now = int(time.time() * 1000)
    envelope = {"name": f"sweep {sweep_name}: trials", "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    try:
        client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    except Exception as exc:  # noqa: BLE001 - a read-only store, a server without the permission: no view
        why = f"{type(exc).__name__}: {one_line(exc)}"
        warnings.warn(f"no runs-table view for sweep {sweep_name!r} ({why})", stacklevel=2)
        return None
    return key


def opened_view(tracking_uri: str, experiment_id: str | None) -> str | None:
    """The view key of the sweep run this process opened last in that experiment (Tracker.sweep_run)."""
    return _OPENED_VIEWS.get((tracking_uri, str(experiment_id)))


@dataclass(frozen=True)
class TrackingSpec:
    """Where a sweep logs; plain data so it travels to Ray workers."""

    tracking_uri: str
    experiment_name: str
    sweep_name: str
    artifact_location: str | None = None  # None: beside an SQLite database (default_artifact_location)
    # Tags naming the code (source_provenance), looked up once by the sweep's driver; empty: each Tracker looks
    provenance: tuple[tuple[str, str], ...] = ()
    system_metrics: bool = False  # trial runs get MLflow's system metrics (CPU, memory, disk, network, GPU)


class TrackingError(ValueError):
    """A tracking URI that cannot work. One line, naming the URI."""


SQLITE_MAGIC = b"SQLite format 3\x00"
DB_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433}
URI_FORMS = (
    "http(s)://HOST:PORT, sqlite:///PATH, file:///PATH (or a folder), postgresql://, mysql://, mssql://, databricks"
)
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
    except TimeoutError:  # socket.timeout is TimeoutError
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{host}:{port}: {exc.strerror or exc}"


def _sqlite_path(uri: str) -> str:
    return uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else uri[len("sqlite://") :]


def check_tracking_uri(
    uri: str, flag: str = "--tracking-uri", must_exist: bool = False, timeout: float = PROBE_TIMEOUT_S
) -> None:
    """Refuse, in seconds, a tracking URI MLflow would retry for minutes or fail on mid-sweep.

    http(s): something must accept a connection and answer HTTP without a 5xx;
    sqlite: the folder must exist and be writable, an existing file must be an
    SQLite database that holds an MLflow store and passes a (time-bounded) integrity check;
    a folder (file:// or a plain path): this tool's line saying what to pass instead, unless
    MLFLOW_ALLOW_FILE_STORE is set; databases: their port must accept a connection.
    ``must_exist``: the store must already be there (reading, never creating one)."""
    shown = redact(uri)
    parsed = urllib.parse.urlparse(uri)
    scheme = parsed.scheme.lower()
    base = scheme.split("+", 1)[0]
    if scheme in ("http", "https"):
        _check_server(uri, parsed, flag, shown, timeout)
    elif scheme == "sqlite":
        _check_sqlite(uri, flag, shown, must_exist)
    elif scheme in ("", "file") or (len(scheme) == 1 and uri[1:2] == ":"):  # a path (or a Windows drive)
        path = Path(urllib.parse.unquote(parsed.path) if scheme == "file" else uri).expanduser()
        _check_folder_store(path, flag, shown, must_exist)
    elif base in DB_PORTS:
        if not parsed.hostname:
            raise TrackingError(f"{flag}={shown} is not allowed: no host; expected {URI_FORMS}")
        why = probe_tcp(parsed.hostname, parsed.port or DB_PORTS[base], timeout)
        if why:
            raise TrackingError(f"{flag}={shown}: the database is not reachable ({why})")
    elif base not in ("databricks", "databricks-uc", "uc"):
        raise TrackingError(f"{flag}={shown} is not allowed: unknown scheme {parsed.scheme!r}; expected {URI_FORMS}")


def _check_server(uri: str, parsed: urllib.parse.ParseResult, flag: str, shown: str, timeout: float) -> None:
    """An http(s) store: something accepts a connection and answers GET /health as an MLflow server does."""
    scheme = parsed.scheme.lower()
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
        raise TrackingError(
            f"{flag}={shown}: no MLflow server reachable ({why}); start it (`make ui`, "
            "`mlflow server`) or pass another tracking URI"
        )


def _check_sqlite(uri: str, flag: str, shown: str, must_exist: bool) -> None:
    """An SQLite store: a file in an existing folder; an existing file must be a readable MLflow store."""
    raw = _sqlite_path(uri)
    if raw in ("", ":memory:"):
        raise TrackingError(
            f"{flag}={shown} is not allowed: an in-memory store is not shared with the trials; expected sqlite:///PATH"
        )
    path = Path(raw).expanduser()
    if must_exist and not path.exists():
        raise TrackingError(
            f"{flag}={shown}: no MLflow store at {path} (run a sweep first, or pass the store's --tracking-uri)"
        )
    if not path.parent.is_dir():
        raise TrackingError(
            f"{flag}={shown}: folder {path.parent} does not exist; create it or point the URI at an existing folder"
        )
    if path.exists():
        if not path.is_file():
            raise TrackingError(f"{flag}={shown}: {path} is not a file; expected an SQLite database")
        try:
            with open(path, "rb") as fh:
                head = fh.read(16)
        except OSError as exc:
            raise TrackingError(f"{flag}={shown}: {path} is not readable ({exc.strerror})") from None
        if head and head != SQLITE_MAGIC:
            raise TrackingError(
                f"{flag}={shown}: {path} is not an SQLite database (it does not start with "
                "SQLite's header); point the URI at an MLflow store or a new file"
            )
        why = sqlite_problem(path) if head else None
        if why:
            raise TrackingError(f"{flag}={shown}: {path} {why}; point the URI at an MLflow store or a new file")
    if not must_exist and not os.access(path.parent, os.W_OK | os.X_OK):
        raise TrackingError(f"{flag}={shown}: folder {path.parent} is not writable by this user")


def _check_folder_store(path: Path, flag: str, shown: str, must_exist: bool) -> None:
    """A folder as the store (MLflow's file store): refused with this tool's line, unless the user opts in
    (MLFLOW_ALLOW_FILE_STORE, as MLflow itself asks); MLflow's own answer is a deprecation paragraph."""
    if path.exists() and not path.is_dir():
        raise TrackingError(f"{flag}={shown}: {path} is not a folder; a file store is a folder")
    if not path.exists() and (must_exist or not path.parent.is_dir()):
        raise TrackingError(f"{flag}={shown}: {path if must_exist else path.parent} does not exist")
    if not _file_store_allowed():
        raise TrackingError(file_store_refusal(flag, shown, path, must_exist))


MLFLOW_TABLES = ("experiments", "runs")
# How long the integrity check of an existing SQLite store may take (PRAGMA quick_check reads every page: a
# few ms per MB); a larger store is left unjudged here, and a damaged page is then one line when it is read.
QUICK_CHECK_S = 2.0


def sqlite_problem(path: Path, seconds: float = QUICK_CHECK_S) -> str | None:
    """Why an SQLite file (its header is right) cannot be an MLflow store, or None. Read-only. A file
    whose header is followed by garbage, or with a damaged page, otherwise ends in a SQLAlchemy error
    inside MLflow (a traceback, or a line that names no file)."""
    import sqlite3

    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error as exc:
        return f"cannot be opened ({exc})"
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and not set(MLFLOW_TABLES) <= tables:
            return "is an SQLite database but not an MLflow store (no experiments and runs tables)"
        return _quick_check(con, seconds)
    except sqlite3.OperationalError:  # locked by a writer, or the like: not damage; MLflow waits as it would
        return None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        return f"is damaged (SQLite: {exc})"
    finally:
        con.close()


def _quick_check(con: Any, seconds: float) -> str | None:
    """SQLite's PRAGMA quick_check (every page's structure), interrupted after ``seconds``: None when it
    passes or ran out of time."""
    import sqlite3

    deadline = time.monotonic() + seconds
    con.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    try:
        rows = con.execute("PRAGMA quick_check(3)").fetchall()
    except sqlite3.OperationalError:  # interrupted: a large store, judged when it is read
        return None
    finally:
        con.set_progress_handler(None, 0)
    found = [line for row in rows for line in str(row[0]).splitlines() if line != "ok" and not line.startswith("***")]
    return f"is damaged (SQLite's quick_check: {'; '.join(found)})" if found else None


def _file_store_allowed() -> bool:
    return os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true", "yes")


def _looks_like_file_store(folder: Path) -> bool:
    """MLflow's file store: experiment folders with a meta.yaml (0/ is the default experiment), or .trash."""
    try:
        return (folder / ".trash").is_dir() or any((d / "meta.yaml").is_file() for d in folder.iterdir())
    except OSError:
        return False


def file_store_refusal(flag: str, shown: str, path: Path, reading: bool) -> str:
    """This tool's line for a folder tracking URI (MLflow answers it with a deprecation paragraph): what to
    pass instead. The store a sweep wrote into that folder (FOLDER/mlflow.db) when there is one."""
    folder = path if path.is_dir() or reading else path.parent
    db = folder / "mlflow.db"
    head = f"{flag}={shown} names a folder, not a store this tool opens (MLflow no longer opens folders by default)"
    if db.is_file():
        return f"{head}; pass sqlite:///{db} (the MLflow store in that folder)"
    if reading and _looks_like_file_store(folder):
        return (
            f"{head}; it holds an old MLflow file store: convert it with `mlflow migrate-filestore` and pass the "
            "sqlite:///PATH it writes, or set MLFLOW_ALLOW_FILE_STORE=true to read it as it is"
        )
    if reading:
        return (
            f"{head}, and it holds no MLflow store (no mlflow.db); pass sqlite:///PATH/mlflow.db of a sweep's "
            "store or http://127.0.0.1:PORT of an MLflow server"
        )
    return f"{head}; pass sqlite:///{db} (a new store in that folder) or http://127.0.0.1:PORT of an MLflow server"


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


def default_artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment of an SQLite store keeps its artifacts: ``mlartifacts/`` beside the database
    (MLflow's own default is ./mlruns in whatever folder the process happens to run in). None for other
    stores: a server decides itself, a file store keeps them inside."""
    if not tracking_uri.startswith("sqlite:"):
        return None
    raw = _sqlite_path(tracking_uri)
    if raw in ("", ":memory:"):
        return None
    return (Path(raw).expanduser().resolve().parent / "mlartifacts").as_uri()


def package_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("psreval-tune")
    except (ImportError, PackageNotFoundError):
        from . import __version__

        return __version__


def source_provenance(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Tags naming the code: git_commit and git_dirty of the git checkout ``folder`` belongs to (default: this
    package's source folder, wherever the process runs), and psreval_version. A folder git does not track
    (an installed wheel, also one in a virtualenv inside some repository) gets git_commit "unknown"."""
    where = Path(folder) if folder is not None else PACKAGE_DIR
    tags = {TAG_COMMIT: "unknown", TAG_VERSION: package_version()}

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
        )  # status must not lock the index

    try:
        # a tracked folder, not an untracked or ignored copy that merely lies inside a repository
        if git("ls-files", "--error-unmatch", "--", ".").returncode != 0:
            return tags
        head = git("rev-parse", "HEAD")
        if head.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", head.stdout.strip()):
            tags[TAG_COMMIT] = head.stdout.strip()
        status = git("status", "--porcelain")
        if status.returncode == 0:
            tags[TAG_DIRTY] = "true" if status.stdout.strip() else "false"
    except (OSError, subprocess.SubprocessError):
        pass
    return tags


def git_commit(cwd: str | os.PathLike | None = None) -> str:
    """The commit of the checkout ``cwd`` (default: this package's source folder) belongs to, or "unknown"."""
    return source_provenance(cwd)[TAG_COMMIT]


def system_metrics_missing() -> str | None:
    """None if MLflow's system metrics can run here (psutil importable; Ray ships one), else a one-line error."""
    import importlib.util

    if importlib.util.find_spec("psutil") is None:
        try:
            import ray  # noqa: F401 - puts Ray's bundled psutil on sys.path, as in every Ray worker
        except ImportError:
            pass
    if importlib.util.find_spec("psutil") is None:
        return (
            "--system-metrics needs psutil, which is not installed: pip install psutil "
            "(GPU metrics also need nvidia-ml-py)"
        )
    return None


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
    return [Metric(k, float(v), now, step) for k, v in values.items() if finite_number(v)]


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
        location = self.spec.artifact_location or default_artifact_location(self.spec.tracking_uri)
        try:
            return self.client.create_experiment(
                self.spec.experiment_name, artifact_location=location, tags=EXPERIMENT_KIND
            )
        except Exception:  # another process created it first
            exp = self.client.get_experiment_by_name(self.spec.experiment_name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, **tags: str) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=query, max_results=2, order_by=["attributes.start_time ASC"]
        )
        return runs[0].info.run_id if runs else None

    def _reopen(self, run_id: str) -> str:
        """RUNNING again (a resumed sweep or trial); the tag saying why it was KILLED no longer holds."""
        from mlflow.entities import RunStatus

        self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if TAG_INTERRUPTED in self.client.get_run(run_id).data.tags:
            self.client.delete_tag(run_id, TAG_INTERRUPTED)
        return run_id

    def sweep_run(self, params: Mapping[str, Any] | None = None) -> str:
        """The sweep's parent run: found again on resume, created otherwise. Also stores the sweep's runs-table
        view (sweep_view) and gives a new run its description; finish() adds the sweep's summary to both."""
        found = self._find(**{TAG_SWEEP: self.spec.sweep_name, TAG_KIND: "sweep"})
        view = self.sweep_view()
        if found:
            run_id = self._reopen(found)
        else:
            run_id = self.client.create_run(
                self.experiment_id,
                run_name=self.spec.sweep_name,
                tags={
                    TAG_SWEEP: self.spec.sweep_name,
                    TAG_KIND: "sweep",
                    TAG_NOTE: self._sweep_note(view, None, str((params or {}).get("kind", ""))),
                    **self.provenance(),
                },
            ).info.run_id
            if params:
                self.log_params(run_id, params)
        self._sweep_runs = {*getattr(self, "_sweep_runs", ()), run_id}
        return run_id

    def sweep_view(self) -> str | None:
        """Store (or refresh) this sweep's runs-table view (store_sweep_view); its key, None if refused."""
        key = store_sweep_view(self.client, self.experiment_id, self.spec.sweep_name)
        if key is not None:
            _OPENED_VIEWS[(self.spec.tracking_uri, str(self.experiment_id))] = key
        return key

    def _sweep_note(self, view: str | None, summary: Mapping[str, Any] | None, kind: str = "") -> str:
        """The sweep run's description (Markdown): what it is, the link to its trials, its summary if any."""
        name = self.spec.sweep_name
        query = sweep_view_url_query(name, view)
        link = f"#/experiments/{self.experiment_id}/runs?{query}&workflowType=machine_learning"
        lines = [
            f"**Sweep `{name}`**{f' ({kind})' if kind else ''} of psreval_tune: this run holds the sweep's "
            "parameters, files and summary; each trial is a child run.",
            "",
            f"[The trials, one row each with their metrics]({link})",
        ]
        if summary is None:
            lines += ["", "Running: the summary (trials done, best and median metrics) comes when it ends."]
            return "\n".join(lines)
        unfinished = f", {summary['unfinished']} unfinished" if summary["unfinished"] else ""
        counts = f"{summary['trials']} trials: {summary['finished']} finished, {summary['failed']} failed{unfinished}."
        lines += ["", counts]
        rows = summary["metrics"]
        if rows:
            lines += ["", "| metric | best | median | best trial | finished trials with it |", "|---|---|---|---|---|"]
            for key, (best, median, best_trial, count) in rows.items():
                lines.append(f"| {key} | {best:.4g} | {median:.4g} | {best_trial} | {count} |")
        return "\n".join(lines)

    def sweep_summary(self, run_id: str) -> dict[str, Any]:
        """The sweep's trials counted by status, and best and median of each key metric over its finished
        trials (best: highest, or lowest for LOWER_IS_BETTER), with the best trial's run name."""
        import statistics

        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{run_id}'", max_results=10000
        )
        statuses = [r.info.status for r in runs]
        finished = [r for r in runs if r.info.status == "FINISHED"]
        metrics: dict[str, tuple[float, float, str, int]] = {}
        for key in KEY_METRICS:
            have = [(r.data.metrics[key], r.info.run_name or r.info.run_id) for r in finished if key in r.data.metrics]
            have = [(v, n) for v, n in have if finite_number(v)]
            if not have:
                continue
            pick = min if key in LOWER_IS_BETTER else max
            best, best_trial = pick(have, key=lambda vn: vn[0])
            metrics[key] = (best, statistics.median(v for v, _ in have), best_trial, len(have))
        failed = statuses.count("FAILED")
        return {
            "trials": len(runs),
            "finished": len(finished),
            "failed": failed,
            "unfinished": len(runs) - len(finished) - failed,
            "metrics": metrics,
        }

    def summarize_sweep(self, run_id: str) -> dict[str, Any]:
        """Log the sweep's summary on its run: metrics sweep/trials, sweep/trials_finished, sweep/trials_failed,
        best/<metric> and median/<metric> of each key metric; and the description with the summary table."""
        summary = self.sweep_summary(run_id)
        values: dict[str, Any] = {
            "sweep/trials": summary["trials"],
            "sweep/trials_finished": summary["finished"],
            "sweep/trials_failed": summary["failed"],
        }
        for key, (best, median, _, _) in summary["metrics"].items():
            values[f"best/{key}"] = best
            values[f"median/{key}"] = median
        self.log_metrics(run_id, values, step=0)
        run = self.client.get_run(run_id)
        view = sweep_view_key(self.spec.sweep_name)
        if VIEW_TAG_PREFIX + view not in self.client.get_experiment(self.experiment_id).tags:
            view = None
        self.client.set_tag(run_id, TAG_NOTE, self._sweep_note(view, summary, run.data.params.get("kind", "")))
        return summary

    def _summarize_quietly(self, run_id: str) -> None:
        if run_id not in getattr(self, "_sweep_runs", ()):
            return
        try:
            self.summarize_sweep(run_id)
        except Exception as exc:  # noqa: BLE001 - the summary never stops the sweep run from ending
            warnings.warn(f"no summary on the sweep run {run_id} ({type(exc).__name__}: {one_line(exc)})", stacklevel=3)

    def trial_run(self, parent_id: str, trial_id: str, run_name: str) -> tuple[str, bool]:
        """(run id, True if it already existed) of a trial, nested under the sweep."""
        found = self._find(**{TAG_PARENT: parent_id, TAG_TRIAL: trial_id})
        if found:
            return self._reopen(found), True
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={
                TAG_PARENT: parent_id,
                TAG_SWEEP: self.spec.sweep_name,
                TAG_KIND: "trial",
                TAG_TRIAL: trial_id,
                **self.provenance(),
                **cpu_tags(),  # the node this trial runs on: its numbers depend on the ISA
            },
        )
        return run.info.run_id, False

    def provenance(self) -> dict[str, str]:
        """The code tags: the spec's (the driver looked them up), else looked up here once."""
        if self.spec.provenance:
            return dict(self.spec.provenance)
        if not hasattr(self, "_provenance"):
            self._provenance = source_provenance()
        return self._provenance

    def trial_run_id(self, parent_id: str, trial_id: str) -> str | None:
        return self._find(**{TAG_PARENT: parent_id, TAG_TRIAL: trial_id})

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        flat = flatten(params)
        logged = self.client.get_run(run_id).data.params
        # MLflow params are write-once: a retried trial logs only what is missing.
        from mlflow.entities import Param

        new = [Param(k, v[:6000]) for k, v in flat.items() if k not in logged]
        for start in range(0, len(new), 100):
            self.client.log_batch(run_id, params=new[start : start + 100])

    def log_metrics(self, run_id: str, values: Mapping[str, Any], step: int) -> None:
        metrics = _metrics(values, step)
        for start in range(0, len(metrics), 500):
            self.client.log_batch(run_id, metrics=metrics[start : start + 500])

    def log_artifacts(self, run_id: str, folder: str | os.PathLike) -> None:
        self.client.log_artifacts(run_id, str(folder))

    def log_dict(self, run_id: str, payload: Any, name: str) -> None:
        self.client.log_text(run_id, json.dumps(payload, indent=2, default=str), name)

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        """End a run; the sweep run this tracker opened (sweep_run) gets its summary first."""
        self._summarize_quietly(run_id)
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
        self._summarize_quietly(run_id)
        self.client.set_tag(run_id, TAG_FAILURE, one_line(reason))
        self.client.set_terminated(run_id, status="FAILED")

    def interrupt(self, run_id: str, reason: str) -> bool:
        """KILLED with the reason in tag psreval.interrupted, if the run is RUNNING (a run that ended is never
        changed); returns whether it was."""
        if self.status(run_id) != "RUNNING":
            return False
        self.client.set_tag(run_id, TAG_INTERRUPTED, one_line(reason))
        self.client.set_terminated(run_id, status="KILLED")
        return True

    def trial_tags(self, parent_id: str) -> dict[str, dict[str, str]]:
        """The tags of each trial run of the sweep run ``parent_id``, by trial id (e.g. its warnings)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'", max_results=10000
        )
        return {r.data.tags.get(TAG_TRIAL, r.info.run_id): dict(r.data.tags) for r in runs}

    def unfinished_trial_runs(self, parent_id: str) -> list:
        """The sweep's trial runs that are not FINISHED (RUNNING, FAILED, KILLED)."""
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG_PARENT}` = '{parent_id}'", max_results=10000
        )
        return [r for r in runs if r.info.status != "FINISHED"]

    def log_datasets(
        self, run_id: str, splits: Mapping[str, tuple[Any, Any]], name: str, source: str | None = None
    ) -> None:
        """Each split (context "train", "val", "test": (images, labels) tensors) as a dataset input of the run:
        ``name``, a digest of the split's exact contents, its tensor schema, and a profile whose shapes give the
        number of samples (also input tag psreval.n_samples). ``source``: the data folder or file, if any.
        Inputs the run already has (a retried trial) are not logged again."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import Dataset, DatasetInput, InputTag

        run = self.client.get_run(run_id)
        have = {
            (i.dataset.name, i.dataset.digest, tuple(sorted((t.key, t.value) for t in i.tags)))
            for i in (run.inputs.dataset_inputs if run.inputs else [])
        }
        inputs = []
        for context, (x, y) in splits.items():
            xs, ys = x.detach().cpu().contiguous().numpy(), y.detach().cpu().contiguous().numpy()
            where = (
                str(Path(source).expanduser().resolve())
                if source
                else CodeDatasetSource({"mlflow.source.name": f"psreval_tune.data ({name})"})
            )
            with warnings.catch_warnings():  # a local path: MLflow registers two equal sources for it and says so
                warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
                dataset = mlflow.data.from_numpy(xs, targets=ys, source=where, name=name, digest=split_digest(xs, ys))
            tags = (InputTag("mlflow.data.context", context), InputTag("psreval.n_samples", str(len(ys))))
            if (dataset.name, dataset.digest, tuple(sorted((t.key, t.value) for t in tags))) in have:
                continue
            inputs.append(DatasetInput(Dataset(**dataset.to_dict()), tags=list(tags)))
        if inputs:
            self._log_inputs(run_id, inputs)

    def _log_inputs(self, run_id: str, inputs: list) -> None:
        """log_inputs, once more when it lost a race: two trials that start together log the same new dataset,
        and the store's check-then-insert lets both insert it; the loser gets "UNIQUE constraint failed:
        datasets..." (SQLite; PostgreSQL's "duplicate key ... unique constraint") and its whole call is rolled
        back. The winner's dataset row is there now, so the same call links the run to it."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.log_inputs(run_id, datasets=inputs)
        except MlflowException as exc:
            text = str(exc).lower()
            if "unique constraint" not in text or "dataset" not in text:
                raise
            self.client.log_inputs(run_id, datasets=inputs)

    def log_model(self, run_id: str, model: Any, example: Any, tags: Mapping[str, str] | None = None) -> str:
        """``model`` (a float torch module) as the run's MLflow model MODEL_NAME; returns its models:/ URI.

        Written by mlflow.pytorch.log_model in torch.export's pt2 format (graph and weights, no pickle: loading
        it runs no code from the file), with the signature and input example of ``example`` (a few images, at
        least 2 so the batch size stays free). ``mlflow.pytorch.load_model("runs:/<run id>/model_float")`` loads
        it. A run that has a READY one (a retried trial) keeps it; a half-written one is replaced."""
        import copy

        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        found = self.client.search_logged_models(
            [self.experiment_id], filter_string=f"name = '{MODEL_NAME}' AND source_run_id = '{run_id}'"
        )
        ready = [m for m in found if str(getattr(m.status, "name", m.status)).upper().endswith("READY")]
        if ready:
            return f"models:/{ready[0].model_id}"
        for stale in found:
            self.client.delete_logged_model(stale.model_id)
        cpu = copy.deepcopy(model).cpu().eval()  # exported on the CPU: loads on any machine
        x = example.detach().cpu().float()
        if len(x) < 2:
            x = torch.cat([x, x])
        with torch.no_grad():
            logits = cpu(x)
        signature = infer_signature(x.numpy(), logits.numpy())  # batch dimension -1: any batch size
        logged = self.client.create_logged_model(
            self.experiment_id, name=MODEL_NAME, source_run_id=run_id, tags=dict(tags or {})
        )
        try:
            with _fluent_tracking_uri(self.spec.tracking_uri):  # log_model resolves the store globally
                mlflow.pytorch.log_model(
                    cpu,
                    name=MODEL_NAME,
                    model_id=logged.model_id,
                    run_id=run_id,
                    signature=signature,
                    input_example=x.numpy(),
                    serialization_format="pt2",
                    # given, so MLflow does not load the model in a subprocess to infer them (seconds); a pt2
                    # program needs torch only (PyPI's version: without a local label such as +cpu)
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                    validate_serving_input=False,
                )  # our tests load it back; this would load it once more
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, "FAILED")
            raise
        self.client.finalize_logged_model(logged.model_id, "READY")
        return f"models:/{logged.model_id}"

    def system_metrics(self, run_id: str, resume: bool = False) -> Any:
        """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU with nvidia-ml-py), started, logging
        "system/..." metrics onto ``run_id`` every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (MLflow's
        default 10); call .finish() to stop it. ``resume``: steps go on after the run's last ones."""
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, resume_logging=resume, tracking_uri=self.spec.tracking_uri)
        monitor.start()
        return monitor


@contextlib.contextmanager
def _fluent_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's global tracking URI set to ``uri`` for the block, then put back."""
    try:
        from mlflow.tracking._tracking_service.utils import _use_tracking_uri
    except ImportError:  # a MLflow without it: set it (the trial's process logs to this store only)
        import mlflow

        mlflow.set_tracking_uri(uri)
        yield
        return
    with _use_tracking_uri(uri):
        yield


def split_digest(x: Any, y: Any) -> str:
    """16 hex digits of SHA-256 over a split's images and labels (dtypes, shapes and every byte)."""
    import hashlib

    h = hashlib.sha256()
    for a in (x, y):
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.data if a.flags.c_contiguous else a.tobytes())
    return h.hexdigest()[:16]


def one_line(text: str, limit: int = 4000) -> str:
    """The first non-empty line of ``text``, cut to ``limit`` characters (MLflow tags hold 8000)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:limit]
