"""What the dataset loaders share: Split, DataError, and the data_root and memory checks.

Nothing here imports torch at module level, so the registry's names and
metadata load without it (CLI help, sweep files).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView


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


# What a loader returns: (train, official val split or None, test, num_classes).
Loaded = tuple[Split, Split | None, Split, int]

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


def check_memory(count: int, channels: int, size: int, what: str) -> None:
    """Refuse a dataset whose float32 tensor would take more than half the memory, before allocating it."""
    need = count * channels * size * size * 4
    limit = memory_limit_bytes() // 2
    if need > limit:
        raise DataError(
            f"{what} at image_size={size} needs {need / 1e9:.3g} GB as float32 tensors; allowed: at "
            f"most {limit / 1e9:.3g} GB (half the memory): use a smaller --image-size or fewer samples"
        )


def check_root(cfg: ConfigView) -> Path:
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


def _unreadable(path: Path) -> Path | None:
    """The first folder or file on the way to ``path`` (from the top) that this user cannot read, or None."""
    for part in [*reversed(path.parents), path]:
        try:
            is_dir = part.is_dir()
        except OSError:  # its folder cannot be searched: found above
            return None
        if is_dir and not os.access(part, os.R_OK | os.X_OK):
            return part
        if not is_dir and part.exists() and not os.access(part, os.R_OK):
            return part
    return None


def permission_line(cfg: ConfigView, exc: PermissionError) -> str:
    """One line for a PermissionError while a dataset loads: which folder or file cannot be read, or (all
    readable: a download writing into data_root) which cannot be written. Not "could not write the results"."""
    root = str(cfg.data_root) if cfg.data_root else None
    path = Path(exc.filename).expanduser().absolute() if exc.filename else Path(root or ".").absolute()
    where = f" (data_root={root!r})" if root else ""
    blocked = _unreadable(path)
    if blocked is not None:
        what = "folder" if blocked.is_dir() else "file"
        return f"{what} {blocked} is not readable by this user{where}; allowed: data this user can read"
    return (
        f"{path} cannot be written by this user ({exc.strerror or 'permission denied'}){where}; allowed with "
        "--download: a data_root this user can write"
    )
