"""Silence warnings that are known, understood and not the user's to act on.

Called by entry points only (CLI, Ray trial), never on import.
"""

import warnings

KNOWN = (
    # Opacus: we seed the noise generator on purpose (same seed -> same numbers).
    r"Secure RNG turned off",
    # Opacus' hooks when the model input needs no gradient: expected in training.
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
    # torch 2.13 deprecates eager-mode quantization in favour of torchao; we pin torch.
    r".*quantiz.* (are|is) deprecated",
    r"Please use quant_min and quant_max",
)


def quiet_known_warnings() -> None:
    for pattern in KNOWN:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao\.quantization.*")
