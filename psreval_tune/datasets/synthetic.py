"""Ten learnable classes drawn on the fly: a fixed random template per class plus noise (tests, benchmarks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import DATASETS
from ._common import Loaded, Split, check_memory

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView

SIZE, CLASSES, CHANNELS, TRAIN, TEST = 16, 10, 3, 2000, 500


@DATASETS.register(
    "synthetic",
    order=7,
    help="generated: RGB class templates plus noise, 10 classes, --train/test-samples images drawn",
    needs_data_root=False,
    image_size=SIZE,
    resizable=True,
    channels=CHANNELS,
    num_classes=CLASSES,
    pool=TRAIN,
    test=TEST,
    draws_samples=True,
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    import torch

    size, classes, channels = cfg.image_size or SIZE, CLASSES, CHANNELS
    n = cfg.train_samples or TRAIN
    n_test = cfg.test_samples or TEST
    check_memory(n + n_test, channels, size, f"synthetic data (train_samples={n}, test_samples={n_test})")
    templates = torch.rand(classes, channels, size, size, generator=gen)

    def draw(count: int) -> Split:
        y = torch.randint(0, classes, (count,), generator=gen)
        noise = torch.rand(count, channels, size, size, generator=gen)
        return Split((0.6 * templates[y] + 0.4 * noise).clamp(0, 1), y)

    return draw(n), None, draw(n_test), classes
