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


def quiet_known_warnings() -> None:
    for pattern in KNOWN:
        warnings.filterwarnings("ignore", message=pattern)
