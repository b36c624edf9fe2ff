"""The sweep's console: the live status table (pure rendering, the board, the trials' phases), the
messages a sweep silences, and what a smoke grid prints (the session's smoke sweep, not a new one)."""

from __future__ import annotations

import io
import logging
import pickle
from types import SimpleNamespace

import pytest

from psreval_tune.sweeps import console_table as ct
from psreval_tune.sweeps import progress  # imports Ray Tune: here, not in the first test that uses it

ROUNDS = [
    "[dp] round 1/3  loss 2.1766  val acc 0.3264  eps 1.123",
    "[dp] round 2/3  loss 2.0012  val acc 0.4010  eps 2.250",
    "[dp] round 3/3  loss 1.9000  val acc 0.4500  eps 3.396",
]
TWIN = [
    "[nonprivate] round 1/3  loss 2.1  val acc 0.3",
    "[nonprivate] round 2/3  loss 2.0  val acc 0.4",
    "[nonprivate] round 3/3  loss 1.9  val acc 0.5",
]
ATTACKS = ["attack PGD run 1/2 done", "attack PGD run 2/2 done", "attack FGSM run 1/1 done"]


def phases(phase: ct.TrialPhase, messages: list[str]) -> list[str]:
    out = []
    for message in messages:
        phase.apply(message)
        out.append(phase.state["phase"])
    return out


def test_trial_phase_follows_a_private_cycle_with_its_twin():
    phase = ct.TrialPhase(rounds=3, twin=True)
    assert phase.state == {"phase": "training", "round": 0, "rounds": 3, "acc": None, "eps": None, "path": ["training"]}
    assert not phase.apply("data: digits train 1437 / val 180 / test 359, 10 classes; device cpu")
    assert phases(phase, ROUNDS) == ["training", "training", "twin"]
    assert phase.state["round"] == 3 and phase.state["acc"] == 0.45 and phase.state["eps"] == 3.396
    assert phases(phase, TWIN) == ["twin 1/3", "twin 2/3", "attacks"]
    assert phase.state["acc"] == 0.45  # the twin's accuracy is not the trial's
    assert phases(phase, ATTACKS) == ["attacks PGD 1/2", "attacks PGD 2/2", "attacks FGSM 1/1"]
    assert not phase.apply("warning: something else entirely")
    assert phase.state["path"] == ["training", "twin", "attacks"]


def test_trial_phase_without_twin_cached_twin_and_resume():
    plain = ct.TrialPhase(rounds=2, twin=False, main="nonprivate")
    rounds = ["[nonprivate] round 1/2  loss 1  val acc 0.5", "[nonprivate] round 2/2  loss 1  val acc 0.6"]
    assert phases(plain, rounds) == ["training", "attacks"]
    assert plain.state["eps"] is None and plain.state["acc"] == 0.6
    cached = ct.TrialPhase(rounds=3, twin=True)
    assert phases(cached, [ROUNDS[2], "[nonprivate] twin digits-cnn-abc123 loaded from cache"]) == ["twin", "attacks"]
    resumed = ct.TrialPhase(rounds=3, twin=True)
    assert phases(resumed, ["[dp] resumed from a checkpoint after round 2"]) == ["training"]
    assert resumed.state["round"] == 2


def rows() -> list[dict]:
    board = ct.Board()
    board.tune(
        [
            {
                "trial": "ac840_00000",
                "status": "RUNNING",
                "label": "digits-cnn-eps3.4-none-PGD-s0",
                "round": 1,
                "rounds": 3,
                "acc": 0.3,
                "eps": 1.1,
            },
            {
                "trial": "ac840_00001",
                "status": "PENDING",
                "label": "digits-cnn-eps7-adv_training0.2-FGSM-s0",
                "rounds": 3,
            },
            {
                "trial": "ac840_00002",
                "status": "TERMINATED",
                "label": "digits-cnn-eps7-train_time_attack0.2-FGSM-s0",
                "rounds": 3,
                "round": 3,
                "acc": 0.44,
                "eps": 6.99,
                "complete": True,
            },
            {
                "trial": "ac840_00003",
                "status": "TERMINATED",
                "label": "digits-cnn-eps3.4-train_time_attack0.2-FGSM-s0",
                "rounds": 3,
                "round": 1,
                "acc": 0.1,
                "eps": 1.2,
                "complete": False,
            },
            {"trial": "ac840_00004", "status": "ERROR", "label": "digits-cnn-eps1234.5-none-PGD-s0", "rounds": 3},
        ],
        "Logical resource usage: 1/2 CPUs, 0/0 GPUs",
    )
    board.trial("ac840_00000", {"phase": "attacks PGD 10/10", "round": 3, "rounds": 3, "acc": 0.5, "eps": 3.4})
    return board.snapshot()["rows"]


def test_board_merges_tunes_view_with_the_trials_own():
    by_id = {r["trial"]: r for r in rows()}
    running = by_id["ac840_00000"]
    assert (running["status"], running["phase"], running["round"], running["acc"]) == (
        "RUNNING",
        "attacks PGD 10/10",
        3,
        0.5,
    )
    assert [by_id[t]["phase"] for t in ("ac840_00001", "ac840_00002", "ac840_00003", "ac840_00004")] == [
        "pending",
        "done",
        "stopped early",
        "error",
    ]
    board = ct.Board()  # a trial's message before the driver's first push: shown as running
    board.trial("x_00000", {"phase": "training", "round": 1, "rounds": 3, "acc": 0.2, "eps": None})
    assert board.snapshot()["rows"] == [
        {
            "trial": "x_00000",
            "status": "RUNNING",
            "label": "",
            "rounds": 3,
            "path": [],
            "round": 1,
            "acc": 0.2,
            "eps": None,
            "phase": "training",
        }
    ]


def test_table_is_one_line_per_trial_at_most_100_columns():
    lines = ct.table(rows())
    assert len(lines) == 1 + 5 and all(len(line) <= ct.WIDTH for line in lines), lines
    assert lines[0].split()[:6] == ["trial", "status", "round", "val", "acc", "eps"]
    first = lines[1].split()
    assert first[:5] == ["ac840_00000", "RUNNING", "3/3", "0.500", "3.40"] and "attacks PGD 10/10" in lines[1]
    assert lines[1].endswith("eps3.4 none PGD")  # only what differs between trials: not digits, cnn, s0
    assert "-" in lines[2].split()[3:5] and "stopped early" in lines[4]
    narrow = ct.table(rows(), width=50)
    assert all(len(line) <= 50 for line in narrow)
    assert ct.header(rows(), 3725, "Logical resource usage: 1/2 CPUs, 0/0 GPUs") == [  # too wide for one line
        "[1:02:05] 5 trials: 1 running, 1 pending, 1 done, 1 stopped early, 1 error",
        "          Logical resource usage: 1/2 CPUs, 0/0 GPUs",
    ]
    assert ct.header(rows()[:1], 59, "R") == ["[0:59] 1 trial: 1 running | R"]


def test_table_beyond_max_rows_shows_running_trials_first_and_counts_the_rest():
    many = [{"trial": f"t_{i:05d}", "status": "TERMINATED", "phase": "done", "rounds": 3} for i in range(40)]
    many[30] = {"trial": "t_00030", "status": "RUNNING", "phase": "training", "rounds": 3, "round": 1}
    lines = ct.table(many, max_rows=5)
    assert len(lines) == 1 + 5
    assert "t_00030" in lines[-2] and lines[-1] == "… 36 more: 36 done"  # in trial order


def test_event_log_prints_changes_of_status_or_phase_and_a_table_at_most_every_n_seconds():
    log = ct.EventLog(every_s=60)
    assert log.lines([], 0) == []  # no trials yet: nothing, not even the header
    start = [
        {"trial": "a_1", "status": "PENDING", "phase": "pending"},
        {"trial": "a_2", "status": "PENDING", "phase": "pending"},
    ]
    assert log.lines(start, 0) == ["[0:00] 2 trials: 2 pending"]
    running = [{"trial": "a_1", "status": "RUNNING", "phase": "training", "round": 0, "rounds": 3}, start[1]]
    assert log.lines(running, 5) == ["[0:05] a_1 RUNNING training, round 0/3, val acc -, eps -"]
    running[0] = {**running[0], "round": 2, "acc": 0.4}
    assert log.lines(running, 10) == []  # a new round is no new phase
    running[0] = {**running[0], "phase": "attacks"}
    assert log.lines(running, 20) == ["[0:20] a_1 RUNNING attacks, round 2/3, val acc 0.400, eps -"]
    running[0] = {**running[0], "phase": "attacks PGD 1/2"}
    assert log.lines(running, 30) == []  # nor an attack's progress
    table = log.lines(running, 61)
    assert table[0] == "[1:01] 2 trials: 1 running, 1 pending" and table[1].split()[:2] == ["trial", "status"]
    assert len(table) == 3 and "attacks PGD 1/2" in table[2]
    assert log.lines(running, 100) == []  # not again within 60 s
    done = [{**running[0], "status": "TERMINATED", "phase": "done", "round": 3}, start[1]]
    assert log.lines(done, 110, final=True) == ["[1:50] a_1 TERMINATED done, round 3/3, val acc 0.400, eps -"]


def test_event_log_shows_the_phases_a_trial_went_through_between_two_looks():
    log = ct.EventLog()
    log.lines([], 0)
    row = {"trial": "a_1", "status": "RUNNING", "phase": "training", "path": ["training"], "rounds": 3}
    assert [line.split(",")[0] for line in log.lines([row], 1)] == [
        "[0:01] 1 trial: 1 running",
        "[0:01] a_1 RUNNING training",
    ]
    row = {**row, "status": "TERMINATED", "phase": "done", "path": ["training", "twin", "attacks"], "round": 3}
    assert [line.split(",")[0] for line in log.lines([row], 2)] == [
        "[0:02] a_1 RUNNING twin",
        "[0:02] a_1 RUNNING attacks",
        "[0:02] a_1 TERMINATED done",
    ]
    assert log.lines([row], 3) == []


def test_redraw_replaces_the_lines_drawn_before():
    assert ct.redraw(["a", "b"], 0) == "\x1b[2Ka\n\x1b[2Kb\n\x1b[J"
    assert ct.redraw(["a"], 3) == "\x1b[3F\x1b[2Ka\n\x1b[J"
    assert ct.erase(2) == "\x1b[2F\x1b[J" and ct.erase(0) == ""


class FakeRef:
    def __init__(self, value):
        self.value = value


class FakeBoard:
    def __init__(self, snapshots):
        self.snapshots = snapshots
        self.snapshot = SimpleNamespace(
            remote=lambda: FakeRef(self.snapshots.pop(0) if len(self.snapshots) > 1 else self.snapshots[0])
        )


def test_live_table_on_a_terminal_is_redrawn_in_place(monkeypatch):
    monkeypatch.setattr("ray.get", lambda ref, timeout=None: ref.value)
    snaps = [{"rows": rows()[:2], "resources": ""}, {"rows": rows()[:3], "resources": ""}]
    out = io.StringIO()
    live = progress.Live(FakeBoard(snaps), out=out, tty=True, refresh_s=3600)
    live.refresh()
    first = out.getvalue()
    assert first.startswith("\x1b[2K[0:00] 2 trials") and first.count("\n") == 4 and "\x1b[4F" not in first
    live.refresh()
    second = out.getvalue()[len(first) :]
    assert second.startswith("\x1b[4F") and second.count("\n") == 5  # up over the 4 lines, then 5 new ones
    progress._Guard(io.StringIO(), live).write("a warning\n")  # anything else printed takes the table down
    assert out.getvalue().endswith("\x1b[5F\x1b[J") and live.drawn == 0


def test_live_lines_for_a_pipe_are_the_event_log(monkeypatch):
    monkeypatch.setattr("ray.get", lambda ref, timeout=None: ref.value)
    out = io.StringIO()
    live = progress.Live(FakeBoard([{"rows": rows(), "resources": "R"}]), out=out, tty=False)
    live.refresh()
    live.refresh()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[0:00] 5 trials: ") and lines[0].endswith(" | R") and "\x1b" not in out.getvalue()
    assert len(lines) == 1 + 4  # every trial that is not pending, once


def test_quiet_logs_drop_exactly_the_known_messages():
    seen = []

    class Keep(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    optuna = logging.getLogger("ray.tune.search.optuna.optuna_search")
    banner = logging.getLogger("ray._private.authentication.authentication_token_setup")
    handler = Keep()
    for logger in (optuna, banner):
        logger.addHandler(handler)
    saved = {logger: list(logger.filters) for logger in (optuna, banner)}
    try:
        progress.quiet_logs(verbose=True)
        banner.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt "
            "out. For more information, see https://docs.ray.io/en/latest/ray-security/token-auth.html"
        )
        progress.quiet_logs(verbose=False)
        progress.quiet_logs(verbose=False)  # once per process
        assert len([f for f in optuna.filters if isinstance(f, progress.DropExact)]) == 1
        optuna.warning(ValueError("The value nan is not acceptable"))
        optuna.warning("The value nan is not acceptable; The value nan is not acceptable")
        optuna.warning("The value inf is not acceptable")
        banner.warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled to opt "
            "out. For more information, see https://docs.ray.io/en/latest/ray-security/token-auth.html"
        )
        banner.warning("Token authentication is disabled for this Ray cluster. Anyone with network access ...")
    finally:
        for logger, filters in saved.items():
            logger.removeHandler(handler)
            logger.filters[:] = filters
    assert [m.split(".")[0] for m in seen] == [
        "Token authentication is enabled for this Ray cluster",
        "The value inf is not acceptable",
        "Token authentication is disabled for this Ray cluster",
    ]


def test_trial_progress_outside_a_sweep_only_prints(capsys):
    from psreval_tune.config import CycleConfig
    from psreval_tune.sweeps.progress import trial_progress

    ctx = SimpleNamespace(get_trial_id=lambda: "t1", get_trial_dir=lambda: "/nowhere")  # no experiment name
    progress = trial_progress(CycleConfig(dataset="digits", arch="cnn", rounds=3, epsilon=3.4), ctx)
    progress(ROUNDS[0])
    assert capsys.readouterr().out == ROUNDS[0] + "\n"


def test_board_callback_is_pickled_by_the_sweeps_name_only():
    from psreval_tune.sweeps.progress import BoardCallback

    callback = BoardCallback("smoke")
    callback._board = object()  # a handle of this Ray: never into tuner.pkl
    again = pickle.loads(pickle.dumps(callback))
    assert again.sweep == "smoke" and again._board is None


def test_resumed_sweep_gets_this_runs_console_settings(tmp_path):
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from psreval_tune.sweeps.engine import _restored_console
    from psreval_tune.sweeps.progress import BoardCallback

    def trainable(config):
        return None

    class Kept(tune.Callback):
        pass

    tune.Tuner(
        trainable,
        param_space={"x": 1},
        run_config=tune.RunConfig(name="r", storage_path=str(tmp_path), verbose=1, callbacks=[Kept()]),
    )
    tuner = tune.Tuner.restore(str(tmp_path / "r"), trainable=trainable)
    assert tuner._local_tuner.get_run_config().verbose == 1  # what tuner.pkl brought back
    assert _restored_console(tuner, 0, [CSVLoggerCallback(), JsonLoggerCallback(), BoardCallback("r")])
    run_config = tuner._local_tuner.get_run_config()
    assert run_config.verbose == 0
    assert [type(c).__name__ for c in run_config.callbacks] == [
        "Kept",
        "CSVLoggerCallback",
        "JsonLoggerCallback",
        "BoardCallback",
    ]


def test_verbose_flag_may_change_on_resume():
    from psreval_tune.sweeps import engine

    assert any("--verbose" in action.option_strings for action in engine.parser("t")._actions)
    assert "verbose" in engine.RESUME_MAY_CHANGE


# --- what a 6-trial smoke grid prints (the session's smoke sweep: conftest.smoke_sweep) --------------

NOISE = (
    "╭",
    "│",
    "Trial status:",
    "Experiment state snapshotting",
    "TensorBoard",
    "Token authentication",
    "The value nan is not acceptable",
    "PerformanceWarning",
    "View detailed results",
)


@pytest.mark.ray
@pytest.mark.slow  # the session's smoke sweep (conftest.smoke_sweep)
@pytest.mark.timeout(700)
def test_smoke_grid_prints_a_short_console_with_every_trials_phase(smoke_sweep):
    from sweep_helpers import tune_results

    run_dir, proc = smoke_sweep.run_dir, smoke_sweep.proc
    lines = proc.stdout.splitlines() + proc.stderr.splitlines()
    console = "\n".join(lines)
    assert len(lines) <= 60, console
    assert not [n for n in NOISE if n in console], console
    trials = set(tune_results(run_dir / "ray_results" / "smoke"))
    assert len(trials) == 6
    ours = [line for line in proc.stdout.splitlines() if line.startswith(("[", "  "))]
    table = [line for line in ours if not line.startswith("  ") or line.split()[0] in ("trial", *trials)]
    assert table and all(len(line) <= 100 for line in table), table
    for trial in trials:  # each trial's phases while it ran, then its end
        mine = [line for line in table if f" {trial} " in f" {line} "]
        assert any(f"{trial} RUNNING training" in line for line in mine), (trial, mine)
        assert any(f"{trial} RUNNING attacks" in line for line in mine), (trial, mine)
        assert any(f"{trial} TERMINATED done" in line for line in mine), (trial, mine)
    # a twin is trained once per setting (the other epsilon loads it from the cache, or trains it too)
    assert any(" RUNNING twin" in line for line in table), console
    assert "sweep smoke: 6 trials" in proc.stdout and "report: " in proc.stdout and "results: " in proc.stdout
