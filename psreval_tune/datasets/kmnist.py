"""Kuzushiji-MNIST (Clanuwat et al., 2018): 28x28 grayscale cursive Japanese characters, 10 classes,
60,000 train / 10,000 test images, from its four IDX files (plain or .gz; MNIST's file names) in
--data-root (or torchvision's ROOT/KMNIST/raw)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import DATASETS
from ._common import Loaded, check_root
from ._idx import MNIST_LIKE, idx_check, load_mnist_like

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView


@DATASETS.register(
    "kmnist",
    order=6,
    help="Kuzushiji-MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in --data-root: 28x28 grayscale, 10 classes",
    needs_data_root=True,
    **MNIST_LIKE,
    # Fixed public constants (not from a run's training split): the per-pixel mean and std of KMNIST's
    # 60,000 published training images as its users' loaders carry them (Normalize((0.1918,), (0.3483,)));
    # not recomputed here (no KMNIST files on this machine).
    norm=((0.1918,), (0.3483,)),
    check=idx_check("kmnist"),
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    return load_mnist_like(cfg, check_root(cfg), "kmnist", ("raw", "KMNIST/raw"), 10)
