"""The paper's chest X-ray pneumonia set (Kermany et al.): an ImageFolder tree decoded to grayscale."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

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
    import torch
    from PIL import Image, UnidentifiedImageError

    from .._torchvision import import_torchvision

    tv = import_torchvision()
    root = check_root(cfg)
    size = cfg.image_size or SIZE
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
        check_memory(len(listing.samples), 1, size, f"{folder} ({len(listing.samples)} images)")
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
