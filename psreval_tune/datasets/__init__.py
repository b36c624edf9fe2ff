"""Datasets: one file per dataset, each registering its loader in DATASETS.

A loader is ``load(cfg, gen) -> (train, val, test, num_classes)``: [0, 1]
float32 (N, C, H, W) pixels and int64 labels as ``Split``s; ``val`` is the
dataset's official validation split, or None (data.load_data then holds out
``val_fraction`` of train). Shared helpers (Split, DataError, the data_root and
memory checks) are in ``_common.py``, the IDX reader (MNIST's format) in
``_idx.py``; ``psreval_tune.data`` builds the DataBundle and the client
partitions on top.

Adding a dataset is adding one file here (config validation, CLI help, sweep
files and the --dry-run cost model read its entry)::

    @DATASETS.register("my_data", needs_data_root=True, image_size=32, channels=3, num_classes=10,
                       pool=50000, test=10000, help="my data: ROOT/train, ROOT/test")
    def load(cfg, gen): ...

Metadata:
- ``help``: the CLI's description of it (what it is, where its files go).
- ``needs_data_root``: config refuses it without --data-root.
- ``image_size``: its image side when ``image_size`` is none; ``resizable``: whether --image-size applies.
- ``channels``, ``num_classes``: an int, a function of the config (MedMNIST: per subset), or None (only
  the data knows: pneumonia's class folders). Read with ``channels_of(cfg)`` / ``num_classes_of(cfg)``.
- ``pool``, ``test``: training images before the validation split, and test images (the cost model).
- ``own_val_split``: ships a validation split (``pool`` is then the training split alone).
- ``draws_samples``: generated, so train_samples/test_samples are drawn rather than subsampled.
- ``downloadable``: --download can fetch it into --data-root.
- ``own_fields``: CycleConfig fields only this dataset reads; other datasets' training keys leave them out.
- ``check``: optional ``check(cfg)`` raising ConfigError, run when the config names this dataset.
- ``norm``: optional ``((mean, ...), (std, ...))`` per channel, fixed public constants (say where they come
  from) that the model's Normalize layer uses; without it data.load_data computes them from the train split.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..registry import Registry, discover
from ._common import DataError, Loaded, Split

if TYPE_CHECKING:
    from ..registry import ConfigView

DATASETS = Registry("dataset")

__all__ = ["DATASETS", "DataError", "Loaded", "Split", "channels_of", "image_size_of", "num_classes_of"]


def _resolve(name: str, key: str, cfg: ConfigView) -> Any:
    value = DATASETS.get(name).meta.get(key)
    return value(cfg) if callable(value) else value


def channels_of(cfg: ConfigView) -> int | None:
    """Image channels of cfg's dataset, or None where only the data says."""
    return _resolve(cfg.dataset, "channels", cfg)


def image_size_of(cfg: ConfigView) -> int | None:
    """Image side of cfg's dataset: --image-size where the dataset is resizable and it is set, else the
    entry's own side (None where only the data says)."""
    entry = DATASETS.get(cfg.dataset)
    return (cfg.image_size if entry.meta.get("resizable") else None) or entry.meta.get("image_size")


def num_classes_of(cfg: ConfigView) -> int | None:
    """Classes of cfg's dataset, or None where only the data says (pneumonia's class folders)."""
    return _resolve(cfg.dataset, "num_classes", cfg)


discover(__name__, __path__)
