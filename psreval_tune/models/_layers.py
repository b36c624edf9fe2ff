"""The layers every architecture shares: the Normalize first layer, GroupNorm, conv-GroupNorm-ReLU, global
max pooling, and the Classifier that build_model wraps an architecture's features in."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


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
