"""DP-SGD accounting: the epsilon a federation reports is the epsilon it spent.

Every DP run here is a short digits federation (2 clients, cnn, rounds 2-3),
so the numbers are real Opacus numbers, not mocks. Opacus calibrates the
noise multiplier by bisection with tolerance 0.01, so a calibrated run spends
an epsilon in (target - 0.01, target]; the tests allow target - 0.02.
"""

from __future__ import annotations

import math

import pytest
import torch
from opacus import GradSampleModule
from opacus.accountants import PRVAccountant, RDPAccountant

from psreval_tune.config import ConfigError
from psreval_tune.cycle import _fresh_model
from psreval_tune.federated import Federation
from psreval_tune.privacy import calibrate_noise

CALIBRATION_SLACK = 0.02  # Opacus' bisection tolerance is 0.01


def _federation(cfg, data) -> Federation:
    return Federation(cfg, _fresh_model(cfg, data), data, "cpu")


def _batches(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def _recompute(accountant_cls, noise: float, sample_rate: float, steps: int, delta: float) -> float:
    acc = accountant_cls()
    acc.history = [(noise, sample_rate, steps)]
    return float(acc.get_epsilon(delta))


@pytest.fixture(scope="module")
def dp_runs(small_cfg, digits):
    """One trained 2-round DP federation per (accountant, target), built lazily and kept.

    Returns (cfg, fed, report, client_reports); reports are computed once
    because PRV's get_epsilon costs ~0.3 s a call.
    """
    cache: dict[tuple[str, float], tuple] = {}

    def get(accountant: str, target: float):
        key = (accountant, target)
        if key not in cache:
            cfg = small_cfg.replace(epsilon=target, accountant=accountant, rounds=2)
            fed = _federation(cfg, digits)
            fed.train()
            cache[key] = (cfg, fed, fed.privacy(), [c.private.report(cfg) for c in fed.clients])
        return cache[key]

    return get


@pytest.mark.slow  # dp_runs: six 2-round DP trainings
@pytest.mark.timeout(300)
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [1.7, 3.4, 7.0])
def test_epsilon_spent_is_calibrated_to_target(dp_runs, accountant, target):
    cfg, fed, report, client_reports = dp_runs(accountant, target)
    assert report is not None
    # never over budget, and not over-noised: the budget is (almost) all spent
    assert report.epsilon_spent <= target
    assert report.epsilon_spent >= target - CALIBRATION_SLACK
    assert report.epsilon_spent >= 0.8 * target
    assert report.delta == cfg.delta and report.accountant == accountant
    # every client individually stays within the budget too
    for r in client_reports:
        assert target - CALIBRATION_SLACK <= r.epsilon_spent <= target
    # the federation's guarantee is its weakest client's; the last round's epsilon is it
    assert report.epsilon_spent == max(r.epsilon_spent for r in client_reports)
    assert fed.history[-1].epsilon == report.epsilon_spent


@pytest.mark.slow  # dp_runs: six 2-round DP trainings
@pytest.mark.timeout(300)
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("target", [1.7, 3.4, 7.0])
def test_reported_numbers_determine_epsilon(dp_runs, accountant, target):
    """(noise_multiplier, sample_rate, dp_steps) recompute the reported epsilon."""
    cfg, fed, report, _ = dp_runs(accountant, target)
    n_worst = len(fed.clients[0])  # iid split of 1294 examples: both clients hold 647
    assert [len(c) for c in fed.clients] == [647, 647]
    batches = _batches(n_worst, cfg.batch_size)
    assert batches == 6
    assert report.dp_steps == cfg.rounds * cfg.local_epochs * batches == 12
    assert report.sample_rate == pytest.approx(1 / batches)
    assert report.noise_multiplier > 0
    rdp = _recompute(RDPAccountant, report.noise_multiplier, report.sample_rate, report.dp_steps, report.delta)
    if accountant == "rdp":
        assert rdp == pytest.approx(report.epsilon_spent, rel=1e-9)
    else:
        prv = _recompute(PRVAccountant, report.noise_multiplier, report.sample_rate, report.dp_steps, report.delta)
        assert prv == pytest.approx(report.epsilon_spent, rel=1e-6)
        # RDP is the looser bound: the same mechanism costs more epsilon under it
        assert rdp > report.epsilon_spent
    # the accountant's own record agrees with the reported step count
    for client in fed.clients:
        history = client.private.engine.accountant.history
        assert sum(entry[-1] for entry in history) == report.dp_steps
        assert {(e[0], e[1]) for e in history} == {(report.noise_multiplier, report.sample_rate)}


@pytest.mark.slow  # dp_runs: six 2-round DP trainings
@pytest.mark.timeout(300)
@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_more_budget_means_less_noise(dp_runs, accountant):
    sigmas = [dp_runs(accountant, e)[2].noise_multiplier for e in (1.7, 3.4, 7.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2] > 0, sigmas
    if accountant == "rdp":  # (PRV calibration costs seconds; once is enough)
        # the noise used is exactly what calibration asks for at q = 1/6, 12 steps
        assert calibrate_noise(dp_runs(accountant, 3.4)[0], 1 / 6, 12) == sigmas[1]


@pytest.mark.timeout(300)
def test_accountant_accumulates_across_rounds(small_cfg, digits):
    """Per-round epsilon grows strictly and equals RDP after r rounds of steps (no reset per round)."""
    cfg = small_cfg.replace(epsilon=3.4, accountant="rdp", rounds=3)
    fed = _federation(cfg, digits)
    seen = []
    fed.train(on_round=lambda r: seen.append(r.round))
    assert seen == [1, 2, 3]
    eps = [r.epsilon for r in fed.history]
    assert len(eps) == 3
    assert all(a < b for a, b in zip(eps, eps[1:])), eps
    report = fed.privacy()
    assert eps[-1] == report.epsilon_spent
    per_round_steps = cfg.local_epochs * _batches(647, cfg.batch_size)
    for r, e in enumerate(eps, start=1):
        expected = _recompute(
            RDPAccountant, report.noise_multiplier, report.sample_rate, r * per_round_steps, cfg.delta
        )
        assert e == pytest.approx(expected, rel=1e-9)
    assert eps[0] < 0.9 * eps[-1]  # one round of three is far from the whole budget
    assert 3.4 - CALIBRATION_SLACK <= eps[-1] <= 3.4


@pytest.mark.timeout(120)
def test_nonprivate_reports_no_epsilon(small_cfg, digits):
    cfg = small_cfg.replace(rounds=1)
    assert cfg.epsilon is None
    fed = _federation(cfg, digits)
    fed.train()
    assert fed.privacy() is None
    assert [r.epsilon for r in fed.history] == [None]
    assert all(c.private is None for c in fed.clients)
    assert not any(isinstance(c.module, GradSampleModule) for c in fed.clients)


@pytest.mark.timeout(120)
def test_unreachable_epsilon_raises_config_error(small_cfg, digits):
    # RDP cannot go below ~log(1/delta)/(alpha_max - 1) ~ 0.18 whatever the noise
    cfg = small_cfg.replace(epsilon=0.01, accountant="rdp", rounds=2)
    with pytest.raises(ConfigError, match=r"epsilon=0\.01 is not reachable"):
        _federation(cfg, digits)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_adversarial_training_under_dp_leaves_opacus_untouched(small_cfg, digits):
    """threat=adv_training + DP: unequal clients, examples generated on the plain global model."""
    target = 3.4
    cfg = small_cfg.replace(epsilon=target, threat="adv_training", adv_fraction=0.3, rounds=2, local_epochs=2)
    fed = _federation(cfg, digits)
    adv = fed.clients[cfg.adversary_client]
    honest = fed.clients[1 - cfg.adversary_client]
    assert (len(adv), len(honest)) == (388, 906)  # round(0.3 * 1294) and the rest

    fed.train()
    assert all(math.isfinite(r.train_loss) for r in fed.history)

    # the adversary's training data really is adversarial: perturbed within eps, true labels kept
    x_adv, y_adv = adv.dataset.tensors
    assert not torch.equal(x_adv, adv.x_clean)
    assert float((x_adv - adv.x_clean).abs().max()) <= cfg.attack_eps + 1e-6
    assert torch.equal(y_adv, adv.y_clean)

    # each client: steps are exactly its own optimizer steps, epsilon recomputes from them
    reports = []
    for client in fed.clients:
        r = client.private.report(cfg)
        expected_steps = cfg.rounds * cfg.local_epochs * _batches(len(client), cfg.batch_size)
        assert r.dp_steps == expected_steps
        assert r.sample_rate == pytest.approx(1 / _batches(len(client), cfg.batch_size))
        recomputed = _recompute(RDPAccountant, r.noise_multiplier, r.sample_rate, expected_steps, cfg.delta)
        assert r.epsilon_spent == pytest.approx(recomputed, rel=1e-9)
        assert target - CALIBRATION_SLACK <= r.epsilon_spent <= target
        reports.append(r)
    assert [r.dp_steps for r in reports] == [2 * 2 * 4, 2 * 2 * 8]  # ceil(388/128)=4, ceil(906/128)=8

    worst = max(reports, key=lambda r: r.epsilon_spent)
    report = fed.privacy()
    assert report == worst
    assert report.epsilon_spent <= target

    # the global model (the attack's target) is never wrapped or hooked by Opacus
    assert not isinstance(fed.model, GradSampleModule)
    for m in fed.model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks

    # generating a fresh round of adversarial examples touches neither per-sample
    # gradients, nor gradients, nor the accountant of the adversary client
    adv.optimizer.zero_grad(set_to_none=True)
    history_before = list(adv.private.engine.accountant.history)
    eps_before = adv.private.report(cfg).epsilon_spent
    fed._poison(adv, rnd=99)
    for p in adv.module.parameters():
        assert getattr(p, "grad_sample", None) is None
        assert p.grad is None
    for p in fed.model.parameters():
        assert p.grad is None
    assert adv.private.engine.accountant.history == history_before
    assert adv.private.report(cfg).epsilon_spent == eps_before
