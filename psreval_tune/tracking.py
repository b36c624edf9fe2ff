"""MLflow: one parent run per sweep, one nested run per trial.

Runs are found again by tags rather than remembered in memory, so a resumed
sweep or a retried trial writes into the run it already has, never a
duplicate: the sweep run is keyed by (experiment, sweep name), a trial run
by (sweep run, Ray trial id).

With no tracking URI, a SQLite store and an artifact folder inside the run
directory are used, so a fresh machine needs no server.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag

TAG_SWEEP = "psreval.sweep"
TAG_KIND = "psreval.kind"  # "sweep" | "trial"
TAG_TRIAL = "psreval.trial_id"
TAG_PARENT = "mlflow.parentRunId"  # what the MLflow UI nests by
TAG_COMMIT = "git_commit"


@dataclass(frozen=True)
class TrackingSpec:
    """Where a sweep logs; plain data so it travels to Ray workers."""

    tracking_uri: str
    experiment_name: str
    sweep_name: str
    artifact_location: str | None = None  # only for a local store


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
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in values.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))]


class Tracker:
    def __init__(self, spec: TrackingSpec):
        self.spec = spec
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
