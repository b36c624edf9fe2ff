"""``psreval ...`` in the test process, as the console script would run it, and as a real process to compare.

Starting ``psreval`` costs ~1.5 s (argparse, config) and ~4.5 s once torch loads, on 2 shared cores; a
table of bad inputs pays that per row. ``in_process`` runs psreval_tune.console.main(argv) here instead and
returns what a user would see: the exit status (a returned code or a SystemExit's), stdout and stderr as
written to file descriptors 1 and 2 (capfd: print() and anything written below Python alike), with
Python's default warning filters and warnings printed to stderr, as in a fresh ``psreval`` process (pytest
would otherwise record them out of sight). Global state a run may touch is put back after it: sys.argv
(console.entry rewrites argv[0]), the working directory, the environment variables that pick a store or
data, the warning filters, the root logger (emptied for the run, so a logged warning reaches stderr
through logging.lastResort as it would), and the torch / numpy / random generators (run_cycle seeds
torch's).

``start`` / ``finish`` run the same argv as processes of the installed console script (several at once);
each file that uses ``in_process`` keeps a test comparing the two on a few rows (exit status, stderr).
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import warnings
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# Variables that would point a run at a store, a cluster or data outside the test (cleared for both forms).
ENV_DROP = (
    "MLFLOW_TRACKING_URI",
    "PSREVAL_RAY_ADDRESS",
    "PSREVAL_STORAGE",
    "PSREVAL_RUN_DIR",
    "PSREVAL_DATA_ROOT",
    "RAY_ADDRESS",
    "PSREVAL_NODE_IP",
)
# Python 3's filters in a process started without -W or PYTHONWARNINGS (warnings.filters at startup).
_PYTHON_DEFAULT_FILTERS = (
    ("default", DeprecationWarning, "__main__"),
    ("ignore", DeprecationWarning, ""),
    ("ignore", PendingDeprecationWarning, ""),
    ("ignore", ImportWarning, ""),
    ("ignore", ResourceWarning, ""),
)


class Outcome(NamedTuple):
    code: int
    out: str
    err: str


def _exit_code(exc: SystemExit) -> int:
    """The status a process exiting with this SystemExit would have (as the interpreter maps it)."""
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def _show_on_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    (file or sys.stderr).write(warnings.formatwarning(message, category, filename, lineno, line))


def in_process(
    argv: Sequence[str],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Outcome:
    """`psreval ARGV` run by psreval_tune.console.main in this process, in CWD (default: the current one)
    with ENV added to the environment."""
    import torch

    from psreval_tune import console

    capfd.readouterr()  # only this run's output
    states = (torch.random.get_rng_state(), np.random.get_state(), random.getstate())
    with monkeypatch.context() as mp, warnings.catch_warnings():
        mp.setattr(sys, "argv", ["psreval", *argv])
        mp.chdir(cwd if cwd is not None else os.getcwd())  # put back after the run, even if it changes it
        for var in ENV_DROP:
            mp.delenv(var, raising=False)
        for var, value in (env or {}).items():
            mp.setenv(var, value)
        # A fresh process's root logger: no handlers (pytest's capture ones), so a record at WARNING or above
        # goes to stderr through logging.lastResort as it would for a user.
        mp.setattr(logging.root, "handlers", [])
        mp.setattr(logging.root, "level", logging.WARNING)
        warnings.resetwarnings()
        for action, category, module in reversed(_PYTHON_DEFAULT_FILTERS):
            warnings.filterwarnings(action, category=category, module=module)
        mp.setattr(warnings, "showwarning", _show_on_stderr)
        try:
            code = console.main(list(argv))
        except SystemExit as exc:
            code = _exit_code(exc)
        finally:
            torch.random.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
    out, err = capfd.readouterr()
    return Outcome(code, out, err)


def console_script() -> list[str]:
    """The installed `psreval` beside this interpreter (the console script a user runs)."""
    script = Path(sys.executable).parent / "psreval"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "psreval_tune.console"]


def start(argv: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`psreval ARGV` as a process of the console script, in CWD, with ENV added to the environment."""
    base = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    base.update(PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.Popen(
        [*console_script(), *argv], cwd=cwd, env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish(proc: subprocess.Popen, timeout: float = 180) -> Outcome:
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out, err)
