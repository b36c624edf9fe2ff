"""Datasets as in-memory tensors, splits and client partitions.

Every loader returns pixels in [0, 1] (N, C, H, W) float32 and int64 labels;
normalisation lives inside the model, so attacks see [0, 1] images and their
eps is in pixel units. Whole datasets are decoded once into tensors: the
paper's datasets fit in memory, and per-item Python loaders would dominate
the cost of small models.

The loaders are registered one file per dataset in psreval_tune/datasets/
(the DATASETS registry); this module builds the DataBundle (subsampling,
validation split, normalisation constants) and the clients' partitions on top.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .config import CycleConfig
from .datasets import DATASETS
from .datasets._common import MAX_IMAGE_PIXELS, DataError, Loaded, Split, memory_limit_bytes, permission_line
from .datasets.medmnist import medmnist_filename

__all__ = [
    "DATASETS",
    "MAX_IMAGE_PIXELS",
    "DataBundle",
    "DataError",
    "Loaded",
    "Split",
    "load_data",
    "medmnist_filename",
    "memory_limit_bytes",
    "partition",
]


@dataclass(frozen=True)
class DataBundle:
    train: Split
    val: Split  # public validation split: int8 calibration and model selection, never the test split
    test: Split
    num_classes: int
    # Per-channel constants handed to the model's Normalize layer: the entry's fixed public ``norm``
    # where it declares one (fashion_mnist, mnist, kmnist), else statistics of the training split.
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]


def load_data(cfg: CycleConfig) -> DataBundle:
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DATASETS.get(cfg.dataset).obj
    try:
        train, val, test, num_classes = loader(cfg, gen)
    except PermissionError as exc:  # a folder or file below data_root a loader did not check itself
        raise DataError(permission_line(cfg, exc)) from None
    if cfg.train_samples is not None and cfg.train_samples < len(train):
        train = train.subset(torch.randperm(len(train), generator=gen)[: cfg.train_samples])
    if cfg.test_samples is not None and cfg.test_samples < len(test):
        test = test.subset(torch.randperm(len(test), generator=gen)[: cfg.test_samples])
    if val is None:  # no official validation split: val_fraction of the training pool
        n_val = max(1, round(cfg.val_fraction * len(train)))
        perm = torch.randperm(len(train), generator=gen)
        val, train = train.subset(perm[:n_val]), train.subset(perm[n_val:])
    if len(train) < cfg.num_clients:
        raise DataError(
            f"dataset={cfg.dataset} has {len(train)} training examples, fewer than num_clients={cfg.num_clients}"
        )
    fixed = DATASETS.get(cfg.dataset).meta.get("norm")
    if fixed is not None:  # public constants the entry declares: nothing computed from the private split
        mean, std = (tuple(float(v) for v in part) for part in fixed)
    else:
        dims = (0, 2, 3)
        mean = tuple(float(v) for v in train.x.mean(dim=dims))
        std = tuple(max(float(v), 1e-3) for v in train.x.std(dim=dims))
    return DataBundle(train=train, val=val, test=test, num_classes=num_classes, mean=mean, std=std)


# --- federation -------------------------------------------------------------


def partition(cfg: CycleConfig, y: torch.Tensor) -> list[torch.Tensor]:
    """Index tensors, one per client, covering the training split once.

    Under a threat with ``adv_fraction`` > 0 the malicious clients together hold
    exactly that share of the training data (sampled uniformly, split evenly);
    the rest is split IID or by a Dirichlet(alpha) label skew over the other
    clients. Otherwise all clients share the data.
    """
    from .threats import malicious_clients

    rng = np.random.default_rng(cfg.seed)
    n = len(y)
    perm = rng.permutation(n)
    parts: list[np.ndarray | None] = [None] * cfg.num_clients
    owners = list(range(cfg.num_clients))
    malicious = malicious_clients(cfg) if cfg.adv_fraction > 0 else []
    if malicious:
        n_adv = max(len(malicious), round(cfg.adv_fraction * n))
        for cid, chunk in zip(malicious, np.array_split(perm[:n_adv], len(malicious))):
            parts[cid] = chunk
            owners.remove(cid)
        perm = perm[n_adv:]
    if cfg.partition == "iid":
        for owner, chunk in zip(owners, np.array_split(perm, len(owners))):
            parts[owner] = chunk
    else:
        labels = y.numpy()[perm]
        buckets: list[list[np.ndarray]] = [[] for _ in owners]
        for c in np.unique(labels):
            idx = perm[labels == c]
            shares = rng.dirichlet(np.full(len(owners), cfg.dirichlet_alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for bucket, chunk in zip(buckets, np.split(idx, cuts)):
                bucket.append(chunk)
        for owner, bucket in zip(owners, buckets):
            parts[owner] = np.sort(np.concatenate(bucket))
    out = [torch.as_tensor(p, dtype=torch.int64) for p in parts]
    smallest = min(range(len(out)), key=lambda i: len(out[i]))
    if len(out[smallest]) < cfg.batch_size:
        raise DataError(
            f"batch_size={cfg.batch_size} is larger than client {smallest}'s data ({len(out[smallest])} examples); "
            f"allowed: batch_size <= {len(out[smallest])}"
        )
    return out
