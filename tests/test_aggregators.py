"""Aggregation rules on hand-made client updates with known answers (as Flower tests its
strategies): no model, no training; every test runs in milliseconds."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from psreval_tune.aggregators import AGGREGATORS, RoundContext, aggregate
from psreval_tune.aggregators import centered_clipping as cc_module
from psreval_tune.aggregators import trimmed_mean as tm_module
from psreval_tune.aggregators.krum import krum_scores, pairwise_sq_distances
from psreval_tune.aggregators.trimmed_mean import trim_count
from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.registry import resolve_params


def ctx_for(name: str, n: int, weights=None, num_byzantine: int = 0, **params) -> RoundContext:
    """A RoundContext the way the server builds it: the rule's params resolved against its declaration."""
    w = torch.full((n,), 1 / n, dtype=torch.float64) if weights is None else torch.tensor(weights, dtype=torch.float64)
    resolved = resolve_params("aggregation", AGGREGATORS.get(name), params)
    return RoundContext(round=1, global_vector=torch.zeros(1), weights=w, num_byzantine=num_byzantine, params=resolved)


def run(name: str, updates, weights=None, num_byzantine: int = 0, **params) -> torch.Tensor:
    x = torch.as_tensor(updates, dtype=torch.float64)
    return aggregate(name, x, ctx_for(name, len(x), weights, num_byzantine, **params))


def column(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)[:, None]


def krum_setup() -> tuple[torch.Tensor, torch.Tensor]:
    """7 updates in d=7: 5 honest around 1.0 (row 0 the centre, rows 1-4 off by 0.1 along their
    own axis) and 2 colluding outliers at 100 (identical, so each is the other's nearest)."""
    honest = torch.ones(5, 7, dtype=torch.float64)
    for i in range(1, 5):
        honest[i, i] += 0.1 if i % 2 else -0.1
    outliers = torch.full((2, 7), 100.0, dtype=torch.float64)
    return honest, torch.cat([honest[:3], outliers[:1], honest[3:], outliers[1:]])  # outliers at rows 3 and 6


# --- known answers -------------------------------------------------------------------------------


def test_fedavg_is_the_exact_weighted_mean():
    updates = [[1.0, -2.0], [3.0, 4.0], [5.0, 8.0]]
    out = run("fedavg", updates, weights=[0.5, 0.25, 0.25])
    assert torch.equal(out, torch.tensor([2.5, 2.0], dtype=torch.float64))


def test_median_odd_and_even_counts():
    assert torch.equal(run("median", column([5.0, 1.0, 100.0, 3.0, 2.0])), torch.tensor([3.0], dtype=torch.float64))
    # even count: the mean of the two middle values, not the lower one
    assert torch.equal(run("median", column([4.0, 1.0, 100.0, 2.0])), torch.tensor([3.0], dtype=torch.float64))
    assert torch.equal(run("median", column([1.0, 2.0])), torch.tensor([1.5], dtype=torch.float64))


def test_trimmed_mean_drops_the_extremes():
    # k = floor(0.2 * 5) = 1 per side: 1 and 100 go, mean of 2, 3, 4
    out = run("trimmed_mean", column([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert torch.equal(out, torch.tensor([3.0], dtype=torch.float64))
    # coordinate-wise: each column trims its own extremes, whichever client holds them
    updates = [[1.0, -50.0], [2.0, 6.0], [3.0, 7.0], [4.0, 8.0], [100.0, 9.0]]
    assert torch.equal(run("trimmed_mean", updates), torch.tensor([3.0, 7.0], dtype=torch.float64))
    # trim 0.3 of 10: k = 3 per side (0.3 * 10 is 3.0000000000000004 in binary)
    ten = column([-1e9, -1e9, -1e9, 1.0, 2.0, 3.0, 4.0, 1e9, 1e9, 1e9])
    assert torch.equal(run("trimmed_mean", ten, trim_ratio=0.3), torch.tensor([2.5], dtype=torch.float64))


def test_trimmed_mean_is_the_plain_mean_when_nothing_is_trimmed():
    updates = column([1.0, 2.0, 3.0, 10.0])
    mean = torch.tensor([4.0], dtype=torch.float64)
    assert torch.equal(run("trimmed_mean", updates, trim_ratio=0.0), mean)
    assert torch.equal(run("trimmed_mean", updates), mean)  # floor(0.2 * 4) = 0
    # the plain mean is uniform: data-size weights are ignored
    assert torch.equal(run("trimmed_mean", updates, weights=[0.7, 0.1, 0.1, 0.1]), mean)


def test_trimmed_mean_default_trims_the_assumed_byzantine_count():
    # 3 of 10 malicious, all at 1e9: the default (trim_ratio unset) trims k = f = 3 per side,
    # beta = f/n = 0.3, so none of the three survives: -5, -4, 1 and the attackers go, mean of 2, 3, 4, 9
    ten = column([-5.0, -4.0, 1.0, 2.0, 3.0, 4.0, 9.0, 1e9, 1e9, 1e9])
    assert torch.equal(run("trimmed_mean", ten, num_byzantine=3), torch.tensor([4.5], dtype=torch.float64))
    # the misconfigured case stays reachable by an explicit beta: 0.2 trims 2 per side, one attacker is kept
    leak = run("trimmed_mean", ten, num_byzantine=3, trim_ratio=0.2)
    assert leak.item() == pytest.approx((1 + 2 + 3 + 4 + 9 + 1e9) / 6)
    # no Byzantine client assumed (no threat): the old fixed 0.2, k = floor(0.2 * 10) = 2
    assert run("trimmed_mean", ten).item() == pytest.approx(leak.item())
    # f above what can be trimmed is capped at (n - 1) // 2: the median of 5 values
    assert torch.equal(run("trimmed_mean", column([1.0, 2.0, 3.0, 4.0, 5.0]), num_byzantine=4), column([3.0])[0])


def test_trimmed_mean_default_beta_in_a_federation_is_num_malicious_over_num_clients():
    # the server's assumption (federated.py): num_malicious under a threat, 0 without one
    from psreval_tune.aggregators.trimmed_mean import round_trim_count

    cfg = CycleConfig(aggregation="trimmed_mean", num_clients=10, threat="ipm", num_malicious=3)
    assert cfg.aggregation_params == {"trim_ratio": None}
    ctx = RoundContext(1, torch.zeros(1), torch.full((10,), 0.1), 3, cfg.aggregation_params)
    assert round_trim_count(ctx, 10) == 3 >= math.ceil(3 / 10 * 10)  # beta = 0.3 = f/n
    explicit = CycleConfig(
        aggregation="trimmed_mean",
        num_clients=10,
        threat="ipm",
        num_malicious=3,
        aggregation_params={"trim_ratio": 0.2},
    )
    ctx = RoundContext(1, torch.zeros(1), torch.full((10,), 0.1), 3, explicit.aggregation_params)
    assert round_trim_count(ctx, 10) == 2


def test_trim_count():
    assert [trim_count(0.2, n) for n in (1, 2, 4, 5, 9, 10, 50)] == [0, 0, 0, 1, 1, 2, 10]
    assert trim_count(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996
    assert trim_count(0.49, 3) == 1 and trim_count(0.49, 2) == 0  # always at least one value kept


def test_krum_picks_the_central_honest_update():
    honest, updates = krum_setup()
    # n = 7 >= 2f + 3 with f = 2: 3 neighbours. Row 0 scores 3 * 0.01, rows 1-4 0.01 + 2 * 0.02,
    # the outliers 0 (each other) + twice the nearest honest rows' 6 * 99**2 + 98.9**2 (rows 1, 3)
    scores = krum_scores(updates, 2)
    assert torch.allclose(scores[[0, 1, 2, 4, 5]], torch.tensor([0.03, 0.05, 0.05, 0.05, 0.05], dtype=torch.float64))
    assert torch.allclose(scores[[3, 6]], torch.tensor([2 * (6 * 99**2 + 98.9**2)] * 2, dtype=torch.float64))
    out = run("krum", updates, f=2)
    assert torch.equal(out, honest[0])
    # f defaults to the declared number of Byzantine clients
    assert torch.equal(run("krum", updates, num_byzantine=2), honest[0])
    # even with f = 0 assumed (5 neighbours), an honest row wins
    assert any(torch.equal(run("krum", updates), row) for row in honest)


def test_multikrum_averages_exactly_the_honest_updates():
    honest, updates = krum_setup()
    expected = honest.mean(dim=0)
    # m defaults to n - f = 5: the five honest rows
    assert torch.allclose(run("multikrum", updates, f=2), expected, rtol=0, atol=1e-15)
    assert torch.allclose(run("multikrum", updates, num_byzantine=2), expected, rtol=0, atol=1e-15)
    assert torch.allclose(run("multikrum", updates, f=2, m=5), expected, rtol=0, atol=1e-15)
    # m = 1 is Krum; m = n is the plain mean
    assert torch.equal(run("multikrum", updates, f=2, m=1), honest[0])
    assert torch.allclose(run("multikrum", updates, f=2, m=7), updates.mean(dim=0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["krum", "multikrum"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
@pytest.mark.parametrize("f", [None, 0, 1, 5])
def test_krum_runs_with_too_few_clients(name, n, f):
    # n < 2f + 3: no guarantee, but a result (max(1, n - f - 2) neighbours), never a crash
    updates = torch.arange(n * 3, dtype=torch.float64).reshape(n, 3) ** 2
    out = run(name, updates, num_byzantine=1, f=f)
    assert out.shape == (3,) and out.dtype == torch.float64 and torch.isfinite(out).all()
    if n == 1:
        assert torch.equal(out, updates[0])
    if name == "krum":
        assert any(torch.equal(out, row) for row in updates)


def test_pairwise_sq_distances_match_direct_differences():
    x = torch.randn(6, 50, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    direct = ((x[:, None, :] - x[None, :, :]) ** 2).sum(dim=2)
    d = pairwise_sq_distances(x)
    assert torch.allclose(d, direct, rtol=1e-12, atol=1e-12)
    assert torch.equal(d, d.T) and torch.equal(d.diagonal(), torch.zeros(6, dtype=torch.float64))


def test_centered_clipping_bounds_an_outliers_influence():
    # 4 honest updates around 1.0 (norm ~2.6) and one outlier 1e6 away; n = 5, tau = 3, 3 iterations.
    gen = torch.Generator().manual_seed(1)
    honest = 1.0 + 0.05 * torch.rand(4, 7, generator=gen, dtype=torch.float64)
    outlier = torch.full((1, 7), 1e6 / math.sqrt(7), dtype=torch.float64)
    updates = torch.cat([honest, outlier])
    n, tau, iters = 5, 3.0, 3
    out = run("centered_clipping", updates, tau=tau, iters=iters)
    mu = honest.mean(dim=0)
    # Bound 1, against the honest mean. No honest update is ever clipped here (each is within
    # tau of every iterate), so with u_t = v_t - mu: u_{t+1} = u_t / n + e_t, where e_t is the
    # outlier's clipped step / n, ||e_t|| <= tau / n. From v_0 = 0:
    #   ||v_L - mu|| <= ||mu|| / n**L + (tau / n) * sum_{k<L} n**-k  <=  ||mu|| / n**L + tau * iters / n
    bound = mu.norm() / n**iters + tau * iters / n
    assert (out - mu).norm() <= bound
    assert (out - mu).norm() > 0.1  # the bound is not vacuous: the outlier does pull
    # Bound 2, assumption-free: each step v + P(x_i - v) is 1-Lipschitz in v (P, the projection
    # onto the tau-ball, has I - P nonexpansive), so replacing one client's update by anything
    # moves the result by at most 2 * tau / n per iteration: 2 * tau * iters / n in all.
    for tau_ in (0.5, 1.0, 3.0):
        for replacement in (honest[:1], torch.zeros(1, 7, dtype=torch.float64)):
            clean = torch.cat([honest, replacement])
            moved = run("centered_clipping", updates, tau=tau_, iters=3) - run(
                "centered_clipping", clean, tau=tau_, iters=3
            )
            assert moved.norm() <= 2 * tau_ * 3 / n + 1e-12


def test_centered_clipping_is_the_mean_when_nothing_is_clipped():
    updates = torch.tensor([[0.1, 0.2], [0.3, -0.1], [0.2, 0.0]], dtype=torch.float64)
    assert torch.allclose(run("centered_clipping", updates), updates.mean(dim=0), rtol=0, atol=1e-15)
    # uniform over clients: the data-size weights are not used
    out = run("centered_clipping", updates, weights=[0.8, 0.1, 0.1])
    assert torch.allclose(out, updates.mean(dim=0), rtol=0, atol=1e-15)


def test_centered_clipping_from_zero_moves_at_most_tau_per_iteration():
    # one client far away: each iteration moves v by exactly tau towards it (n = 1)
    updates = torch.tensor([[30.0, 40.0]], dtype=torch.float64)  # norm 50
    out = run("centered_clipping", updates, tau=2.0, iters=4)
    assert torch.allclose(out, torch.tensor([4.8, 6.4], dtype=torch.float64), rtol=0, atol=1e-12)  # norm 8


def cc_around(updates, v, **params) -> torch.Tensor:
    """centered_clipping with the server's previous aggregate ``v`` as its centre."""
    x = torch.as_tensor(updates, dtype=torch.float64)
    ctx = replace(
        ctx_for("centered_clipping", len(x), **params), previous_update=torch.as_tensor(v, dtype=torch.float64)
    )
    return aggregate("centered_clipping", x, ctx)


def test_centered_clipping_centres_on_the_previous_aggregate():
    v = torch.tensor([1.0, 1.0], dtype=torch.float64)
    # all honest updates equal u within tau of v: the result is u
    u = torch.tensor([1.3, 0.6], dtype=torch.float64)  # ||u - v|| = 0.5
    assert torch.allclose(cc_around(u.repeat(4, 1), v, tau=1.0, iters=1), u, rtol=0, atol=1e-15)
    # farther than tau: after one iteration v + tau * (u - v) / ||u - v||
    u = torch.tensor([4.0, 5.0], dtype=torch.float64)  # u - v = (3, 4), norm 5
    out = cc_around(u.repeat(4, 1), v, tau=2.0, iters=1)
    assert torch.allclose(out, torch.tensor([1.0 + 2.0 * 0.6, 1.0 + 2.0 * 0.8], dtype=torch.float64), atol=1e-15)
    # the same updates clipped around zero (the previous behaviour) would give a different answer
    assert not torch.allclose(run("centered_clipping", u.repeat(4, 1), tau=2.0, iters=1), out)
    # no previous aggregate (the first round): the centre is zero
    zero = replace(ctx_for("centered_clipping", 4, tau=2.0), previous_update=None)
    assert torch.allclose(aggregate("centered_clipping", u.repeat(4, 1), zero), 2.0 * u / u.norm(), atol=1e-15)


@pytest.mark.parametrize("iters", [1, 2, 5])
def test_centered_clipping_far_outlier_moves_the_centre_at_most_tau_over_n_per_iteration(iters):
    # 4 honest updates at the centre v itself and one outlier 1e6 away: n = 5, tau = 1.5
    v = torch.tensor([0.5, -2.0, 1.0], dtype=torch.float64)
    direction = torch.tensor([2.0, -1.0, 2.0], dtype=torch.float64) / 3  # unit
    updates = torch.cat([v.repeat(4, 1), (v + 1e6 * direction)[None]])
    n, tau = 5, 1.5
    out = cc_around(updates, v, tau=tau, iters=iters)
    # the first iteration moves v by exactly tau / n towards the outlier; later ones pull back
    # towards the honest four, so the total shift stays within tau / n * iters and along direction
    moved = out - v
    assert moved.norm() <= tau / n * iters + 1e-12
    assert torch.allclose(moved / moved.norm(), direction, atol=1e-12)
    if iters == 1:
        assert torch.allclose(moved, tau / n * direction, atol=1e-12)


def test_centered_clipping_ignores_a_previous_aggregate_of_the_wrong_shape_or_not_finite():
    u = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    want = run("centered_clipping", u, tau=1.0)  # around zero: (0.6, 0.8)
    assert torch.allclose(want, torch.tensor([0.6, 0.8], dtype=torch.float64))
    for bad in (torch.ones(3, dtype=torch.float64), torch.tensor([float("nan"), 0.0], dtype=torch.float64)):
        assert torch.equal(cc_around(u, bad, tau=1.0), want)


# --- bucketing (Karimireddy, He and Jaggi 2022) ---------------------------------------------------


def bucket_ctx(name: str, n: int, s, seed: int = 0, num_byzantine: int = 0, **params) -> RoundContext:
    return replace(ctx_for(name, n, num_byzantine=num_byzantine, **params), bucket_size=s, seed=seed)


def test_bucketing_with_s_1_is_the_inner_rule():
    x = torch.randn(9, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for name in AGGREGATORS.names():
        assert torch.equal(aggregate(name, x, bucket_ctx(name, 9, 1)), aggregate(name, x, ctx_for(name, 9))), name


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_bucketing_with_s_n_is_the_mean(name):
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    out = aggregate(name, x, bucket_ctx(name, 6, 6))
    assert torch.allclose(out, x.mean(dim=0), rtol=0, atol=1e-12)
    assert torch.allclose(aggregate(name, x, bucket_ctx(name, 6, 50)), x.mean(dim=0), rtol=0, atol=1e-12)  # s > n


def test_bucketing_makes_ceil_n_over_s_buckets_of_shuffled_means():
    from psreval_tune.aggregators._bucketing import bucketed

    x = torch.arange(7, dtype=torch.float64)[:, None] * torch.ones(1, 3, dtype=torch.float64)
    w = torch.full((7,), 1 / 7, dtype=torch.float64)
    for s, count in ((1, 7), (2, 4), (3, 3), (4, 2), (7, 1)):
        means, weights = bucketed(x, w, s, torch.Generator().manual_seed(0))
        assert means.shape == (count, 3) and len(weights) == count == math.ceil(7 / s)
        assert torch.allclose(weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    # s = 2 of 7: three pairs and one single; each bucket is the mean of distinct clients, all used once
    order = torch.randperm(7, generator=torch.Generator().manual_seed(0))
    means, weights = bucketed(x, w, 2, torch.Generator().manual_seed(0))
    want = [x[order[i : i + 2]].mean(dim=0) for i in range(0, 7, 2)]
    assert torch.equal(means, torch.stack(want))
    assert torch.allclose(weights, torch.tensor([2 / 7, 2 / 7, 2 / 7, 1 / 7], dtype=torch.float64))


def test_bucketing_is_fixed_by_its_seed():
    x = torch.randn(10, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    a = aggregate("median", x, bucket_ctx("median", 10, 2, seed=11))
    assert torch.equal(a, aggregate("median", x, bucket_ctx("median", 10, 2, seed=11)))
    assert not torch.equal(a, aggregate("median", x, bucket_ctx("median", 10, 2, seed=12)))
    # the known answer: the median of the five pair means in the seed's shuffle
    order = torch.randperm(10, generator=torch.Generator().manual_seed(11))
    pairs = torch.stack([x[order[i : i + 2]].mean(dim=0) for i in range(0, 10, 2)])
    assert torch.equal(a, pairs.sort(dim=0).values[2])


def test_bucketing_hands_the_inner_rule_at_most_one_byzantine_per_bucket():
    # Krum's f is capped by the number of buckets (6 updates in 2 buckets of 3, 4 assumed Byzantine)
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    out = aggregate("krum", x, bucket_ctx("krum", 6, 3, num_byzantine=4))
    assert torch.isfinite(out).all()


def test_bucketing_config_field():
    assert CycleConfig().bucketing is None
    cfg = CycleConfig(aggregation="median", bucketing=2)
    assert cfg.bucketing == 2
    assert CycleConfig().training_key() == CycleConfig(bucketing=None).training_key()
    assert cfg.training_key() != CycleConfig(aggregation="median").training_key()


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bucketing_bad_values_are_refused_in_one_line(bad):
    with pytest.raises(ConfigError) as err:
        CycleConfig(aggregation="median", bucketing=bad)
    assert str(err.value) == (
        f"bucketing={bad!r} is not allowed; expected an integer >= 1 (the bucket size s, 2 in the paper), "
        "or none for no bucketing"
    )


def test_bucketing_is_refused_under_client_level_dp():
    with pytest.raises(ConfigError, match=r"^bucketing=2 is not allowed; expected none when dp_mode=client"):
        CycleConfig(epsilon=8.0, dp_mode="client", num_clients=10, bucketing=2)


def test_non_finite_outlier_is_rejected():
    honest, updates = krum_setup()
    bad = updates.clone()
    bad[3] = float("inf")
    bad[6] = float("nan")
    assert torch.equal(run("krum", bad, f=2), honest[0])
    assert torch.allclose(run("multikrum", bad, f=2), honest.mean(dim=0), rtol=0, atol=1e-15)
    assert torch.isfinite(run("centered_clipping", bad)).all()
    assert torch.isfinite(run("trimmed_mean", bad, trim_ratio=0.3)).all()  # k = 2 per side


def test_blocked_rules_match_their_one_block_result(monkeypatch):
    # trimmed mean sorts, and centered clipping differences, a block at a time (memory on an 11M
    # parameter model); tiny blocks must give the same answer as one block
    x = torch.randn(6, 101, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x[0] *= 40
    whole = {name: run(name, x) for name in ("trimmed_mean", "centered_clipping")}
    monkeypatch.setattr(tm_module, "_BLOCK_ELEMENTS", 13)
    monkeypatch.setattr(cc_module, "_BLOCK_ELEMENTS", 150)  # one row per block
    assert torch.equal(run("trimmed_mean", x), whole["trimmed_mean"])
    assert torch.allclose(run("centered_clipping", x), whole["centered_clipping"], rtol=0, atol=1e-14)


# --- properties of every rule ---------------------------------------------------------------------


def random_updates(n: int = 5, d: int = 7, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_rule_returns_one_float64_update(name):
    x = random_updates()
    ctx = ctx_for(name, 5, weights=[0.1, 0.2, 0.3, 0.2, 0.2], num_byzantine=1)
    out = aggregate(name, x, ctx)
    assert out.shape == (7,) and out.dtype == torch.float64 and torch.isfinite(out).all()
    assert torch.equal(aggregate(name, x.clone(), ctx), out)  # deterministic
    assert torch.equal(x, random_updates())  # the input is not modified


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_every_rule_is_invariant_to_client_order(name):
    # Random updates have distinct Krum scores, so every rule here should be order-invariant
    # (up to the rounding of a sum taken in another order).
    x = random_updates(n=6)
    w = torch.tensor([0.1, 0.2, 0.3, 0.1, 0.2, 0.1], dtype=torch.float64)
    perm = torch.tensor([4, 2, 5, 0, 3, 1])
    out = aggregate(name, x, ctx_for(name, 6, weights=w.tolist(), num_byzantine=1))
    permuted = aggregate(name, x[perm], ctx_for(name, 6, weights=w[perm].tolist(), num_byzantine=1))
    if name in ("median", "trimmed_mean", "krum"):
        assert torch.equal(out, permuted)  # a sort or a selection: exact
    else:
        assert torch.allclose(out, permuted, rtol=0, atol=1e-14)


@pytest.mark.parametrize("name", AGGREGATORS.names())
def test_config_accepts_each_rule_with_its_defaults(name):
    cfg = CycleConfig(aggregation=name)
    declared = AGGREGATORS.get(name).meta.get("params", {})
    assert cfg.aggregation_params == {key: p.default for key, p in declared.items()}


def test_declared_defaults():
    assert CycleConfig(aggregation="trimmed_mean").aggregation_params == {"trim_ratio": None}  # f/n, else 0.2
    assert CycleConfig(aggregation="krum").aggregation_params == {"f": None}
    assert CycleConfig(aggregation="multikrum").aggregation_params == {"f": None, "m": None}
    assert CycleConfig(aggregation="centered_clipping").aggregation_params == {
        "iters": cc_module.ITERS,
        "tau": cc_module.TAU,
    }
    assert cc_module.ITERS == 1  # the paper's L
    cfg = CycleConfig(aggregation="multikrum", aggregation_params={"f": 1, "m": 3})
    assert cfg.aggregation_params == {"f": 1, "m": 3}


@pytest.mark.parametrize(
    "name, params, key",
    [
        ("trimmed_mean", {"trim_ratio": 0.7}, "trim_ratio"),
        ("trimmed_mean", {"trim_ratio": 0.5}, "trim_ratio"),
        ("trimmed_mean", {"trim_ratio": -0.1}, "trim_ratio"),
        ("trimmed_mean", {"trim_ratio": "0.2"}, "trim_ratio"),
        ("krum", {"f": -1}, "f"),
        ("krum", {"f": 1.5}, "f"),
        ("krum", {"f": True}, "f"),
        ("multikrum", {"m": 0}, "m"),
        ("centered_clipping", {"tau": 0}, "tau"),
        ("centered_clipping", {"tau": float("inf")}, "tau"),
        ("centered_clipping", {"iters": 0}, "iters"),
        ("centered_clipping", {"iters": 2.5}, "iters"),
        ("krum", {"m": 3}, "m"),  # m is multikrum's, not krum's
        ("median", {"trim_ratio": 0.1}, "trim_ratio"),
    ],
)
def test_bad_params_are_rejected_naming_the_key(name, params, key):
    with pytest.raises(ConfigError, match=rf"\b{key}\b") as err:
        CycleConfig(aggregation=name, aggregation_params=params)
    assert "\n" not in str(err.value)
