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
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import MEDMNIST_SUBSETS, ConfigError, CycleConfig


class DataError(ConfigError):
    """Data on disk is missing, empty or unreadable. The message is one line."""


@dataclass(frozen=True)
class Split:
    x: torch.Tensor  # (N, C, H, W) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, idx: torch.Tensor) -> Split:
        return Split(self.x[idx], self.y[idx])


@dataclass(frozen=True)
class DataBundle:
    train: Split
    val: Split  # public validation split: int8 calibration and model selection, never the test split
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
    train, val, test, num_classes = loader(cfg, gen)
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
    dims = (0, 2, 3)
    mean = tuple(float(v) for v in train.x.mean(dim=dims))
    std = tuple(max(float(v), 1e-3) for v in train.x.std(dim=dims))
    return DataBundle(train=train, val=val, test=test, num_classes=num_classes, mean=mean, std=std)


# --- loaders: each returns (train, val, test, num_classes) ---------------
# val is the dataset's official validation split, or None: load_data then
# holds out val_fraction of train (after train_samples subsampling).

Loaded = tuple[Split, Split | None, Split, int]


def _digits(cfg: CycleConfig, gen: torch.Generator) -> Loaded:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.int64)
    perm = torch.randperm(len(y), generator=gen)
    n_test = len(y) // 5
    return Split(x[perm[n_test:]], y[perm[n_test:]]), None, Split(x[perm[:n_test]], y[perm[:n_test]]), 10


def _synthetic(cfg: CycleConfig, gen: torch.Generator) -> Loaded:
    """Ten learnable classes: a fixed random template per class plus noise."""
    size, classes, channels = cfg.image_size or 16, 10, 3
    n = cfg.train_samples or 2000
    n_test = cfg.test_samples or 500
    _check_memory(n + n_test, channels, size, f"synthetic data (train_samples={n}, test_samples={n_test})")
    templates = torch.rand(classes, channels, size, size, generator=gen)

    def draw(count: int) -> Split:
        y = torch.randint(0, classes, (count,), generator=gen)
        noise = torch.rand(count, channels, size, size, generator=gen)
        return Split((0.6 * templates[y] + 0.4 * noise).clamp(0, 1), y)

    return draw(n), None, draw(n_test), classes


# Larger images than this are refused before decoding (PIL's own bomb limit is ~89 Mpx).
MAX_IMAGE_PIXELS = 50_000_000


def memory_limit_bytes() -> int:
    """Physical memory, or the cgroup's limit when lower."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        total = 1 << 40
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def _check_memory(count: int, channels: int, size: int, what: str) -> None:
    """Refuse a dataset whose float32 tensor would take more than half the memory, before allocating it."""
    need = count * channels * size * size * 4
    limit = memory_limit_bytes() // 2
    if need > limit:
        raise DataError(
            f"{what} at image_size={size} needs {need / 1e9:.3g} GB as float32 tensors; allowed: at "
            f"most {limit / 1e9:.3g} GB (half the memory): use a smaller --image-size or fewer samples"
        )


def _check_root(cfg: CycleConfig) -> Path:
    root = Path(str(cfg.data_root)).expanduser()
    if not root.is_dir() and not cfg.download:
        raise DataError(
            f"data_root={str(root)!r} does not exist or is not a folder; point --data-root at the {cfg.dataset} data"
        )
    if root.exists() and not root.is_dir():
        raise DataError(f"data_root={str(root)!r} is not a folder; point --data-root at the {cfg.dataset} data")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"data_root={str(root)!r} is not readable by this user; allowed: a readable folder")
    return root


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain data and numpy arrays only: a pickle can run arbitrary
    code on load, and CIFAR-10 batches are pickles that users download."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),  # protocol 5
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("builtins", "bytes"),
        ("_codecs", "encode"),
    }  # how Python 3 writes bytes at protocol 2

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR-10 batch")
        return super().find_class(module, name)


def _safe_unpickle(path: Path) -> Any:
    """A CIFAR-10 file's content, through the restricted unpickler only (never pickle.load)."""
    try:
        with open(path, "rb") as fh:
            return _ArrayUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"unsafe or corrupt CIFAR-10 file {path}: {exc}") from None
    except PermissionError:
        raise DataError(f"CIFAR-10 file {path} is not readable (permission denied)") from None
    except Exception as exc:  # noqa: BLE001 - any other parse failure of a corrupt file
        # Garbage bytes make pickle raise more than UnpicklingError: a bogus frame or
        # length header gives OverflowError/MemoryError, a bogus global ImportError.
        raise DataError(f"corrupt CIFAR-10 batch file {path}: {type(exc).__name__}") from None


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N x 3 x 32 x 32 uint8 images, N int64 labels) of one batch file, validated."""
    entry = _safe_unpickle(path)
    if not isinstance(entry, dict) or "data" not in entry or not ("labels" in entry or "fine_labels" in entry):
        raise DataError(f"corrupt CIFAR-10 batch file {path}: expected a dict with 'data' and 'labels'")
    data = entry["data"]
    labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", type(data).__name__)
        raise DataError(f"corrupt CIFAR-10 batch file {path}: data of shape {shape}, expected (N, 3072) uint8")
    try:
        targets = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        raise DataError(f"corrupt CIFAR-10 batch file {path}: labels are not integers") from None
    if targets.shape != (len(data),) or (targets.size and (targets.min() < 0 or targets.max() > 9)):
        raise DataError(
            f"corrupt CIFAR-10 batch file {path}: {targets.size} labels for {len(data)} images, "
            "expected one label in 0..9 per image"
        )
    return data.reshape(-1, 3, 32, 32), targets


def _download_cifar10(root: Path, spec: Any) -> None:
    from ._torchvision import import_torchvision

    utils = import_torchvision().datasets.utils
    try:
        utils.download_and_extract_archive(spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5)
    except Exception as exc:  # noqa: BLE001 - no network, a proxy error, a bad archive, a full disk: one line
        text = str(exc).strip().splitlines()
        raise DataError(
            f"--download could not fetch CIFAR-10 from {spec.url} into {root}: "
            f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        ) from None


def _cifar10(cfg: CycleConfig, gen: torch.Generator) -> Loaded:
    """CIFAR-10's python-pickle batches, read through the restricted unpickler.

    torchvision's CIFAR10 class would ``pickle.load`` the batch files, which
    runs any code a crafted file carries; here torchvision only downloads
    and extracts (md5-checked archive), and every file is parsed by
    ``_ArrayUnpickler``: the check and the read are one step, on whichever
    machine loads the data (driver or Ray worker), with or without --download.
    """
    from ._torchvision import import_torchvision

    spec = import_torchvision().datasets.CIFAR10
    root = _check_root(cfg)
    base = root / spec.base_folder
    train_names = [name for name, _ in spec.train_list]
    test_names = [name for name, _ in spec.test_list]
    names = train_names + test_names + [spec.meta["filename"]]
    if cfg.download and not all((base / name).is_file() for name in names):
        _download_cifar10(root, spec)
    if not all((base / name).is_file() for name in names):
        raise DataError(
            f"data_root={str(root)!r} holds no CIFAR-10 data "
            f"(expected {base}/data_batch_1..5, test_batch and batches.meta); pass --download to fetch it"
        )
    meta = _safe_unpickle(base / spec.meta["filename"])  # read (and checked) like the batches
    if not isinstance(meta, dict):
        raise DataError(f"corrupt CIFAR-10 file {base / spec.meta['filename']}: expected a dict")
    splits = []
    for part in (train_names, test_names):
        batches = [_read_cifar_batch(base / name) for name in part]
        x = torch.from_numpy(np.concatenate([b[0] for b in batches])).float().div_(255.0)
        y = torch.from_numpy(np.concatenate([b[1] for b in batches]))
        splits.append(Split(x.contiguous(), y))
    return splits[0], None, splits[1], 10


def _pneumonia(cfg: CycleConfig, gen: torch.Generator) -> Loaded:
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
            raise DataError(
                f"{folder} has no class folders with images (.jpeg, .jpg, .png); expected {folder}/<class>/*.jpeg"
            ) from None
        except OSError as exc:  # PermissionError and friends while listing
            raise DataError(
                f"{folder} is not readable ({type(exc).__name__}: {exc.strerror or exc}); "
                "the data folders must be readable by this user"
            ) from None
        if classes is None:
            classes = listing.classes
        elif listing.classes != classes:
            raise DataError(f"{folder} has classes {listing.classes}, but train/ has {classes}; they must match")
        _check_memory(len(listing.samples), 1, size, f"{folder} ({len(listing.samples)} images)")
        xs = torch.empty(len(listing.samples), 1, size, size)
        for i, (path, _) in enumerate(listing.samples):
            try:
                with warnings.catch_warnings():
                    # A decompression bomb (a small file that decodes to gigapixels) is an error,
                    # never a warning followed by exhausting memory.
                    warnings.simplefilter("error", Image.DecompressionBombWarning)
                    with Image.open(path) as img:
                        if img.width * img.height > MAX_IMAGE_PIXELS:
                            raise DataError(
                                f"image {path} is {img.width}x{img.height} pixels; allowed: at most "
                                f"{MAX_IMAGE_PIXELS} pixels (a possible decompression bomb)"
                            )
                        img.draft("L", (size, size))  # JPEG: decode at a reduced scale when possible
                        img = img.convert("L").resize((size, size), Image.BILINEAR)
                        xs[i] = to_tensor(img).float().div_(255.0)
            except DataError:
                raise
            except PermissionError:
                raise DataError(f"image {path} is not readable (permission denied)") from None
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise DataError(
                    f"image {path} is too large to decode safely ({exc}); allowed: at most {MAX_IMAGE_PIXELS} pixels"
                ) from None
            except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                raise DataError(f"corrupt image {path}: {type(exc).__name__}") from None
        splits.append(Split(xs, torch.tensor(listing.targets, dtype=torch.int64)))
    if len(classes) < 2:
        raise DataError(f"{root}/train has {len(classes)} class folder(s) {classes}; a classifier needs at least 2")
    return splits[0], None, splits[1], len(classes)


MEDMNIST_URL = "https://zenodo.org/records/10519652"
MEDMNIST_PARTS = ("train", "val", "test")
# What a damaged archive raises: a bad zip or deflate stream, a bad .npy header or
# truncated data (ValueError, EOFError), an encrypted (RuntimeError) or unsupported
# (NotImplementedError) member.
_NPZ_ERRORS = (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, RuntimeError, NotImplementedError)


def medmnist_filename(subset: str, size: int) -> str:
    """MedMNIST's own names: pneumoniamnist.npz at 28x28, pneumoniamnist_64.npz and so on above."""
    return f"{subset}.npz" if size == 28 else f"{subset}_{size}.npz"


def _npz_headers(path: Path, keys: list[str]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each array in an .npz, from the .npy headers alone.

    Nothing is decompressed or allocated, so shapes, dtypes and the memory
    they need are checked before a single pixel is read: a small compressed
    file can declare an array larger than the machine's memory.
    """
    fmt = np.lib.format
    readers = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}
    headers = {}
    try:
        with zipfile.ZipFile(path) as zf:
            members = set(zf.namelist())
            for key in keys:
                if f"{key}.npy" not in members:
                    raise DataError(f"MedMNIST file {path} has no {key!r} array; expected the arrays {', '.join(keys)}")
                with zf.open(f"{key}.npy") as fh:
                    version = fmt.read_magic(fh)
                    if version not in readers:
                        raise DataError(
                            f"corrupt MedMNIST file {path}: {key} is a .npy of format version "
                            f"{version}, expected 1.0 or 2.0"
                        )
                    shape, _, dtype = readers[version](fh)
                    headers[key] = (shape, dtype)
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"MedMNIST file {path} is not readable (permission denied)") from None
    except _NPZ_ERRORS as exc:
        raise DataError(f"corrupt MedMNIST file {path}: not a numpy .npz archive ({type(exc).__name__})") from None
    return headers


def _medmnist(cfg: CycleConfig, gen: torch.Generator) -> Loaded:
    """A MedMNIST .npz from data_root, with its official train / val / test splits.

    The arrays are read with ``allow_pickle=False`` only, after their headers
    passed the checks: an object array (a pickle, which can run code) is
    refused, never loaded.
    """
    subset, size = cfg.medmnist_subset, cfg.image_size or 28
    classes, channels = MEDMNIST_SUBSETS[subset]
    root = _check_root(cfg)
    path = root / medmnist_filename(subset, size)
    if not path.is_file():
        raise DataError(
            f"data_root={str(root)!r} has no {path.name} (MedMNIST {subset} at image_size={size}); "
            f"download it once from {MEDMNIST_URL} into {root}"
        )
    keys = [f"{part}_{kind}" for part in MEDMNIST_PARTS for kind in ("images", "labels")]
    headers = _npz_headers(path, keys)
    pixels = (size, size) if channels == 1 else (size, size, channels)
    kind = "grayscale" if channels == 1 else "RGB"
    bad = f"MedMNIST file {path} does not hold {subset} ({kind}, {classes} classes) at image_size={size}"
    total = 0
    for part in MEDMNIST_PARTS:
        (shape, dtype), (lshape, ldtype) = headers[f"{part}_images"], headers[f"{part}_labels"]
        if dtype != np.uint8 or tuple(shape[1:]) != pixels or not shape[0]:
            raise DataError(
                f"{bad}: {part}_images is {dtype} of shape {shape}; expected uint8 of shape "
                f"(N, {', '.join(map(str, pixels))}) with N >= 1"
            )
        if ldtype.kind not in "iu" or tuple(lshape) not in ((shape[0], 1), (shape[0],)):
            raise DataError(
                f"{bad}: {part}_labels is {ldtype} of shape {lshape}; expected integers of shape "
                f"({shape[0]}, 1), one label per image"
            )
        total += shape[0]
    _check_memory(total, channels, size, f"{path} ({total} images)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in keys}
    except _NPZ_ERRORS as exc:
        raise DataError(f"corrupt MedMNIST file {path}: {type(exc).__name__} while reading the arrays") from None
    for part in MEDMNIST_PARTS:
        labels = arrays[f"{part}_labels"]
        if labels.min() < 0 or labels.max() >= classes:
            raise DataError(
                f"{bad}: {part}_labels hold values in {labels.min()}..{labels.max()}; expected 0..{classes - 1}"
            )
    splits = []
    for part in MEDMNIST_PARTS:
        x = torch.from_numpy(arrays.pop(f"{part}_images"))
        x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
        y = torch.from_numpy(arrays.pop(f"{part}_labels").reshape(-1).astype(np.int64))
        splits.append(Split(x.contiguous().float().div_(255.0), y))
    return splits[0], splits[1], splits[2], classes


_LOADERS = {
    "digits": _digits,
    "synthetic": _synthetic,
    "cifar10": _cifar10,
    "pneumonia": _pneumonia,
    "medmnist": _medmnist,
}


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
