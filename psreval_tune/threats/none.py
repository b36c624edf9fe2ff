"""No adversary: every client trains honestly."""

from __future__ import annotations

from . import THREATS

THREATS.register("none", order=0, kind="none", needs_fraction=False)(None)
