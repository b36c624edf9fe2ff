"""What a sweep file may hold (its kinds, keys, defaults and size limits), SweepFileError, and SweepFile, a
loaded file. ``spec.py`` reads files, ``spec_validate.py`` checks them against these."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..config import CycleConfig
from .failures import SweepError

FILES_DIR = Path(__file__).with_name("files")
MAX_BYTES = 1 << 20
# YAML nodes of a sweep file with every alias expanded where it is used (the shipped paper grid: ~300).
# Aliases let a few hundred bytes stand for 10^9 nodes (an "alias bomb"); anything that walks the
# document (the duplicate-key check, validation, dumping) would then never end. Counted before any walk.
MAX_NODES = 100_000
# Nesting levels of mappings and lists (a sweep file needs about 5): counted on the parser's events, so a
# deeply nested file never reaches the composer, which recurses once per level.
MAX_DEPTH = 50
# Trials one sweep file may ask for (--max-trials changes it): refused before a config is built.
DEFAULT_MAX_TRIALS = 10_000
KINDS = ("grid", "search")
SPACES = ("paper", "recipe")
TOP_KEYS = {
    "grid": ("kind", "description", "fixed", "by_dataset", "axes", "resources"),
    "search": (
        "kind",
        "description",
        "space",
        "fixed",
        "by_dataset",
        "params",
        "objectives",
        "asha",
        "num_samples",
        "seed",
        "start_from",
        "resources",
    ),
}
RESOURCE_DEFAULTS = {"cpus_per_trial": 1.0, "gpus_per_trial": 0.0, "max_concurrent": None, "max_failures": 3}
ASHA_DEFAULTS = {"metric": "acc_val", "grace": 2}
MODES = ("max", "min")
# Grid axes that are not CycleConfig fields: each value is a mapping of fields merged into the trial's config.
PSEUDO_AXES = ("setting", "privacy")
FIELDS = {f.name: f.type for f in dataclasses.fields(CycleConfig) if f.init}
DEFAULTS = {f.name: f.default for f in dataclasses.fields(CycleConfig) if f.init}
RANGE_KEYS = ("low", "high", "log", "int", "when")
CHOICE_KEYS = ("choices", "when")


class SweepFileError(SweepError):
    """A sweep file (or a flag applied to one) is not allowed. One line, exit 2."""


@dataclasses.dataclass
class SweepFile:
    """A loaded, validated sweep file; ``doc`` is normalised (param shorthand expanded)."""

    source: str  # how errors name it: the shipped name or the path as given
    path: Path
    text: str
    doc: dict[str, Any]
    flags: list[str] = dataclasses.field(default_factory=list)  # flags applied on top (error labels)
    max_trials: int = DEFAULT_MAX_TRIALS

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def label(self) -> str:
        return f"{self.source} + {' '.join(self.flags)}" if self.flags else self.source

    def fail(self, message: str) -> SweepFileError:
        return SweepFileError(f"{self.label}: {message}")
