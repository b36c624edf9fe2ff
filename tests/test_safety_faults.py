"""Faults that must not leave records wrong (issue 11): a corrupt or missing latest trial checkpoint, a
retried trial logging a round twice, a FINISHED run reopened, disk full while a sweep runs, a sweep
interrupted with Ctrl-C (no trial run left RUNNING).

The trainable tests run ``run_trial`` in this process against a temporary SQLite MLflow store, with Tune's
session calls and the cycle replaced by fakes (no Ray, no training: about a second each).
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient
from ray import tune

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import (  # noqa: E402
    kill_group,
    run_script,
    seed_store,
    start_script,
    sweep_runs,
    tune_results,
    wait_for,
)

from psreval_tune import trainable  # noqa: E402
from psreval_tune.sweeps.failures import close_interrupted, end_interrupted  # noqa: E402
from psreval_tune.tracking import INTERRUPTED_TRIAL, TAG_FAILURE, TAG_INTERRUPTED, Tracker, TrackingSpec  # noqa: E402

PARAMS = {"dataset": "digits", "arch": "cnn", "rounds": 3, "seed": 0}
THIS = "tests/test_safety_faults.py"  # run as a script: a one-trial sweep (rounds from $PSREVAL_TEST_ROUNDS)
ONE_TRIAL = {
    "dataset": "digits",
    "arch": "cnn",
    "eval_attacks": ["FGSM"],
    "eval_samples": 16,
    "attack_repeats": 1,
    "train_samples": 400,
    "seed": 0,
}


def fake_state(rnd: int) -> dict:
    return {
        "round": rnd,
        "history": [
            {"round": r, "train_loss": 1.0 / r, "acc_val": 0.5 + r / 10, "epsilon": None} for r in range(1, rnd + 1)
        ],
        "model": {"w": torch.full((2,), float(rnd))},
        "clients": [{"optimizer": {}}],
        "torch_rng": torch.get_rng_state(),
    }


def write_checkpoints(trial_dir: Path, rounds: int) -> list[Path]:
    """checkpoint_000000 .. checkpoint_{rounds-1} as Tune lays them out, one per round."""
    folders = []
    for i in range(rounds):
        folder = trial_dir / f"checkpoint_{i:06d}"
        folder.mkdir(parents=True)
        torch.save(fake_state(i + 1), folder / trainable.CHECKPOINT_FILE)
        folders.append(folder)
    return folders


def load_latest(monkeypatch, latest: Path | None) -> dict | None:
    """What the trainable resumes from when Tune hands it ``latest`` (through tune.get_checkpoint)."""
    checkpoint = None if latest is None else tune.Checkpoint.from_directory(str(latest))
    monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: checkpoint)
    return trainable._load_checkpoint()


# --- 1. checkpoint fallback ----------------------------------------------------------------


@pytest.mark.parametrize(
    "damage", ["garbage", "truncated", "empty", "file_missing", "folder_missing", "wrong_content", "not_a_dict"]
)
def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, monkeypatch, damage):
    folders = write_checkpoints(tmp_path / "trial", 3)
    latest = folders[-1] / trainable.CHECKPOINT_FILE
    if damage == "garbage":
        latest.write_bytes(os.urandom(4096))
    elif damage == "truncated":
        latest.write_bytes(latest.read_bytes()[:200])
    elif damage == "empty":
        latest.write_bytes(b"")
    elif damage == "file_missing":
        latest.unlink()
    elif damage == "folder_missing":
        shutil.rmtree(folders[-1])
    elif damage == "wrong_content":
        torch.save({"round": 3, "model": {}}, latest)
    else:
        torch.save([1, 2, 3], latest)
    state = load_latest(monkeypatch, folders[-1])
    assert state is not None and state["round"] == 2  # checkpoint_000001, the newest one that loads
    assert torch.equal(state["model"]["w"], torch.full((2,), 2.0))


def test_intact_latest_checkpoint_is_used(tmp_path, monkeypatch):
    folders = write_checkpoints(tmp_path / "trial", 3)
    assert load_latest(monkeypatch, folders[-1])["round"] == 3
    assert load_latest(monkeypatch, None) is None  # a new trial


def test_falls_back_past_several_damaged_checkpoints_never_to_a_newer_one(tmp_path, monkeypatch):
    folders = write_checkpoints(tmp_path / "trial", 4)
    for folder in folders[1:3]:
        (folder / trainable.CHECKPOINT_FILE).write_bytes(b"not a torch file")
    (tmp_path / "trial" / "checkpoint_000009").mkdir()  # newer than what Tune named: never used
    torch.save(fake_state(3), tmp_path / "trial" / "checkpoint_000009" / trainable.CHECKPOINT_FILE)
    assert load_latest(monkeypatch, folders[2])["round"] == 1


def test_no_checkpoint_loads_means_round_one_not_a_crash(tmp_path, monkeypatch, capsys):
    folders = write_checkpoints(tmp_path / "trial", 2)
    for folder in folders:
        (folder / trainable.CHECKPOINT_FILE).write_bytes(b"\x80\x04garbage")
    assert load_latest(monkeypatch, folders[-1]) is None
    assert "starts again from round 1" in capsys.readouterr().out
    shutil.rmtree(tmp_path / "trial")  # the whole trial folder gone
    assert load_latest(monkeypatch, folders[-1]) is None


# --- run_trial against a temporary MLflow store, with fake Tune session and cycle -------------


class FakeSession:
    """Tune's session calls run_trial makes, and a cycle that 'trains' ``rounds`` rounds."""

    def __init__(self, monkeypatch, tmp_path: Path, trial_id: str = "t0001", fail_after_round: int | None = None):
        self.reports: list[dict] = []
        self.checkpoint: tune.Checkpoint | None = None
        self.rounds_run: list[int] = []
        self.trial_dir = tmp_path / trial_id
        self.trial_dir.mkdir(exist_ok=True)
        ctx = SimpleNamespace(get_trial_id=lambda: trial_id, get_trial_dir=lambda: str(self.trial_dir))
        monkeypatch.setattr(trainable.tune, "get_context", lambda: ctx)
        monkeypatch.setattr(trainable.tune, "get_checkpoint", lambda: self.checkpoint)
        monkeypatch.setattr(trainable.tune, "report", self._report)
        monkeypatch.setattr(trainable, "run_cycle", self._run_cycle)
        monkeypatch.setattr(trainable, "write_outputs", self._write_outputs)
        # the fake cycle has no data splits or model to log (tests/test_mlflow_native.py covers those)
        monkeypatch.setattr(trainable, "log_splits", lambda *a, **k: None)
        monkeypatch.setattr(trainable, "log_float_model", lambda *a, **k: None)
        self.fail_after_round = fail_after_round
        self.data, self.clients = None, []  # the fed's data as run_trial sees it (None: no data warnings)

    def _report(self, metrics, checkpoint=None):
        self.reports.append(dict(metrics))
        if checkpoint is not None:  # what Tune does: persist it as the trial's next checkpoint_N
            n = len(list(self.trial_dir.glob("checkpoint_*")))
            dest = self.trial_dir / f"checkpoint_{n:06d}"
            shutil.copytree(checkpoint.path, dest)
            self.checkpoint = tune.Checkpoint.from_directory(str(dest))

    def _run_cycle(self, cfg, cache=None, on_round=None, resume=None, progress=None):
        start = 0 if resume is None else resume["round"]
        history = [] if resume is None else list(resume["history"])
        for rnd in range(start + 1, cfg.rounds + 1):
            self.rounds_run.append(rnd)
            r = trainable.RoundResult(round=rnd, train_loss=1.0 / rnd, acc_val=0.5 + rnd / 10, epsilon=None)
            history.append(vars(r).copy())
            state = fake_state(rnd)
            state["history"] = list(history)
            on_round(r, SimpleNamespace(state_dict=lambda s=state: s, data=self.data, clients=self.clients))
            if self.fail_after_round == rnd:
                raise RuntimeError("injected failure after a round")
        # models: the trained models by role, as a CycleResult has them (none here: no twin to report)
        metrics = {"acc_clean_float": 0.9, "acc_wb_pgd_mean": 0.3, "none": None}
        return SimpleNamespace(metrics=metrics, history=history, models={})

    def _write_outputs(self, result, folder):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "metrics.json").write_text("{}")
        return folder


@pytest.fixture
def store(tmp_path, empty_store):
    uri = seed_store(tmp_path, empty_store)
    spec = TrackingSpec(uri, "psreval", "faults", (tmp_path / "mlartifacts").as_uri())
    tracker = Tracker(spec)
    parent = tracker.sweep_run()
    return SimpleNamespace(
        uri=uri, tracker=tracker, parent=parent, infra=trainable.TrialInfra(tracking=spec, parent_run_id=parent)
    )


def trial_runs(store) -> list:
    return [
        r
        for r in MlflowClient(store.uri).search_runs([store.tracker.experiment_id])
        if r.data.tags.get("psreval.kind") == "trial"
    ]


def steps(store, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(store.uri).get_metric_history(run_id, key))


def test_retried_trial_logs_each_round_once(tmp_path, monkeypatch, store):
    """Attempt 1 logs rounds 1-3 and fails after round 3; Tune's checkpoint of round 3 is damaged, so
    attempt 2 resumes from round 2 and runs round 3 again: it is logged once, as are the final numbers."""
    session = FakeSession(monkeypatch, tmp_path, fail_after_round=3)
    with pytest.raises(RuntimeError, match="injected"):
        trainable.run_trial(dict(PARAMS), store.infra)
    (run,) = trial_runs(store)
    assert run.info.status == "FAILED" and "injected failure" in run.data.tags[TAG_FAILURE]
    assert steps(store, run.info.run_id, "acc_val") == [1, 2, 3]
    (Path(session.checkpoint.path) / trainable.CHECKPOINT_FILE).write_bytes(b"torn write")

    session.fail_after_round = None
    trainable.run_trial(dict(PARAMS), store.infra)
    assert session.rounds_run == [1, 2, 3, 3]  # resumed from checkpoint_000001 (round 2)
    (run,) = trial_runs(store)
    assert run.info.status == "FINISHED"
    for key in ("acc_val", "train_loss", "round"):
        assert steps(store, run.info.run_id, key) == [1, 2, 3], key
    assert steps(store, run.info.run_id, "acc_clean_float") == [3]
    assert session.reports[-1]["cycle_complete"] == 1

    # a third attempt of the same trial from scratch (no checkpoint at all) adds nothing either
    MlflowClient(store.uri).set_terminated(run.info.run_id, "FAILED")
    session.checkpoint = None
    trainable.run_trial(dict(PARAMS), store.infra)
    assert steps(store, run.info.run_id, "acc_val") == [1, 2, 3]
    assert steps(store, run.info.run_id, "acc_clean_float") == [3]


def test_trial_without_a_checkpoint_yet_restarts_and_logs_each_round_once(tmp_path, monkeypatch, store):
    """A FIFO grid's trial (checkpoint period longer than its training, no per-round results) fails after
    round 2, before its first checkpoint: the retry starts at round 1, MLflow still has each round once, and
    Tune heard only of the checkpointed last round and the final result."""
    infra = trainable.TrialInfra(
        tracking=store.infra.tracking, parent_run_id=store.parent, checkpoint_every_s=1e6, report_every_round=False
    )
    session = FakeSession(monkeypatch, tmp_path, fail_after_round=2)
    with pytest.raises(RuntimeError, match="injected"):
        trainable.run_trial(dict(PARAMS), infra)
    assert session.reports == [] and session.checkpoint is None
    session.fail_after_round = None
    trainable.run_trial(dict(PARAMS), infra)
    assert session.rounds_run == [1, 2, 1, 2, 3]
    assert [r["round"] for r in session.reports] == [3, 3] and session.reports[-1]["cycle_complete"] == 1
    assert trainable.read_checkpoint(session.checkpoint)["round"] == 3
    (run,) = trial_runs(store)
    assert run.info.status == "FINISHED"
    for key in ("acc_val", "train_loss", "round"):
        assert steps(store, run.info.run_id, key) == [1, 2, 3], key


def test_trial_resumed_behind_its_logged_rounds_logs_each_round_once(tmp_path, monkeypatch, store):
    """The process died after logging round 3 but before Tune recorded round 3's checkpoint: the retry
    resumes from round 2's (intact) checkpoint and runs round 3 again, which is not logged a second time."""
    session = FakeSession(monkeypatch, tmp_path, fail_after_round=3)
    with pytest.raises(RuntimeError, match="injected"):
        trainable.run_trial(dict(PARAMS), store.infra)
    session.checkpoint = tune.Checkpoint.from_directory(str(session.trial_dir / "checkpoint_000001"))
    session.fail_after_round = None
    trainable.run_trial(dict(PARAMS), store.infra)
    assert session.rounds_run == [1, 2, 3, 3]
    (run,) = trial_runs(store)
    assert run.info.status == "FINISHED"
    for key in ("acc_val", "train_loss", "round"):
        assert steps(store, run.info.run_id, key) == [1, 2, 3], key


def test_finished_run_is_never_reopened_or_failed(tmp_path, monkeypatch, store):
    """Tune runs a trial again whose run is FINISHED (the driver stopped before recording it) and whose
    latest checkpoint is corrupt: the run keeps its status, end time and metrics; Tune gets its numbers."""
    session = FakeSession(monkeypatch, tmp_path)
    trainable.run_trial(dict(PARAMS), store.infra)
    (before,) = trial_runs(store)
    assert before.info.status == "FINISHED"
    (Path(session.checkpoint.path) / trainable.CHECKPOINT_FILE).write_bytes(b"corrupt")
    for path in session.trial_dir.glob("checkpoint_*/" + trainable.CHECKPOINT_FILE):
        path.write_bytes(b"corrupt")  # even with none loading
    session.reports.clear()
    time.sleep(0.01)
    trainable.run_trial(dict(PARAMS), store.infra)
    (after,) = trial_runs(store)
    assert after.info.status == "FINISHED" and after.info.end_time == before.info.end_time
    assert TAG_FAILURE not in after.data.tags
    assert steps(store, after.info.run_id, "acc_val") == [1, 2, 3]
    assert session.rounds_run == [1, 2, 3]  # not trained again
    assert session.reports == [{**before.data.metrics, "cycle_complete": 1}]


def test_fail_never_changes_a_finished_run(store):
    run_id, _ = store.tracker.trial_run(store.parent, "x", "x")
    store.tracker.finish(run_id, "FINISHED")
    store.tracker.fail(run_id, "late error")
    run = MlflowClient(store.uri).get_run(run_id)
    assert run.info.status == "FINISHED" and TAG_FAILURE not in run.data.tags


# --- 2a. a sweep interrupted with Ctrl-C: no trial run stays RUNNING, and --resume reopens it -------------


def test_close_interrupted_kills_only_the_sweeps_running_trial_runs(store):
    t = store.tracker
    running, _ = t.trial_run(store.parent, "run1", "running")
    done, _ = t.trial_run(store.parent, "done1", "done")
    t.finish(done, "FINISHED")
    failed, _ = t.trial_run(store.parent, "fail1", "failed")
    t.fail(failed, "an error of its own")
    other_parent = Tracker(TrackingSpec(store.uri, "psreval", "another-sweep")).sweep_run()
    other, _ = t.trial_run(other_parent, "run1", "another sweep's")
    assert close_interrupted(t, store.parent) == 1
    client = MlflowClient(store.uri)
    run = client.get_run(running)
    assert run.info.status == "KILLED" and run.data.tags[TAG_INTERRUPTED] == INTERRUPTED_TRIAL
    assert client.get_run(done).info.status == "FINISHED" and TAG_INTERRUPTED not in client.get_run(done).data.tags
    assert client.get_run(failed).info.status == "FAILED" and TAG_INTERRUPTED not in client.get_run(failed).data.tags
    assert client.get_run(other).info.status == "RUNNING"  # not this sweep's
    assert close_interrupted(t, store.parent) == 0  # nothing left to close


def test_interrupted_trial_run_is_killed_then_reopened_and_finished_by_resume(tmp_path, monkeypatch, store):
    """Tune stops a trial at Ctrl-C with SystemExit from tune.report (its run stays RUNNING: run_trial closes
    only its own errors); the driver ends the sweep KILLED and the trial's run KILLED with the interrupted
    tag. --resume reopens the sweep's run and the trial's (same run, RUNNING, tag gone), which continues
    from its checkpoint and ends FINISHED with each round logged once."""
    session = FakeSession(monkeypatch, tmp_path)

    def report_then_stop(metrics, checkpoint=None):
        session._report(metrics, checkpoint)
        if metrics.get("round") == 2:
            raise SystemExit(0)  # what tune.report raises in a trial Tune stops

    monkeypatch.setattr(trainable.tune, "report", report_then_stop)
    with pytest.raises(SystemExit):
        trainable.run_trial(dict(PARAMS), store.infra)
    (run,) = trial_runs(store)
    assert run.info.status == "RUNNING"  # what the interrupted sweep left before run_sweep closed it
    assert end_interrupted(store.tracker, store.parent, "interrupted (Ctrl-C)") == 1
    client = MlflowClient(store.uri)
    assert client.get_run(store.parent).info.status == "KILLED"
    (run,) = trial_runs(store)
    assert run.info.status == "KILLED" and run.data.tags[TAG_INTERRUPTED] == INTERRUPTED_TRIAL

    assert store.tracker.sweep_run() == store.parent  # --resume: the same sweep run, RUNNING again
    parent = client.get_run(store.parent)
    assert parent.info.status == "RUNNING" and TAG_INTERRUPTED not in parent.data.tags
    monkeypatch.setattr(trainable.tune, "report", session._report)
    opened = []
    real_trial_run = store.tracker.trial_run

    def spy(tracker, *args):  # the trial's run as the resumed trial sees it while it trains
        run_id, existed = real_trial_run(*args)
        opened.append((existed, client.get_run(run_id)))
        return run_id, existed

    monkeypatch.setattr(Tracker, "trial_run", spy)
    trainable.run_trial(dict(PARAMS), store.infra)
    ((existed, reopened),) = opened
    assert existed and reopened.info.run_id == run.info.run_id and reopened.info.status == "RUNNING"
    assert TAG_INTERRUPTED not in reopened.data.tags
    assert session.rounds_run == [1, 2, 3]  # resumed after round 2, not from round 1
    (after,) = trial_runs(store)
    assert after.info.run_id == run.info.run_id and after.info.status == "FINISHED"
    assert TAG_INTERRUPTED not in after.data.tags
    logged = steps(store, after.info.run_id, "acc_val")
    # each round at most once; round 2 itself is not there: RoundReporter logs a round after tune.report,
    # which Tune's stop cut short (a gap of its own, not of the run's status)
    assert logged == sorted(set(logged)) and {1, 3} <= set(logged)


def test_trial_opening_its_run_after_its_sweep_ended_closes_it_and_does_not_train(tmp_path, monkeypatch, store):
    """A trial worker that outlives an interrupted sweep (Tune's kill still on its way) and opens its run after
    the driver's last look for RUNNING runs finds the sweep's run ended: its own run ends KILLED at once."""
    session = FakeSession(monkeypatch, tmp_path)
    store.tracker.finish(store.parent, "KILLED")
    trainable.run_trial(dict(PARAMS), store.infra)
    (run,) = trial_runs(store)
    assert run.info.status == "KILLED" and run.data.tags[TAG_INTERRUPTED].startswith(INTERRUPTED_TRIAL)
    assert "already KILLED" in run.data.tags[TAG_INTERRUPTED]
    assert session.rounds_run == [] and session.reports == []


# --- 2b. warnings where people look (issue 27): the trial's MLflow run and the sweep's console -----


def console_lines(stdout: str, trial: str = "t0001") -> list[str]:
    """The sweep console's table for one trial fed the trial's printed progress messages."""
    from psreval_tune.sweeps import console_table as ct

    phase = ct.TrialPhase(rounds=3, twin=False)
    for line in stdout.splitlines():
        phase.apply(line)
    return ct.table([ct.merge({"trial": trial, "status": "RUNNING"}, phase.state)], width=200)


def event_log_lines(stdout: str, trial: str = "t0001") -> list[str]:
    """What a piped sweep console (console_table.EventLog: a log file, CI) prints for that trial."""
    from psreval_tune.sweeps import console_table as ct

    phase = ct.TrialPhase(rounds=3, twin=False)
    for line in stdout.splitlines():
        phase.apply(line)
    return ct.EventLog(width=400).lines([ct.merge({"trial": trial, "status": "RUNNING"}, phase.state)], 1.0)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("damage", ["latest", "all"])
def test_resume_fallback_is_a_tag_and_a_console_line(tmp_path, monkeypatch, store, capsys, damage):
    """A retried trial whose latest checkpoint is damaged resumes from the one before it (or, none loading,
    from round 1): its MLflow run has the tags psreval.warning.resume and psreval.resumed_from, the console
    table and the piped console's event log a '!' line, and the sweep's end lists it under the summary."""
    from psreval_tune.sweeps.results import print_trial_warnings
    from psreval_tune.trial_warnings import TAG_RESUME, TAG_RESUMED_FROM

    session = FakeSession(monkeypatch, tmp_path, fail_after_round=3)
    with pytest.raises(RuntimeError, match="injected"):
        trainable.run_trial(dict(PARAMS), store.infra)
    torn = [Path(session.checkpoint.path)] if damage == "latest" else list(session.trial_dir.glob("checkpoint_*"))
    for folder in torn:
        (folder / trainable.CHECKPOINT_FILE).write_bytes(b"torn write")
    session.fail_after_round = None
    capsys.readouterr()
    trainable.run_trial(dict(PARAMS), store.infra)
    (run,) = trial_runs(store)
    tag = run.data.tags[TAG_RESUME]
    expect = "resumed from the older checkpoint" if damage == "latest" else "resumed from round 1"
    assert expect in tag and ("after round 2" in tag) == (damage == "latest"), tag
    assert run.data.tags[TAG_RESUMED_FROM] == (
        "round 3 (older checkpoint after round 2: the latest is damaged)"
        if damage == "latest"
        else "round 1 (checkpoint damaged)"
    )
    out = capsys.readouterr().out
    shown = console_lines(out)
    assert any(line.startswith(f"! t0001: {expect}") for line in shown), shown
    assert "training !" in shown[1], shown
    assert [line for line in event_log_lines(out) if line.startswith("!")] == [f"! t0001: {tag[2:]}"]
    assert print_trial_warnings(store.tracker, store.parent) == [f"! t0001: {tag[2:]}"]
    assert capsys.readouterr().out == f"! t0001: {tag[2:]}\n"


@pytest.mark.timeout(120)
def test_a_plain_resume_is_tagged_without_a_warning(tmp_path, monkeypatch, store, capsys):
    """An intact checkpoint: psreval.resumed_from says where training continued; no warning anywhere."""
    from psreval_tune.sweeps.results import print_trial_warnings
    from psreval_tune.trial_warnings import TAG_RESUME, TAG_RESUMED_FROM

    session = FakeSession(monkeypatch, tmp_path, fail_after_round=2)
    with pytest.raises(RuntimeError, match="injected"):
        trainable.run_trial(dict(PARAMS), store.infra)
    (first,) = trial_runs(store)
    assert TAG_RESUMED_FROM not in first.data.tags  # a first attempt resumes nothing
    session.fail_after_round = None
    trainable.run_trial(dict(PARAMS), store.infra)
    (run,) = trial_runs(store)
    assert run.data.tags[TAG_RESUMED_FROM] == "round 3 (checkpoint after round 2)"
    assert TAG_RESUME not in run.data.tags and session.rounds_run == [1, 2, 3]
    assert "! " not in capsys.readouterr().out
    assert print_trial_warnings(store.tracker, store.parent) == []


@pytest.mark.timeout(120)
def test_small_data_is_a_tag_and_a_console_line(tmp_path, monkeypatch, store, capsys):
    """1 test image and a client with 3 examples under a batch size of 32: a warning, once per attempt."""
    from psreval_tune.trial_warnings import TAG_SMALL_DATA

    session = FakeSession(monkeypatch, tmp_path)
    session.data = SimpleNamespace(test=[0])
    session.clients = [SimpleNamespace(y_clean=[0, 1, 2]), SimpleNamespace(y_clean=list(range(500)))]
    trainable.run_trial({**PARAMS, "batch_size": 32}, store.infra)
    (run,) = trial_runs(store)
    tag = run.data.tags[TAG_SMALL_DATA]
    assert tag == (
        "! data too small for the intervals: 1 test image (fewer than 100: a 95% interval spans up to ±98 "
        "points); client 0 holds 3 examples, fewer than the batch size 32"
    )
    out = capsys.readouterr().out
    assert out.count("! data too small") == 1
    assert any(line.startswith("! t0001: data too small") for line in console_lines(out))
    assert [line for line in event_log_lines(out) if line.startswith("!")] == [f"! t0001: {tag[2:]}"]


def test_small_data_thresholds():
    from psreval_tune.trial_warnings import MIN_TEST_IMAGES, small_data

    assert MIN_TEST_IMAGES == 100
    assert small_data(359, [700, 700], 32) is None
    assert small_data(100, [32, 32], 32, n_attacked=100) is None  # at the thresholds: no warning
    assert "99 test images (fewer than 100: a 95% interval spans up to ±10 points)" in small_data(99, [700, 700], 32)
    attacked = small_data(10_000, [700, 700], 32, n_attacked=16)  # eval_samples=16 of a full test split
    assert attacked.endswith("16 attacked images (fewer than 100: a 95% interval spans up to ±24 points)")
    assert small_data(500, [3, 40, 0], 32).endswith(
        "2 clients (0, 2) hold as few as 0 examples, fewer than the batch size 32"
    )


# --- 3. disk full while a sweep runs: the driver --------------------------------------------


class FakeTuner:
    """Stands in for ray.tune.Tuner: fit() starts two trial runs (one finishes) and then fails as asked."""

    infra = None
    fail_with: BaseException = RuntimeError("no fault set")

    def __init__(self, trainable, **kwargs):
        pass

    def fit(self):
        infra = FakeTuner.infra
        tracker = Tracker(infra.tracking)
        done, _ = tracker.trial_run(infra.parent_run_id, "done1", "done")
        tracker.finish(done, "FINISHED")
        tracker.trial_run(infra.parent_run_id, "busy1", "busy")  # in flight when the disk fills
        raise FakeTuner.fail_with


class FakeGrid(list):
    @property
    def errors(self):
        return [r.error for r in self if r.error is not None]


def _fake_fit_returning_errors(self):
    infra = FakeTuner.infra
    tracker = Tracker(infra.tracking)
    run_id, _ = tracker.trial_run(infra.parent_run_id, "err1", "err")
    tracker.fail(run_id, "OSError: [Errno 28] No space left on device")
    return FakeGrid(
        [
            SimpleNamespace(
                error=RuntimeError(
                    "ray::ImplicitFunc.train()\nOSError: [Errno 28] No space left on device: '/runs/ray_results/x'"
                ),
                config={},
                metrics={},
            )
        ]
    )


@pytest.fixture
def offline_sweep(monkeypatch, tmp_path, empty_store):
    """run_sweep with Ray replaced: no cluster is started, Tuner is FakeTuner. Its --run-dir, tmp_path, holds
    a store already (a copy of the empty one)."""
    import ray.tune

    seed_store(tmp_path, empty_store)

    from psreval_tune.sweeps import engine as sweep

    def with_parameters(fn, **kwargs):
        FakeTuner.infra = kwargs["infra"]
        return fn

    monkeypatch.setattr(sweep, "connect", lambda *a, **k: None)
    monkeypatch.setattr(sweep, "check_cluster_resources", lambda *a, **k: None)
    monkeypatch.setattr(ray.tune, "Tuner", FakeTuner)
    monkeypatch.setattr(ray.tune, "with_parameters", with_parameters)
    monkeypatch.setattr(ray.tune, "with_resources", lambda fn, resources: fn)

    @sweep.main_guard
    def main(argv):
        args = sweep.parser("t").parse_args(argv)
        sweep.run_sweep(args, sweep.SweepSpec(kind="t", param_space={}))
        return 0

    return main


def _closed_as_failed(uri: str, reason: str) -> None:
    parents, trials = sweep_runs(uri)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert reason in parents[0].data.tags[TAG_FAILURE]
    status = {t.data.tags["psreval.trial_id"]: t for t in trials}
    assert "RUNNING" not in {t.info.status for t in trials}
    assert status["busy1"].info.status == "FAILED" and reason in status["busy1"].data.tags[TAG_FAILURE]
    assert status["done1"].info.status == "FINISHED" and TAG_FAILURE not in status["done1"].data.tags


@pytest.mark.slow
@pytest.mark.parametrize(
    "raised, reason",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/ray_results/s/trial/checkpoint_000001"),
            "disk full: OSError: [Errno 28] No space left on device",
        ),
        (
            RuntimeError("Tune's experiment state could not be saved\nsecond line"),
            "Ray Tune stopped with RuntimeError: Tune's experiment state could not be saved",
        ),
    ],
)
def test_sweep_stopped_by_a_fault_closes_every_run_with_one_line(tmp_path, offline_sweep, capsys, raised, reason):
    FakeTuner.fail_with = raised
    code = offline_sweep(["--run-dir", str(tmp_path), "--name", "s"])
    out = capsys.readouterr()
    assert code == 2
    errors = [line for line in out.err.splitlines() if line.startswith("error:")]
    # one error line, the last one (MLflow's INFO lines about creating the store come before it in-process)
    assert len(errors) == 1 and out.err.strip().splitlines()[-1] == errors[0] and "Traceback" not in out.err
    assert errors[0].startswith("error: sweep s stopped, " + reason) and "1 running trial run(s)" in errors[0]
    _closed_as_failed(f"sqlite:///{tmp_path}/mlflow.db", reason)


@pytest.mark.slow
def test_trials_failed_by_a_full_disk_end_the_sweep_with_one_line(tmp_path, offline_sweep, capsys, monkeypatch):
    monkeypatch.setattr(FakeTuner, "fit", _fake_fit_returning_errors)
    code = offline_sweep(["--run-dir", str(tmp_path), "--name", "s"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert errors[0].startswith(
        "error: sweep s stopped, disk full: 1 trial(s) failed with OSError: [Errno 28] No space"
    )
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [p.info.status for p in parents] == ["FAILED"] and "disk full" in parents[0].data.tags[TAG_FAILURE]
    assert [t.info.status for t in trials] == ["FAILED"]


def _fit_interrupted(started: int):
    """tuner.fit() as Tune ends it on a first Ctrl-C (it catches SIGINT itself): it returns, no error. Trial
    "done1" finished (FINISHED run); the next ``started`` trials had just opened their runs and were stopped
    without any callback (RUNNING runs, status TERMINATED in the grid); the rest never started (PENDING)."""

    def fit(self):
        infra = FakeTuner.infra
        tracker = Tracker(infra.tracking)
        done, _ = tracker.trial_run(infra.parent_run_id, "done1", "done")
        tracker.finish(done, "FINISHED")
        for k in range(started):
            tracker.trial_run(infra.parent_run_id, f"busy{k + 1}", "busy")
        ok = SimpleNamespace(error=None, config={}, metrics={"cycle_complete": 1})
        grid = FakeGrid([ok] + [SimpleNamespace(error=None, config={}, metrics={})] * 2)
        grid.num_terminated, grid.num_errors = 1 + started, 0
        return grid

    return fit


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(120)
@pytest.mark.parametrize("started", [2, 1, 0])
def test_sweep_interrupted_in_tune_kills_its_running_trial_runs(tmp_path, offline_sweep, capsys, monkeypatch, started):
    """started=2: the reported case (both last trials had just opened their runs when Ctrl-C came): before the
    fix both runs stayed RUNNING and the sweep's run ended FINISHED. Now each is KILLED with the interrupted
    tag, the finished one untouched, and the sweep's run KILLED; also with a trial left unstarted."""
    monkeypatch.setattr(FakeTuner, "fit", _fit_interrupted(started))
    assert offline_sweep(["--run-dir", str(tmp_path), "--name", "s"]) == 0
    out = capsys.readouterr().out
    assert f"sweep s interrupted: {started} running trial run(s) marked KILLED" in out
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [p.info.status for p in parents] == ["KILLED"] and "interrupted" in parents[0].data.tags[TAG_INTERRUPTED]
    status = {t.data.tags["psreval.trial_id"]: t for t in trials}
    assert status.pop("done1").info.status == "FINISHED"
    assert len(status) == started
    for run in status.values():
        assert run.info.status == "KILLED" and run.data.tags[TAG_INTERRUPTED] == INTERRUPTED_TRIAL


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_ctrl_c_escaping_tune_kills_the_running_trial_runs(tmp_path, offline_sweep, capsys):
    """A Ctrl-C Tune does not catch (a second one, during its cleanup): KeyboardInterrupt out of fit(); the
    trial run still RUNNING ends KILLED with the tag (it stayed RUNNING), the sweep's run KILLED."""
    FakeTuner.fail_with = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        offline_sweep(["--run-dir", str(tmp_path), "--name", "s"])
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/mlflow.db")
    assert [p.info.status for p in parents] == ["KILLED"]
    assert parents[0].data.tags[TAG_INTERRUPTED].startswith("interrupted (KeyboardInterrupt)")
    status = {t.data.tags["psreval.trial_id"]: t for t in trials}
    assert status["done1"].info.status == "FINISHED" and TAG_INTERRUPTED not in status["done1"].data.tags
    assert status["busy1"].info.status == "KILLED" and status["busy1"].data.tags[TAG_INTERRUPTED] == INTERRUPTED_TRIAL


# --- sweep-level: real Ray, real training (a one-trial sweep run from this file) --------------


def tear_newest_checkpoint(trial_dir: Path) -> int:
    """Overwrite the newest complete checkpoint in a trial's folder with torn bytes; returns its round."""
    folders = sorted(trial_dir.glob("checkpoint_*"), key=lambda p: int(p.name.rsplit("_", 1)[1]), reverse=True)
    for folder in folders:  # the newest may be half-written if the kill came while the worker saved it
        path = folder / trainable.CHECKPOINT_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - missing or partial: not a checkpoint Tune registered
            continue
        path.write_bytes(b"torn write")
        return int(state["round"])
    raise AssertionError(f"no complete checkpoint in {trial_dir}: {[p.name for p in folders]}")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_sweep_trial_with_corrupt_latest_checkpoint_resumes_from_the_previous_one(tmp_path, empty_store):
    """The trial's worker is killed mid-training and its latest checkpoint corrupted before Tune restarts
    it: the trial resumes from the checkpoint before, finishes, and its run is FINISHED with each round once."""
    rounds = 12
    log = tmp_path / "sweep.log"
    seed_store(tmp_path / "runs", empty_store)  # the driver's tables made already: seconds less before training
    proc = start_script(
        THIS,
        "--run-dir",
        str(tmp_path / "runs"),
        "--name",
        "ckpt",
        "--max-failures",
        "2",
        log=log,
        PSREVAL_TEST_ROUNDS=str(rounds),
        PSREVAL_CHECKPOINT_EVERY_S="0",  # a checkpoint (and a result) every round: the test kills after round 3
    )
    exp = tmp_path / "runs" / "ray_results" / "ckpt"
    try:

        def past_round_3():
            for tid, lines in tune_results(exp).items():
                if 3 <= lines[-1]["training_iteration"] < rounds - 2 and not lines[-1].get("cycle_complete"):
                    return tid, lines[-1]["pid"]
            return None

        tid, pid = wait_for(past_round_3, timeout=300, interval=0.2, what="the trial past round 3")
        os.kill(pid, signal.SIGKILL)
        (trial_dir,) = [p for p in exp.iterdir() if (p / "result.json").is_file()]
        # Tear the newest checkpoint the killed worker wrote, found on disk: result.json can be rounds behind
        # the worker (the driver had 2 more results in flight once, on a loaded machine). Done at once, before
        # the restarted worker (a new process: seconds of imports) reads it.
        corrupted_round = tear_newest_checkpoint(trial_dir)
        assert proc.wait(timeout=350) == 0, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    lines = tune_results(exp)[tid]
    assert lines[-1]["cycle_complete"]
    after = [line for line in lines if line["pid"] != pid]
    # resumed after round corrupted_round - 1 (the previous checkpoint), not from round 1, not from the torn one
    assert after[0]["round"] == corrupted_round, [(line["pid"], line["round"]) for line in lines]
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert [p.info.status for p in parents] == ["FINISHED"] and [t.info.status for t in trials] == ["FINISHED"]
    assert steps(SimpleNamespace(uri=f"sqlite:///{tmp_path}/runs/mlflow.db"), trials[0].info.run_id, "acc_val") == list(
        range(1, rounds + 1)
    )
    # where it resumed, as a tag; the fallback (Tune handed over the torn checkpoint: nearly always, unless the
    # kill came before Tune registered it) as a tag and a '!' line on the driver's console: live, and under the
    # summary table
    from psreval_tune.trial_warnings import TAG_RESUME, TAG_RESUMED_FROM

    tags, console = trials[0].data.tags, log.read_text()
    fell_back = TAG_RESUME in tags
    older = "older checkpoint" if fell_back else "checkpoint"
    assert tags[TAG_RESUMED_FROM].startswith(f"round {corrupted_round} ({older} after round {corrupted_round - 1}")
    if fell_back:
        line = f"! {tid}: resumed from the older checkpoint "
        assert console.count(line) == 2, console[-3000:]  # the live console's event log, and the summary
    print(
        f"{TAG_RESUMED_FROM} = {tags[TAG_RESUMED_FROM]!r}",
        *[x for x in console.splitlines() if x[:2] == "! "],
        sep="\n",
    )


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_disk_full_on_the_run_folder_ends_runs_failed_with_one_line(tmp_path, empty_store):
    """--run-dir on a 30 MB tmpfs filled but for 256 KB (the MLflow store elsewhere, so it can still be
    written): exit 2, one error line naming the full disk, no run left RUNNING, each FAILED with the reason."""
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=30m", "tmpfs", str(small)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        st = os.statvfs(small)
        with open(small / "filler.bin", "wb") as fh:
            left = st.f_bavail * st.f_frsize - 256 * 1024
            while left > 0:
                fh.write(b"\0" * min(left, 1 << 20))
                left -= 1 << 20
        uri = seed_store(tmp_path, empty_store)
        proc = run_script(
            THIS,
            "--run-dir",
            str(small),
            "--name",
            "full",
            "--tracking-uri",
            uri,
            "--max-failures",
            "0",
            timeout=380,
            PSREVAL_TEST_ROUNDS="3",
        )
    finally:
        if subprocess.run(["umount", str(small)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)
    out = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, out[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: sweep full stopped, disk full"), out[-3000:]
    parents, trials = sweep_runs(uri)
    runs = parents + trials
    assert len(parents) == 1 and "RUNNING" not in {r.info.status for r in runs}
    assert parents[0].info.status == "FAILED" and "disk full" in parents[0].data.tags[TAG_FAILURE]
    for run in trials:
        assert run.info.status == "FAILED" and run.data.tags.get(TAG_FAILURE), run.data.tags


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(180)
def test_ctrl_c_right_after_a_trial_started_leaves_no_run_running(tmp_path, empty_store):
    """The reported case, for real: Ctrl-C (SIGINT to the driver) once the trial has opened its MLflow run and
    before it has any result. Tune catches the signal and stops the trial without a callback; fit() returns.
    Before the fix the trial's run stayed RUNNING and the sweep's run ended FINISHED; now both end KILLED
    with tag psreval.interrupted."""
    runs = tmp_path / "runs"
    uri = seed_store(runs, empty_store)
    log = tmp_path / "sweep.log"
    # 200 rounds and no result for 30 s (the default checkpoint period of a FIFO grid): still in its first rounds
    proc = start_script(THIS, "--run-dir", str(runs), "--name", "intr", log=log, PSREVAL_TEST_ROUNDS="200")
    try:
        # the driver's store is ready (its tables) once it prints where the sweep's results go
        wait_for(lambda: "sweep intr: Tune results in" in log.read_text(), timeout=120, interval=0.2, what="start")

        def trial_run_opened() -> bool:
            return any(t.info.status == "RUNNING" for t in sweep_runs(uri)[1])

        wait_for(trial_run_opened, timeout=120, interval=0.2, what="the trial's MLflow run")
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        kill_group(proc)
    out = log.read_text()
    parents, trials = sweep_runs(uri)
    assert [t.info.status for t in parents + trials] == ["KILLED", "KILLED"], out[-3000:]
    assert trials[0].data.tags[TAG_INTERRUPTED] == INTERRUPTED_TRIAL
    assert parents[0].data.tags[TAG_INTERRUPTED].startswith("interrupted (Ctrl-C): 1 running trial(s) stopped")
    assert "sweep intr interrupted: 1 running trial run(s) marked KILLED" in out, out[-3000:]


# --- the one-trial driver -----------------------------------------------------------------

if __name__ == "__main__":
    from psreval_tune.sweeps.engine import SweepSpec, main_guard, parser, run_sweep

    @main_guard
    def main(argv=None) -> int:
        args = parser("one tiny trial").parse_args(argv)
        rounds = int(os.environ.get("PSREVAL_TEST_ROUNDS", "3"))
        run_sweep(args, SweepSpec(kind="faults", param_space={**ONE_TRIAL, "rounds": rounds}))
        return 0

    sys.exit(main())
