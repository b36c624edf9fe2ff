"""Client-level DP (DP-FedAvg at the server, client_dp.py) and the accountants registry.

No model is trained: the mechanism is checked on tiny update matrices, and
the noise on one long vector, so the file runs in seconds.
"""

from __future__ import annotations

import io

import pytest
import torch
from opacus.accountants import GaussianAccountant, PRVAccountant, RDPAccountant

from psreval_tune import accountants
from psreval_tune.client_dp import ClientDP
from psreval_tune.config import ConfigError, CycleConfig


def _cfg(**changes) -> CycleConfig:
    base = dict(
        dataset="digits", epsilon=2.0, dp_mode="client", num_clients=20, client_fraction=0.5, rounds=10, client_clip=1.0
    )
    base.update(changes)
    return CycleConfig(**base)


@pytest.fixture(scope="module")
def cfg() -> CycleConfig:
    return _cfg()


def test_config_builds(cfg):
    assert (cfg.dp_mode, cfg.num_clients, cfg.client_fraction, cfg.rounds, cfg.client_clip) == (
        "client",
        20,
        0.5,
        10,
        1,
    )


def test_clip_bounds_each_row_and_leaves_small_rows_alone(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    big = torch.zeros(5, dtype=torch.float64)
    big[0] = 100.0
    small = torch.tensor([0.1, -0.2, 0.3, 0.0, 0.05], dtype=torch.float64)
    at_bound = torch.tensor([0.6, 0.8, 0.0, 0.0, 0.0], dtype=torch.float64)  # norm exactly 1
    bad = torch.tensor([float("nan"), 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    clipped = dp.clip(torch.stack([big, small, at_bound, bad]))
    norms = torch.linalg.vector_norm(clipped, dim=1)
    assert (norms <= cfg.client_clip * (1 + 1e-12)).all()
    assert norms[0] == pytest.approx(cfg.client_clip, rel=1e-12)  # clipped onto the bound, direction kept
    assert torch.equal(clipped[0] / norms[0], big / big.norm())
    assert torch.equal(clipped[1], small)
    assert torch.equal(clipped[2], at_bound)
    assert torch.equal(clipped[3], torch.zeros(5, dtype=torch.float64))  # non-finite client contributes nothing


def test_a_huge_update_moves_the_sum_by_at_most_c(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    others = torch.full((3, 4), 0.1, dtype=torch.float64)
    huge = torch.full((1, 4), 1e6, dtype=torch.float64)
    with_huge = dp.clip(torch.cat([others, huge])).sum(0)
    without = dp.clip(others).sum(0)
    assert torch.linalg.vector_norm(with_huge - without) <= cfg.client_clip * (1 + 1e-12)


def test_noise_std_is_sigma_c_over_qn(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    d = 200_000
    expected = dp.noise_multiplier * cfg.client_clip / (cfg.client_fraction * cfg.num_clients)
    assert dp.noise_std == pytest.approx(expected)
    empty = dp.aggregate(torch.zeros(0, d, dtype=torch.float64))  # an empty draw: noise only
    assert empty.shape == (d,) and empty.dtype == torch.float64
    assert empty.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(empty.mean().item()) < 5 * expected / d**0.5
    # With clients, the fixed denominator q*N divides the clipped sum: the residual is that same noise.
    updates = torch.full((3, d), 0.001, dtype=torch.float64)  # each row norm ~0.45 < C: unclipped
    out = dp.aggregate(updates)
    residual = out - updates.sum(0) / (cfg.client_fraction * cfg.num_clients)
    assert residual.std().item() == pytest.approx(expected, rel=0.05)
    assert abs(residual.mean().item()) < 5 * expected / d**0.5


def _run(dp: ClientDP, rounds: int, start: int = 0, d: int = 7) -> list[torch.Tensor]:
    out = []
    for rnd in range(start, start + rounds):
        ids = dp.sample(rnd)
        gen = torch.Generator().manual_seed(1000 + rnd)
        updates = torch.randn(20, d, generator=gen, dtype=torch.float64)[ids] * 2.0
        out.append(dp.aggregate(updates))
    return out


def test_epsilon_after_all_rounds_is_at_most_and_close_to_target(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    assert dp.report().epsilon_spent == 0.0
    _run(dp, cfg.rounds)
    rep = dp.report()
    assert rep.epsilon_spent <= cfg.epsilon
    assert rep.epsilon_spent >= 0.95 * cfg.epsilon
    assert (rep.dp_steps, rep.sample_rate, rep.delta, rep.accountant, rep.clipping) == (
        cfg.rounds,
        cfg.client_fraction,
        cfg.delta,
        "rdp",
        "client",
    )
    assert rep.noise_multiplier == dp.noise_multiplier > 0


GDP_WARNING = "ignore:GDP accounting is experimental:UserWarning"


@pytest.mark.filterwarnings(GDP_WARNING)
@pytest.mark.parametrize("name, cls", [("rdp", RDPAccountant), ("gdp", GaussianAccountant)])
def test_epsilon_recomputes_from_the_logged_numbers(name, cls):
    cfg = _cfg(accountant=name)
    dp = ClientDP(cfg, cfg.num_clients)
    _run(dp, cfg.rounds)
    rep = dp.report()
    fresh = cls()
    fresh.history = [(rep.noise_multiplier, rep.sample_rate, rep.dp_steps)]
    assert fresh.get_epsilon(rep.delta) == rep.epsilon_spent


def test_resume_continues_accountant_and_noise_exactly(cfg):
    whole = ClientDP(cfg, cfg.num_clients)
    expected = _run(whole, 5)

    first = ClientDP(cfg, cfg.num_clients)
    got = _run(first, 3)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    resumed = ClientDP(cfg, cfg.num_clients)
    resumed.load_state_dict(state)
    assert resumed.report().dp_steps == 3
    got += _run(resumed, 2, start=3)

    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert resumed.report() == whole.report()
    assert resumed.accountant.history == whole.accountant.history


@pytest.mark.filterwarnings(GDP_WARNING)
def test_resume_refuses_another_accountant(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    _run(dp, 1)
    other = ClientDP(_cfg(accountant="gdp"), cfg.num_clients)
    with pytest.raises(ConfigError) as err:
        other.load_state_dict(dp.state_dict())
    assert "\n" not in str(err.value)


def test_sample_is_deterministic_and_about_qn(cfg):
    dp = ClientDP(cfg, cfg.num_clients)
    later = dp.sample(5)
    first = dp.sample(3)
    fresh = ClientDP(cfg, cfg.num_clients)
    assert fresh.sample(3) == first  # independent of call order and of the instance
    assert dp.sample(5) == later
    assert all(0 <= i < cfg.num_clients for i in first) and first == sorted(set(first))
    draws = [dp.sample(r) for r in range(2000)]
    mean = sum(len(ids) for ids in draws) / len(draws)
    assert mean == pytest.approx(cfg.client_fraction * cfg.num_clients, rel=0.03)
    assert len({tuple(ids) for ids in draws}) > 1900  # rounds differ
    other_seed = ClientDP(_cfg(seed=1), cfg.num_clients)
    assert [other_seed.sample(r) for r in range(20)] != draws[:20]


def test_sample_may_be_empty_and_aggregate_still_accounts():
    cfg = _cfg(client_fraction=0.05, epsilon=8.0)
    dp = ClientDP(cfg, cfg.num_clients)
    empty_round = next(r for r in range(1000) if not dp.sample(r))
    assert dp.sample(empty_round) == []
    dp.aggregate(torch.zeros(0, 3, dtype=torch.float64))
    assert dp.report().dp_steps == 1 and dp.report().epsilon_spent > 0


def test_unreachable_epsilon_is_a_one_line_config_error():
    # q=1 keeps the search fast (closed-form RDP); at q<1 Opacus' series at sigma ~1e6 takes a minute.
    with pytest.raises(ConfigError) as err:
        ClientDP(_cfg(epsilon=1e-6, client_fraction=1.0), 20)
    msg = str(err.value)
    assert "\n" not in msg and "epsilon=1e-06" in msg


def test_non_private_config_is_refused():
    cfg = _cfg(epsilon=None)
    with pytest.raises(ConfigError) as err:
        ClientDP(cfg, 20)
    assert "\n" not in str(err.value) and "epsilon" in str(err.value)


@pytest.mark.filterwarnings(GDP_WARNING)
def test_accountants_registry():
    assert accountants.ACCOUNTANTS.names() == ("rdp", "prv", "gdp")
    for name, cls in [("rdp", RDPAccountant), ("prv", PRVAccountant), ("gdp", GaussianAccountant)]:
        entry = accountants.ACCOUNTANTS.get(name)
        assert entry.obj is cls and entry.description and "\n" not in entry.description
        a, b = accountants.create(name), accountants.create(name)
        assert type(a) is cls and a is not b and a.history == []
        assert a.mechanism() == name
    with pytest.raises(ValueError) as err:
        accountants.create("moments")
    assert "\n" not in str(err.value) and "rdp, prv, gdp" in str(err.value)
