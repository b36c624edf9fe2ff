"""Fault (issue 11): the MLflow tracking server is killed (SIGKILL) while a sweep's trials train, stays
down for some seconds and is restarted on the same port over the same store. The sweep must not notice
more than a pause: it exits 0, every trial has exactly one run, FINISHED, and every metric is logged once
per step, with no round missing.

The sweep is `sweeps/search.py --smoke` as a user runs it: a few short non-private cnn trials on digits,
ASHA's grace period past the last round so that no trial is stopped early (every run must end FINISHED), and
--max-failures 0 so that a trial failed by the outage is not hidden by Tune running it again.

What carries the trials over: MLflow's HTTP client retries a request 7 times with exponential backoff
(about 4 minutes in all), so a logging call blocks until the server is back (the waits double: a trial may
resume up to about as long again after that); a retried log_batch sends the same metrics (same timestamps)
and the SQL store drops exact duplicates. Exit 0 is right: every trial finished and every record is
complete, so the outage was a pause, not a failure.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
from mlflow import MlflowClient
from sweep_helpers import (
    free_port,
    kill_group,
    one_finished_run_per_trial,
    seed_store,
    start_mlflow_server,
    start_script,
    sweep_runs,
    tune_results,
    wait_for,
    wait_healthy,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a sweep whose MLflow server is killed and restarted

TRIALS = 2  # one wave: both train at once (--max-concurrent 2), so both are in flight across the outage
ROUNDS = 6
DOWN_S = 3  # the server is restarted this long after the kill; it answers again 10-30 s later (2 busy cores)
ROUND_KEYS = ("round", "train_loss", "acc_val")  # logged at steps 1..ROUNDS


@pytest.mark.timeout(600)  # about 150 s on 2 lightly loaded cores; much more when they are crowded
def test_tracking_server_killed_and_restarted_mid_sweep(tmp_path, empty_store):
    port = free_port()
    seed_store(tmp_path, empty_store)  # the server's store, its tables made already
    uri = f"http://127.0.0.1:{port}"
    log = tmp_path / "mlflow.log"
    server = start_mlflow_server(tmp_path, port)
    sweep = None
    try:
        wait_healthy(uri, server, log)
        sweep = start_script(
            "sweeps/search.py",
            "--smoke",
            "--space",
            "recipe",
            "--archs",
            "cnn",
            "--epsilons",
            "none",
            "--num-samples",
            str(TRIALS),
            "--rounds",
            str(ROUNDS),
            "--asha-grace",
            str(ROUNDS + 1),
            "--max-concurrent",
            "2",
            "--max-failures",
            "0",
            "--no-report",  # what is checked is the records; the report is tests/test_analysis.py's
            "--run-dir",
            str(tmp_path / "runs"),
            "--name",
            "restart",
            "--tracking-uri",
            uri,
            log=tmp_path / "sweep.log",
        )

        def training():  # a trial run that has logged a round and has rounds left to log
            _, trials = sweep_runs(uri)
            return next(
                (t for t in trials if t.info.status == "RUNNING" and 1 <= t.data.metrics.get("round", 0) < ROUNDS), None
            )

        victim = wait_for(training, timeout=240, interval=0.5, what="a trial run past round 1")
        kill_group(server)
        killed_at, killed_ms = time.monotonic(), time.time() * 1000
        time.sleep(DOWN_S)
        assert sweep.poll() is None, (tmp_path / "sweep.log").read_text()[-3000:]  # it waits; it has not failed
        server = start_mlflow_server(tmp_path, port)
        wait_healthy(uri, server, log)
        outage = time.monotonic() - killed_at
        code = sweep.wait(timeout=300)
        assert code == 0, (tmp_path / "sweep.log").read_text()[-3000:]
        print(f"killed at round {victim.data.metrics['round']:g} of run {victim.info.run_id}; down {outage:.1f} s")
        check_records(uri, tmp_path / "runs" / "ray_results" / "restart", victim.info.run_id, killed_ms)  # while up
    finally:
        if sweep is not None:
            kill_group(sweep)
        kill_group(server)


def check_records(uri: str, tune_folder, victim_id: str, killed_ms: float) -> None:
    """One FINISHED run per trial under a FINISHED parent; every metric once per step; every round."""
    results = tune_results(tune_folder)
    assert len(results) == TRIALS and all(lines[-1].get("cycle_complete") for lines in results.values())
    parent, trials = one_finished_run_per_trial(uri, set(results), "restart")
    (victim,) = [t for t in trials if t.info.run_id == victim_id]  # the run that was logging when the server died
    assert victim.info.end_time > killed_ms  # it went on logging (and ended) after the kill
    client = MlflowClient(uri)
    for run in [parent, *trials]:
        for key in run.data.metrics:
            steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert max(steps.values()) == 1, (run.info.run_name, key, steps)  # never logged twice
            if key in ROUND_KEYS:
                assert sorted(steps) == list(range(1, ROUNDS + 1)), (run.info.run_name, key, steps)  # no gap
    for run in trials:
        assert set(ROUND_KEYS) <= set(run.data.metrics) and "acc_val_float" in run.data.metrics
