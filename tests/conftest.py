"""Shared fixtures: small configs and a trained digits model, built once per session."""

from __future__ import annotations

import pytest
import torch

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


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: every collected test is checked
def pytest_collection_modifyitems(items):
    if unmarked := unmarked_slow_fixture_users(items):
        raise pytest.UsageError(
            "not marked slow but using a slow fixture (tests/conftest.py SLOW_FIXTURES), add @pytest.mark.slow: "
            + "; ".join(unmarked)
        )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory):
    """`sweeps/paper_grid.py --smoke` run once as a user runs it: (run dir, CompletedProcess).
    The default local MLflow store is RUN_DIR/mlflow.db; the sweep is named "smoke"."""
    from sweep_helpers import run_script

    run_dir = tmp_path_factory.mktemp("smoke")
    proc = run_script("sweeps/paper_grid.py", "--smoke", "--run-dir", str(run_dir), "--name", "smoke", timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return run_dir, proc
