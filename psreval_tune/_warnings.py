"""Silence warnings that are known, understood and not the user's to act on.

Each is matched by its exact message, never by a whole category, so any new
deprecation still shows. Called by entry points only (CLI, Ray trial), never on import.
"""

import warnings

KNOWN = (
    # Opacus: we seed the noise generator on purpose (same seed -> same numbers).
    r"Secure RNG turned off",
    # Opacus' hooks when the model input needs no gradient: expected in training.
    r"Full backward hook is firing when gradients are computed with respect to module outputs",
    # Raised while a dependency (torchvision, torchao) imports, not by our code.
    r"`torch\.jit\.script_method` is deprecated",
)


# (message, module that issues it): generic messages silenced only where a dependency raises them.
KNOWN_IN = (
    # inductor's own int8 lowering (quantize.lower_int8) copies a zero-point tensor with torch.tensor(...)
    (r"To copy construct from a tensor, it is recommended", r"torch\._inductor\.mkldnn_lowerings"),
)


def quiet_known_warnings() -> None:
    for pattern in KNOWN:
        warnings.filterwarnings("ignore", message=pattern)
    for pattern, module in KNOWN_IN:
        warnings.filterwarnings("ignore", message=pattern, module=module)
