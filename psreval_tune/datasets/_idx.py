"""IDX files (the MNIST format: LeCun et al.), plain or gzipped, read without trusting their headers.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number
of dimensions), one big-endian uint32 per dimension, then the items. A header
is 16 bytes that anyone can write: it can declare 10^9 images in a 1 kB file,
or a gzip stream can inflate to far more than it declares. So every header is
checked first: magic, dtype code, dimensions, and the declared item count
against the file's size (a plain file must hold exactly the declared bytes; a
gzip file can hold at most deflate's 1032:1 ratio of its size); only then is
one buffer of the declared size allocated, and decompression stops at that
size plus one byte (a longer stream is refused, never inflated). Every failure
is a DataError of one line naming the file and what is wrong with it.

``load_mnist_like`` reads the four standard files of MNIST, Fashion-MNIST or
KMNIST (same names, same layout: 28x28 unsigned bytes, labels 0..9); each of
those datasets is one file beside this one that registers it.
"""

from __future__ import annotations

import gzip
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ._common import DataError, Loaded, Split, check_memory

if TYPE_CHECKING:
    from ..registry import ConfigView

# dtype code -> (name, item bytes); IDX stores multi-byte items big-endian.
IDX_TYPES = {
    0x08: ("unsigned byte", 1),
    0x09: ("signed byte", 1),
    0x0B: ("int16", 2),
    0x0C: ("int32", 4),
    0x0D: ("float32", 4),
    0x0E: ("float64", 8),
}
UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
# Deflate cannot inflate more than ~1032 bytes per compressed byte: a gzip file declaring more is
# corrupt or hostile, whatever its header says, and is refused before anything is decompressed.
MAX_DEFLATE_RATIO = 1032
# The four standard files (MNIST's names; Fashion-MNIST and KMNIST use the same ones).
PARTS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
SIDE = 28
_GZIP_ERRORS = (gzip.BadGzipFile, zlib.error, EOFError, OSError)


@dataclass(frozen=True)
class IdxHeader:
    path: Path
    gzipped: bool
    dtype_code: int
    dims: tuple[int, ...]

    @property
    def offset(self) -> int:
        return 4 + 4 * len(self.dims)

    @property
    def payload(self) -> int:
        """Bytes of the items the header declares."""
        return math.prod(self.dims) * IDX_TYPES[self.dtype_code][1]


# What every MNIST-format dataset declares in its registry entry: 28x28 grayscale, 10 classes, 60,000 train and
# 10,000 test images (each entry adds its name, folder, normalisation constants and help).
MNIST_LIKE = dict(image_size=28, resizable=False, channels=1, num_classes=10, pool=60000, test=10000)


def _open(path: Path, gzipped: bool):
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def read_header(path: Path, ndim: int, shape: tuple[int, ...] = ()) -> IdxHeader:
    """The checked header of an IDX file of unsigned bytes with ``ndim`` dimensions, the trailing ones
    ``shape`` (an image's rows and columns), at least one item, and exactly as many bytes of data as it
    declares (at most deflate's ratio for a gzip file). Nothing beyond the header is read."""
    bad = f"corrupt IDX file {path}"
    magic = f"0x{(UBYTE << 8) | ndim:08x}"
    try:
        gzipped = _is_gzip(path)
        size = path.stat().st_size
        with _open(path, gzipped) as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{bad}: {len(head)} bytes, shorter than an IDX header (expected magic {magic})")
            zero, code, nd = head[:2], head[2], head[3]
            if zero != b"\0\0":
                raise DataError(f"{bad}: bad magic number 0x{head.hex()}; expected {magic} (IDX, unsigned bytes)")
            if code not in IDX_TYPES:
                raise DataError(f"{bad}: unknown IDX dtype code 0x{code:02x} in magic 0x{head.hex()}")
            if code != UBYTE:
                raise DataError(
                    f"{bad}: items of IDX dtype 0x{code:02x} ({IDX_TYPES[code][0]}); expected 0x08 (unsigned byte)"
                )
            if nd != ndim:
                raise DataError(f"{bad}: {nd} dimensions in magic 0x{head.hex()}; expected {ndim} (magic {magic})")
            raw = fh.read(4 * nd)
            if len(raw) < 4 * nd:
                need = 4 + 4 * nd
                raise DataError(f"{bad}: the header ends after {4 + len(raw)} bytes; its {nd} dimensions need {need}")
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"IDX file {path} is not readable (permission denied)") from None
    except _GZIP_ERRORS as exc:
        raise DataError(f"{bad}: not a readable gzip stream ({type(exc).__name__})") from None
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4"))
    header = IdxHeader(path, gzipped, code, dims)
    if dims[1:] != shape:
        want = "x".join(map(str, shape))
        raise DataError(f"{bad}: items of {'x'.join(map(str, dims[1:]))}; expected {want}")
    if dims[0] == 0:
        raise DataError(f"{bad}: it declares 0 items")
    data = size - header.offset
    declared = f"it declares {dims[0]} items ({header.payload} bytes)"
    if not gzipped and data < header.payload:
        raise DataError(f"{bad}: {declared}, but the file holds {max(data, 0)} bytes after its header (truncated?)")
    if not gzipped and data > header.payload:
        raise DataError(f"{bad}: {data - header.payload} bytes after the {header.payload} bytes {declared[3:]}")
    if gzipped and header.payload + header.offset > MAX_DEFLATE_RATIO * size:
        raise DataError(
            f"{bad}: {declared}, more than a gzip file of {size} bytes can hold "
            f"(at most {MAX_DEFLATE_RATIO * size} bytes at deflate's 1032:1)"
        )
    return header


def _allocate(nbytes: int) -> np.ndarray:
    """The one buffer of a checked header's items (a seam for the tests that count allocations)."""
    return np.empty(nbytes, dtype=np.uint8)


def read_items(header: IdxHeader) -> np.ndarray:
    """The items of a checked header, as uint8 of its dims: one buffer of the declared size, and not one
    byte more decompressed than the header declares plus one (which, present, refuses the file)."""
    bad = f"corrupt IDX file {header.path}"
    out = _allocate(header.payload)
    view = memoryview(out)
    got = 0
    try:
        with _open(header.path, header.gzipped) as fh:
            fh.read(header.offset)
            while got < header.payload:
                n = fh.readinto(view[got:])
                if not n:
                    break
                got += n
            extra = fh.read(1)
    except PermissionError:
        raise DataError(f"IDX file {header.path} is not readable (permission denied)") from None
    except _GZIP_ERRORS as exc:
        where = f"after {got} of {header.payload} bytes"
        raise DataError(f"{bad}: broken gzip stream {where} ({type(exc).__name__})") from None
    if got < header.payload:
        raise DataError(f"{bad}: it declares {header.payload} bytes of items, but holds {got} (truncated?)")
    if extra:
        raise DataError(
            f"{bad}: the gzip stream inflates to more than the {header.payload} bytes its header declares "
            "(refused unread: a gzip bomb or a damaged file)"
        )
    return out.reshape(header.dims)


def find_files(root: Path, dataset: str, folders: tuple[str, ...]) -> dict[str, Path]:
    """The four standard files in root, or in one of ``folders`` under it (torchvision's ROOT/MNIST/raw),
    each plain or gzipped (the plain one first); MNIST mirrors' ``train-images.idx3-ubyte`` spelling too."""
    tried = [root, *(root / f for f in folders)]
    for folder in tried:
        found = {}
        for part, base in PARTS.items():
            dotted = base.replace("-idx", ".idx")
            for name in (base, dotted, base + ".gz", dotted + ".gz"):
                if (folder / name).is_file():
                    found[part] = folder / name
                    break
        if len(found) == len(PARTS):
            return found
        if found:
            missing = ", ".join(PARTS[p] + "[.gz]" for p in PARTS if p not in found)
            raise DataError(f"{folder} holds only some {dataset} IDX files: missing {missing}")
    where = ", ".join(str(f) for f in tried)
    raise DataError(f"no {dataset} IDX files in {where}; expected {', '.join(v + '[.gz]' for v in PARTS.values())}")


def load_mnist_like(cfg: ConfigView, root: Path, dataset: str, folders: tuple[str, ...], classes: int) -> Loaded:
    """Train and test splits of 28x28 grayscale images from the four standard IDX files in root (no
    official validation split: data.load_data holds out val_fraction of train, as for CIFAR-10)."""
    files = find_files(root, dataset, folders)
    headers = {}
    for part, path in files.items():
        images = part.endswith("images")
        headers[part] = read_header(path, 3 if images else 1, (SIDE, SIDE) if images else ())
    for split in ("train", "test"):
        n_img, n_lab = headers[f"{split}_images"].dims[0], headers[f"{split}_labels"].dims[0]
        if n_img != n_lab:
            raise DataError(
                f"{dataset} {split} files disagree: {files[f'{split}_images']} declares {n_img} images, "
                f"{files[f'{split}_labels']} {n_lab} labels"
            )
    total = headers["train_images"].dims[0] + headers["test_images"].dims[0]
    check_memory(total, 1, SIDE, f"{dataset} in {root} ({total} images)")
    import torch

    splits = []
    for split in ("train", "test"):
        labels = read_items(headers[f"{split}_labels"])
        if labels.max() >= classes:
            raise DataError(
                f"corrupt IDX file {files[f'{split}_labels']}: labels in {labels.min()}..{labels.max()}; "
                f"expected 0..{classes - 1}"
            )
        images = read_items(headers[f"{split}_images"])
        x = torch.from_numpy(images).unsqueeze(1).float().div_(255.0)
        splits.append(Split(x, torch.from_numpy(labels.astype(np.int64))))
    return splits[0], None, splits[1], classes


def idx_check(dataset: str):
    """Config check of an IDX dataset: there is nothing to download (the files are local)."""

    def check(cfg: ConfigView) -> None:
        from ..errors import ConfigError

        if cfg.download:
            raise ConfigError(
                f"download=True is not allowed; expected false for dataset={dataset}: its IDX files are read "
                "from --data-root (see README)"
            )

    return check


__all__ = ["IDX_TYPES", "IdxHeader", "find_files", "idx_check", "load_mnist_like", "read_header", "read_items"]
