"""MNIST (LeCun et al., 1998): 28x28 grayscale handwritten digits, 10 classes, 60,000 train / 10,000 test
images, from the four standard IDX files (plain or .gz) in --data-root (or torchvision's ROOT/MNIST/raw)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import DATASETS
from ._common import Loaded, check_root
from ._idx import MNIST_LIKE, idx_check, load_mnist_like

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView


@DATASETS.register(
    "mnist",
    order=5,
    help="MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in --data-root: 28x28 grayscale, 10 classes",
    needs_data_root=True,
    **MNIST_LIKE,
    # Fixed public constants (not from a run's training split): the per-pixel mean and std of MNIST's
    # 60,000 published training images, as PyTorch's own example uses them (pytorch/examples,
    # mnist/main.py: Normalize((0.1307,), (0.3081,))).
    norm=((0.1307,), (0.3081,)),
    check=idx_check("mnist"),
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    return load_mnist_like(cfg, check_root(cfg), "mnist", ("raw", "MNIST/raw"), 10)
