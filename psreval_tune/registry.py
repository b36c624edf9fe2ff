"""One registry per axis (attacks, threats, aggregators, datasets, architectures, accountants).

Each entry is declared once, beside its implementation, with a decorator::

    ATTACKS = Registry("attack")

    @ATTACKS.register("PGD", randomized=True)
    def build(spec, model, num_classes, seed): ...

Config validation, CLI help, sweeps and analysis read ``names()`` and the
entries' metadata; nothing else lists names. A package whose modules each
register one entry calls ``discover`` once, so adding an entry is adding one
file (the way torchattacks adds an attack, or Flower a strategy).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

from .checks import finite_number


class ConfigView(Protocol):
    """The CycleConfig fields a registry entry's functions read (a dataset's ``load``/``check``, a threat's
    check and context, an attack's spec). The entries are given the CycleConfig itself; they name this
    view, not config.py, because config.py validates against the registries (it imports them).
    tests/test_imports.py checks each name here is a CycleConfig field."""

    dataset: str
    data_root: str | None
    download: bool
    image_size: int | None
    medmnist_subset: str
    train_samples: int | None
    test_samples: int | None
    num_clients: int
    adversary_client: int
    num_malicious: int
    threat: str
    threat_params: dict
    attack: str
    attack_eps: float
    attack_alpha: float
    attack_steps: int
    seed: int


@dataclass(frozen=True)
class Entry:
    name: str
    obj: Any  # the implementation: a class or a factory function
    meta: dict[str, Any] = field(default_factory=dict)
    order: int = 100  # position in names(): the paper's own entries first, in the paper's order

    def __getattr__(self, key: str) -> Any:
        # entry.randomized instead of entry.meta["randomized"]; unknown keys are an AttributeError
        if key.startswith("__") or key == "meta":
            raise AttributeError(key)
        try:
            return self.meta[key]
        except KeyError:
            raise AttributeError(f"{self.name!r} has no {key!r}") from None


class Registry:
    """Names of one axis, in a stable order, each bound to its implementation."""

    def __init__(self, axis: str):
        self.axis = axis
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, *, order: int = 100, **meta: Any) -> Callable[[Any], Any]:
        def add(obj: Any) -> Any:
            if name in self._entries and self._entries[name].obj is not obj:
                raise ValueError(f"{self.axis} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, meta, order)
            return obj

        return add

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a throwaway entry clean up with this)."""
        self.get(name)  # a one-line ValueError for an unknown name
        del self._entries[name]

    def names(self) -> tuple[str, ...]:
        ordered = sorted(self._entries.values(), key=lambda e: (e.order, e.name))
        return tuple(e.name for e in ordered)

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            allowed = ", ".join(self.names())
            raise ValueError(f"{self.axis}={name!r} is not allowed; expected one of {allowed}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return (self._entries[n] for n in self.names())

    def __len__(self) -> int:
        return len(self._entries)


def discover(package: str, path: list[str] | Any) -> None:
    """Import every module of ``package`` so each registers its entry (call at the
    end of the package's ``__init__``; modules starting with ``_`` are skipped)."""
    for info in sorted(pkgutil.iter_modules(path), key=lambda i: i.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


@dataclass(frozen=True)
class Param:
    """One parameter of a registry entry (a trim ratio, a scaling factor): its default,
    the check a value must pass, and the allowed set in words for the error message."""

    default: Any
    check: Callable[[Any], bool]
    allowed: str


def number_in(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        return finite_number(v) and (v > low if low_open else v >= low) and (v < high if high_open else v <= high)

    return check


def integer_at_least(low: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= low


def resolve_params(axis: str, entry: Entry, given: dict[str, Any] | None) -> dict[str, Any]:
    """The entry's parameters with defaults filled in; a one-line ValueError names
    an unknown key or a bad value and what is allowed."""
    declared: dict[str, Param] = entry.meta.get("params", {})
    given = dict(given or {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(sorted(declared)) or "none"
        raise ValueError(f"{axis}_params key {unknown[0]!r} is not allowed for {axis}={entry.name}; allowed: {allowed}")
    out = {}
    for key, param in sorted(declared.items()):
        value = given.get(key, param.default)
        if value is not None and not param.check(value):
            raise ValueError(
                f"{axis}_params.{key}={value!r} is not allowed for {axis}={entry.name}; expected {param.allowed}"
            )
        out[key] = value
    return out
