"""Datasets as in-memory tensors, splits and client partitions.

Every loader returns pixels in [0, 1] (N, C, H, W) float32 and int64 labels;
normalisation lives inside the model, so attacks see [0, 1] images and their
eps is in pixel units. Whole datasets are decoded once into tensors: the
paper's datasets fit in memory, and per-item Python loaders would dominate
the cost of small models.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import CycleConfig, ConfigError


class DataError(ConfigError):
    """Data on disk is missing, empty or unreadable. The message is one line."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> "Split":
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class DataBundle:
    train: Split
    val: Split  # public validation split: int8 calibration only
    test: Split
    num_classes: int
    mean: tuple[float, ...]  # per-channel statistics of the training split,
    std: tuple[float, ...]  # handed to the model's Normalize layer

    @property
    def in_channels(self) -> int:
        return self.train.x.shape[1]


def load_data(cfg: CycleConfig) -> DataBundle:
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = _LOADERS[cfg.dataset]
    trainval, test, num_classes = loader(cfg, gen)
    if cfg.train_samples is not None and cfg.train_samples < len(trainval):
        trainval = trainval.subset(torch.randperm(len(trainval), generator=gen)[: cfg.train_samples])
    if cfg.test_samples is not None and cfg.test_samples < len(test):
        test = test.subset(torch.randperm(len(test), generator=gen)[: cfg.test_samples])
    n_val = max(1, round(cfg.val_fraction * len(trainval)))
    perm = torch.randperm(len(trainval), generator=gen)
    val, train = trainval.subset(perm[:n_val]), trainval.subset(perm[n_val:])
    if len(train) < cfg.num_clients:
        raise DataError(f"dataset={cfg.dataset} has {len(train)} training examples, fewer than num_clients={cfg.num_clients}")
    dims = (0, 2, 3)
    mean = tuple(float(v) for v in train.x.mean(dim=dims))
    std = tuple(max(float(v), 1e-3) for v in train.x.std(dim=dims))
    return DataBundle(train=train, val=val, test=test, num_classes=num_classes, mean=mean, std=std)


# --- loaders: each returns (train+val pool, test, num_classes) ------------


def _digits(cfg: CycleConfig, gen: torch.Generator) -> tuple[Split, Split, int]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=gen)
    n_test = len(y) // 5
    return Split(x[perm[n_test:]], y[perm[n_test:]]), Split(x[perm[:n_test]], y[perm[:n_test]]), 10


def _synthetic(cfg: CycleConfig, gen: torch.Generator) -> tuple[Split, Split, int]:
    """Ten learnable classes: a fixed random template per class plus noise."""
    size, classes, channels = cfg.image_size or 16, 10, 3
    n = cfg.train_samples or 2000
    n_test = cfg.test_samples or 500
    templates = torch.rand(classes, channels, size, size, generator=gen)

    def draw(count: int) -> Split:
        y = torch.randint(0, classes, (count,), generator=gen)
        noise = torch.rand(count, channels, size, size, generator=gen)
        return Split((0.6 * templates[y] + 0.4 * noise).clamp(0, 1), y)

    return draw(n), draw(n_test), classes


def _check_root(cfg: CycleConfig) -> Path:
    root = Path(str(cfg.data_root)).expanduser()
    if not root.is_dir() and not cfg.download:
        raise DataError(f"data_root={str(root)!r} does not exist or is not a folder; point --data-root at the {cfg.dataset} data")
    return root


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a pickle can run arbitrary
    code on load, and CIFAR-10 batches are pickles that users download."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
               ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "bytes"),
               ("_codecs", "encode")}  # how Python 3 writes bytes at protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _scan_cifar_batches(folder: Path) -> None:
    """Refuse batch files that would do more than build arrays, before torchvision pickle.loads them."""
    for path in sorted(folder.glob("*_batch*")) + [folder / "batches.meta"]:
        if path.is_file():
            try:
                with open(path, "rb") as fh:
                    _ArrayUnpickler(fh, encoding="latin1").load()
            except pickle.UnpicklingError as exc:
                raise DataError(f"unsafe or corrupt CIFAR-10 file {path}: {exc}") from None
            except Exception as exc:  # any other parse failure of a corrupt file
                raise DataError(f"corrupt CIFAR-10 batch file {path}: {type(exc).__name__}") from None


def _cifar10(cfg: CycleConfig, gen: torch.Generator) -> tuple[Split, Split, int]:
    from ._torchvision import import_torchvision

    datasets = import_torchvision().datasets
    root = _check_root(cfg)

    class LocalCIFAR10(datasets.CIFAR10):
        # torchvision md5-checks all six batch files (~170 MB) on every load.
        # The archive is verified when --download fetches it; afterwards we
        # only require the files to be present, which also lets tests use a
        # tiny CIFAR-10 written in the same pickle format.
        def _check_integrity(self) -> bool:
            base = os.path.join(self.root, self.base_folder)
            names = [name for name, _ in self.train_list + self.test_list] + [self.meta["filename"]]
            return all(os.path.isfile(os.path.join(base, name)) for name in names)

        def _load_meta(self) -> None:
            # torchvision md5-checks batches.meta as well, which rejected any
            # tiny CIFAR-10; its presence is already required above.
            with open(os.path.join(self.root, self.base_folder, self.meta["filename"]), "rb") as fh:
                self.classes = pickle.load(fh, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    base = root / LocalCIFAR10.base_folder
    if not cfg.download:
        _scan_cifar_batches(base)
    splits = []
    for train in (True, False):
        try:
            ds = LocalCIFAR10(str(root), train=train, download=cfg.download)
        except RuntimeError:
            raise DataError(
                f"data_root={str(root)!r} holds no CIFAR-10 data "
                f"(expected {base}/data_batch_1..5, test_batch and batches.meta); pass --download to fetch it") from None
        # Garbage bytes make pickle raise more than UnpicklingError: a bogus frame or
        # length header gives OverflowError/MemoryError, a bogus global ImportError.
        except (pickle.UnpicklingError, EOFError, KeyError, IndexError, ValueError, TypeError, AttributeError,
                ImportError, OverflowError, MemoryError) as exc:
            raise DataError(f"corrupt CIFAR-10 batch file under {base}: {type(exc).__name__}") from None
        data = np.asarray(ds.data)
        if data.ndim != 4 or data.shape[1:] != (32, 32, 3) or len(data) != len(ds.targets):
            raise DataError(f"corrupt CIFAR-10 data under {base}: images of shape {data.shape[1:]}, expected (32, 32, 3)")
        x = torch.from_numpy(data).permute(0, 3, 1, 2).float().div_(255.0)
        splits.append(Split(x.contiguous(), torch.tensor(ds.targets, dtype=torch.int64)))
    return splits[0], splits[1], 10


def _pneumonia(cfg: CycleConfig, gen: torch.Generator) -> tuple[Split, Split, int]:
    """ImageFolder layout ROOT/{train,test}/<class>/*.jpeg, decoded to grayscale."""
    from PIL import Image, UnidentifiedImageError

    from ._torchvision import import_torchvision

    tv = import_torchvision()
    root = _check_root(cfg)
    size = cfg.image_size or 64
    to_tensor = tv.transforms.functional.pil_to_tensor
    splits, classes = [], None
    for part in ("train", "test"):
        folder = root / part
        if not folder.is_dir():
            raise DataError(f"data_root={str(root)!r} has no {part}/ folder; expected {root}/{part}/<class>/*.jpeg")
        try:
            listing = tv.datasets.ImageFolder(str(folder))
        except FileNotFoundError:
            raise DataError(f"{folder} has no class folders with images (.jpeg, .jpg, .png); expected {folder}/<class>/*.jpeg") from None
        if classes is None:
            classes = listing.classes
        elif listing.classes != classes:
            raise DataError(f"{folder} has classes {listing.classes}, but train/ has {classes}; they must match")
        xs = torch.empty(len(listing.samples), 1, size, size)
        for i, (path, _) in enumerate(listing.samples):
            try:
                with Image.open(path) as img:
                    img = img.convert("L").resize((size, size), Image.BILINEAR)
                    xs[i] = to_tensor(img).float().div_(255.0)
            except (UnidentifiedImageError, OSError, ValueError) as exc:
                raise DataError(f"corrupt image {path}: {type(exc).__name__}") from None
        splits.append(Split(xs, torch.tensor(listing.targets, dtype=torch.int64)))
    if len(classes) < 2:
        raise DataError(f"{root}/train has {len(classes)} class folder(s) {classes}; a classifier needs at least 2")
    return splits[0], splits[1], len(classes)


_LOADERS = {"digits": _digits, "synthetic": _synthetic, "cifar10": _cifar10, "pneumonia": _pneumonia}


# --- federation -------------------------------------------------------------


def partition(cfg: CycleConfig, y: torch.Tensor) -> list[torch.Tensor]:
    """Index tensors, one per client, covering the training split once.

    Under a threat the adversary client holds exactly ``adv_fraction`` of the
    training data (sampled uniformly); the rest is split IID or by a
    Dirichlet(alpha) label skew over the other clients. Without a threat all
    clients share the data.
    """
    rng = np.random.default_rng(cfg.seed)
    n = len(y)
    perm = rng.permutation(n)
    parts: list[np.ndarray | None] = [None] * cfg.num_clients
    owners = list(range(cfg.num_clients))
    if cfg.threat != "none":
        n_adv = max(1, round(cfg.adv_fraction * n))
        parts[cfg.adversary_client] = perm[:n_adv]
        perm = perm[n_adv:]
        owners.remove(cfg.adversary_client)
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
            f"allowed: batch_size <= {len(out[smallest])}")
    return out
