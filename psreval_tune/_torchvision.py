"""Import torchvision on a CPU-only torch.

PyPI's torchvision wheels for Linux are CUDA builds. On a CPU build of torch
their C extension cannot load (it links libtorch_cuda), and torchvision 0.28
then fails at import time because ``_meta_registrations`` registers fake
kernels for ``torchvision::nms``/``qnms`` without checking that the ops exist.
We only use torchvision's pure-Python parts (dataset readers, ImageFolder,
make_grid), so when that exact failure happens we declare the two op schemas
(no kernels) and import again. With a matching CUDA torch the first import
succeeds and nothing here runs.
"""

from __future__ import annotations

import sys
from types import ModuleType

import torch

# The Library handle must stay alive: dropping it unregisters the schemas.
_SCHEMAS: list[torch.library.Library] = []


def import_torchvision() -> ModuleType:
    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SCHEMAS.append(lib)
        import torchvision
    return torchvision
