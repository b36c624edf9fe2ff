"""Static post-training int8 quantization (eager mode) and model sizes.

Weights and activations become int8; activation ranges are calibrated on the
public validation split. Eager-mode int8 models run on CPU only and have no
gradients, so attacks against them are transfer attacks by construction.
"""

from __future__ import annotations

import copy
import io

import torch
import torch.ao.quantization as tq
from torch import nn


def quant_engine() -> str:
    engines = torch.backends.quantized.supported_engines
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in engines:
            return name
    raise RuntimeError(f"this torch build supports no int8 engine (has {engines})")


def quantize_static(model: nn.Module, calibration: torch.Tensor, batch_size: int = 256) -> nn.Module:
    """Return an int8 copy of ``model`` (left untouched), calibrated on ``calibration``."""
    engine = quant_engine()
    # The engine is process-wide torch state; every caller wants the same one.
    torch.backends.quantized.engine = engine
    qmodel = copy.deepcopy(model).cpu().eval()
    qmodel.qconfig = tq.get_default_qconfig(engine)
    qmodel.normalize.qconfig = None  # normalisation stays float, ahead of the QuantStub
    for module in qmodel.modules():
        if isinstance(module, nn.GroupNorm):
            module.qconfig = None  # see models.FloatGroupNorm: torch's int8 GroupNorm is wrong
    tq.prepare(qmodel, inplace=True)
    with torch.no_grad():
        for start in range(0, len(calibration), batch_size):
            qmodel(calibration[start:start + batch_size].cpu())
    tq.convert(qmodel, inplace=True)
    return qmodel


def size_bytes(model: nn.Module) -> int:
    """Bytes of the serialized state_dict: what a client would ship or store."""
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    return buf.tell()
