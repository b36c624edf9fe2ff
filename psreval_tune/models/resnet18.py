"""CIFAR-style ResNet-18 (He et al., 2016; 3x3 stem, no stem pooling) with GroupNorm: four stages of two
basic blocks, 64-128-256-512 channels, global average pooling. Registered under baselines.PAPER_ARCH_DEEP: the
paper's other architecture."""

from __future__ import annotations

import torch
from torch import nn

from ..baselines import PAPER_ARCH_DEEP
from . import ARCHS
from ._layers import conv_gn_relu, group_norm


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


@ARCHS.register(PAPER_ARCH_DEEP, order=2, dp_compatible=True, s_per_pass=1 / 53.1, dp_factor=1.53)
def resnet18(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    """CIFAR-style ResNet-18 (3x3 stem, no stem pooling) with GroupNorm."""
    layers: list[nn.Module] = [conv_gn_relu(in_channels, 64)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
        cin = cout
    return nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), 512
