"""Byzantine update threats (sign_flip, scaling, alie, ipm) and the BadNets backdoor, on tiny tensors
with known answers; and every registered threat accepted by the config with its declared defaults."""

from __future__ import annotations

import math
from statistics import NormalDist

import pytest
import torch
from torch import nn

from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.evaluate import predict
from psreval_tune.models import build_model
from psreval_tune.threats import THREATS, PoisonContext, UpdateContext
from psreval_tune.threats import train_time_attack_ref as ttr
from psreval_tune.threats.alie import default_z
from psreval_tune.threats.backdoor import apply_trigger, attack_success_rate

N, D = 10, 6
MALICIOUS = [0, 4, 7]  # m = 3 of n = 10
HONEST = [i for i in range(N) if i not in MALICIOUS]


def updates() -> torch.Tensor:
    return torch.randn(N, D, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def ctx(**params) -> UpdateContext:
    return UpdateContext(
        round=1, global_vector=torch.zeros(D), generator=torch.Generator().manual_seed(0), params=params
    )


def corrupt(name: str, u: torch.Tensor, malicious=MALICIOUS, **params) -> torch.Tensor:
    before = u.clone()
    out = THREATS.get(name).obj(u, malicious, ctx(**params))
    assert torch.equal(u, before), "input modified in place"
    assert out.shape == u.shape and out.dtype == u.dtype
    assert torch.equal(out[HONEST], u[HONEST]), "honest rows changed"
    return out


def test_sign_flip_negates_only_malicious_rows():
    u = updates()
    out = corrupt("sign_flip", u, scale=1.0)
    assert torch.equal(out[MALICIOUS], -u[MALICIOUS])
    assert torch.allclose(corrupt("sign_flip", u, scale=2.5)[MALICIOUS], -2.5 * u[MALICIOUS])


def test_scaling_default_boost_is_n_over_m():
    u = updates()
    out = corrupt("scaling", u, boost=None)
    assert torch.allclose(out[MALICIOUS], (10 / 3) * u[MALICIOUS])
    assert torch.allclose(corrupt("scaling", u, boost=4.0)[MALICIOUS], 4.0 * u[MALICIOUS])


def test_alie_rows_are_mu_minus_z_sigma_with_paper_z():
    # n = 10, m = 3: s = floor(10/2 + 1) - 3 = 3, z = Phi^-1((10 - 3) / 10) = Phi^-1(0.7) ~ 0.5244
    expected_z = NormalDist(0, 1).inv_cdf(0.7)
    assert default_z(10, 3) == pytest.approx(expected_z)
    assert expected_z == pytest.approx(0.5244, abs=1e-4)
    u = updates()
    out = corrupt("alie", u, z=None)
    honest = u[HONEST]
    want = honest.mean(0) - expected_z * honest.std(0)  # unbiased std, as in the authors' code
    for row in MALICIOUS:
        assert torch.allclose(out[row], want)
    assert torch.allclose(corrupt("alie", u, z=1.5)[MALICIOUS[0]], honest.mean(0) - 1.5 * honest.std(0))


@pytest.mark.parametrize(
    "n, m, z",
    [
        # s = floor(n/2 + 1) - m, z = Phi^-1((n - s) / n), worked by hand once:
        (10, 2, 0.2533471031357998),  # s = 6 - 2 = 4, Phi^-1(6/10)
        (50, 10, 0.46769879911450835),  # s = 26 - 10 = 16, Phi^-1(34/50)
        (100, 20, 0.49585034734745304),  # s = 51 - 20 = 31, Phi^-1(69/100)
        (25, 5, 0.46769879911450835),  # s = 13 - 5 = 8, Phi^-1(17/25): the paper's CIFAR setting
    ],
)
def test_alie_default_z_is_the_papers_z_max(n, m, z):
    assert default_z(n, m) == pytest.approx(z, rel=1e-12)


def test_alie_default_z_follows_the_rounds_n_and_m_and_an_explicit_z_overrides_it():
    # n and m are the round's: 10 rows of which 2 malicious -> z(10, 2) = 0.2533
    u = updates()
    malicious = [1, 8]
    honest = u[[i for i in range(N) if i not in malicious]]
    out = THREATS.get("alie").obj(u, malicious, ctx(z=None))
    assert torch.allclose(out[1], honest.mean(0) - 0.2533471031357998 * honest.std(0))
    loud = THREATS.get("alie").obj(u, malicious, ctx(z=5.0))
    assert torch.allclose(loud[8], honest.mean(0) - 5.0 * honest.std(0))
    assert CycleConfig(threat="alie", num_clients=10, num_malicious=2).threat_params == {"z": None}


@pytest.mark.parametrize("n, m", [(10, 6), (10, 9), (1, 1), (2, 1), (3, 1)])
def test_alie_default_z_is_finite_and_non_negative_at_the_edges(n, m):
    z = default_z(n, m)
    assert math.isfinite(z) and z >= 0


def test_alie_with_every_row_malicious_uses_all_rows():
    u = updates()
    out = THREATS.get("alie").obj(u, list(range(N)), ctx(z=1.0))
    assert torch.allclose(out[3], u.mean(0) - u.std(0))


def test_ipm_rows_are_minus_epsilon_honest_mean_and_flip_the_inner_product():
    u = updates() + 1.0  # a common honest direction, so the honest mean is far from zero
    honest_mean = u[HONEST].mean(0)
    out = corrupt("ipm", u, epsilon=0.5)
    for row in MALICIOUS:
        assert torch.allclose(out[row], -0.5 * honest_mean)
    # plain mean of n = 10 rows, m = 3 malicious: honest_mean * (7 - 3 * eps) / 10, negative iff eps > 7/3
    assert float(out.mean(0) @ honest_mean) > 0  # eps = 0.5: still aligned, only shrunk
    big = corrupt("ipm", u, epsilon=3.0)
    assert torch.allclose(big.mean(0), honest_mean * (7 - 3 * 3.0) / 10)
    assert float(big.mean(0) @ honest_mean) < 0


def test_ipm_default_epsilon_is_stealthy_and_loud_is_one_param_away():
    from psreval_tune.threats import ipm

    lo, hi = ipm.STEALTHY
    assert (lo, hi) == (0.1, 0.5) and lo <= ipm.EPSILON <= hi
    assert CycleConfig(threat="ipm", num_clients=10, num_malicious=3).threat_params == {"epsilon": 0.5}
    loud = CycleConfig(threat="ipm", num_clients=10, num_malicious=3, threat_params={"epsilon": 4.0})
    assert loud.threat_params == {"epsilon": 4.0}
    u = updates() + 1.0
    assert torch.allclose(corrupt("ipm", u)[0], -0.5 * u[HONEST].mean(0))  # no epsilon given: the default 0.5


@pytest.mark.parametrize("name", ["sign_flip", "scaling", "alie", "ipm"])
def test_update_threats_leave_a_round_without_malicious_clients_alone(name):
    u = updates()
    assert torch.equal(THREATS.get(name).obj(u, [], ctx()), u)


# --- backdoor ---------------------------------------------------------------

BACKDOOR = {"poison_rate": 0.5, "target_label": 0, "trigger_size": 3}


def poison_ctx(x, y, seed=0, num_classes=4, **params) -> PoisonContext:
    return PoisonContext(
        cfg=None,
        model=nn.Identity(),
        x=x,
        y=y,
        round=0,
        num_classes=num_classes,
        device="cpu",
        seed=seed,
        params={**BACKDOOR, **params},
    )


def images(n=9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(n, 2, 8, 8, generator=g) * 0.5  # below 1.0 everywhere: stamped pixels are recognisable
    y = torch.arange(n) % 3 + 1  # classes 1..3, never the target 0
    return x, y


def stamped_mask(x: torch.Tensor) -> torch.Tensor:
    return (x[:, :, -3:, -3:] == 1.0).flatten(1).all(1)


@pytest.mark.parametrize("rate", [0.5, 0.25, 1.0])
def test_backdoor_stamps_and_relabels_exactly_round_rate_n(rate):
    x, y = images()
    x0, y0 = x.clone(), y.clone()
    px, py = THREATS.get("backdoor").obj(poison_ctx(x, y, poison_rate=rate))
    assert torch.equal(x, x0) and torch.equal(y, y0), "input modified in place"
    stamped = stamped_mask(px)
    assert int(stamped.sum()) == round(rate * len(x))
    assert torch.equal(py[stamped], torch.zeros(int(stamped.sum()), dtype=y.dtype))
    assert torch.equal(px[~stamped], x[~stamped]) and torch.equal(py[~stamped], y[~stamped])
    # only the trigger square changed on the stamped images
    outside = px[stamped].clone()
    outside[:, :, -3:, -3:] = x[stamped][:, :, -3:, -3:]
    assert torch.equal(outside, x[stamped])


def test_backdoor_is_deterministic_for_a_seed():
    x, y = images(20)
    poison = THREATS.get("backdoor").obj
    a, b = poison(poison_ctx(x, y, seed=5)), poison(poison_ctx(x, y, seed=5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = poison(poison_ctx(x, y, seed=6))
    assert not torch.equal(stamped_mask(a[0]), stamped_mask(c[0]))


def test_backdoor_target_label_out_of_range_raises_naming_it():
    x, y = images()
    with pytest.raises(ConfigError, match="target_label=4") as err:  # a dataset whose classes only the data knows
        THREATS.get("backdoor").obj(poison_ctx(x, y, num_classes=4, target_label=4))
    assert "\n" not in str(err.value)


def test_apply_trigger_is_a_stamped_copy():
    x, _ = images(3)
    x0 = x.clone()
    out = THREATS.get("backdoor").trigger(x, {"trigger_size": 2})
    assert torch.equal(x, x0)
    assert bool((out[:, :, -2:, -2:] == 1.0).all())
    out[:, :, -2:, -2:] = x[:, :, -2:, -2:]
    assert torch.equal(out, x)
    assert THREATS.get("backdoor").trigger is apply_trigger


class CornerDetector(nn.Module):
    """Predicts class 0 iff the bottom-right pixel of channel 0 is 1.0, else class 1 (of 4)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        hit = (x[:, 0, -1, -1] == 1.0).float()
        logits = torch.zeros(len(x), 4)
        logits[:, 0] = hit
        logits[:, 1] = 1 - hit
        return logits


class Constant(nn.Module):
    def __init__(self, cls: int):
        super().__init__()
        self.cls = cls
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.cls), 4).float()


def test_attack_success_rate_known_answers():
    x, y = images(10)
    y[:3] = 0  # three images already of the target class: left out of the count
    model = CornerDetector()
    model.train()
    asr = THREATS.get("backdoor").asr
    assert asr is attack_success_rate
    assert asr(model, x, y, BACKDOOR, batch_size=4) == (1.0, 7)
    assert model.training, "mode not restored"
    assert asr(Constant(1), x, y, BACKDOOR) == (0.0, 7)
    assert asr(Constant(0), x, y, BACKDOOR) == (1.0, 7)
    rate, n = asr(model, x[:3], y[:3], BACKDOOR)
    assert n == 0 and math.isnan(rate)


# --- config -------------------------------------------------------------------


@pytest.mark.parametrize("name", [n for n in THREATS.names() if n != "none"])
def test_every_threat_builds_with_its_declared_defaults(name):
    entry = THREATS.get(name)
    cfg = CycleConfig(threat=name, num_clients=10, num_malicious=2, adv_fraction=(0.2 if entry.needs_fraction else 0.0))
    declared = entry.meta.get("params", {})
    assert cfg.threat_params == {k: p.default for k, p in declared.items()}


@pytest.mark.parametrize(
    "threat, params, named",
    [
        ("scaling", {"boost": -1}, "boost"),
        ("sign_flip", {"scale": 0}, "scale"),
        ("alie", {"z": -0.5}, "z"),
        ("ipm", {"epsilon": float("nan")}, "epsilon"),
        ("backdoor", {"poison_rate": 1.5}, "poison_rate"),
        ("backdoor", {"target_label": -1}, "target_label"),
        ("backdoor", {"trigger_size": 0}, "trigger_size"),
        ("ipm", {"bogus": 1}, "bogus"),
        ("train_time_attack_ref", {"reference_epochs": 0}, "reference_epochs"),
    ],
)
def test_bad_threat_param_raises_config_error_naming_it(threat, params, named):
    with pytest.raises(ConfigError, match=named) as err:
        CycleConfig(threat=threat, num_clients=10, num_malicious=2, threat_params=params)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("threat", ["backdoor", "scaling"])
@pytest.mark.parametrize(
    "params, allowed",
    [
        ({"target_label": 10}, "expected an integer in [0, 10) (the digits data has 10 classes)"),
        ({"trigger_size": 9}, "expected an integer in [1, 8] (the digits images are 8x8)"),
    ],
)
def test_data_bound_backdoor_params_are_refused_when_the_config_is_built(threat, params, allowed):
    # before any work: the digits registry entry declares 10 classes of 8x8 images
    with pytest.raises(ConfigError) as err:
        CycleConfig(threat=threat, num_clients=10, num_malicious=2, threat_params=params)
    ((name, value),) = params.items()
    assert str(err.value) == f"threat_params.{name}={value} is not allowed; {allowed}"
    CycleConfig(threat=threat, num_clients=10, num_malicious=2, threat_params={name: value - 1})  # the edge is fine


# --- train_time_attack_ref: labels from the adversary's separately trained reference model ---------------


def ref_ctx(seed=0, cid=0, rnd=1, epsilon=None, n=40):
    """A digits-shaped client (n images of 1x8x8, 10 classes) under the reference-labelled attack (FGSM: fast),
    with a freshly initialised global cnn."""
    cfg = CycleConfig(
        threat=ttr.NAME,
        adv_fraction=0.4,
        attack="FGSM",
        seed=seed,
        epsilon=epsilon,
        threat_params={"reference_epochs": 2},
    )
    g = torch.Generator().manual_seed(7)
    x, y = torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 10
    torch.manual_seed(seed)
    model = build_model("cnn", 1, 10, [0.5], [0.25])
    params = cfg.threat_params
    return PoisonContext(cfg, model, x, y, rnd, num_classes=10, device="cpu", seed=seed * 1000 + cid, params=params)


@pytest.fixture
def fresh_references(monkeypatch):
    """An empty reference cache and a count of the references trained."""
    trained = []
    train = ttr.train_reference
    monkeypatch.setattr(ttr, "_references", {})
    monkeypatch.setattr(ttr, "train_reference", lambda ctx: trained.append(ctx.seed) or train(ctx))
    return trained


def test_reference_labels_are_the_reference_models_predictions(fresh_references):
    ctx = ref_ctx()
    x0, y0 = ctx.x.clone(), ctx.y.clone()
    adv, labels = THREATS.get(ttr.NAME).obj(ctx)
    assert torch.equal(ctx.x, x0) and torch.equal(ctx.y, y0), "input modified in place"
    assert adv.shape == ctx.x.shape and not torch.equal(adv, ctx.x)  # adversarial examples, not the clean data
    assert torch.equal(labels, predict(ttr.reference_model(ctx), adv))
    # neither the global model's own predictions (train_time_attack's rule) nor the true labels
    assert not torch.equal(labels, predict(ctx.model, adv)) and not torch.equal(labels, ctx.y)


def test_reference_labels_come_from_the_reference_not_the_global_model(monkeypatch):
    """Known answer: a reference that always says 3 labels every example 3; the examples are still crafted
    against the global model (the same as train_time_attack's, whose labels are the global model's)."""
    monkeypatch.setattr(ttr, "_references", {})
    monkeypatch.setattr(ttr, "train_reference", lambda ctx: Constant3())
    ctx = ref_ctx()
    adv, labels = THREATS.get(ttr.NAME).obj(ctx)
    self_adv, self_labels = THREATS.get("train_time_attack").obj(ctx)
    assert torch.equal(labels, torch.full((len(adv),), 3)) and torch.equal(adv, self_adv)
    assert torch.equal(self_labels, predict(ctx.model, adv)) and not torch.equal(self_labels, labels)


class Constant3(nn.Module):
    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), 3), 10).float()


def test_the_reference_is_trained_once_per_client_and_shared_by_the_dp_model_and_its_twin(fresh_references):
    poison = THREATS.get(ttr.NAME).obj
    for rnd in (1, 2, 3):
        poison(ref_ctx(rnd=rnd))
    assert fresh_references == [0]  # not re-trained every round
    poison(ref_ctx(rnd=1, epsilon=3.4))  # the DP model of the same trial: the twin's reference
    assert fresh_references == [0]
    poison(ref_ctx(cid=1))  # another malicious client: its own reference
    assert fresh_references == [0, 1]
    poison(ref_ctx(seed=1))  # another trial: trained afresh, the previous trial's references dropped
    assert fresh_references == [0, 1, 1000] and len(ttr._references) == 1


def test_the_reference_is_deterministic_for_a_seed_and_leaves_the_global_rng_alone():
    ctx = ref_ctx(seed=5)
    state = torch.get_rng_state()
    a = ttr.train_reference(ctx)
    assert torch.equal(torch.get_rng_state(), state)
    b, c = ttr.train_reference(ref_ctx(seed=5)), ttr.train_reference(ref_ctx(seed=6))
    same = [torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items()]
    assert all(same)
    assert not all(torch.equal(v, c.state_dict()[k]) for k, v in a.state_dict().items())
    assert not a.training
