"""The paper's ResNet-9 with GroupNorm: 64-128-256-256 channels, two residual stages, global max pooling.
Registered under baselines.PAPER_ARCH: psreval reproduce's default architecture."""

from __future__ import annotations

import torch
from torch import nn

from ..baselines import PAPER_ARCH
from . import ARCHS
from ._layers import GlobalMaxPool, conv_gn_relu


class Residual(nn.Module):
    """x + f(x), the ResNet-9 skip connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_gn_relu(channels, channels), conv_gn_relu(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@ARCHS.register(PAPER_ARCH, order=1, dp_compatible=True, s_per_pass=1 / 95.7, dp_factor=1.50)
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
