"""CIFAR-10's python-pickle batches (ROOT/cifar-10-batches-py), read through a restricted unpickler."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import DATASETS
from ._common import DataError, Loaded, Split, check_root

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView


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
    from .._torchvision import import_torchvision

    utils = import_torchvision().datasets.utils
    try:
        utils.download_and_extract_archive(spec.url, str(root), filename=spec.filename, md5=spec.tgz_md5)
    except Exception as exc:  # noqa: BLE001 - no network, a proxy error, a bad archive, a full disk: one line
        text = str(exc).strip().splitlines()
        raise DataError(
            f"--download could not fetch CIFAR-10 from {spec.url} into {root}: "
            f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")
        ) from None


@DATASETS.register(
    "cifar10",
    order=1,
    help="CIFAR-10 python batches in --data-root, --download fetches them: 32x32 RGB, 10 classes",
    needs_data_root=True,
    image_size=32,
    resizable=False,
    channels=3,
    num_classes=10,
    pool=50000,
    test=10000,
    downloadable=True,
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    """CIFAR-10's python-pickle batches, read through the restricted unpickler.

    torchvision's CIFAR10 class would ``pickle.load`` the batch files, which
    runs any code a crafted file carries; here torchvision only downloads
    and extracts (md5-checked archive), and every file is parsed by
    ``_ArrayUnpickler``: the check and the read are one step, on whichever
    machine loads the data (driver or Ray worker), with or without --download.
    """
    from .._torchvision import import_torchvision

    spec = import_torchvision().datasets.CIFAR10
    root = check_root(cfg)
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
    import torch

    splits = []
    for part in (train_names, test_names):
        batches = [_read_cifar_batch(base / name) for name in part]
        x = torch.from_numpy(np.concatenate([b[0] for b in batches])).float().div_(255.0)
        y = torch.from_numpy(np.concatenate([b[1] for b in batches]))
        splits.append(Split(x.contiguous(), y))
    return splits[0], None, splits[1], 10
