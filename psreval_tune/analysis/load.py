"""A sweep's trials as one tidy DataFrame, from MLflow or from a Tune folder.

One row per finished trial (a trial is one seed of one setting). Columns:

- meta: ``sweep``, ``trial_id``, ``run_id``, ``run_name``, ``source``;
- config: the trial's flattened CycleConfig fields as far as the source
  records them (``dataset``, ``arch``, ``epsilon`` (NaN = non-private),
  ``threat``, ``adv_fraction``, ``attack``, ``attack_alpha``, ``seed``, ...);
- ``private`` (bool) and ``privacy`` ("non-private" or "DP ε=3.4");
- metrics under their stable names (README, "Metrics"), as ``psreval_tune.schema`` declares them:
  ``acc_clean_float``, ``acc_wb_pgd_mean``, ``acc_wb_pgd_ci_low``, ``n_eval``, ``attack_runs_pgd``,
  ``acc_transfer_pgd_dp_to_int8_dp_mean``, ``time_train_s``...

Which columns are metrics comes from the source, never from a name: MLflow keeps a run's params and
its metrics apart, a Tune trial its config (params.json) and its results (result.json). The frame
records them in ``frame.attrs["metric_columns"]``; a metric the schema does not declare is kept as a
metric (never a grouping key) and named in ``frame.attrs["unknown_metrics"]``. Only a frame built from
flat rows (``tidy(rows)`` without ``metrics``) falls back to the schema's names.

Trials without final metrics (stopped early by ASHA, failed, still running)
are left out; ``frame.attrs["left_out"]`` says how many.

This module reads results only; it never imports the training code.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import pandas as pd

from .. import schema
from ..config import CycleConfig

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"  # the sweeps' default local store (RUN_DIR=runs)
DEFAULT_EXPERIMENT = "psreval"

META_COLUMNS = ["sweep", "trial_id", "run_id", "run_name", "source"]
DERIVED_COLUMNS = ["private", "privacy"]
# Tune's own bookkeeping: not final metrics (nor are per-round values, schema.PER_ROUND).
TUNE_KEYS = {
    "timestamp",
    "checkpoint_dir_name",
    "done",
    "training_iteration",
    "trial_id",
    "date",
    "time_this_iter_s",
    "pid",
    "hostname",
    "node_ip",
    "config",
    "time_since_restore",
    "iterations_since_restore",
    "experiment_tag",
    "should_checkpoint",
    "cycle_complete",
    "episodes_total",
    "timesteps_total",
    "timesteps_since_restore",
    "episode_reward_mean",
}
# CycleConfig defaults (psreval_tune/config.py) of the fields every report groups by,
# for a Tune folder whose param space left them out (e.g. a fixed arch).
GROUPING_FIELDS = ("dataset", "arch", "threat", "adv_fraction", "attack", "epsilon", "seed")
GROUPING_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(CycleConfig) if f.name in GROUPING_FIELDS
}
# Config fields that never change the trained model (left out of "same setting" keys).
EVAL_ONLY = {"eval_attacks", "eval_samples", "attack_repeats", "device", "data_root", "download"}
# the reviewer-grade evaluation of issue 22 (CycleConfig.training_key leaves them out too)
EVAL_ONLY |= {"autoattack", "autoattack_samples", "masking_checks", "attack_eps_grid"}
EVAL_ONLY |= {"int8_lowering", "int8_latency"}  # which int8 program runs and whether it is timed (issue 23)


class AnalysisError(ValueError):
    """The results asked for cannot be read. The message is one line."""


log = logging.getLogger(__name__)


CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(CycleConfig))


def _declared_final(name: str) -> bool:
    """For flat rows only: a final metric of the schema that is no CycleConfig field (config wins, as in ``_row``)."""
    return name not in CONFIG_FIELDS and schema.is_final(name)


def _metric_set(frame: pd.DataFrame) -> set[str] | None:
    known = frame.attrs.get("metric_columns")
    return None if known is None else set(known)


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The columns the source recorded as metrics (``attrs["metric_columns"]``); for a frame without that
    record, the columns ``psreval_tune.schema`` declares."""
    known = _metric_set(frame)
    return [c for c in frame.columns if (c in known if known is not None else _declared_final(c))]


def config_columns(frame: pd.DataFrame) -> list[str]:
    skip = set(META_COLUMNS) | set(DERIVED_COLUMNS) | set(metric_columns(frame))
    return [c for c in frame.columns if c not in skip]


def privacy_label(epsilon: Any) -> str:
    if epsilon is None or (isinstance(epsilon, float) and math.isnan(epsilon)):
        return "non-private"
    return f"DP ε={float(epsilon):g}"


# --- values --------------------------------------------------------------------------


def _parse(value: Any) -> Any:
    """An MLflow param (always a string) back to None/bool/int/float/str."""
    if not isinstance(value, str):
        return value
    if value in ("None", "null", ""):
        return None
    if value in ("True", "False"):
        return value == "True"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tune's param space -> CycleConfig fields: a pseudo-axis value (a grid's ``setting``) is merged
    in; a field whose value is a mapping (``threat_params``) becomes dotted keys (``threat_params.z``)
    and lists comma-separated strings, as MLflow logs them."""
    from ..config import CycleConfig

    fields = {f.name for f in dataclasses.fields(CycleConfig)}
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and (prefix or key in fields):
            flat.update(flatten_config(value, f"{prefix}{key}."))
        elif isinstance(value, Mapping):
            flat.update(flatten_config(value))
        elif prefix:
            flat[f"{prefix}{key}"] = value
        elif isinstance(value, (list, tuple)):
            flat[key] = ",".join(map(str, value))
        else:
            flat[key] = value
    return flat


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _Names(tuple):
    """Column names kept in ``frame.attrs``. pandas deep-copies ``attrs`` on every operation that returns a
    frame or series (``__finalize__``); a list of a few hundred names made that ~40% of a report's time. The
    names never change, so a copy is the object itself."""

    def __deepcopy__(self, memo: dict) -> _Names:
        return self


def tidy(rows: Iterable[dict[str, Any]], left_out: int = 0, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Rows of {meta, config, metrics} -> the tidy frame described in the module docstring. ``metrics``: the
    keys the source recorded as metrics (None: flat rows, told apart by ``psreval_tune.schema``)."""
    rows = list(rows)
    frame = pd.DataFrame(rows)
    if metrics is None:
        metrics = [c for c in frame.columns if _declared_final(c)]
    frame.attrs["metric_columns"] = _Names(sorted(set(metrics) & set(frame.columns)))
    frame.attrs["unknown_metrics"] = _Names(schema.unknown(frame.attrs["metric_columns"]))
    if frame.attrs["unknown_metrics"]:
        log.warning(
            "metrics not declared in psreval_tune/schema.py (kept as metrics, never grouped by): %s",
            ", ".join(frame.attrs["unknown_metrics"]),
        )
    for key, default in GROUPING_DEFAULTS.items():
        if key not in frame.columns:
            frame[key] = default
        elif default is not None:
            frame[key] = frame[key].where(frame[key].notna(), default)
    frame["epsilon"] = pd.to_numeric(frame["epsilon"], errors="coerce").astype(float)
    for col in ("adv_fraction", "attack_alpha", "attack_eps", "lr", "delta"):
        if col in frame.columns:
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype(float)
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").fillna(0).astype(int)
    frame["private"] = frame["epsilon"].notna()
    frame["privacy"] = [privacy_label(e) for e in frame["epsilon"]]
    # every metric column converted at once and joined in one concat: setting them one by one leaves a frame
    # of hundreds of blocks, and each later .assign() on it (every report does) warns "highly fragmented"
    numeric = metric_columns(frame)
    attrs = dict(frame.attrs)
    values = frame[numeric].apply(pd.to_numeric, errors="coerce").astype(float)
    frame = pd.concat([frame.drop(columns=numeric), values], axis=1)
    frame.attrs.update(attrs)
    meta = [c for c in META_COLUMNS if c in frame.columns]
    config = sorted(c for c in config_columns(frame) if c not in meta)
    order = meta + config + DERIVED_COLUMNS + sorted(metric_columns(frame))
    frame = (
        frame[order]
        .sort_values(
            ["sweep", "dataset", "arch", "threat", "adv_fraction", "attack", "epsilon", "seed"],
            na_position="first",
            kind="stable",
        )
        .reset_index(drop=True)
    )
    frame.attrs["left_out"] = left_out
    return frame


def _final(key: str) -> bool:
    """A source's metric that is a final one: not a per-round value, not Tune's bookkeeping."""
    match = schema.lookup(key)
    return key not in TUNE_KEYS and (match is None or match.when == schema.FINAL)


def _row(meta: dict, config: Mapping[str, Any], metrics: Mapping[str, Any], keys: set[str]) -> dict[str, Any]:
    """One trial's row; the metric keys it took are added to ``keys``."""
    row = dict(meta)
    row.update(config)
    for key, value in metrics.items():
        # config wins on shared names (epsilon, delta); per-round values are not final metrics
        if key in row or not _final(key) or not _number(value):
            continue
        row[key] = value
        keys.add(key)
    return row


# --- MLflow ------------------------------------------------------------------------------


def _quiet_mlflow() -> None:
    for name in ("alembic", "mlflow.store", "mlflow.tracking"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    _quiet_mlflow()
    uri = tracking_uri or DEFAULT_TRACKING_URI
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.is_file():  # MLflow would silently create an empty store there
            raise AnalysisError(
                f"no MLflow store at {path} (tracking URI {uri}); pass --tracking-uri, "
                "e.g. sqlite:///RUN_DIR/mlflow.db of the sweep"
            )
    elif "://" not in uri and not Path(uri).exists():
        raise AnalysisError(f"no MLflow store at {uri}; pass --tracking-uri")
    return MlflowClient(tracking_uri=uri), uri


def _experiment(client, experiment: str, uri: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None and re.fullmatch(r"\d+", experiment):
        try:
            exp = client.get_experiment(experiment)
        except Exception:
            exp = None
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise AnalysisError(
            f"unknown experiment {experiment!r} at {uri} (experiments there: {', '.join(names) or 'none'})"
        )
    return exp


def _all_runs(client, experiment_id: str, filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=filter_string,
            max_results=1000,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def find_sweep_run(client, experiment_id: str, sweep: str):
    """The sweep's parent run: by run id, by its psreval.sweep tag, or by run name."""
    if re.fullmatch(r"[0-9a-f]{32}", sweep):
        try:
            run = client.get_run(sweep)
            if run.info.experiment_id == experiment_id:
                return run
        except Exception:
            pass
    quoted = sweep.replace("'", "\\'")
    for query in (
        f"tags.`psreval.kind` = 'sweep' and tags.`psreval.sweep` = '{quoted}'",
        f"tags.`psreval.kind` = 'sweep' and attributes.run_name = '{quoted}'",
    ):
        runs = _all_runs(client, experiment_id, query)
        if runs:
            return runs[-1]  # the latest, should a name be reused
    names = [
        r.data.tags.get("psreval.sweep", r.info.run_name)
        for r in _all_runs(client, experiment_id, "tags.`psreval.kind` = 'sweep'")
    ]
    raise AnalysisError(f"no sweep {sweep!r} in this experiment (sweeps there: {', '.join(names) or 'none'})")


def load_mlflow(
    experiment: str = DEFAULT_EXPERIMENT, tracking_uri: str | None = None, sweep: str | None = None
) -> pd.DataFrame:
    """Trials of one sweep (parent run name or id), or of every sweep in the experiment."""
    uri = tracking_uri or DEFAULT_TRACKING_URI
    try:
        return _load_mlflow(experiment, uri, sweep)
    except Exception as exc:
        # A store SQLite cannot read past its first pages ("database disk image is malformed") fails inside
        # MLflow's SQLAlchemy layer, after every check: one line naming the store, not a traceback (nor
        # MLflow's wrapped "(sqlite3.DatabaseError) ..." that names no file).
        detail = _store_error(exc)
        if detail is None:
            raise
        where = Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else uri
        raise AnalysisError(
            f"the MLflow store {where} cannot be read ({detail}); restore it from a copy, or pass another "
            "--tracking-uri"
        ) from None


def _store_error(exc: Exception) -> str | None:
    """A database error from the store's SQL layer, raised as is (SQLAlchemy) or wrapped by MLflow (an
    MlflowException whose text starts with "(sqlite3.DatabaseError) ..."), as one line; None for others."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if type(exc).__module__.startswith("sqlalchemy"):
        return first
    wrapped = re.match(r"\((sqlite3|sqlalchemy|psycopg2|pymysql|pyodbc)[.\w]*\) (.*)", first)
    if type(exc).__name__ == "MlflowException" and wrapped:
        return f"{first[1 : first.index(')')]}: {wrapped.group(2)}"
    return None


def _load_mlflow(experiment: str, tracking_uri: str, sweep: str | None) -> pd.DataFrame:
    client, uri = _client(tracking_uri)
    exp = _experiment(client, experiment, uri)
    query = "tags.`psreval.kind` = 'trial'"
    where = f"experiment {exp.name!r}"
    if sweep:
        parent = find_sweep_run(client, exp.experiment_id, sweep)
        query += f" and tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
        where = f"sweep {sweep!r} of {where}"
    runs = _all_runs(client, exp.experiment_id, query)
    if not runs:
        raise AnalysisError(f"{where} has no trial runs")
    rows, left_out, keys = [], 0, set()
    for run in runs:
        metrics = run.data.metrics
        if "acc_clean_float" not in metrics:
            left_out += 1
            continue
        tags = run.data.tags
        meta = {
            "sweep": tags.get("psreval.sweep"),
            "trial_id": tags.get("psreval.trial_id"),
            "run_id": run.info.run_id,
            "run_name": run.info.run_name,
            "source": "mlflow",
        }
        config = {k: _parse(v) for k, v in run.data.params.items()}
        # params are text in MLflow: only where a number belongs can their type be wrong
        _check_config(config, f"MLflow run {run.info.run_id} in {uri}, param", kinds=("int", "float"))
        rows.append(_row(meta, config, metrics, keys))
    if not rows:
        raise AnalysisError(
            f"{where}: none of its {len(runs)} trial runs has final metrics (stopped early, failed or still running)"
        )
    return tidy(rows, left_out, keys)


# --- Tune --------------------------------------------------------------------------------


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "list", str: "text", bool: "boolean", int: "number", float: "number"}
    return names.get(type(value), "null" if value is None else type(value).__name__)


def _read_text(path: Path, what: str, errors: str = "strict") -> str:
    """A Tune file's text, or one line saying why it cannot be read (never an OSError's traceback)."""
    try:
        return path.read_text(encoding="utf-8", errors=errors)
    except UnicodeDecodeError:
        raise AnalysisError(f"{path}: not UTF-8 text; expected {what}") from None
    except OSError as exc:
        raise AnalysisError(f"{path} cannot be read ({exc.strerror or exc}); expected a readable file") from None


def _parse_json(text: str, path: Path, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AnalysisError(f"{path}: not JSON (line {exc.lineno}: {exc.msg}); expected {what}") from None
    except RecursionError:  # json recurses once per nesting level
        raise AnalysisError(f"{path}: nested too deeply; expected {what}") from None


def _json_lines(path: Path) -> list[dict]:
    """result.json's reports. A line torn by a killed process is skipped; a whole line that is not a JSON
    object (a list, a number, a 10^5-deep nesting) is not one of Tune's reports: the folder is refused."""
    out = []
    what = "Tune's result.json (one JSON object per line)"
    for number, line in enumerate(_read_text(path, what, errors="replace").splitlines(), 1):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            except RecursionError:
                raise AnalysisError(f"{path}: line {number} is nested too deeply; expected a JSON object") from None
            if not isinstance(value, dict):
                raise AnalysisError(f"{path}: line {number} is a JSON {_json_type(value)}; expected a JSON object")
            out.append(value)
    return out


def _names(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _numbers(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(_number(v) for v in value))


# Checks of a trial's config values, by CycleConfig field type. A list field arrives as a JSON list (params.json)
# or comma-joined text (flatten_config, MLflow); a mapping field (threat_params) as a JSON object.
FIELD_TYPES = {f.name: str(f.type) for f in dataclasses.fields(CycleConfig)}
TYPE_CHECKS = {
    "bool": ("true or false", lambda v: isinstance(v, bool)),
    "int": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "float": ("a number", _number),
    "str": ("text", lambda v: isinstance(v, str)),
    "tuple[str, ...]": ("a list of names", _names),
    "tuple[float, ...]": ("a list of numbers", _numbers),
    "dict": ("a mapping", lambda v: isinstance(v, Mapping)),
}


def _fields(config: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """(field, value) of a param space as given: a pseudo-axis value's fields (a grid's ``setting``) merged
    in, lists and mappings as they are (flatten_config would join them into text first)."""
    for key, value in config.items():
        if isinstance(value, Mapping) and key not in FIELD_TYPES:
            yield from _fields(value)
        else:
            yield key, value


def _check_config(config: Mapping[str, Any], where: Path | str, kinds: Iterable[str] | None = None) -> None:
    """A config value of the wrong type would be coerced (a text epsilon to NaN: 'non-private'; a list seed
    to 0). ``kinds``: only the fields of these types (MLflow's params are text: only numbers can be wrong)."""
    for key, value in _fields(config):
        kind = FIELD_TYPES.get(key, "")
        optional = kind.endswith(" | None")
        base = kind.removesuffix(" | None")
        expected, ok = TYPE_CHECKS.get(base, ("", None))
        if ok is None or (kinds is not None and base not in kinds) or (value is None and optional) or ok(value):
            continue
        raise AnalysisError(
            f"{where}: {key}={value!r} ({_json_type(value)}) is not allowed; "
            f"expected {expected}{' or null' if optional else ''}"
        )


def _check_metrics(final: Mapping[str, Any], where: Path) -> None:
    """A declared final metric must be a number (or null): text, a list or a boolean is never reported as one."""
    for key, value in final.items():
        match = schema.lookup(key)
        if match is None or key in TUNE_KEYS or key in CONFIG_FIELDS or value is None or _number(value):
            continue
        raise AnalysisError(f"{where}: {key}={value!r} ({_json_type(value)}) is not allowed; expected a number or null")


def _object(path: Path, value: Any, what: str) -> dict:
    if not isinstance(value, dict):
        raise AnalysisError(f"{path}: a JSON {_json_type(value)} is not allowed; expected a JSON object ({what})")
    return value


def _summary_config(path: Path) -> dict[str, Any]:
    """The resolved config in a trial's artifacts/metrics.json: optional, so a file that is not one (torn, not
    JSON, no config mapping) adds nothing; a config whose values have the wrong types is refused."""
    try:
        data = json.loads(_read_text(path, "metrics.json of a trial"))
    except (json.JSONDecodeError, RecursionError, AnalysisError):
        return {}
    config = data.get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        return {}
    _check_config(config, path)
    return flatten_config(config)


def _tune_config(folder: Path, final: Mapping[str, Any]) -> dict[str, Any]:
    """A Tune trial's config: its param space (params.json, else the result's ``config``), over the
    resolved config of its ``artifacts/metrics.json`` where present. Never its results."""
    summary = folder / "artifacts" / "metrics.json"
    config = _summary_config(summary) if summary.is_file() else {}
    params = folder / "params.json"
    what = "a JSON object (the trial's config)"
    if params.is_file():
        source, space = params, _parse_json(_read_text(params, what), params, what)
    else:
        source, space = folder / "result.json", final.get("config", {})
    space = _object(source, space or {}, "the trial's config")
    _check_config(space, source)
    return {**config, **flatten_config(space)}


def load_tune(path: str | Path) -> pd.DataFrame:
    """Trials of a Tune experiment folder (``RUN_DIR/ray_results/<sweep>``), or of one trial folder.

    Each trial folder holds ``result.json`` (one JSON line per report; the last one with
    ``cycle_complete`` carries the final metrics) and ``params.json`` (the trial's config).
    A trial's ``artifacts/metrics.json``, when present, fills in config fields the param
    space left out. Note: in result.json ``time_total_s`` is Tune's wall time of the trial.
    """
    text = str(path)
    if "://" in text:
        raise AnalysisError(
            f"--results {text}: only a local Tune folder can be read; copy it here first "
            "(e.g. aws s3 sync), or read the sweep from MLflow with --experiment"
        )
    root = Path(text).expanduser()
    if not root.is_dir():
        raise AnalysisError(f"--results {text}: no such folder")
    if not os.access(root, os.R_OK | os.X_OK):
        raise AnalysisError(f"--results {text}: the folder is not readable by this user; expected a readable folder")
    try:
        trial_dirs = (
            [root]
            if (root / "result.json").is_file()
            else sorted(d for d in root.iterdir() if d.is_dir() and (d / "result.json").is_file())
        )
    except OSError as exc:  # a folder this user may not list (no read permission)
        raise AnalysisError(
            f"--results {text}: {exc.filename or root} cannot be read ({exc.strerror or exc}); expected a "
            "readable Tune folder"
        ) from None
    if not trial_dirs:
        raise AnalysisError(f"--results {text}: no Tune trial folders in it (expected */result.json)")
    sweep = root.parent.name if trial_dirs == [root] else root.name
    rows, left_out, keys = [], 0, set()
    for folder in trial_dirs:
        lines = _json_lines(folder / "result.json")
        final = next((r for r in reversed(lines) if r.get("cycle_complete")), None)
        if final is None:
            left_out += 1
            continue
        _check_metrics(final, folder / "result.json")
        config = _tune_config(folder, final)
        meta = {
            "sweep": sweep,
            "trial_id": final.get("trial_id", folder.name),
            "run_id": None,
            "run_name": folder.name,
            "source": "tune",
        }
        rows.append(_row(meta, config, final, keys))
    if not rows:
        raise AnalysisError(
            f"--results {text}: none of its {len(trial_dirs)} trials finished (no result line with cycle_complete)"
        )
    return tidy(rows, left_out, keys)


def load_trials(
    experiment: str | None = None,
    tracking_uri: str | None = None,
    sweep: str | None = None,
    results: str | Path | None = None,
) -> pd.DataFrame:
    """From a Tune folder (``results``) or from MLflow (``experiment``, ``sweep``)."""
    if results is not None:
        return load_tune(results)
    return load_mlflow(experiment or DEFAULT_EXPERIMENT, tracking_uri, sweep)
