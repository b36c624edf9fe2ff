"""No adversary: every client trains honestly."""

from __future__ import annotations

from ..baselines import NO_THREAT
from . import THREATS

THREATS.register(NO_THREAT, order=0, kind="none", needs_fraction=False)(None)
