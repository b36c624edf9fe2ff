"""Ray Tune sweeps tracked in MLflow, run as a user runs them (subprocesses,
local Ray), then checked through MlflowClient and Tune's result files."""

from __future__ import annotations

import json
import re
import signal
import time

import pytest
from mlflow import MlflowClient
from sweep_helpers import (
    free_port,
    kill_group,
    one_finished_run_per_trial,
    run_script,
    seed_store,
    smoke_grid_file,
    start_mlflow_server,
    start_script,
    sweep_runs,
    tune_results,
    wait_for,
    wait_healthy,
)

from psreval_tune.sweeps import ray_procs

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # Ray Tune sweeps run as subprocesses

SMOKE_TRIALS = 6  # paper_grid --smoke: epsilon {3.4, 7} x {none, adv_training 0.2, train_time_attack 0.2}
# A cheaper cut of the smoke grid for tests that need a few private trials, not its 6 or its PGD evaluation:
# epsilon {3.4, 7} x {none, adv_training 0.2 with FGSM}, each with its non-private twin, evaluated with FGSM.
SMALL_AXES = {
    "epsilon": [3.4, 7.0],
    "setting": [
        {"threat": "none", "adv_fraction": 0.0, "attack": "PGD"},
        {"threat": "adv_training", "adv_fraction": 0.2, "attack": "FGSM"},
    ],
}
SMALL_FIXED = {"eval_attacks": ["FGSM"]}
SMALL_TRIALS = 4
ARTIFACTS = {"metrics.json", "model_float.pt", "model_int8.pt2", "adv_examples.png"}
TWIN_ARTIFACTS = {"model_float_nonprivate.pt", "model_int8_nonprivate.pt2"}  # private trials keep their twin
NOISY_KEYS = ("time_",)  # wall times differ between runs; every other number must not


@pytest.mark.timeout(700)
def test_paper_grid_smoke_logs_every_trial_once(smoke_sweep):
    run_dir, proc = smoke_sweep.run_dir, smoke_sweep.proc
    results = tune_results(run_dir / "ray_results" / "smoke")
    assert len(results) == SMOKE_TRIALS
    parent, trials = one_finished_run_per_trial(f"sqlite:///{run_dir}/mlflow.db", set(results), "smoke")
    client = MlflowClient(f"sqlite:///{run_dir}/mlflow.db")
    for run in trials:
        params = run.data.params
        assert params["dataset"] == "digits" and params["arch"] == "cnn" and params["rounds"] == "3"
        assert float(params["epsilon"]) in (3.4, 7.0)
        assert run.data.tags["psreval.sweep"] == "smoke" and run.data.tags["git_commit"]
        history = client.get_metric_history(run.info.run_id, "acc_val")
        assert sorted(m.step for m in history) == [1, 2, 3]  # one point per FL round
        eps = client.get_metric_history(run.info.run_id, "epsilon")
        assert [m.step for m in sorted(eps, key=lambda m: m.step)] == [1, 2, 3]
        assert max(m.value for m in eps) <= float(params["epsilon"])
        final = run.data.metrics
        assert final["epsilon_spent"] <= float(params["epsilon"])
        assert 0.0 <= final["acc_wb_pgd_mean"] <= 1.0
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS | TWIN_ARTIFACTS
        tune_final = results[run.data.tags["psreval.trial_id"]][-1]
        assert tune_final["acc_clean_float"] == pytest.approx(final["acc_clean_float"])
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {"summary.csv", "report", "sweep.yaml"}
    # the sweep's report (analysis/), written beside the store and logged to the parent run
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/report.html",
        "report/overview.md",
        "report/trials.csv",
        "report/overview_digits.png",
        "report/transfer_digits_cnn.png",
        "report/pareto_digits.png",
    } <= logged, logged
    html = run_dir.resolve() / "reports" / "smoke" / "report.html"
    assert f"report: {html}" in proc.stdout and "no report for sweep" not in proc.stderr
    assert html.read_text().count("<img") == len([p for p in logged if p.endswith(".png")])
    assert "sweep smoke: 6 trials" in proc.stdout and "make ui" in proc.stdout


@pytest.mark.timeout(600)
def test_search_asha_stops_a_trial_and_shows_pareto(tmp_path, empty_store):
    seed_store(tmp_path, empty_store)  # the store is not what this test checks: its tables made already
    # Half the learning rates cannot train; ASHA (on per-round training loss,
    # which has no ties between diverged trials) must stop some after round 1.
    proc = run_script(
        "sweeps/search.py",
        "--smoke",
        "--num-samples",
        "6",
        "--max-concurrent",
        "2",
        "--lr",
        "0.2,0.0001",
        "--asha-grace",
        "1",
        "--asha-metric",
        "train_loss",
        "--epsilons",
        "3.4,7.0",
        "--archs",
        "cnn",
        "--run-dir",
        str(tmp_path),
        "--name",
        "s",
        "--no-report",  # the Pareto set is printed by the search itself; the report is checked by the smoke grid
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = tune_results(tmp_path / "ray_results" / "s")
    assert len(results) == 6
    stopped = [tid for tid, lines in results.items() if not lines[-1].get("cycle_complete")]
    assert stopped, "ASHA stopped no trial"
    assert all(lines[-1]["training_iteration"] < 4 for tid, lines in results.items() if tid in stopped)
    # Model selection sees validation metrics only: every result ASHA and Optuna
    # received before a trial's final one carries no test-split number.
    for lines in results.values():
        running = lines[:-1] if lines[-1].get("cycle_complete") else lines
        seen = {k for line in running for k in line if k.startswith("acc_")}
        assert seen <= {"acc_val", "acc_val_float", "acc_val_wb_pgd"}, seen
    match = re.search(
        r"Pareto set over acc_val_float, acc_val_wb_pgd \(validation split; (\d+) of 6 trials; "
        r"(\d+) stopped early",
        proc.stdout,
    )
    assert match and int(match.group(1)) >= 1 and int(match.group(2)) == len(stopped)
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    status = {t.data.tags["psreval.trial_id"]: t.info.status for t in trials}
    assert len(status) == 6 and "RUNNING" not in status.values()
    # a stopped trial reached Optuna as pruned, not as a NaN result it refuses
    assert "nan is not acceptable" not in proc.stdout + proc.stderr
    assert all(status[tid] == "KILLED" for tid in stopped)
    assert not (tmp_path / "reports").exists() and "report: " not in proc.stdout  # --no-report wrote none


def _settled_survivors(recorded: list[dict], quiet_s: float = 5.0, most_s: float = 30.0) -> list[dict]:
    """The recorded processes still alive once none has exited for ``quiet_s`` seconds."""
    alive = [e for e in recorded if ray_procs._alive(e) is not None]
    deadline, settled = time.monotonic() + most_s, time.monotonic() + quiet_s
    while time.monotonic() < min(deadline, settled):
        time.sleep(0.5)
        now = [e for e in alive if ray_procs._alive(e) is not None]
        if len(now) != len(alive):
            alive, settled = now, time.monotonic() + quiet_s
    return alive


@pytest.mark.timeout(900)
def test_driver_killed_then_resume_finishes_every_trial_once(tmp_path, empty_store):
    log = tmp_path / "first.log"
    uri = seed_store(tmp_path, empty_store)  # the store is not what this test checks: its tables made already
    grid = smoke_grid_file(tmp_path / "small.yaml", SMALL_FIXED, SMALL_AXES)  # 4 trials: 2 before the kill, 2 after
    args = [str(grid), "--run-dir", str(tmp_path), "--name", "killed", "--max-concurrent", "2", "--no-report"]
    # Save Tune's experiment state every second, so the kill loses little.
    first = start_script("sweeps/paper_grid.py", *args, log=log, TUNE_GLOBAL_CHECKPOINT_S="1")
    try:
        exp_dir = tmp_path / "ray_results" / "killed"

        def mid_sweep():  # Tune's files, not MLflow's (which the driver is writing)
            done = [t for t, lines in tune_results(exp_dir).items() if lines[-1].get("cycle_complete")]
            return 1 <= len(done) < SMALL_TRIALS

        wait_for(mid_sweep, timeout=400, interval=2, what="a finished trial in the sweep")
        time.sleep(3)
        first.send_signal(signal.SIGKILL)  # the driver only: its local Ray's processes are left to the resume
        first.wait(timeout=30)
        recorded = json.loads((exp_dir / ray_procs.RECORD).read_text())["processes"]
        left = _settled_survivors(recorded)  # some exit by themselves once they see the driver gone
        _, before = sweep_runs(uri)
        finished_before = {
            t.data.tags["psreval.trial_id"]: t.info.end_time for t in before if t.info.status == "FINISHED"
        }
        assert 1 <= len(finished_before) < SMALL_TRIALS

        resumed = run_script("sweeps/paper_grid.py", *args, "--resume", timeout=700)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
        # the resume found the processes the killed driver left, by their own ids, and ended them
        assert not [e for e in recorded if ray_procs._alive(e) is not None]
        if left:  # Ray processes that outlived the SIGKILLed driver (and what they started since)
            names = [e["name"] for e in left]
            assert "Ray process(es) left by the killed driver" in resumed.stdout, (names, resumed.stdout[-2000:])
    finally:
        kill_group(first)  # whatever is left of the first local Ray, should the test fail before the resume
    results = tune_results(tmp_path / "ray_results" / "killed")
    assert len(results) == SMALL_TRIALS
    assert all(lines[-1].get("cycle_complete") for lines in results.values())
    _, trials = one_finished_run_per_trial(uri, set(results), "killed")
    # Trials that had finished before the kill were not run again.
    end_times = {t.data.tags["psreval.trial_id"]: t.info.end_time for t in trials}
    rerun = [tid for tid, end in finished_before.items() if end_times[tid] != end]
    assert len(rerun) <= 1, f"finished trials re-run: {rerun}"  # at most one finishing inside the last save window


@pytest.mark.timeout(600)
def test_killed_dp_worker_resumes_with_same_epsilon_and_metrics(tmp_path, empty_store):
    log = tmp_path / "twins.log"
    seed_store(tmp_path, empty_store)  # the store is not what this test checks: its tables made already
    driver = start_script(
        "tests/drivers/twin_trials.py",
        "--run-dir",
        str(tmp_path),
        "--name",
        "twins",
        "--max-concurrent",
        "2",
        log=log,
        PSREVAL_CHECKPOINT_EVERY_S="0",  # a checkpoint (and a result) every round: the test kills after round 3
    )
    exp_dir = tmp_path / "ray_results" / "twins"
    try:

        def trial_at_round_3():
            for tid, lines in tune_results(exp_dir).items():
                if lines[-1]["training_iteration"] >= 3 and not lines[-1].get("cycle_complete"):
                    return tid, lines[-1]["pid"]
            return None

        victim, pid = wait_for(trial_at_round_3, timeout=300, interval=0.5, what="a trial past round 3")
        import os

        os.kill(pid, signal.SIGKILL)  # the trial's worker process, mid-training
        driver.wait(timeout=500)
    finally:
        kill_group(driver)
    assert driver.returncode == 0, log.read_text()[-3000:]
    results = tune_results(exp_dir)
    assert len(results) == 2
    killed, other = results[victim][-1], next(r[-1] for t, r in results.items() if t != victim)
    assert killed["cycle_complete"] and other["cycle_complete"]
    # It restarted from a checkpoint, not from scratch.
    assert killed["iterations_since_restore"] < killed["training_iteration"]
    rounds = [line["round"] for line in results[victim]]
    assert rounds.count(1) == 1, f"round 1 ran twice: {rounds}"
    same = {
        k
        for k in other
        if k.startswith(("acc_", "epsilon", "size_", "noise", "sample_rate", "dp_steps", "delta", "final_train_loss"))
    }
    assert "epsilon_spent" in same and "acc_wb_fgsm_mean" in same
    assert {k: killed[k] for k in same} == {k: other[k] for k in same}
    assert killed["epsilon_spent"] <= 3.4
    one_finished_run_per_trial(f"sqlite:///{tmp_path}/mlflow.db", set(results), "twins")


@pytest.mark.timeout(600)
def test_sweep_logs_to_mlflow_server_over_http(tmp_path, empty_store):
    port = free_port()
    seed_store(tmp_path, empty_store)  # the server's store, its tables made already
    # without MLflow's GenAI job runner (a second process importing all of MLflow; no job runs here)
    server = start_mlflow_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(uri, server, tmp_path / "mlflow.log", timeout=90)
        proc = run_script(
            "tests/drivers/twin_trials.py",
            "--run-dir",
            str(tmp_path / "runs"),
            "--name",
            "http",
            "--tracking-uri",
            uri,
            timeout=500,
            TWIN_TRIALS_ROUNDS="2",  # what is checked is where the records go, not the kill test's six rounds
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        results = tune_results(tmp_path / "runs" / "ray_results" / "http")
        _, trials = one_finished_run_per_trial(uri, set(results), "http")
        client = MlflowClient(uri)
        for run in trials:
            assert {a.path for a in client.list_artifacts(run.info.run_id)} == ARTIFACTS | TWIN_ARTIFACTS
        assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing went to the local store
        assert list((tmp_path / "art").rglob("model_int8.pt2"))  # artifacts went through the server
    finally:
        kill_group(server)


@pytest.mark.ray(alone=True)  # Ray finds any GCS on the machine for --address auto: no other Ray may run
def test_address_auto_without_cluster_is_one_line_error(tmp_path):
    proc = run_script(
        "sweeps/paper_grid.py", "--smoke", "--address", "auto", "--run-dir", str(tmp_path), timeout=120, RAY_ADDRESS=""
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --address=auto: no Ray cluster found"), proc.stderr
    assert "ray up cluster.yaml" in lines[0] and "Traceback" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "flags, value",
    [
        (["--gpus-per-trial", "-1"], "-1"),
        (["--seeds", "a,b"], "a,b"),
        (["--max-concurrent", "0"], "0"),
        (["--resume", "--name", "nope"], "nope"),
    ],
)
def test_bad_sweep_flags(tmp_path, flags, value):
    proc = run_script("sweeps/paper_grid.py", "--smoke", "--run-dir", str(tmp_path), *flags, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and value in lines[0], proc.stderr


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--objectives", "acc_clean_float"],
            "--objectives=acc_clean_float is not allowed; model selection reads "
            "validation metrics only: acc_val_float, acc_val_wb_pgd",
        ),
        (["--objectives", "acc_val_float,acc_wb_pgd_mean"], "--objectives=acc_wb_pgd_mean is not allowed"),
        (["--asha-metric", "acc_clean"], "argument --asha-metric: invalid choice: 'acc_clean'"),
    ],
)
def test_search_refuses_to_select_on_the_test_split(tmp_path, flags, message):
    proc = run_script("sweeps/search.py", "--smoke", "--run-dir", str(tmp_path), *flags, timeout=100)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # refused before Ray or MLflow started


def test_search_space_and_schedulers_read_validation_metrics_only(tmp_path):
    from psreval_tune.sweeps import search
    from psreval_tune.trainable import ROUND_METRICS, SELECTION_METRICS

    for space in ("paper", "recipe"):
        _, _, resolved = search.load(
            [
                "--smoke",
                "--space",
                space,
                "--archs",
                "cnn",
                "--epsilons",
                "3.4",
                "--objectives",
                ",".join(SELECTION_METRICS),
                "--run-dir",
                str(tmp_path),
            ]
        )
        searcher, scheduler = search.build(resolved)
        assert set(searcher._metric) <= set(SELECTION_METRICS)
        assert scheduler._metric in ROUND_METRICS and scheduler._metric in ("acc_val", "train_loss")


def test_reproduce_smoke_crosses_every_setting_with_the_seeds(tmp_path, monkeypatch):
    """What `reproduce --smoke --arch cnn --seeds 0,1` hands the sweep (nothing starts): every setting of
    SETTINGS, validated, crossed with both seeds. The sweep below runs two of them (a cut design)."""
    from psreval_tune.sweeps import reproduce

    class Handed(Exception):
        pass

    def run_sweep(args, spec):
        raise Handed(spec)

    monkeypatch.setattr(reproduce, "run_sweep", run_sweep)
    with pytest.raises(Handed) as handed:
        reproduce.main(["--smoke", "--arch", "cnn", "--seeds", "0,1", "--run-dir", str(tmp_path / "runs")])
    space = handed.value.args[0].param_space
    grids = {k: v["grid_search"] for k, v in space.items() if isinstance(v, dict) and "grid_search" in v}
    assert set(grids) == {"setting", "seed"} and grids["seed"] == [0, 1]
    assert grids["setting"] == [{**s, "epsilon": 3.4} for s in reproduce.SETTINGS.values()]
    assert len(grids["setting"]) * len(grids["seed"]) == len(reproduce.SETTINGS) * 2
    assert not (tmp_path / "runs").exists()


@pytest.mark.timeout(600)
def test_reproduce_smoke_writes_the_claims_document(tmp_path, empty_store):
    seed_store(tmp_path / "runs", empty_store)  # the store is not what this test checks: its tables made already
    doc = tmp_path / "docs" / "reproduction.md"
    doc.parent.mkdir()
    settings = ["none", "adv_fgsm"]  # a cut design (claims a-f measured, g and h "not measured"); the test above
    # checks that the full smoke design crosses every setting
    proc = run_script(
        "sweeps/reproduce.py",
        "--smoke",
        "--arch",
        "cnn",
        "--seeds",
        "0,1",
        "--settings",
        ",".join(settings),
        "--run-dir",
        str(tmp_path / "runs"),
        "--name",
        "repro",
        "--doc",
        str(doc),
        "--no-report",  # the document and its figure are written all the same; the report is not checked here
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(tune_results(tmp_path / "runs" / "ray_results" / "repro")) == len(settings) * 2  # settings x 2 seeds
    assert not (tmp_path / "runs" / "reports").exists()  # --no-report: no RUN_DIR/reports/repro
    text = doc.read_text()
    assert "python sweeps/reproduce.py --smoke --arch cnn --seeds 0,1 --settings none,adv_fgsm" in text
    assert "cannot support conclusions" in text  # 2 seeds, 64 images, 2 rounds: said at the top
    rows = [line for line in text.splitlines() if re.match(r"\| [a-h](-\w+)? \|", line)]
    assert len(rows) >= 8, rows  # one row per claim (a..h), each with a verdict
    assert all(re.search(r"holds|does not hold|inconclusive|not measured|not applicable", r) for r in rows)
    assert any("not measured" in r for r in rows) and not all("not measured" in r for r in rows)
    assert (doc.parent / "reproduction" / "claims.png").is_file()
