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


# Whole modules that start Ray, servers, browsers or subprocess sweeps, or train for many rounds:
# `make test` runs them, `make test-fast` (-m "not slow") leaves them out.
SLOW_MODULES = {
    "test_analysis",
    "test_cluster",
    "test_sweeps",
    "test_mlflow_ui",
    "test_safety_sweeps",
    "test_safety_bad_inputs",
    "test_safety_tracking_restart",
    "test_cli_errors",
    "test_install",
    "test_recipes",
    "test_cycle",
}
# Fixtures that run a sweep or a long training: a test using one is slow wherever it lives.
SLOW_FIXTURES = {"smoke_sweep", "dp_runs", "dp_cycles"}
# Single tests of otherwise fast modules that take seconds each (measured on 2 cores): the fast
# tier keeps a cheaper test of the same code beside each.
SLOW_TESTS = {
    "test_safety_store::test_parallel_first_use_of_a_new_store",
    "test_safety_faults::test_sweep_trial_with_corrupt_latest_checkpoint_resumes_from_the_previous_one",
    "test_safety_faults::test_disk_full_on_the_run_folder_ends_runs_failed_with_one_line",
    "test_fast_paths::test_cached_rdp_epsilon_is_bit_identical",
    "test_precision::test_a_bf16_model_trains_far_above_chance_and_near_fp32",  # 20 rounds; bf16 emulated on AVX2
    "test_privacy::test_adversarial_training_under_dp_leaves_opacus_untouched",
    "test_medmnist::test_cli_refuses_a_pickle_carrying_npz_in_one_line",
    "test_medmnist::test_short_cycle_on_tiny_medmnist",
    "test_models::test_forward_and_static_quantization",
    "test_claims::test_write_reproduction",
    "test_claims::test_scale_warning_names_what_applies_with_its_numbers",
    "test_safety_faults::test_trials_failed_by_a_full_disk_end_the_sweep_with_one_line",
    "test_safety_faults::test_sweep_stopped_by_a_fault_closes_every_run_with_one_line",
    "test_sweep_files::test_searcher_pickles_by_reference",
    "test_mlflow_native::test_sqlite_store_keeps_artifacts_beside_the_database",
    "test_idx::test_real_fashion_mnist_files_and_a_short_cycle",
    "test_xseed::test_psreval_xseed_on_a_store",
    "test_evaluate::test_new_attacks_stay_in_eps_ball_and_are_seeded",
    "test_evaluate::test_autoattack_is_at_least_as_strong_as_pgd_on_the_same_images",
    "test_evaluate::test_masking_checks_flag_a_masking_model_and_not_a_plain_one",
    # inductor compiles C++ for the lowered int8 model: 3-30 s with a warm compile cache, more on a fresh machine
    "test_quantize::test_lowered_int8_predicts_as_the_reference_graph",
    "test_quantize::test_latency_metrics_exclude_the_compile",
}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__
        if (
            module in SLOW_MODULES
            or SLOW_FIXTURES & set(item.fixturenames)
            or f"{module}::{item.originalname}" in SLOW_TESTS
        ):
            item.add_marker(pytest.mark.slow)


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
