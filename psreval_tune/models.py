"""Image classifiers that pass Opacus' validator and torchao's PT2E int8 PTQ.

Design constraints, and where each is met:
- DP-SGD needs per-sample gradients, so no BatchNorm: GroupNorm everywhere.
- Opacus' backward hooks break on in-place ops, so ReLU(inplace=False).
- Models are plain PyTorch (residual adds are ``+``): quantize.py captures
  them with ``torch.export`` and lets torchao's quantizer pick what becomes
  int8, so no quant stubs or FloatFunctional wrappers are needed here.
- Normalisation is the first layer, so callers and attacks always feed
  [0, 1] images, in the float and in the int8 model alike.
Models know nothing of datasets: channel statistics arrive as numbers.

Every architecture is registered in ARCHS beside its builder, so adding one is
one decorated function here (config validation, CLI help, sweeps and the cost
model read the entry)::

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

import torch
from torch import nn

from .registry import Registry

ARCHS = Registry("arch")


class Normalize(nn.Module):
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


def conv_gn_relu(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        group_norm(cout),
        nn.ReLU(),
    )


class Residual(nn.Module):
    """x + f(x), the ResNet-9 skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_gn_relu(channels, channels), conv_gn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class BasicBlock(nn.Module):
    """ResNet-18 block: relu(gn(conv(relu(gn(conv x)))) + shortcut(x))."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            conv_gn_relu(cin, cout, stride),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            group_norm(cout),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), group_norm(cout))
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.body(x) + self.shortcut(x))


class GlobalMaxPool(nn.Module):
    """Global max pooling over the whole feature map (max_pool2d with the map's size)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.max_pool2d(x, kernel_size=x.shape[-2:])


class Classifier(nn.Module):
    """normalize -> features -> pool -> linear."""

    def __init__(
        self,
        features: nn.Module,
        pool: nn.Module,
        width: int,
        num_classes: int,
        mean: Sequence[float],
        std: Sequence[float],
    ):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.features = features
        self.pool = pool
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.pool(self.features(x)).flatten(1)
        return self.fc(x)


@ARCHS.register("cnn", order=0, dp_compatible=True, s_per_pass=1 / 2133, dp_factor=1.95)
def cnn(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    features = nn.Sequential(
        conv_gn_relu(in_channels, 32),
        nn.MaxPool2d(2),
        conv_gn_relu(32, 64),
        nn.MaxPool2d(2),
    )
    return features, nn.AdaptiveAvgPool2d(1), 64


@ARCHS.register("resnet9", order=1, dp_compatible=True, s_per_pass=1 / 95.7, dp_factor=1.50)
def resnet9(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    """The paper's ResNet-9: 64-128-256-256 channels, two residual stages."""
    features = nn.Sequential(
        conv_gn_relu(in_channels, 64),
        conv_gn_relu(64, 128),
        nn.MaxPool2d(2),
        Residual(128),
        conv_gn_relu(128, 256),
        nn.MaxPool2d(2),
        conv_gn_relu(256, 256),
        nn.MaxPool2d(2),
        Residual(256),
    )
    return features, GlobalMaxPool(), 256


@ARCHS.register("resnet18", order=2, dp_compatible=True, s_per_pass=1 / 53.1, dp_factor=1.53)
def resnet18(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    """CIFAR-style ResNet-18 (3x3 stem, no stem pooling) with GroupNorm."""
    layers: list[nn.Module] = [conv_gn_relu(in_channels, 64)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), 512


def __getattr__(name: str) -> Any:
    if name == "ARCHITECTURES":  # {name: builder}, read from the registry (archs registered later included)
        return {entry.name: entry.obj for entry in ARCHS}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(
    arch: str, in_channels: int, num_classes: int, mean: Sequence[float], std: Sequence[float]
) -> Classifier:
    features, pool, width = ARCHS.get(arch).obj(in_channels)
    return Classifier(features, pool, width, num_classes, mean, std)
