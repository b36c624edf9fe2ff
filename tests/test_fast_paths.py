"""The optimised hot paths give the numbers of the paths they replace.

conv2d_grad_sample (psreval_tune.privacy) replaces Opacus' unfold+bmm
Conv2d grad sampler on CPU: per-sample gradients must match Opacus' to
float rounding for every conv shape the models use (and the odd ones), and
a whole DP cycle must spend exactly the same epsilon with the same noise.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from opacus import GradSampleModule
from opacus.grad_sample.conv import compute_conv_grad_sample
from torch import nn

from psreval_tune import privacy
from psreval_tune.config import CycleConfig
from psreval_tune.models import build_model
from psreval_tune.privacy import conv2d_grad_sample, epsilon_spent

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")


@pytest.fixture
def always_loop(monkeypatch):
    """Small test layers would take Opacus' own sampler; force the per-sample loop."""
    monkeypatch.setattr(privacy, "LOOP_MIN_MACS", 0)


CONV_CASES = [  # (cin, cout, kernel, stride, padding, dilation, groups, bias, size)
    (3, 8, 3, 1, 1, 1, 1, True, 12),
    (8, 16, 3, 2, 1, 1, 1, False, 11),
    (4, 4, 1, 1, 0, 1, 1, True, 9),
    (8, 8, 3, 1, 2, 2, 2, True, 10),
    (1, 6, 5, 1, 0, 1, 1, False, 14),
]


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,bias,size", CONV_CASES)
def test_conv_grad_sample_matches_opacus(cin, cout, k, stride, pad, dil, groups, bias, size, always_loop):
    layer = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dil, groups=groups, bias=bias)
    x = torch.randn(5, cin, size, size)
    g = torch.randn_like(layer(x))
    ours, theirs = conv2d_grad_sample(layer, [x], g), compute_conv_grad_sample(layer, [x], g)
    assert set(ours) == set(theirs)
    for p in theirs:
        assert ours[p].shape == theirs[p].shape == (5, *p.shape)
        torch.testing.assert_close(ours[p], theirs[p], rtol=1e-5, atol=1e-5)
    # and the per-sample gradients sum to the batch gradient autograd computes
    layer.zero_grad()
    (layer(x) * g).sum().backward()
    torch.testing.assert_close(ours[layer.weight].sum(0), layer.weight.grad, rtol=1e-4, atol=1e-4)


def test_conv_grad_sample_empty_batch_and_frozen_weight(always_loop):
    layer = nn.Conv2d(2, 3, 3, padding=1)
    empty = conv2d_grad_sample(layer, [torch.zeros(0, 2, 6, 6)], torch.zeros(0, 3, 6, 6))
    assert empty[layer.weight].shape == (1, 3, 2, 3, 3) and not empty[layer.weight].any()
    layer.weight.requires_grad_(False)
    only_bias = conv2d_grad_sample(layer, [torch.randn(4, 2, 6, 6)], torch.ones(4, 3, 6, 6))
    assert list(only_bias) == [layer.bias]
    torch.testing.assert_close(only_bias[layer.bias], torch.full((4, 3), 36.0))


@pytest.mark.parametrize("arch", ["cnn", "resnet9", "resnet18"])
def test_whole_model_per_sample_grads_match_opacus(arch, always_loop):
    """Every parameter's grad_sample, through Opacus' hooks, with and without the swap."""
    torch.manual_seed(0)
    channels = 1 if arch == "cnn" else 3
    model = build_model(arch, channels, 10, (0.5,) * channels, (0.25,) * channels)
    x, y = torch.rand(4, channels, 16, 16), torch.randint(0, 10, (4,))
    grads = []
    for fast in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gsm = GradSampleModule(model)
        if fast:
            gsm.GRAD_SAMPLERS = {**gsm.GRAD_SAMPLERS, nn.Conv2d: conv2d_grad_sample}
        nn.functional.cross_entropy(gsm(x), y).backward()
        grads.append({n: p.grad_sample.clone() for n, p in gsm.named_parameters()})
        gsm.zero_grad(set_to_none=True)
        gsm._close()
    assert grads[0].keys() == grads[1].keys() and any("conv" in n or "features" in n for n in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


def _dp_step(arch: str, grad_sampler: str, batch: int = 6, size: int = 16, max_grad_norm: float = 0.05):
    """One DP-SGD step through psreval_tune.privacy.make_private: (module type, params after,
    summed clipped grads before noise)."""
    from torch.utils.data import DataLoader, TensorDataset

    from psreval_tune.config import CycleConfig
    from psreval_tune.privacy import make_private

    torch.manual_seed(0)
    channels = 1 if arch == "cnn" else 3
    model = build_model(arch, channels, 10, (0.5,) * channels, (0.25,) * channels)
    x, y = torch.rand(batch, channels, size, size), torch.randint(0, 10, (batch,))
    cfg = CycleConfig(epsilon=3.0, rounds=1, max_grad_norm=max_grad_norm, grad_sampler=grad_sampler, device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    private = make_private(cfg, model, optimizer, DataLoader(TensorDataset(x, y), batch_size=batch // 2), seed=7)
    private.optimizer.zero_grad(set_to_none=True)
    nn.functional.cross_entropy(private.module(x), y).backward()
    private.optimizer.step()
    summed = {n: p.summed_grad.clone() for n, p in model.named_parameters()}  # kept until zero_grad
    return type(private.module).__name__, {n: p.detach().clone() for n, p in model.named_parameters()}, summed, private


@pytest.mark.parametrize("clip", [0.05, 1e4], ids=["every-sample-clipped", "none-clipped"])
@pytest.mark.parametrize("arch", ["cnn", "resnet9", "resnet18"])
def test_bookkeeping_step_equals_opacus_step(arch, clip):
    """Same clipped sums, same noise, same accountant step. Unclipped samples catch a wrong
    scale of the per-sample gradients; clipped ones a wrong norm."""
    kind_bk, after_bk, summed_bk, priv_bk = _dp_step(arch, "auto", max_grad_norm=clip)
    kind_op, after_op, summed_op, priv_op = _dp_step(arch, "opacus", max_grad_norm=clip)
    assert (kind_bk, kind_op) == ("BookKeepingModule", "GradSampleModule")
    assert summed_bk.keys() == summed_op.keys()
    for name in summed_op:
        torch.testing.assert_close(summed_bk[name], summed_op[name], rtol=1e-4, atol=1e-6, msg=name)
    for name in after_op:
        torch.testing.assert_close(after_bk[name], after_op[name], rtol=1e-4, atol=1e-6, msg=name)
    assert (
        priv_bk.engine.accountant.history
        == priv_op.engine.accountant.history
        == [(priv_op.noise_multiplier, priv_op.sample_rate, 1)]
    )
    assert (
        priv_bk.report(CycleConfig(epsilon=3.0)).epsilon_spent == priv_op.report(CycleConfig(epsilon=3.0)).epsilon_spent
    )


@pytest.fixture(scope="module")
def dp_cycles(small_cfg):
    """The same 3-round DP digits cycle with book-keeping (auto) and with Opacus' hooks."""
    from psreval_tune.cycle import run_cycle

    cfg = small_cfg.replace(epsilon=3.4, eval_attacks=("PGD",), attack_repeats=1)
    return {s: run_cycle(cfg.replace(grad_sampler=s)) for s in ("auto", "opacus")}


@pytest.mark.slow  # dp_cycles: two 3-round DP cycles
def test_dp_cycle_accounting_is_identical(dp_cycles):
    fast, ref = dp_cycles["auto"], dp_cycles["opacus"]
    for key in ("epsilon_spent", "noise_multiplier", "sample_rate", "dp_steps", "delta"):
        assert fast.metrics[key] == ref.metrics[key], key
    assert fast.metrics["epsilon_spent"] <= 3.4


@pytest.mark.slow  # dp_cycles: two 3-round DP cycles
def test_dp_cycle_records_its_clipping_path(dp_cycles):
    fast, ref = dp_cycles["auto"], dp_cycles["opacus"]
    assert (fast.metrics["dp_bookkeeping"], fast.dp) == (1.0, {"clipping": "bookkeeping", "fallback": None})
    assert (ref.metrics["dp_bookkeeping"], ref.dp) == (0.0, {"clipping": "opacus", "fallback": "grad_sampler=opacus"})


@pytest.mark.slow  # dp_cycles: two 3-round DP cycles
def test_dp_cycle_metrics_match_within_float_tolerance(dp_cycles):
    """The clipped sums are added in another order, so weights differ in the last bits
    (train loss agrees to ~1e-7 relative). Float-model accuracies get 1 point of
    tolerance; int8 ones 2 points, because a weight 1e-7 away from a rounding boundary
    of the int8 grid lands in the neighbouring bin (measured: 1 test image of 359)."""
    fast, ref = dp_cycles["auto"], dp_cycles["opacus"]
    for key, tol in (
        ("acc_clean_float", 0.01),
        ("acc_wb_pgd_mean", 0.01),
        ("acc_clean_int8", 0.02),
        ("acc_wb_pgd_int8_mean", 0.02),
    ):
        assert abs(fast.metrics[key] - ref.metrics[key]) <= tol, (key, fast.metrics[key], ref.metrics[key])
    losses = [[h["train_loss"] for h in r.history] for r in (fast, ref)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "history",
    [
        [(1.1, 0.125, 40)],
        [(0.7, 0.01, 1000), (2.5, 0.2, 3)],
        [(1.3, 0.5, 1), (1.3, 0.25, 7), (0.9, 0.5, 2)],
    ],
)
def test_cached_rdp_epsilon_is_bit_identical(history):
    from opacus.accountants import PRVAccountant, RDPAccountant

    acc = RDPAccountant()
    acc.history = list(history)
    for delta in (1e-5, 1e-3):
        assert epsilon_spent(acc, delta) == acc.get_epsilon(delta)  # exact, not approx
        assert epsilon_spent(acc, delta) == acc.get_epsilon(delta)  # and again from the cache
    prv = PRVAccountant()
    prv.history = list(history[:1])
    assert epsilon_spent(prv, 1e-5) == prv.get_epsilon(1e-5)


def _private(model: nn.Module, grad_sampler: str):
    from torch.utils.data import DataLoader, TensorDataset

    from psreval_tune.privacy import make_private

    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))
    cfg = CycleConfig(epsilon=3.0, rounds=1, grad_sampler=grad_sampler, device="cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return make_private(cfg, model, optimizer, DataLoader(TensorDataset(x, y), batch_size=4), seed=7)


@pytest.mark.parametrize(
    "arch,grad_sampler,clipping,fallback",
    [
        ("cnn", "auto", "bookkeeping", None),
        ("cnn", "opacus", "opacus", "grad_sampler=opacus"),
        ("layernorm", "auto", "opacus", "layer 2 (LayerNorm) has parameters and no book-keeping rule"),
    ],
)
def test_dp_path_is_recorded_with_the_layer_that_forced_opacus(arch, grad_sampler, clipping, fallback, monkeypatch):
    """grad_sampler=auto silently falls back to Opacus' hooks for a layer without a book-keeping rule;
    the client, its report, the cycle's metrics and metrics.json say which path ran and why."""
    monkeypatch.setattr(privacy, "calibrate_noise", lambda *a: 1.0)  # seconds of binary search, beside the point
    from types import SimpleNamespace

    from psreval_tune.artifacts import summary
    from psreval_tune.cycle import TrainedModel, dp_path, size_and_privacy_metrics

    torch.manual_seed(0)
    if arch == "layernorm":
        model = nn.Sequential(nn.Flatten(), nn.Linear(192, 8), nn.LayerNorm(8), nn.Linear(8, 3))
    else:
        model = build_model(arch, 3, 3, (0.5,) * 3, (0.25,) * 3)
    private = _private(model, grad_sampler)
    assert (private.clipping, private.clipping_fallback) == (clipping, fallback)
    assert type(private.module).__name__ == ("BookKeepingModule" if clipping == "bookkeeping" else "GradSampleModule")
    report = vars(private.report(CycleConfig(epsilon=3.0)))
    assert (report["clipping"], report["clipping_fallback"]) == (clipping, fallback)

    main = TrainedModel("dp", model, history=[{"train_loss": 1.0}], privacy=report)
    main.int8_model = model
    metrics = size_and_privacy_metrics(main)
    assert metrics["dp_bookkeeping"] == (1.0 if clipping == "bookkeeping" else 0.0)  # a number, for MLflow
    result = SimpleNamespace(config=CycleConfig(epsilon=3.0), metrics=metrics, history=[], dp=dp_path(report))
    assert summary(result)["dp"] == {"clipping": clipping, "fallback": fallback}  # metrics.json
    assert dp_path(None) is None


def test_trial_threads_and_gpu_share_follow_the_ray_allotment(monkeypatch):
    from psreval_tune import trainable

    monkeypatch.setattr(trainable, "_INTEROP_THREADS_SET", [1])  # never change this test process's inter-op pool
    before = torch.get_num_threads()
    try:
        assert trainable.fit_to_allotment({"CPU": 1.5}) == {"torch_threads": 1}
        assert torch.get_num_threads() == 1
        assert trainable.fit_to_allotment({"CPU": 0.25}) == {"torch_threads": 1}  # never 0
        assert trainable.fit_to_allotment({}) == {}  # the CLI / no Ray: torch's defaults stay
        assert trainable.assigned_resources() == {}  # not a Ray worker
        if not torch.cuda.is_available():  # the GPU share is only set on CUDA
            assert trainable.fit_to_allotment({"CPU": 1, "GPU": 0.25}) == {"torch_threads": 1}
    finally:
        torch.set_num_threads(before)
