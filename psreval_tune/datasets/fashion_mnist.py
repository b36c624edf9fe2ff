"""Fashion-MNIST (Xiao et al., 2017): 28x28 grayscale clothing, 10 classes, 60,000 train / 10,000 test
images in the four standard IDX files. Debian's package ``dataset-fashion-mnist`` installs them (gzipped)
in DEBIAN_ROOT, the default; --data-root DIR reads them from another folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from . import DATASETS
from ._common import DataError, Loaded, check_root
from ._idx import MNIST_LIKE, idx_check, load_mnist_like

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView

DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist (Debian/Ubuntu, as root; `make install` does it)"


@DATASETS.register(
    "fashion_mnist",
    order=4,
    help=f"Fashion-MNIST IDX files, by default Debian's dataset-fashion-mnist in {DEBIAN_ROOT}: 28x28 grayscale, "
    "10 classes",
    needs_data_root=False,
    **MNIST_LIKE,
    # Fixed public constants, not computed from a run's training split: the per-pixel mean and std of
    # Fashion-MNIST's 60,000 published training images (0.28604 / 0.35302 from the package's files),
    # the values the literature's loaders use. A run's public validation split alone gives them within
    # 0.005 (tests/test_idx.py checks it on the real files).
    norm=((0.2860,), (0.3530,)),
    check=idx_check("fashion_mnist"),
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    if cfg.data_root:
        root = check_root(cfg)
    elif DEBIAN_ROOT.is_dir():
        root = DEBIAN_ROOT
    else:
        raise DataError(f"Fashion-MNIST is not installed in {DEBIAN_ROOT}: {INSTALL_HINT}, or pass --data-root DIR")
    return load_mnist_like(cfg, root, "fashion_mnist", ("raw", "FashionMNIST/raw"), 10)
