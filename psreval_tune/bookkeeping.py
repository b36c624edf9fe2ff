"""Book-keeping DP-SGD: per-sample clipping without per-sample gradients.

Bu et al., "Differentially Private Optimization on Large Model at Small
Cost" (ICML 2023). One forward pass and one backward pass that computes
activation gradients only record, for every layer with parameters, its
input ``a`` and its output gradient ``g``. From those two tensors alone:

1. each sample's squared gradient norm, layer by layer: by the "ghost norm"
   (Gram matrices of ``a`` and ``g`` over positions) where that is cheap,
   otherwise by computing the per-sample gradients of that one layer;
2. the sum of clipped per-sample gradients, as ONE ordinary weight gradient
   of the batch with ``g`` scaled per sample by its clip factor.

Opacus' hooks mode instead stores every per-sample gradient of every layer
(B x #params floats: 1.25 GB for resnet9 at batch 128), and autograd also
computes the batch weight gradient that DP-SGD then throws away.

Only "clip and accumulate" is replaced. Opacus still draws the Poisson
batches (DPDataLoader), adds the Gaussian noise, divides by the expected
batch size and steps the accountant (DPOptimizer's add_noise / scale_grad /
step hook), so the privacy accounting is exactly Opacus'. The clipped sums
equal Opacus' flat clipping up to float rounding (tests/test_fast_paths.py).

Supported layers: Conv2d (numeric zero padding), Linear, GroupNorm; each
used once per forward. ``supports(model)`` tells; privacy.py falls back to
Opacus' hooks otherwise.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer_fast_gradient_clipping import DPOptimizerFastGradientClipping
from torch import nn
from torch.func import functional_call

Grads = dict[str, torch.Tensor]  # parameter name within its layer -> tensor


def _own_trainable(layer: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in layer.named_parameters(recurse=False) if p.requires_grad}


# --- per layer type: squared per-sample norms, and weighted sums ------------------------
# ``g`` is dLoss/dOutput of the batch and "per-sample" means per sample's share of
# it; write_clipped_grads rescales for the mean loss. A norm rule returns each
# sample's squared norm over the layer's trainable parameters and the per-sample
# gradients it had to materialise anyway ("kept"): their clipped sum is then a
# cheap weighted reduction instead of a second weight-gradient computation (the
# hybrid of Bu et al.). A sum rule computes the other parameters' sums from a
# ``g`` already scaled per sample.

Norms = tuple[torch.Tensor, Grads]  # (B,) squared norms, kept per-sample gradients


def _linear_norms(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, per_sample) -> Norms:
    a3, g3 = a.reshape(len(a), -1, a.shape[-1]), g.reshape(len(g), -1, g.shape[-1])
    sq = torch.zeros(len(a), device=a.device, dtype=g.dtype)
    params = _own_trainable(layer)
    if "weight" in params:
        if a3.shape[1] == 1:  # one position: ||g a^T||^2 = ||g||^2 ||a||^2
            sq += a3.square().sum((1, 2)) * g3.square().sum((1, 2))
        else:  # ghost norm over positions
            sq += (torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(g3, g3.transpose(1, 2))).sum((1, 2))
    if "bias" in params:
        sq += g3.sum(1).square().sum(1)
    return sq, {}


def _linear_sums(layer: nn.Linear, a: torch.Tensor, g: torch.Tensor, names) -> Grads:
    a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
    out: Grads = {}
    if "weight" in names:
        out["weight"] = g2.t() @ a2
    if "bias" in names:
        out["bias"] = g2.sum(0)
    return out


def _conv_ghost_is_cheaper(layer: nn.Conv2d, g: torch.Tensor) -> bool:
    # Per sample, the two Gram matrices cost T^2*(p+d) multiply-adds and the
    # per-sample weight gradient T*p*d (T output positions, p = Cin*k*k,
    # d = Cout): ghost when T*(p+d) < p*d. Measured on CPU, this FLOP rule
    # beats Bu et al.'s memory rule (2*T^2 < p*d), which sends resnet9's
    # 16x16 layers to the (there slower) Gram matrices.
    positions = g.shape[2] * g.shape[3]
    p = layer.in_channels * layer.kernel_size[0] * layer.kernel_size[1] // layer.groups
    return layer.groups == 1 and positions * (p + layer.out_channels) < p * layer.out_channels


def _conv_norms(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, per_sample) -> Norms:
    sq = torch.zeros(len(a), device=a.device, dtype=g.dtype)
    kept: Grads = {}
    params = _own_trainable(layer)
    if "weight" in params:
        if _conv_ghost_is_cheaper(layer, g):
            cols = F.unfold(a, layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # B, p, T
            gg = g.flatten(2)  # B, d, T
            sq += (torch.bmm(cols.transpose(1, 2), cols) * torch.bmm(gg.transpose(1, 2), gg)).sum((1, 2))
        else:
            kept["weight"] = per_sample(layer, [a], g)[layer.weight]
            sq += kept["weight"].flatten(1).square().sum(1)
    if "bias" in params:
        kept["bias"] = g.sum((2, 3))
        sq += kept["bias"].square().sum(1)
    return sq, kept


def _conv_sums(layer: nn.Conv2d, a: torch.Tensor, g: torch.Tensor, names) -> Grads:
    if "weight" not in names:
        return {}
    return {
        "weight": torch.nn.grad.conv2d_weight(
            a, layer.weight.shape, g, layer.stride, layer.padding, layer.dilation, layer.groups
        )
    }


def _group_norm_norms(layer: nn.GroupNorm, a: torch.Tensor, g: torch.Tensor, per_sample) -> Norms:
    params = _own_trainable(layer)
    kept: Grads = {}
    if "weight" in params:
        kept["weight"] = (g * F.group_norm(a, layer.num_groups, eps=layer.eps)).flatten(2).sum(2)  # B, C
    if "bias" in params:
        kept["bias"] = g.flatten(2).sum(2)
    return sum(v.square().sum(1) for v in kept.values()), kept


def _nothing_left(layer: nn.Module, a: torch.Tensor, g: torch.Tensor, names) -> Grads:
    return {}  # every parameter's per-sample gradient was kept by the norm rule


LAYERS: dict[type, tuple[Callable, Callable]] = {
    nn.Linear: (_linear_norms, _linear_sums),
    nn.Conv2d: (_conv_norms, _conv_sums),
    nn.GroupNorm: (_group_norm_norms, _nothing_left),
}


def unsupported(model: nn.Module) -> str | None:
    """Why book-keeping cannot train ``model`` (None: it can)."""
    for name, layer in model.named_modules():
        if not _own_trainable(layer):
            continue
        if type(layer) not in LAYERS:
            return f"layer {name} ({type(layer).__name__}) has parameters and no book-keeping rule"
        if isinstance(layer, nn.Conv2d) and (isinstance(layer.padding, str) or layer.padding_mode != "zeros"):
            return f"layer {name}: Conv2d padding {layer.padding!r}/{layer.padding_mode!r}"
    return None


class BookKeepingModule(nn.Module):
    """Wraps a model; in training it records (a, g) per layer instead of parameter gradients.

    ``_module`` is the plain model, as with Opacus' GradSampleModule.
    """

    def __init__(self, module: nn.Module, per_sample_conv: Callable = compute_conv_grad_sample):
        super().__init__()
        reason = unsupported(module)
        if reason:
            raise ValueError(f"book-keeping DP-SGD: {reason}")
        self._module = module
        self.per_sample_conv = per_sample_conv  # for conv layers where the ghost norm is dearer
        self._tape: list[list] = []  # [layer, input, output grad]
        self._recording = False
        for layer in module.modules():
            if _own_trainable(layer):
                layer.register_forward_hook(self._record)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self._module(x)
        # Detached parameters: autograd computes activation gradients only, never
        # the batch weight gradients that DP-SGD would discard. The input needs a
        # gradient so that the first layer's output gradient is recorded.
        self._tape = []
        params = {n: p.detach() for n, p in self._module.named_parameters()}
        self._recording = True
        try:
            return functional_call(self._module, params, (x.detach().requires_grad_(True),))
        finally:
            self._recording = False

    def _record(self, layer: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not self._recording:
            return
        if any(entry[0] is layer for entry in self._tape):
            raise ValueError(f"book-keeping DP-SGD: {type(layer).__name__} used twice in one forward")
        entry = [layer, inputs[0].detach(), None]
        self._tape.append(entry)
        output.register_hook(lambda grad: entry.__setitem__(2, grad.detach()))

    def write_clipped_grads(self, max_grad_norm: float) -> None:
        """p.grad = sum over the batch of per-sample gradients clipped to max_grad_norm
        (flat clipping, Opacus' factor min(1, C / (norm + 1e-6)))."""
        tape = [e for e in self._tape if e[2] is not None]
        batch = len(tape[0][1]) if tape else 0
        grads: dict[int, torch.Tensor] = {}
        if batch:
            per_layer = [LAYERS[type(layer)][0](layer, a, g, self.per_sample_conv) for layer, a, g in tape]
            # The loss is a batch mean: sample i's own gradient is batch * its share.
            norms = sum(sq for sq, _ in per_layer).sqrt() * batch
            weight = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0) * batch
            for (layer, a, g), (_, kept) in zip(tape, per_layer):
                rest = set(_own_trainable(layer)) - set(kept)
                found = {name: torch.tensordot(weight, ps, dims=1) for name, ps in kept.items()}
                if rest:
                    scaled = g * weight.view(-1, *[1] * (g.dim() - 1))
                    found.update(LAYERS[type(layer)][1](layer, a, scaled, rest))
                for name, value in found.items():
                    grads[id(getattr(layer, name))] = value
        for p in self._module.parameters():
            if p.requires_grad:
                p.grad = grads.get(id(p), torch.zeros_like(p)).view_as(p)
        self._tape = []


class BookKeepingOptimizer(DPOptimizerFastGradientClipping):
    """Opacus' DPOptimizer for pre-clipped gradients, fed by a BookKeepingModule.

    Built from the DPOptimizer that PrivacyEngine.make_private returned, so it
    keeps its noise multiplier, clipping bound, expected batch size, noise
    generator and, above all, its step hook: the accountant's.
    """

    def __init__(self, dp_optimizer: DPOptimizer, module: BookKeepingModule):
        super().__init__(
            dp_optimizer.original_optimizer,
            noise_multiplier=dp_optimizer.noise_multiplier,
            max_grad_norm=dp_optimizer.max_grad_norm,
            expected_batch_size=dp_optimizer.expected_batch_size,
            loss_reduction=dp_optimizer.loss_reduction,
            generator=dp_optimizer.generator,
            secure_mode=dp_optimizer.secure_mode,
        )
        self.step_hook = dp_optimizer.step_hook
        self.module = module

    def accumulate(self) -> None:
        self.module.write_clipped_grads(self.max_grad_norm)
        super().accumulate()
