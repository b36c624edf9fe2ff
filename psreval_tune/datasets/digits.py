"""scikit-learn's bundled 8x8 digits (1797 images, 10 classes): a random fifth is the test split."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import DATASETS
from ._common import Loaded, Split

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView


@DATASETS.register(
    "digits",
    order=0,
    help="bundled with scikit-learn: 8x8 grayscale, 10 classes",
    needs_data_root=False,
    image_size=8,
    resizable=False,
    channels=1,
    num_classes=10,
    pool=1438,
    test=359,
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    import torch
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=gen)
    n_test = len(y) // 5
    return Split(x[perm[n_test:]], y[perm[n_test:]]), None, Split(x[perm[:n_test]], y[perm[:n_test]]), 10
