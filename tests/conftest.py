"""Shared fixtures: small configs and a trained digits model, built once per session."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import xdist_units

from psreval_tune.config import CycleConfig

# Fast, fixed training for tests of everything but the recipes: a few large
# steps per round that the cnn survives (recipes.toml trains better, slower).
# Pinned here so a recipe change never moves these tests' numbers.
FAST_TRAINING = dict(
    local_epochs=1,
    batch_size=128,
    lr=0.2,
    momentum=0.9,
    lr_schedule="constant",
    warmup_rounds=0,
    reset_optimizer=False,
    max_grad_norm=1.0,
)


@pytest.fixture(scope="session")
def small_cfg() -> CycleConfig:
    """A digits cycle that trains in about a second on 2 CPU cores."""
    return CycleConfig(
        dataset="digits",
        arch="cnn",
        rounds=3,
        eval_samples=64,
        attack_repeats=2,
        eval_attacks=("PGD", "FGSM"),
        device="cpu",
        **FAST_TRAINING,
    )


@pytest.fixture(scope="session")
def digits(small_cfg):
    from psreval_tune.data import load_data

    return load_data(small_cfg)


@pytest.fixture(scope="session")
def trained_cnn(small_cfg, digits):
    """A non-private cnn trained federated on digits (about 90% clean accuracy)."""
    from psreval_tune.cycle import _fresh_model
    from psreval_tune.federated import Federation

    cfg = small_cfg.replace(rounds=10)
    fed = Federation(cfg, _fresh_model(cfg, digits), digits, "cpu")
    model = fed.train().eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


# Tiers. A test is slow (`make test` runs it; `make test-fast`, -m "not slow", leaves it out) by its own marker
# only, beside it: `pytestmark = pytest.mark.slow` atop a module that starts Ray, servers, browsers or subprocess
# sweeps, or trains for many rounds; `@pytest.mark.slow` on a single test of an otherwise fast module that takes
# seconds (measured on 2 cores), the fast tier keeping a cheaper test of the same code beside it.
# Fixtures that run a sweep or a long training: every test using one (directly or through another fixture) must
# carry the slow marker itself, or collection stops with an error naming it. tests/test_tiers.py checks that each
# name here is a fixture defined under tests/ and used by some test.
SLOW_FIXTURES = frozenset({"smoke_sweep", "dp_runs", "dp_cycles"})


def unmarked_slow_fixture_users(items) -> list[str]:
    """'node id (fixtures)' of each item that uses a SLOW_FIXTURES fixture but is not marked slow."""
    unmarked = []
    for item in items:
        used = SLOW_FIXTURES & set(getattr(item, "fixturenames", ()))
        if used and item.get_closest_marker("slow") is None:
            unmarked.append(f"{item.nodeid} ({', '.join(sorted(used))})")
    return unmarked


def ray_but_not_slow(items) -> list[str]:
    """Node ids of the items marked ray but not slow (starting Ray takes seconds: every such test is slow)."""
    return [item.nodeid for item in items if item.get_closest_marker("ray") and not item.get_closest_marker("slow")]


# The parallel suite (`make test`: pytest -n 2): xdist_units.py says which tests run together and why (the
# Ray tests as one unit on one worker; a module-scoped fixture's module as one unit).
#
# Two Rays may still meet (the Ray tests of a module unit run beside the Ray group), and that is safe: each
# worker's Ray keeps its sessions and address file in its own temp dir (RAY_TMPDIR, read by Ray, inherited by
# subprocesses), local clusters take free ports, and nothing here runs `ray stop`. The one thing a second Ray
# breaks is `--address auto` finding no cluster (Ray also scans the process table for any GCS): a test marked
# ray(alone=True) takes RAY_LOCK exclusively; every other ray test (and a RAY_FIXTURES fixture) holds it shared.
# RAY_FIXTURES: session fixtures that start Ray; their users must be marked ray (built once, in the Ray group).
RAY_TMPDIR = Path(tempfile.gettempdir()) / f"ray-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}"
os.environ["RAY_TMPDIR"] = str(RAY_TMPDIR)
RAY_LOCK = Path(tempfile.gettempdir()) / "psreval-tests-ray.lock"
RAY_FIXTURES = frozenset({"smoke_sweep"})


def pytest_xdist_make_scheduler(config, log):
    return xdist_units.scheduler(config, log)


def misplaced_ray_markers(items) -> list[str]:
    """Node ids whose ray marker the scheduler, reading the files, does not see (or sees where pytest does not)."""
    out = []
    for item in items:
        unit = xdist_units.unit(item.nodeid)
        if unit != item.nodeid.split("::", 1)[0] and (unit == xdist_units.RAY_GROUP) != bool(
            item.get_closest_marker("ray")
        ):
            out.append(item.nodeid)
    return out


def tier(item) -> int:
    return 0 if item.get_closest_marker("ray") else 1 if item.get_closest_marker("slow") else 2


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: every collected test is checked
def pytest_collection_modifyitems(items):
    if unmarked := unmarked_slow_fixture_users(items):
        raise pytest.UsageError(
            "not marked slow but using a slow fixture (tests/conftest.py SLOW_FIXTURES), add @pytest.mark.slow: "
            + "; ".join(unmarked)
        )
    if fast_ray := ray_but_not_slow(items):
        raise pytest.UsageError("marked ray but not slow (every test that starts Ray is slow): " + "; ".join(fast_ray))
    if unmarked := [i.nodeid for i in items if RAY_FIXTURES & set(i.fixturenames) and not i.get_closest_marker("ray")]:
        raise pytest.UsageError(
            "not marked ray but using a fixture that starts Ray (RAY_FIXTURES): " + "; ".join(unmarked)
        )
    if misplaced := misplaced_ray_markers(items):
        raise pytest.UsageError(
            "a ray marker the parallel scheduler cannot read (put @pytest.mark.ray on the test function or class, "
            "or in the module's pytestmark; tests/xdist_units.py): " + "; ".join(misplaced)
        )
    if os.environ.get("PYTEST_XDIST_WORKER"):  # workers only: one process keeps the files' order
        # the Ray tests start first, the fast ones fill the end; a unit keeps its own order (its tier is its
        # first one's: a module's tests may depend on their order, as test_install's do)
        first: dict[str, int] = {}
        for item in items:
            first.setdefault(xdist_units.unit(item.nodeid), tier(item))
        items.sort(key=lambda item: first[xdist_units.unit(item.nodeid)])


@contextlib.contextmanager
def ray_lock(alone: bool = False):
    """Hold RAY_LOCK (shared, or exclusive when ``alone``) across this suite's workers."""
    with open(RAY_LOCK, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ray_sessions() -> set[str]:
    return {p.name for p in RAY_TMPDIR.glob("session_2*")}


def unmarked_ray_start(item, before: set[str], after: set[str]) -> str | None:
    """Why ``item`` fails (it started Ray, sessions ``after`` - ``before``, without the ray marker), or None."""
    new = sorted(after - before)
    if not new or item.get_closest_marker("ray") is not None:
        return None
    return (
        f"started Ray (new session {new[0]} in {RAY_TMPDIR}) but is not marked ray: add @pytest.mark.ray beside "
        "@pytest.mark.slow (tests/conftest.py)"
    )


@pytest.fixture(autouse=True)
def _ray_where_marked(request):
    """A ray test holds RAY_LOCK while it runs. A test that starts Ray without the marker fails, naming it: in
    the parallel suite it would run beside a ray(alone=True) test that needs no other Ray on the machine."""
    marker = request.node.get_closest_marker("ray")
    before = ray_sessions()
    with ray_lock(alone=marker.kwargs.get("alone", False)) if marker else contextlib.nullcontext():
        yield
    if why := unmarked_ray_start(request.node, before, ray_sessions()):
        pytest.fail(why, pytrace=False)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An MLflow SQLite store with its tables made and nothing in them, made once: a test that needs a store
    but is not about making one works on a copy (making the tables takes a second on 2 idle cores, ten on busy
    ones; copying the file, ms)."""
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("empty-store")
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder / "mlflow.db"


class SmokeSweep(NamedTuple):
    run_dir: Path
    proc: subprocess.CompletedProcess
    sockets: set  # (process, proto, ip, port): what its processes listened on while it ran (proc_sockets)
    left: list  # names of its processes alive after it ended


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> SmokeSweep:
    """`sweeps/paper_grid.py --smoke` run once as a user runs it, watched while it runs (sweep_helpers.run_watched).
    The default local MLflow store is RUN_DIR/mlflow.db; the sweep is named "smoke"."""
    from sweep_helpers import run_watched

    run_dir = tmp_path_factory.mktemp("smoke")
    logs = tmp_path_factory.mktemp("smoke-logs")
    with ray_lock():  # a session fixture is set up before the test's own (autouse) lock: RAY_FIXTURES
        args = ("--smoke", "--run-dir", str(run_dir), "--name", "smoke")
        proc, sockets, left = run_watched("sweeps/paper_grid.py", *args, folder=logs, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return SmokeSweep(run_dir, proc, sockets, left)
