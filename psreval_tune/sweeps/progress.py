"""The sweep's live console: what each trial is doing, in one compact table.

How a trial's phase reaches the driver: a small named Ray actor per sweep, the progress board
(console_table.Board). Each trial's progress callback (``trial_progress``, called by run_cycle
with its progress messages) sends its phase to the board, fire-and-forget: a trial never waits
for the console and never fails for it. The driver's ``BoardCallback`` (a tune.Callback) sends
Tune's view of every trial (status, last per-round result, resources in use), and ``Live``,
a thread of the driver, reads the board and prints the table.

Why not Tune's own reporter: it only sees what the trials ``tune.report``, and a report per phase
would add training iterations, which ASHA counts. Here the per-round reports are unchanged.
The board is looked up by name (psreval-progress-SWEEP in namespace psreval), so a resumed sweep's
callback (restored from tuner.pkl) finds the board of the driver that resumed it.

The exact log messages of Ray and Optuna a sweep silences (``quiet_logs``) are in connection.py (Ray's
private logger names with them); importable from here too.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import sys
import threading
import time
from typing import Any, Callable, TextIO

from ray.tune import Callback

from .connection import ALWAYS, BANNERS, DropExact, quiet_logs  # noqa: F401 - re-exported
from .console_table import WIDTH, Board, EventLog, erase, header, redraw, table

NAMESPACE = "psreval"
PUSH_S = 0.5  # the driver sends Tune's trial states at most this often
LOOKUP_RETRY_S = 10.0
TABLE_EVERY_S = 60.0  # not a terminal: the running trials' table at most this often


def board_name(sweep: str) -> str:
    return f"psreval-progress-{sweep}"


def _find_board(sweep: str):
    import ray

    if not ray.is_initialized():
        return None
    try:
        return ray.get_actor(board_name(sweep), namespace=NAMESPACE)
    except Exception:  # noqa: BLE001 - no board (--verbose, or not a sweep of ours): no console
        return None


# --- the trial side --------------------------------------------------------------------------------


def trial_progress(cfg, ctx) -> Callable[[str], None]:
    """run_trial's progress callback: prints each message (the trial's log: Ray's worker log files,
    on the console with --verbose) and sends the trial's phase to the sweep's board, if there is one.
    Never raises, never blocks on the board."""
    from .console_table import TrialPhase

    phase = TrialPhase(
        cfg.rounds, twin=bool(cfg.private and cfg.train_twin), main="dp" if cfg.private else "nonprivate"
    )
    try:
        trial_id, board = ctx.get_trial_id(), _find_board(ctx.get_experiment_name())
    except Exception:  # noqa: BLE001 - not in a Tune session (tests call run_trial directly)
        trial_id, board = None, None

    def send() -> None:
        if board is not None:
            try:
                board.trial.remote(trial_id, dict(phase.state))
            except Exception:  # noqa: BLE001 - the console is never worth a trial
                pass

    def progress(message: str) -> None:
        print(message, flush=True)
        if phase.apply(message):
            send()

    send()  # a new attempt of a trial starts again from "training"
    return progress


# --- the driver side -------------------------------------------------------------------------------


def trial_setting(config: dict) -> str:
    """trainable.trial_label of a trial's config ('' if it is not a cycle config)."""
    try:
        from ..trainable import cycle_config, trial_label

        return trial_label(cycle_config(config))
    except Exception:  # noqa: BLE001 - a label is a convenience
        return ""


def resources_line(trials: list, totals: dict[str, float]) -> str:
    """Ray Tune's 'Logical resource usage: 2/4 CPUs, 0.5/1 GPUs' of the running trials."""
    used = {"CPU": 0.0, "GPU": 0.0}
    for trial in trials:
        if trial.status == "RUNNING":
            try:
                required = trial.placement_group_factory.required_resources
            except Exception:  # noqa: BLE001
                continue
            for key in used:
                used[key] += float(required.get(key, 0))
    return (
        f"Logical resource usage: {used['CPU']:g}/{totals.get('CPU', 0):g} CPUs, "
        f"{used['GPU']:g}/{totals.get('GPU', 0):g} GPUs"
    )


class BoardCallback(Callback):
    """Driver side (Tune's controller): every trial's status, last per-round result and setting, and the
    resources in use, sent to the sweep's board at most every PUSH_S seconds and once more at the end."""

    def __init__(self, sweep: str):
        self.sweep = sweep
        self._board: Any = None
        self._looked_up = -LOOKUP_RETRY_S
        self._pushed = 0.0
        self._labels: dict[str, str] = {}
        self._totals: tuple[float, dict[str, float]] = (-LOOKUP_RETRY_S, {})

    def __getstate__(self) -> dict:  # pickled into tuner.pkl: by name, never a handle of a past Ray
        return {"sweep": self.sweep}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["sweep"])

    def _handle(self):
        now = time.monotonic()
        if self._board is None and now - self._looked_up >= LOOKUP_RETRY_S:
            self._looked_up = now
            self._board = _find_board(self.sweep)
        return self._board

    def _cluster(self) -> dict[str, float]:
        when, totals = self._totals
        if time.monotonic() - when >= LOOKUP_RETRY_S:
            try:
                import ray

                totals = {k: float(v) for k, v in ray.cluster_resources().items() if k in ("CPU", "GPU")}
            except Exception:  # noqa: BLE001
                pass
            self._totals = (time.monotonic(), totals)
        return totals

    def _row(self, trial) -> dict[str, Any]:
        if trial.trial_id not in self._labels:
            self._labels[trial.trial_id] = trial_setting(trial.config)
        result = trial.last_result or {}
        rounds = (trial.config or {}).get("rounds")
        return {
            "trial": trial.trial_id,
            "status": trial.status,
            "label": self._labels[trial.trial_id],
            "round": result.get("round"),
            "rounds": rounds if isinstance(rounds, int) else None,
            "acc": result.get("acc_val"),
            "eps": result.get("epsilon"),
            "complete": bool(result.get("cycle_complete")),
        }

    def push(self, trials: list, wait: bool = False) -> None:
        board = self._handle()
        if board is None:
            return
        self._pushed = time.monotonic()
        try:
            ref = board.tune.remote([self._row(t) for t in trials], resources_line(trials, self._cluster()))
            if wait:  # the last states are on the board before the driver reads it for the last time
                import ray

                ray.get(ref, timeout=10)
        except Exception:  # noqa: BLE001 - the console is never worth the sweep
            pass

    def on_step_end(self, iteration: int, trials: list, **info) -> None:
        if time.monotonic() - self._pushed >= PUSH_S:
            self.push(trials)

    def on_experiment_end(self, trials: list, **info) -> None:
        self.push(trials, wait=True)


def start_board(sweep: str) -> tuple[Any, str | None]:
    """(the sweep's board actor, None), or (None, why not; None without Ray). It needs no CPU of the
    trials' and dies with the driver; stop_board ends it."""
    import ray

    if not ray.is_initialized():  # never started here: a sweep connects first
        return None, None
    try:
        actor = ray.remote(num_cpus=0, max_restarts=0)(Board)
        board = actor.options(name=board_name(sweep), namespace=NAMESPACE).remote()
        return board, None
    except Exception as exc:  # noqa: BLE001 - e.g. a board of that name: another driver of this sweep
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def stop_board(board) -> None:
    if board is None:
        return
    try:
        import ray

        ray.kill(board)
    except Exception:  # noqa: BLE001
        pass


@contextlib.contextmanager
def console(sweep: str, verbose: bool):
    """Around Tuner.fit: the sweep's board and the live table. With --verbose, nothing: Ray's own output."""
    if verbose:
        yield
        return
    board, why = start_board(sweep)
    if board is None:
        if why:
            print(
                f"warning: no live table of the trials ({why}); --verbose shows Ray's own output",
                file=sys.stderr,
                flush=True,
            )
        yield
        return
    try:
        with Live(board):
            yield
    finally:
        stop_board(board)


class _Guard:
    """sys.stdout / sys.stderr (or a logging handler's stream) while the table is live on a terminal:
    what anything else writes first takes the table off the screen, so it is never overwritten; the
    next refresh draws the table again below it."""

    def __init__(self, stream: TextIO, live: Live):
        self._stream, self._live = stream, live

    def write(self, text: str) -> int:
        with self._live.lock:
            self._live.take_down()
            written = self._stream.write(text)
            if text:
                self._live.mid_line = not text.endswith("\n")
            return written

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class Live:
    """The driver's console while the trials run: a thread that reads the board and prints.

    On a terminal (``tty``): the table, redrawn in place at most every ``refresh_s`` seconds, never
    wider than the terminal nor taller than it. Otherwise: console_table.EventLog's lines."""

    def __init__(
        self,
        board,
        out: TextIO | None = None,
        tty: bool | None = None,
        refresh_s: float | None = None,
        every_s: float = TABLE_EVERY_S,
    ):
        self.board, self.out = board, out or sys.stdout
        self.tty = _is_terminal(self.out) if tty is None else tty
        self.refresh_s = refresh_s or (0.5 if self.tty else 1.0)
        self.events = EventLog(every_s=every_s)
        self.lock = threading.RLock()
        self.drawn, self.mid_line = 0, False
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._version = -1
        self._swapped: list[tuple[Any, str, Any]] = []

    # on a terminal, drawn lines are taken down before anything else is written
    def take_down(self) -> None:
        if self.drawn:
            self.out.write(erase(self.drawn))
            self.out.flush()
            self.drawn = 0

    def _guard_streams(self) -> None:
        for name in ("stdout", "stderr"):
            stream = getattr(sys, name)
            if stream.isatty():
                self._swapped.append((sys, name, stream))
                setattr(sys, name, _Guard(stream, self))
        # log records (Ray's, Tune's trial errors) go to handlers holding the stream they were made with
        for logger in (logging.getLogger(), logging.getLogger("ray"), logging.getLogger("ray.tune")):
            for handler in logger.handlers:
                stream = getattr(handler, "stream", None)
                if isinstance(handler, logging.StreamHandler) and stream is not None and _is_terminal(stream):
                    self._swapped.append((handler, "stream", stream))
                    handler.setStream(_Guard(stream, self))  # type: ignore[arg-type]

    def _restore_streams(self) -> None:
        for owner, name, stream in reversed(self._swapped):
            if owner is sys:
                setattr(sys, name, stream)
            else:
                owner.setStream(stream)
        self._swapped.clear()

    def __enter__(self) -> Live:
        if self.tty:  # self.out stays the stream itself: the table is written beside the guards
            self._guard_streams()
        self._thread = threading.Thread(target=self._run, name="psreval-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)
        try:
            self.refresh(final=True)
        finally:
            self._restore_streams()

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            self.refresh()

    def _snapshot(self) -> dict | None:
        try:
            import ray

            return ray.get(self.board.snapshot.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - the board is gone or slow: no refresh this time
            return None

    def refresh(self, final: bool = False) -> None:
        snap = self._snapshot()
        if snap is None:
            return
        rows, resources, seconds = snap["rows"], snap.get("resources", ""), time.monotonic() - self.start
        with self.lock:
            try:
                if self.tty:
                    self._draw(rows, resources, seconds)
                else:
                    lines = self.events.lines(rows, seconds, resources, final=final)
                    if lines:
                        self.out.write("".join(line + "\n" for line in lines))
                        self.out.flush()
            except Exception:  # noqa: BLE001 - a closed or broken console costs the table only
                pass

    def _draw(self, rows: list, resources: str, seconds: float) -> None:
        size = shutil.get_terminal_size((WIDTH, 24))
        width = min(WIDTH, size.columns - 1)
        frame = [*header(rows, seconds, resources, width), *table(rows, width=width, max_rows=max(3, size.lines - 5))]
        text = redraw(frame, self.drawn)
        if self.mid_line:  # something else left its line open: the table starts below it
            text, self.mid_line = "\n" + text, False
        self.out.write(text)
        self.out.flush()
        self.drawn = len(frame)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # noqa: BLE001 - closed or not a file
        return False
