"""Writing a cycle's results: metrics.json, float/int8 weights, image grid.

The output folder appears whole or not at all: everything is written to a
temporary sibling that is renamed into place at the end, so a failed or
interrupted run never leaves a half-written folder behind.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .cycle import CycleResult

ARTIFACTS = ("metrics.json", "model_float.pt", "model_int8.pt", "adv_examples.png")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summary(result: CycleResult) -> dict:
    return {
        "config": result.config.to_dict(),
        "metrics": {k: _jsonable(v) for k, v in result.metrics.items()},
        "history": result.history,
    }


def save_image_grid(result: CycleResult, path: Path) -> None:
    """Top row clean test images, bottom row their adversarial versions."""
    from ._torchvision import import_torchvision

    utils = import_torchvision().utils
    ex = result.examples
    images = torch.cat([ex["clean"], ex["adversarial"]])
    grid = utils.make_grid(images, nrow=len(ex["clean"]), padding=2, pad_value=1.0)
    size = grid.shape[-1]
    if size < 512:  # 8x8 digits would be a thumbnail; upscale with crisp pixels
        scale = max(1, 512 // size)
        grid = torch.nn.functional.interpolate(grid[None], scale_factor=scale, mode="nearest")[0]
    utils.save_image(grid, str(path))


def write_outputs(result: CycleResult, out_dir: str | os.PathLike) -> Path:
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        own = "dp" if result.config.private else "nonprivate"
        model = result.models[own]
        torch.save(model.float_model.state_dict(), tmp / "model_float.pt")
        torch.save(model.int8_model.state_dict(), tmp / "model_int8.pt")
        save_image_grid(result, tmp / "adv_examples.png")
        with open(tmp / "metrics.json", "w") as fh:
            json.dump(summary(result), fh, indent=2, sort_keys=True)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
