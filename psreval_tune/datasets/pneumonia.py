"""The paper's chest X-ray pneumonia set (Kermany et al.): an ImageFolder tree decoded to grayscale."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import DATASETS
from ._common import MAX_IMAGE_PIXELS, DataError, Loaded, Split, check_memory, check_root

if TYPE_CHECKING:
    import torch

    from ..registry import ConfigView

SIZE = 64  # image side when --image-size is none


@DATASETS.register(
    "pneumonia",
    order=2,
    help="chest X-rays as --data-root/{train,test}/<class>/*.jpeg: grayscale, resized to --image-size",
    needs_data_root=True,
    image_size=SIZE,
    resizable=True,
    channels=1,
    num_classes=None,  # the class folders say
    pool=5216,
    test=624,
)
def load(cfg: ConfigView, gen: torch.Generator) -> Loaded:
    """ImageFolder layout ROOT/{train,test}/<class>/*.jpeg, decoded to grayscale."""
    from .._torchvision import import_torchvision

    tv = import_torchvision()
    root = check_root(cfg)
    size = cfg.image_size or SIZE
    splits, classes = [], None
    for part in ("train", "test"):
        folder = root / part
        listing = _list_images(tv, root, part)
        if classes is None:
            classes = listing.classes
        elif listing.classes != classes:
            raise DataError(f"{folder} has classes {listing.classes}, but train/ has {classes}; they must match")
        splits.append(_decode_split(tv, listing, folder, size))
    if len(classes) < 2:
        raise DataError(f"{root}/train has {len(classes)} class folder(s) {classes}; a classifier needs at least 2")
    return splits[0], None, splits[1], len(classes)


def _list_images(tv: Any, root: Path, part: str) -> Any:
    """torchvision's ImageFolder over ROOT/<part> (the class folders and their images, nothing decoded)."""
    folder = root / part
    if not folder.is_dir():
        raise DataError(f"data_root={str(root)!r} has no {part}/ folder; expected {root}/{part}/<class>/*.jpeg")
    try:
        return tv.datasets.ImageFolder(str(folder))
    except FileNotFoundError:
        raise DataError(
            f"{folder} has no class folders with images (.jpeg, .jpg, .png); expected {folder}/<class>/*.jpeg"
        ) from None
    except OSError as exc:  # PermissionError and friends while listing
        raise DataError(
            f"{folder} is not readable ({type(exc).__name__}: {exc.strerror or exc}); "
            "the data folders must be readable by this user"
        ) from None


def _decode_split(tv: Any, listing: Any, folder: Path, size: int) -> Split:
    """Every image of ``listing`` as a [0, 1] 1 x size x size tensor, with its class index."""
    import torch

    check_memory(len(listing.samples), 1, size, f"{folder} ({len(listing.samples)} images)")
    to_tensor = tv.transforms.functional.pil_to_tensor
    xs = torch.empty(len(listing.samples), 1, size, size)
    for i, (path, _) in enumerate(listing.samples):
        xs[i] = _decode_image(path, size, to_tensor)
    return Split(xs, torch.tensor(listing.targets, dtype=torch.int64))


def _decode_image(path: str, size: int, to_tensor: Callable[[Any], torch.Tensor]) -> torch.Tensor:
    """One image file decoded to grayscale and resized to size x size, in [0, 1]; a DataError names a file
    that is unreadable, corrupt or too large to decode safely."""
    from PIL import Image, UnidentifiedImageError

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
                return to_tensor(img).float().div_(255.0)
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
