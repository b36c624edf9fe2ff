"""A new user's install: the package as a wheel in a fresh venv, used from an unrelated directory.

`pip install 'psreval_tune-*.whl[all]'` plus the one documented torchattacks command must
give a working `psreval run`, `psreval grid --smoke` and `psreval report`, with nothing read
from the checkout. Without torchattacks, `psreval run` stops in seconds with one line naming
the install command, before any training. Packages come from pip's cache (filled by `make`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TORCHATTACKS = re.search(r"^TORCHATTACKS := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _env(venv: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "PSREVAL_", "MLFLOW_"))}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    return env


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding the wheel built from this checkout with its [all] extras (no torchattacks yet)."""
    tmp = tmp_path_factory.mktemp("install")
    env = _env(Path(sys.executable).parent)
    start = time.monotonic()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp / "wheels"),
            str(ROOT),
        ],
        tmp,
        env,
        300,
    )
    wheel = next((tmp / "wheels").glob("psreval_tune-*.whl"))
    _run([sys.executable, "-m", "venv", str(tmp / "venv")], tmp, env, 120)
    # --no-compile: no .pyc for all of torch, Ray and MLflow up front (110 -> 65 s here); imports compile what they use
    _run([str(tmp / "venv" / "bin" / "pip"), "install", "-q", "--no-compile", f"{wheel}[all]"], tmp, env, 1200)
    print(f"wheel + venv + pip install [all]: {time.monotonic() - start:.0f} s")
    return tmp / "venv"


def test_missing_torchattacks_is_one_line_before_any_training(venv, tmp_path):
    env = _env(venv)
    start = time.monotonic()
    proc = subprocess.run(
        [str(venv / "bin" / "psreval"), "run", "--rounds", "1", "--out", "r"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: the torchattacks package is not installed; install it with: pip install --no-deps {TORCHATTACKS} "
        "(see README, Install choices)"
    ]
    assert seconds < 10, f"took {seconds:.1f} s"
    assert not (tmp_path / "r").exists() and not list(tmp_path.iterdir())


@pytest.mark.ray
def test_installed_tool_runs_a_cycle_a_grid_and_a_report_from_anywhere(venv, tmp_path):
    env = _env(venv)
    psreval = str(venv / "bin" / "psreval")
    _run([str(venv / "bin" / "pip"), "install", "-q", "--no-deps", TORCHATTACKS], tmp_path, env, 300)
    work = tmp_path / "elsewhere"  # nothing of the checkout here or on sys.path
    work.mkdir()
    probe = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import psreval_tune, psreval_tune.analysis, psreval_tune.sweeps.engine; print(psreval_tune.__file__)",
        ],
        work,
        env,
        120,
    )
    assert str(venv) in probe.stdout and str(ROOT) not in probe.stdout

    _run(
        [psreval, "run", "--rounds", "1", "--eval-samples", "32", "--eval-attacks", "FGSM", "--out", "cycle"],
        work,
        env,
        600,
    )
    assert (work / "cycle" / "metrics.json").is_file()

    _run([psreval, "grid", "--smoke", "--name", "smoke"], work, env, 900)
    assert (work / "runs" / "mlflow.db").is_file()

    report = _run([psreval, "report", "--sweep", "smoke", "--out", "report"], work, env, 300)
    assert (work / "report" / "report.html").is_file(), report.stdout
    assert not (work / "mlruns").exists()
