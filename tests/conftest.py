"""Shared fixtures: small configs and a trained digits model, built once per session."""

from __future__ import annotations

import pytest
import torch

from psreval_tune.config import CycleConfig


@pytest.fixture(scope="session")
def small_cfg() -> CycleConfig:
    """A digits cycle that trains in about a second on 2 CPU cores."""
    return CycleConfig(dataset="digits", arch="cnn", rounds=3, eval_samples=64, attack_repeats=2,
                       eval_attacks=("PGD", "FGSM"), device="cpu")


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


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
