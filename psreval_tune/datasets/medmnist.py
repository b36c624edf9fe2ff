"""MedMNIST 2D single-label subsets (Yang et al., 2023), from their .npz files, with the official splits."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError
from . import DATASETS
from ._common import DataError, Loaded, Split, check_memory, check_root

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView

# MedMNIST 2D single-label subsets: name -> (classes, image channels), from medmnist.INFO.
# ChestMNIST is left out: it is multi-label, and a cycle trains one label per image.
MEDMNIST_SUBSETS = {
    "pneumoniamnist": (2, 1),
    "breastmnist": (2, 1),
    "octmnist": (4, 1),
    "tissuemnist": (8, 1),
    "organamnist": (11, 1),
    "organcmnist": (11, 1),
    "organsmnist": (11, 1),
    "bloodmnist": (8, 3),
    "dermamnist": (7, 3),
    "pathmnist": (9, 3),
    "retinamnist": (5, 3),
}
# The sizes MedMNIST is published at; image_size picks the file: <subset>.npz (28) or <subset>_<size>.npz.
MEDMNIST_SIZES = (28, 64, 128, 224)
SIZE = MEDMNIST_SIZES[0]  # image side when --image-size is none


def _fail(name: str, value, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed; expected {allowed}")


def check(cfg: ConfigView) -> None:
    """The config's MedMNIST fields (run by config validation when dataset=medmnist)."""
    if cfg.medmnist_subset not in MEDMNIST_SUBSETS:
        _fail("medmnist_subset", cfg.medmnist_subset, "one of " + ", ".join(MEDMNIST_SUBSETS))
    if cfg.image_size is not None and cfg.image_size not in MEDMNIST_SIZES:
        _fail(
            "image_size",
            cfg.image_size,
            "one of "
            + ", ".join(map(str, MEDMNIST_SIZES))
            + " for dataset=medmnist (the sizes MedMNIST is published at)",
        )
    if cfg.download:
        _fail(
            "download",
            cfg.download,
            "false for dataset=medmnist: download the .npz once yourself into --data-root (see README)",
        )


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


@DATASETS.register(
    "medmnist",
    order=3,
    help="a MedMNIST .npz in --data-root, see --medmnist-subset: official train/val/test splits",
    needs_data_root=True,
    image_size=SIZE,
    resizable=True,
    image_size_help="28 (<subset>.npz, default) | 64 | 128 | 224 (<subset>_<size>.npz) picks the file",
    channels=lambda cfg: MEDMNIST_SUBSETS[cfg.medmnist_subset][1],
    num_classes=lambda cfg: MEDMNIST_SUBSETS[cfg.medmnist_subset][0],
    pool=4708,  # pneumoniamnist's train split; other subsets differ
    test=624,
    own_val_split=True,
    own_fields=("medmnist_subset",),
    check=check,
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    """A MedMNIST .npz from data_root, with its official train / val / test splits.

    The arrays are read with ``allow_pickle=False`` only, after their headers
    passed the checks: an object array (a pickle, which can run code) is
    refused, never loaded.
    """
    subset, size = cfg.medmnist_subset, cfg.image_size or SIZE
    classes, channels = MEDMNIST_SUBSETS[subset]
    root = check_root(cfg)
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
    check_memory(total, channels, size, f"{path} ({total} images)")
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
    import torch

    splits = []
    for part in MEDMNIST_PARTS:
        x = torch.from_numpy(arrays.pop(f"{part}_images"))
        x = x.unsqueeze(1) if channels == 1 else x.permute(0, 3, 1, 2)  # (N, C, H, W)
        y = torch.from_numpy(arrays.pop(f"{part}_labels").reshape(-1).astype(np.int64))
        splits.append(Split(x.contiguous().float().div_(255.0), y))
    return splits[0], splits[1], splits[2], classes
