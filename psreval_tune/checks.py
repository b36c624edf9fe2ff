"""Value checks more than one module makes.

This module imports nothing from the package.
"""

from __future__ import annotations

import math
from typing import Any


def finite_number(value: Any) -> bool:
    """An int or a float (not a bool) that is a finite float: NaN, +-inf, an int too large for a float,
    strings, None and bools are not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past a float's range
        return False
