"""Running sweep scripts as a user would, and reading back what they tracked."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

from mlflow import MlflowClient

from psreval_tune.ui import NO_JOB_RUNNER

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    out = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MLFLOW_TRACKING_URI", "PSREVAL_RAY_ADDRESS", "PSREVAL_STORAGE", "PSREVAL_RUN_DIR", "RAY_ADDRESS")
    }
    out.update(PYTHONUNBUFFERED="1", RAY_DEDUP_LOGS="0", **extra)
    return out


def run_script(script: str, *args: str, timeout: float, **extra_env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_script(script: str, *args: str, log: Path, err: Path | None = None, **extra_env: str) -> subprocess.Popen:
    """Start in its own process group, so the test can kill the whole local Ray it starts. Output to LOG (stderr
    too, unless ERR names a file of its own)."""
    fh = open(log, "w")
    return subprocess.Popen(
        [sys.executable, str(ROOT / script), *args],
        cwd=ROOT,
        env=env(**extra_env),
        stdout=fh,
        stderr=open(err, "w") if err else subprocess.STDOUT,
        start_new_session=True,
    )


def run_watched(script: str, *args: str, folder: Path, timeout: float) -> tuple[subprocess.CompletedProcess, set, list]:
    """``start_script`` with its own stderr file, watched while it runs: (CompletedProcess, every listening socket a
    process of the session held, sampled twice a second (proc_sockets.session_sockets), the session's processes
    still alive once it ended and its process group was killed). Output goes through FOLDER/stdout|stderr.log."""
    import proc_sockets

    out, err = folder / "stdout.log", folder / "stderr.log"
    proc = start_script(script, *args, log=out, err=err)
    seen: set = set()
    try:
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if proc_sockets.AVAILABLE:
                seen |= proc_sockets.session_sockets(proc.pid)
            time.sleep(0.5)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    left = proc_sockets.session_processes(proc.pid) if proc_sockets.AVAILABLE else []
    done = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return done, seen, left


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_mlflow_server(folder: Path, port: int, **extra_env: str) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:PORT over FOLDER/mlflow.db (artifacts in FOLDER/art), one worker (a 2-core
    machine), in its own process group so kill_group stops its workers too; output appended to FOLDER/mlflow.log,
    so a server restarted on the same store keeps one log. Without MLflow's GenAI job runner (a second process
    loading all of MLflow; no test runs jobs), as `psreval ui` starts it."""
    with open(folder / "mlflow.log", "a") as log:
        return subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--backend-store-uri",
                f"sqlite:///{folder}/mlflow.db",
                "--artifacts-destination",
                str(folder / "art"),
                "--workers",
                "1",
            ],
            cwd=folder,
            env=env(**{NO_JOB_RUNNER: "false", **extra_env}),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_healthy(uri: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    """Until URI/health answers 200; fails at once, with the end of LOG, if the server exits."""

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_for(healthy, timeout, interval=0.5, what=f"{uri}/health")


def seed_store(folder: Path, empty_store: Path) -> str:
    """FOLDER/mlflow.db made a copy of the session's empty store (conftest.empty_store), as a run dir a sweep ran
    in before has it: a test that is not about making a store skips the seconds its tables take; its URI."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder}/mlflow.db"


def sweep_runs(tracking_uri: str, experiment: str = "psreval") -> tuple[list, list]:
    """(sweep parent runs, trial runs) of an experiment."""
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return [], []
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("psreval.kind") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("psreval.kind") == "trial"]
    return parents, trials


def tune_results(exp_dir: Path) -> dict[str, list[dict]]:
    """trial id -> every result line its result.json holds."""
    out = {}
    for path in exp_dir.glob("*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            out[lines[0]["trial_id"]] = lines
    return out


def one_finished_run_per_trial(tracking_uri: str, trial_ids: set[str], sweep: str) -> tuple:
    """(parent run, trial runs) of SWEEP, asserting: one parent, FINISHED; exactly one run per Tune trial, each
    FINISHED."""
    parents, trials = sweep_runs(tracking_uri)
    parents = [p for p in parents if p.data.tags["psreval.sweep"] == sweep]
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    trials = [t for t in trials if t.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    per_trial = Counter(t.data.tags["psreval.trial_id"] for t in trials)
    assert set(per_trial) == trial_ids
    assert all(n == 1 for n in per_trial.values()), per_trial  # never a duplicate
    assert [t.info.status for t in trials] == ["FINISHED"] * len(trial_ids)
    return parent, trials


def smoke_grid_file(path: Path, fixed: dict | None = None, axes: dict | None = None) -> Path:
    """The shipped smoke grid (psreval_tune/sweeps/files/paper_smoke.yaml) with some fixed fields and axes
    replaced (an axis keeps its place in the crossing order), written to PATH for `psreval grid PATH`: fewer or
    shorter trials for a test that needs no more."""
    import yaml

    doc = yaml.safe_load((ROOT / "psreval_tune" / "sweeps" / "files" / "paper_smoke.yaml").read_text())
    doc["fixed"].update(fixed or {})
    doc["axes"].update(axes or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path
