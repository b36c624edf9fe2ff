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

from psreval_tune.models import build_model
from psreval_tune.privacy import conv2d_grad_sample

pytestmark = pytest.mark.filterwarnings("ignore:Full backward hook is firing")

CONV_CASES = [  # (cin, cout, kernel, stride, padding, dilation, groups, bias, size)
    (3, 8, 3, 1, 1, 1, 1, True, 12),
    (8, 16, 3, 2, 1, 1, 1, False, 11),
    (4, 4, 1, 1, 0, 1, 1, True, 9),
    (8, 8, 3, 1, 2, 2, 2, True, 10),
    (1, 6, 5, 1, 0, 1, 1, False, 14),
]


@pytest.mark.parametrize("cin,cout,k,stride,pad,dil,groups,bias,size", CONV_CASES)
def test_conv_grad_sample_matches_opacus(cin, cout, k, stride, pad, dil, groups, bias, size):
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


def test_conv_grad_sample_empty_batch_and_frozen_weight():
    layer = nn.Conv2d(2, 3, 3, padding=1)
    empty = conv2d_grad_sample(layer, [torch.zeros(0, 2, 6, 6)], torch.zeros(0, 3, 6, 6))
    assert empty[layer.weight].shape == (1, 3, 2, 3, 3) and not empty[layer.weight].any()
    layer.weight.requires_grad_(False)
    only_bias = conv2d_grad_sample(layer, [torch.randn(4, 2, 6, 6)], torch.ones(4, 3, 6, 6))
    assert list(only_bias) == [layer.bias]
    torch.testing.assert_close(only_bias[layer.bias], torch.full((4, 3), 36.0))


@pytest.mark.parametrize("arch", ["cnn", "resnet9", "resnet18"])
def test_whole_model_per_sample_grads_match_opacus(arch):
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
