"""Image classifiers that pass Opacus' validator and torchao's PT2E int8 PTQ: one file per architecture,
each registering its builder in ARCHS.

Design constraints, and where each is met:
- DP-SGD needs per-sample gradients, so no BatchNorm: GroupNorm everywhere.
- Opacus' backward hooks break on in-place ops, so ReLU(inplace=False).
- Models are plain PyTorch (residual adds are ``+``): quantize.py captures
  them with ``torch.export`` and lets torchao's quantizer pick what becomes
  int8, so no quant stubs or FloatFunctional wrappers are needed here.
- Normalisation is the first layer, so callers and attacks always feed
  [0, 1] images, in the float and in the int8 model alike.
Models know nothing of datasets: channel statistics arrive as numbers.

A builder returns the feature extractor, the pooling and the feature width; :func:`build_model` wraps them
as normalize -> features -> pool -> linear (``_layers.Classifier``). The shared layers (Normalize,
GroupNorm, conv-GroupNorm-ReLU, global max pooling) are in ``_layers.py``; an architecture's own blocks live
in its file (ResNet-9's Residual, ResNet-18's BasicBlock).

Adding an architecture is adding one file here (config validation, CLI help, sweeps and the cost
model read its entry)::

    from torch import nn

    from . import ARCHS
    from ._layers import conv_gn_relu

    @ARCHS.register("my_net", order=3, dp_compatible=True, s_per_pass=1 / 500, dp_factor=1.5)
    def my_net(in_channels: int) -> tuple[nn.Module, nn.Module, int]:  # features, pool, feature width
        ...

Metadata every architecture declares:
- ``dp_compatible``: passes Opacus' validator (GroupNorm, no in-place ops), so DP-SGD can train it.
- ``s_per_pass``: seconds of one SGD forward+backward pass of one 3x32x32 image (batch ~128, 2-core CPU,
  benchmarks/results/dp_sgd.json, torch 2.13): the --dry-run cost model (sweeps/cost.py) scales it by image area.
- ``dp_factor``: DP-SGD (book-keeping clipping, the default) / SGD time per image (dp_sgd.json).
"""

from __future__ import annotations

from typing import Any, Sequence

from ..registry import Registry, discover
from ._layers import Classifier, GlobalMaxPool, Normalize, conv_gn_relu, group_norm

ARCHS = Registry("arch")

__all__ = ["ARCHS", "Classifier", "GlobalMaxPool", "Normalize", "build_model", "conv_gn_relu", "group_norm"]


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":  # {name: builder}, read from the registry (archs registered later included)
        return {entry.name: entry.obj for entry in ARCHS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(
    arch: str, in_channels: int, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> Classifier:
    features, pool, width = ARCHS.get(arch).obj(in_channels)
    return Classifier(features, pool, width, num_classes, mean, std)


discover(__name__, __path__)
