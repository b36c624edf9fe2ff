"""trainable.RoundReporter: when a trial checkpoints and what it reports to Tune (a fake clock and a fake
tune.report; no Ray, no training)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from psreval_tune import trainable
from psreval_tune.config import CycleConfig
from psreval_tune.federated import RoundResult


@pytest.fixture
def tune_calls(monkeypatch):
    calls: list[tuple[int, bool]] = []  # (round, with a checkpoint)

    def report(metrics, checkpoint=None):
        calls.append((metrics["round"], checkpoint is not None))

    monkeypatch.setattr(trainable.tune, "report", report)
    return calls


def run_rounds(monkeypatch, infra: trainable.TrialInfra, seconds_per_round: float, rounds: int = 10):
    """Rounds of ``seconds_per_round`` each on a fake clock; returns (reporter, rounds logged)."""
    now = [1000.0]
    monkeypatch.setattr(trainable.time, "monotonic", lambda: now[0])
    logged: list[int] = []
    reporter = trainable.RoundReporter(CycleConfig(rounds=rounds), infra, lambda r: logged.append(r.round))
    fed = SimpleNamespace(state_dict=lambda: {"round": 0})
    for k in range(1, rounds + 1):
        now[0] += seconds_per_round
        reporter(RoundResult(round=k, train_loss=1.0, acc_val=0.5, epsilon=None), fed)
    return reporter, logged


def test_period_zero_checkpoints_and_reports_every_round(monkeypatch, tune_calls):
    reporter, logged = run_rounds(monkeypatch, trainable.TrialInfra(checkpoint_every_s=0.0), 1.5)
    assert reporter.checkpoints == list(range(1, 11))
    assert tune_calls == [(k, True) for k in range(1, 11)]
    assert logged == list(range(1, 11))


def test_fifo_grid_reports_only_with_checkpoints(monkeypatch, tune_calls):
    """Rounds of 7 s, a checkpoint due every 30 s: after rounds 5 (35 s) and 10 (35 s later, and the last);
    without a scheduler Tune hears of those two rounds only; every round still goes to MLflow."""
    infra = trainable.TrialInfra(checkpoint_every_s=30.0, report_every_round=False)
    reporter, logged = run_rounds(monkeypatch, infra, 7.0)
    assert reporter.checkpoints == [5, 10]
    assert tune_calls == [(5, True), (10, True)]
    assert logged == list(range(1, 11))


def test_short_trial_checkpoints_its_last_round_only(monkeypatch, tune_calls):
    infra = trainable.TrialInfra(checkpoint_every_s=30.0, report_every_round=False)
    reporter, _ = run_rounds(monkeypatch, infra, 1.5)  # 15 s of training
    assert reporter.checkpoints == [10] and tune_calls == [(10, True)]


def test_scheduler_gets_every_round_checkpoints_stay_periodic(monkeypatch, tune_calls):
    infra = trainable.TrialInfra(checkpoint_every_s=30.0, report_every_round=True)
    reporter, _ = run_rounds(monkeypatch, infra, 7.0)
    assert [k for k, _ in tune_calls] == list(range(1, 11))
    assert [k for k, ckpt in tune_calls if ckpt] == reporter.checkpoints == [5, 10]


def test_a_round_stopped_inside_tune_report_is_already_in_mlflow(monkeypatch):
    """Tune stops a trial inside tune.report (Ctrl-C: SystemExit; an ASHA stop): the round it was reporting
    has reached MLflow before, so nothing checkpointed is missing from the trial's run."""
    logged: list[int] = []

    def report(metrics, checkpoint=None):
        raise SystemExit(0)

    monkeypatch.setattr(trainable.tune, "report", report)
    reporter = trainable.RoundReporter(
        CycleConfig(rounds=3), trainable.TrialInfra(checkpoint_every_s=0.0), lambda r: logged.append(r.round)
    )
    with pytest.raises(SystemExit):
        reporter(RoundResult(round=1, train_loss=1.0, acc_val=0.5, epsilon=None), SimpleNamespace(state_dict=dict))
    assert logged == [1]
