"""A small CNN: two conv-GroupNorm-ReLU blocks (32, 64 channels) with max pooling, then global average
pooling. The config's default architecture: quick on a CPU."""

from __future__ import annotations

from torch import nn

from . import ARCHS
from ._layers import conv_gn_relu


@ARCHS.register("cnn", order=0, dp_compatible=True, s_per_pass=1 / 2133, dp_factor=1.95)
def cnn(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    features = nn.Sequential(
        conv_gn_relu(in_channels, 32),
        nn.MaxPool2d(2),
        conv_gn_relu(32, 64),
        nn.MaxPool2d(2),
    )
    return features, nn.AdaptiveAvgPool2d(1), 64
