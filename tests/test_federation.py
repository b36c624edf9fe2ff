"""The federation's server side: client sampling, update threats, aggregation rules and
client-level DP (DP-FedAvg) wired through real digits training (cnn, a few rounds)."""

from __future__ import annotations

import io

import pytest
import torch
from opacus.accountants import RDPAccountant

from psreval_tune.cycle import _fresh_model
from psreval_tune.federated import Federation, Layout, apply_update, client_updates

pytestmark = pytest.mark.timeout(300)
MANY_CLIENTS = dict(batch_size=16, lr=0.05)  # ~60-130 images per client: small steps keep SGD stable


def _fed(cfg, data) -> Federation:
    return Federation(cfg, _fresh_model(cfg, data), data, "cpu")


def _params(fed: Federation) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in fed.model.state_dict().values() if p.is_floating_point()])


def test_updates_round_trip_to_the_same_state(small_cfg, digits):
    fed = _fed(small_cfg, digits)
    g = fed.model.state_dict()
    moved = {k: v + 0.5 if v.is_floating_point() else v for k, v in g.items()}
    layout = Layout.of(g)
    updates = client_updates([moved, g], g, layout)
    assert updates.dtype == torch.float64 and updates.shape[0] == 2
    assert torch.allclose(updates[0], torch.full_like(updates[0], 0.5)) and torch.all(updates[1] == 0)
    weights = torch.tensor([0.5, 0.5], dtype=torch.float64)
    out = apply_update(g, updates[0], layout, [moved, g], weights)
    assert all(torch.allclose(out[k], moved[k]) for k in g)


@pytest.mark.slow
def test_client_sampling_takes_the_configured_share(small_cfg, digits):
    cfg = small_cfg.replace(num_clients=20, client_fraction=0.25, rounds=2, **MANY_CLIENTS)
    fed = _fed(cfg, digits)
    picks = [[c.cid for c in fed._sample(r)] for r in (1, 2, 3)]
    assert all(len(p) == 5 for p in picks)  # round(0.25 * 20)
    assert picks[0] != picks[1]  # a fresh draw per round
    assert picks == [[c.cid for c in _fed(cfg, digits)._sample(r)] for r in (1, 2, 3)]  # seeded
    fed.train()
    assert len(fed.history) == 2 and fed.history[1].train_loss < fed.history[0].train_loss


@pytest.mark.slow
def test_sign_flip_hurts_fedavg_and_median_limits_it(small_cfg, digits):
    """3 of 10 clients send their update negated: the averaged model learns less than the
    median's, which ignores them coordinate-wise (5 rounds on digits)."""
    base = small_cfg.replace(num_clients=10, rounds=5, **MANY_CLIENTS)
    clean = _fed(base, digits)
    clean.train()
    attacked = {}
    for rule in ("fedavg", "median"):
        fed = _fed(base.replace(threat="sign_flip", num_malicious=3, aggregation=rule), digits)
        fed.train()
        attacked[rule] = fed.history[-1].acc_val
    assert attacked["fedavg"] < clean.history[-1].acc_val - 0.1
    assert attacked["median"] > attacked["fedavg"] + 0.1


@pytest.mark.slow
def test_client_dp_spends_at_most_target_and_is_recomputable(small_cfg, digits):
    cfg = small_cfg.replace(
        epsilon=8.0, dp_mode="client", num_clients=20, client_fraction=0.5, rounds=3, client_clip=1.0, **MANY_CLIENTS
    )
    fed = _fed(cfg, digits)
    assert all(c.private is None for c in fed.clients)  # clients train plainly: the server adds the noise
    fed.train()
    report = fed.privacy()
    assert report.clipping == "client" and report.dp_steps == 3 and report.sample_rate == 0.5
    assert 0 < report.epsilon_spent <= 8.0
    acc = RDPAccountant()
    acc.history = [(report.noise_multiplier, report.sample_rate, report.dp_steps)]
    assert acc.get_epsilon(cfg.delta) == pytest.approx(report.epsilon_spent, rel=1e-12)
    assert [r.epsilon for r in fed.history] == sorted(r.epsilon for r in fed.history)  # grows every round


@pytest.mark.slow
def test_client_dp_accountant_survives_a_resume(small_cfg, digits):
    """Checkpoint after round 2 through torch.save / torch.load(weights_only=True), rebuild the
    federation, finish: the accountant, the noise and the model equal an uninterrupted run."""
    cfg = small_cfg.replace(
        epsilon=8.0, dp_mode="client", num_clients=10, client_fraction=0.5, rounds=4, **MANY_CLIENTS
    )
    whole = _fed(cfg, digits)
    whole.train()

    first = _fed(cfg, digits)
    for rnd in (1, 2):
        first.run_round(rnd)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = _fed(cfg, digits)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.privacy().dp_steps == 2  # the accountant did not restart
    resumed.train()
    assert resumed.privacy() == whole.privacy()
    assert [r.epsilon for r in resumed.history] == [r.epsilon for r in whole.history]
    assert torch.equal(_params(resumed), _params(whole))


@pytest.mark.slow
def test_centered_clipping_centres_on_the_previous_round_and_the_centre_survives_a_resume(
    small_cfg, digits, monkeypatch
):
    """The server hands the rule its last aggregate (none in round 1), and checkpoints it: a resumed
    federation's round 2 is the uninterrupted one's, bucketing's seeded shuffle included."""
    import psreval_tune.federated as federated

    cfg = small_cfg.replace(aggregation="centered_clipping", num_clients=4, bucketing=2, rounds=2)
    seen = []
    real = federated.aggregate

    def spy(name, updates, ctx):
        seen.append((ctx.previous_update, ctx.bucket_size, ctx.seed))
        return real(name, updates, ctx)

    monkeypatch.setattr(federated, "aggregate", spy)
    whole = _fed(cfg, digits)
    whole.train()
    assert seen[0][0] is None and seen[1][0] is not None
    assert [s[1] for s in seen] == [2, 2] and seen[0][2] != seen[1][2]  # a fresh shuffle each round
    first = _fed(cfg, digits)
    first.run_round(1)
    assert torch.equal(seen[1][0], first.previous_update)  # round 2 was centred on round 1's aggregate
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = _fed(cfg, digits)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(resumed.previous_update, first.previous_update)
    resumed.train()
    assert torch.equal(_params(resumed), _params(whole))


def test_only_a_rule_that_reads_history_has_it_kept(small_cfg, digits):
    assert not _fed(small_cfg, digits).keeps_history  # fedavg: no d-sized centre in memory or checkpoints
    assert _fed(small_cfg.replace(aggregation="centered_clipping"), digits).keeps_history
