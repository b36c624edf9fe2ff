"""Training recipes: the default lr, schedule, rounds, batch size, ... per
(dataset, arch, private or not), read from ``recipes.toml`` beside this file.

A recipe is data, not code, so a researcher can review it and see which
search produced it (each table names its ``source``). CycleConfig fills every
training field the user left unset from the recipe; a field the user sets
always wins. Lookup order for (dataset, arch, kind): ``dataset.arch.kind``,
then ``dataset.any.kind``, then ``any.any.kind``; kind is ``dp`` or
``nonprivate``.

This module imports nothing from the package, so config.py can use it.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import tomllib

# The CycleConfig fields a recipe sets (None in a config = "from the recipe").
FIELDS = (
    "rounds",
    "local_epochs",
    "batch_size",
    "lr",
    "momentum",
    "lr_schedule",
    "warmup_rounds",
    "reset_optimizer",
    "max_grad_norm",
)
KINDS = ("nonprivate", "dp")
ANY = "any"
RECIPE_FILE = Path(__file__).with_name("recipes.toml")
# Not a recipe: the smoke sweeps' setting, which checks the plumbing in
# minutes (3 rounds of a few large steps). Its numbers support no conclusion.
SMOKE = {"rounds": 3, "local_epochs": 1, "batch_size": 128, "lr": 0.2, "lr_schedule": "constant", "warmup_rounds": 0}


@functools.lru_cache(maxsize=4)
def load(path: str = str(RECIPE_FILE)) -> dict[str, dict[str, Any]]:
    """Every recipe as ``{"dataset/arch/kind": {field: value, "source": ...}}``."""
    with open(path, "rb") as fh:
        tree = tomllib.load(fh)
    out: dict[str, dict[str, Any]] = {}
    for dataset, archs in tree.items():
        for arch, kinds in archs.items():
            for kind, table in kinds.items():
                if kind not in KINDS:
                    raise ValueError(f"{path}: [{dataset}.{arch}.{kind}] is not one of {', '.join(KINDS)}")
                unknown = sorted(set(table) - set(FIELDS) - {"source", "note"})
                if unknown:
                    raise ValueError(f"{path}: [{dataset}.{arch}.{kind}] has unknown key {unknown[0]!r}")
                out[f"{dataset}/{arch}/{kind}"] = dict(table)
    return out


def names() -> list[str]:
    return sorted(load())


def lookup(dataset: str, arch: str, private: bool) -> str:
    """The name of the most specific recipe for this setting."""
    kind = "dp" if private else "nonprivate"
    recipes = load()
    for name in (f"{dataset}/{arch}/{kind}", f"{dataset}/{ANY}/{kind}", f"{ANY}/{ANY}/{kind}"):
        if name in recipes:
            return name
    raise KeyError(f"no recipe for {dataset}/{arch}/{kind} and no {ANY}/{ANY}/{kind} fallback")


def fields_of(name: str) -> dict[str, Any]:
    """The training fields a recipe sets (every field in FIELDS: a fallback fills the gaps)."""
    recipe = load()[name]
    kind = name.rsplit("/", 1)[-1]
    base = load()[f"{ANY}/{ANY}/{kind}"]
    return {f: recipe.get(f, base.get(f)) for f in FIELDS}
