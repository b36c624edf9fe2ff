"""Sweep files: a grid or a search described by a small YAML file.

    psreval grid paper_smoke                  # a shipped file, by name (psreval_tune/sweeps/files/)
    psreval grid my_grid.yaml --seeds 0,1     # a path; flags the user gives override the file
    psreval search demo_search

A grid file::

    kind: grid
    description: what it is for (free text)
    fixed: {dataset: digits, arch: cnn, rounds: 3}     # CycleConfig fields, the same in every trial
    by_dataset: {pneumonia: {delta: 1.0e-4}}           # fields that depend on the (resolved) dataset
    axes:                                              # the grid, crossed in this order
      epsilon: [3.4, 7.0]
      setting:                                         # pseudo-axis: each value's fields go together
        - {threat: none, adv_fraction: 0.0, attack: PGD}
        - {threat: adv_training, adv_fraction: 0.2, attack: FGSM}
      seed: [0]
    resources: {cpus_per_trial: 1, gpus_per_trial: 0, max_concurrent: 2, max_failures: 3}

A search file (Optuna, define-by-run; the conditions make the space conditional)::

    kind: search
    space: paper                  # paper: the params below; recipe: the built-in training-recipe space
    fixed: {dataset: digits, rounds: 3}
    params:                       # sampled in this order; a condition names a param above it or a fixed field
      epsilon: [3.4, 7.0]                                           # choices
      threat: [none, adv_training]
      adv_fraction: {choices: [0.2, 0.4], when: {threat: [adv_training]}}
      attack_alpha: {low: 0.002, high: 0.03, log: false, when: {attack: [PGD]}}   # a range
    objectives: {acc_val_float: max, acc_val_wb_pgd: max}          # validation metrics only
    asha: {metric: acc_val, grace: 2}
    num_samples: 6
    seed: 0
    resources: {max_concurrent: 2}

A param whose condition is false is not sampled: the trial keeps the fixed
value or CycleConfig's default (threat none -> adv_fraction 0). A condition on
a param that was not sampled is false. A param with one choice is fixed.
``attack_alpha`` without a ``when`` of its own, under a sampled or fixed
``attack``, gets ``when: {attack: [...]}`` listing the attacks that take a
step size (the attack registry's ``uses_alpha``: PGD, not FGSM or FAB).

Only ``yaml.safe_load`` reads a file (plus ``yaml.compose`` to find duplicate
keys); every error is one line naming the file, the key and what is allowed
(a SweepFileError: exit 2 before Ray starts). The resolved sweep (file plus
flag overrides, every default filled in) is dumped back as YAML, logged to the
sweep's MLflow run as ``sweep.yaml``, and reproduces the same trials when run
again as a sweep file.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from .. import config
from ..checks import finite_number
from ..config import ConfigError, CycleConfig
from .failures import SweepError

FILES_DIR = Path(__file__).with_name("files")
MAX_BYTES = 1 << 20
# YAML nodes of a sweep file with every alias expanded where it is used (the shipped paper grid: ~300).
# Aliases let a few hundred bytes stand for 10^9 nodes (an "alias bomb"); anything that walks the
# document (the duplicate-key check, validation, dumping) would then never end. Counted before any walk.
MAX_NODES = 100_000
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


# --- finding and reading ----------------------------------------------------------------


def shipped() -> list[str]:
    """Names of the sweep files shipped with the package."""
    return sorted(p.stem for p in FILES_DIR.glob("*.yaml"))


def locate(name: str) -> tuple[Path, str]:
    """(path, source label) of a sweep file given as a path or as a shipped name."""
    given = Path(name).expanduser()
    if given.is_file():
        return given, name
    stem = name[:-5] if name.endswith(".yaml") else name
    if "/" not in name and (FILES_DIR / f"{stem}.yaml").is_file():
        return FILES_DIR / f"{stem}.yaml", f"{stem}.yaml"
    if given.exists():
        raise SweepFileError(
            f"sweep file {name!r} is not a file; expected a YAML file or a shipped name: {', '.join(shipped())}"
        )
    raise SweepFileError(
        f"sweep file {name!r} does not exist; expected a path to a YAML file or a shipped name: {', '.join(shipped())}"
    )


def load(name: str, kind: str | None = None) -> SweepFile:
    """Read and validate a sweep file (path or shipped name); ``kind`` is what the command runs."""
    import yaml

    path, source = locate(name)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise SweepFileError(
                f"{source}: {path.stat().st_size} bytes is not allowed for a sweep file; expected at most {MAX_BYTES}"
            )
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SweepFileError(f"{source}: not UTF-8 text; expected a YAML sweep file") from None
    except OSError as exc:
        raise SweepFileError(
            f"{source}: cannot be read ({exc.strerror or exc}); expected a readable YAML file"
        ) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        _check_size(root, source)
        _no_duplicate_keys(root, source)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SweepFileError(f"{source}: not valid YAML ({_yaml_error(exc)})") from None
    except RecursionError:  # the composer recurses once per nesting level
        raise SweepFileError(
            f"{source}: nested too deeply; expected a sweep file (a few levels of mappings and lists)"
        ) from None
    sweep = SweepFile(source, path, text, {})
    sweep.doc = validate(data, sweep, kind)
    return sweep


def _yaml_error(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _children(node: Any) -> list:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_size(root: Any, source: str) -> None:
    """Refuse a document whose nodes, every alias expanded, exceed MAX_NODES, or that contains itself.

    An alias is the very node object its anchor names, so sizes are memoised per object: the count costs
    one visit per distinct node, however many times aliases repeat it."""
    sizes: dict[int, int] = {}
    busy = -1  # being counted: met again below itself means an alias to an enclosing node

    def size(node: Any) -> int:
        known = sizes.get(id(node))
        if known == busy:
            raise SweepFileError(
                f"{source}: an alias refers to a node that contains it (line {node.start_mark.line + 1}); "
                "expected a finite document"
            )
        if known is None:
            sizes[id(node)] = busy
            sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    total = 0 if root is None else size(root)
    if total > MAX_NODES:
        raise SweepFileError(
            f"{source}: {total} YAML nodes with its aliases (*name) expanded is not allowed; expected at most "
            f"{MAX_NODES} (write the values out, or use fewer aliases)"
        )


def _no_duplicate_keys(root: Any, source: str) -> None:
    """safe_load keeps the last of two equal keys silently; a sweep file must not have any.
    Each node once (an alias repeats a node already checked)."""
    import yaml

    seen_nodes: set[int] = set()
    todo = [] if root is None else [root]
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise SweepFileError(
                            f"{source}: key {key.value!r} appears twice (line {key.start_mark.line + 1})"
                            "; expected each key once"
                        )
                    keys.add(key.value)
        todo.extend(reversed(_children(node)))  # document order: the first duplicate is the one named


# --- validation -------------------------------------------------------------------------


def validate(data: Any, sweep: SweepFile, kind: str | None = None) -> dict[str, Any]:
    """The normalised document, or SweepFileError naming the first problem."""
    fail = sweep.fail
    if not isinstance(data, dict):
        raise fail(f"a {_type(data)} is not allowed at the top; expected a mapping with kind: grid|search")
    if "kind" not in data:
        raise fail("no 'kind' key; expected kind: grid or kind: search")
    if data["kind"] not in KINDS:
        raise fail(f"kind={data['kind']!r} is not allowed; expected grid or search")
    if kind is not None and data["kind"] != kind:
        raise SweepFileError(
            f"{sweep.source} is a {data['kind']} file (kind: {data['kind']}); run it with "
            f"psreval {data['kind']} {sweep.source}"
        )
    allowed = TOP_KEYS[data["kind"]]
    _keys(data, allowed, "", fail)
    doc: dict[str, Any] = {"kind": data["kind"]}
    if "description" in data:
        if not isinstance(data["description"], str):
            raise fail(f"description={data['description']!r} is not allowed; expected text")
        doc["description"] = data["description"]
    if data["kind"] == "search":
        space = data.get("space", "paper")
        if space not in SPACES:
            raise fail(f"space={space!r} is not allowed; expected one of {', '.join(SPACES)}")
        doc["space"] = space
    doc["fixed"] = check_fields(data.get("fixed", {}), "fixed", fail)
    if "by_dataset" in data:
        by = _mapping(data["by_dataset"], "by_dataset", fail)
        datasets = config.DATASETS  # the dataset registry's names
        for name in by:
            if name not in datasets:
                raise fail(f"by_dataset.{name} is not allowed; expected dataset names: {', '.join(datasets)}")
        doc["by_dataset"] = {name: check_fields(values, f"by_dataset.{name}", fail) for name, values in by.items()}
        for name, values in doc["by_dataset"].items():
            if "dataset" in values:
                raise fail(f"by_dataset.{name}.dataset is not allowed; by_dataset sets fields for a dataset")
    if data["kind"] == "grid":
        doc["axes"] = check_axes(data.get("axes", {}), doc["fixed"], fail)
    else:
        doc["params"] = check_params(data.get("params", {}), doc["fixed"], fail)
        if doc["space"] == "paper" and not doc["params"]:
            raise fail("params is empty; a paper-space search needs at least one searched field")
        if doc["space"] == "recipe" and doc["params"]:
            raise fail(
                f"params.{next(iter(doc['params']))} is not allowed with space: recipe (its space is built "
                "in: lr, batch_size, local_epochs, momentum, lr_schedule, reset_optimizer, rounds, "
                "max_grad_norm); set the one setting it tunes in fixed (arch, epsilon)"
            )
        if "objectives" in data:
            doc["objectives"] = _objectives(data["objectives"], fail)
        asha = _mapping(data.get("asha", {}), "asha", fail)
        _keys(asha, tuple(ASHA_DEFAULTS), "asha.", fail)
        if "metric" in asha and not isinstance(asha["metric"], str):
            raise fail(f"asha.metric={asha['metric']!r} is not allowed; expected a metric name")
        if "grace" in asha:
            _int(asha["grace"], "asha.grace", 1, fail)
        doc["asha"] = {**ASHA_DEFAULTS, **asha}
        doc["num_samples"] = _int(data.get("num_samples", 8), "num_samples", 1, fail)
        doc["seed"] = _int(data.get("seed", 0), "seed", 0, fail)
        if data.get("start_from") is not None:
            if not isinstance(data["start_from"], str):
                raise fail(f"start_from={data['start_from']!r} is not allowed; expected a recipe name")
            doc["start_from"] = data["start_from"]
    doc["resources"] = _resources(data.get("resources", {}), fail)
    return doc


def _type(value: Any) -> str:
    return {
        dict: "mapping",
        list: "list",
        str: "text",
        bool: "boolean",
        int: "integer",
        float: "number",
        type(None): "null",
    }.get(type(value), type(value).__name__)


def _mapping(value: Any, where: str, fail) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise fail(f"{where} is a {_type(value)}; expected a mapping")
    for key in value:
        if not isinstance(key, str):
            raise fail(f"{where} has the key {key!r} ({_type(key)}); expected text keys")
    return value


def _keys(data: dict, allowed: tuple[str, ...], prefix: str, fail) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise fail(f"unknown key {prefix}{unknown[0]!r}; allowed: {', '.join(allowed)}")


def _int(value: Any, where: str, low: int, fail) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise fail(f"{where}={value!r} is not allowed; expected an integer >= {low}")
    return value


def check_value(name: str, value: Any, where: str, fail) -> Any:
    """A value for CycleConfig field ``name``, type-checked from the field's annotation (ranges and
    choices are CycleConfig's to check). Returns it normalised (ints given for floats stay ints)."""
    kind = FIELDS[name]
    optional = kind.endswith(" | None")
    base = kind.removesuffix(" | None")
    if value is None and optional:
        return None
    hint = ""
    if base == "bool" and isinstance(value, bool):
        return value
    if base == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if base == "float" and finite_number(value):
        return value
    if base == "str" and isinstance(value, str):
        return value
    if base == "tuple[str, ...]" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if base not in ("bool", "int", "float", "str", "tuple[str, ...]"):
        return value
    if isinstance(value, str) and base in ("int", "float"):
        try:
            float(value)
            exponent = "e" in value.lower() and "." not in value
            hint = (
                f" (YAML reads {value} as text: write the mantissa with a point, e.g. 1.0e-5)"
                if exponent
                else " (a number is written without quotes)"
            )
        except ValueError:
            if value.strip().lower() in ("none", "nonprivate") and optional:
                hint = " (write null for none)"
    expected = {
        "bool": "true or false",
        "int": "an integer",
        "float": "a number",
        "str": "text",
        "tuple[str, ...]": "a list of names",
    }[base]
    raise fail(f"{where}={value!r} is not allowed; expected {expected}{' or null' if optional else ''}{hint}")


def _field_name(name: Any, where: str, fail, pseudo: tuple[str, ...] = ()) -> str:
    if name not in FIELDS and name not in pseudo:
        extra = f" (or the pseudo-axis {', '.join(pseudo)})" if pseudo else ""
        raise fail(f"{where}{name} is not allowed; expected a CycleConfig field{extra}: {', '.join(FIELDS)}")
    return name


def check_fields(value: Any, where: str, fail) -> dict[str, Any]:
    data = _mapping(value, where, fail)
    return {_field_name(k, f"{where}.", fail): check_value(k, v, f"{where}.{k}", fail) for k, v in data.items()}


def _same_key(value: Any) -> Any:
    """A hashable stand-in equal where the values are equal (1 and 1.0 too), so a long list is checked
    in one pass rather than by comparing every pair."""
    if isinstance(value, dict):
        return ("map", frozenset((k, _same_key(v)) for k, v in value.items()))
    if isinstance(value, (list, set, frozenset)):
        return (type(value).__name__, tuple(_same_key(v) for v in value))
    return value


def _distinct(values: list, where: str, fail) -> None:
    seen: set = set()
    for v in values:
        key = _same_key(v)
        if key in seen:
            raise fail(f"{where} lists {v!r} twice; expected distinct values")
        seen.add(key)


def check_axes(value: Any, fixed: dict[str, Any], fail) -> dict[str, list]:
    axes = _mapping(value, "axes", fail)
    out: dict[str, list] = {}
    for name, values in axes.items():
        _field_name(name, "axes.", fail, PSEUDO_AXES)
        if not isinstance(values, list) or not values:
            raise fail(f"axes.{name} is a {_type(values)}; expected a non-empty list of values")
        if name in fixed:
            raise fail(f"{name} is both in fixed and an axis; expected one of the two")
        if name in PSEUDO_AXES:
            items = []
            for i, item in enumerate(values):
                fields = check_fields(item, f"axes.{name}[{i}]", fail)
                if not fields:
                    raise fail(f"axes.{name}[{i}] is empty; expected a mapping of CycleConfig fields")
                items.append(fields)
            values = items
        else:
            values = [check_value(name, v, f"axes.{name}[{i}]", fail) for i, v in enumerate(values)]
        _distinct(values, f"axes.{name}", fail)
        out[name] = values
    # a field set twice for one trial would be silently overwritten: refuse
    for name in PSEUDO_AXES:
        others = {k: other for other in PSEUDO_AXES if other != name for item in out.get(other, []) for k in item}
        for i, item in enumerate(out.get(name, [])):
            for key in item:
                if key in fixed or key in out or key in others:
                    where = "fixed" if key in fixed else f"axes.{others.get(key, key)}"
                    raise fail(f"axes.{name}[{i}].{key} is also set by {where}; expected each field set once")
    return out


def _param(name: str, spec: Any, fail) -> dict[str, Any]:
    where = f"params.{name}"
    if FIELDS[name] == "tuple[str, ...]":
        raise fail(
            f"{where} is not allowed: a searched field takes single values (Optuna's choices); "
            f"set {name} in fixed, or search it with a grid"
        )
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise fail(f"{where} is a {_type(spec)}; expected a list of choices or a mapping with choices, or low/high")
    if "choices" in spec:
        _keys(spec, CHOICE_KEYS, f"{where}.", fail)
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise fail(f"{where}.choices is a {_type(choices)}; expected a non-empty list")
        choices = [check_value(name, v, f"{where}.choices[{i}]", fail) for i, v in enumerate(choices)]
        _distinct(choices, f"{where}.choices", fail)
        out: dict[str, Any] = {"choices": choices}
    elif "low" in spec or "high" in spec:
        _keys(spec, RANGE_KEYS, f"{where}.", fail)
        base = FIELDS[name].removesuffix(" | None")
        if base not in ("int", "float"):
            raise fail(f"{where} is a range, not allowed for {name} ({base}); expected choices: [...]")
        is_int = spec.get("int", base == "int")
        if not isinstance(is_int, bool) or (base == "int" and not is_int):
            raise fail(
                f"{where}.int={is_int!r} is not allowed; expected "
                f"{'true (' + name + ' is an integer field)' if base == 'int' else 'true or false'}"
            )
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise fail(f"{where}.log={log!r} is not allowed; expected true or false")
        for key in ("low", "high"):
            if key not in spec:
                raise fail(f"{where} has no {key}; a range needs low and high")
            v = spec[key]
            if (is_int and (isinstance(v, bool) or not isinstance(v, int))) or not finite_number(v):
                raise fail(f"{where}.{key}={v!r} is not allowed; expected {'an integer' if is_int else 'a number'}")
        if not spec["low"] < spec["high"]:
            raise fail(f"{where}: low={spec['low']!r}, high={spec['high']!r} is not allowed; expected low < high")
        if log and spec["low"] <= 0:
            raise fail(f"{where}.low={spec['low']!r} is not allowed with log: true; expected a number > 0")
        out = {"low": spec["low"], "high": spec["high"], "log": log, "int": is_int}
    else:
        raise fail(f"{where} has neither choices nor low/high; expected a list of choices or low/high")
    if "when" in spec:
        out["when"] = spec["when"]
    return out


def check_params(value: Any, fixed: dict[str, Any], fail) -> dict[str, dict[str, Any]]:
    params = _mapping(value, "params", fail)
    out: dict[str, dict[str, Any]] = {}
    for name, spec in params.items():
        _field_name(name, "params.", fail)
        if name in fixed:
            raise fail(f"{name} is both in fixed and in params; expected one of the two")
        param = _param(name, spec, fail)
        if "when" in param:
            when = _mapping(param["when"], f"params.{name}.when", fail)
            if not when:
                raise fail(f"params.{name}.when is empty; expected conditions such as {{threat: [adv_training]}}")
            cond = {}
            for key, allowed in when.items():
                if key not in out and key not in fixed:
                    raise fail(
                        f"params.{name}.when.{key} is not allowed; a condition names a param above "
                        f"{name} or a fixed field (params above: {', '.join(out) or 'none'})"
                    )
                allowed = allowed if isinstance(allowed, list) else [allowed]
                if not allowed:
                    raise fail(f"params.{name}.when.{key} is empty; expected the values that enable {name}")
                cond[key] = [check_value(key, v, f"params.{name}.when.{key}", fail) for v in allowed]
            param["when"] = cond
        elif name in IMPLIED_WHEN:
            param.update(IMPLIED_WHEN[name](out, fixed))
        out[name] = param
    return out


def _alpha_when(params: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """attack_alpha with no condition of its own: sampled only for attacks that take a step size (the
    attack registry's ``uses_alpha``; FGSM takes one step of attack_eps), when the training attack is a
    param above it or fixed. The condition is written into the resolved file, so it reproduces."""
    from ..attacks import ATTACKS

    if "attack" not in params and "attack" not in fixed:
        return {}  # the default training attack (PGD) throughout
    return {"when": {"attack": [e.name for e in ATTACKS if e.uses_alpha]}}


# Conditions a param gets from a registry when its file gives none.
IMPLIED_WHEN = {"attack_alpha": _alpha_when}


def _objectives(value: Any, fail) -> dict[str, str]:
    if isinstance(value, list):  # [a, b]: each maximised
        value = {name: "max" for name in value} if all(isinstance(v, str) for v in value) else value
    objectives = _mapping(value, "objectives", fail)
    if not objectives:
        raise fail("objectives is empty; expected metric: max|min pairs")
    for name, mode in objectives.items():
        if mode not in MODES:
            raise fail(f"objectives.{name}={mode!r} is not allowed; expected max or min")
    return dict(objectives)


def _resources(value: Any, fail) -> dict[str, Any]:
    res = _mapping(value, "resources", fail)
    _keys(res, tuple(RESOURCE_DEFAULTS), "resources.", fail)
    for key in ("cpus_per_trial", "gpus_per_trial"):
        if key in res:
            v = res[key]
            low_ok = v > 0 if key == "cpus_per_trial" else v >= 0
            if not finite_number(v) or not low_ok or (v > 1 and v != int(v)):
                raise fail(
                    f"resources.{key}={v!r} is not allowed; expected a number "
                    f"{'> 0' if key == 'cpus_per_trial' else '>= 0'} (whole, or a fraction below 1)"
                )
    if res.get("max_concurrent") is not None:
        _int(res["max_concurrent"], "resources.max_concurrent", 1, fail)
    if "max_failures" in res:
        _int(res["max_failures"], "resources.max_failures", 0, fail)
    return dict(res)


# --- flags over a file -----------------------------------------------------------------

# Flags that override a fixed value of any sweep file (dest -> CycleConfig field), and its resources.
FIXED_FLAGS = {"dataset": "dataset", "download": "download", "attack_repeats": "attack_repeats"}
RESOURCE_FLAGS = tuple(RESOURCE_DEFAULTS)


def given_flags(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
    """The dests of the flags on the command line (argparse defaults do not count)."""
    unset = object()
    names = {a.dest for a in p._actions if a.dest != argparse.SUPPRESS}
    ns = argparse.Namespace(**{name: unset for name in names})
    # the plain parse: no checks (parse_args ran them), and defaults never replace a preset attribute
    argparse.ArgumentParser.parse_known_args(p, list(sys.argv[1:] if argv is None else argv), ns)
    return {name for name in names if getattr(ns, name, unset) is not unset}


def add_file_argument(p: argparse.ArgumentParser, default: str, smoke: str) -> None:
    p.add_argument(
        "sweep_file",
        nargs="?",
        default=None,
        metavar="FILE",
        help=f"sweep file: a path, or a shipped name ({', '.join(shipped())}); default: {default} (--smoke: {smoke})",
    )
    p.add_argument(
        "--max-trials",
        type=_max_trials,
        default=DEFAULT_MAX_TRIALS,
        metavar="N",
        help=f"refuse a sweep of more than N trials before building any (default: {DEFAULT_MAX_TRIALS}); "
        "--dry-run shows the count",
    )


def open_file(args: argparse.Namespace, kind: str, default: str, smoke: str) -> SweepFile:
    if args.sweep_file is not None and args.smoke:
        raise SweepFileError(
            f"--smoke runs the shipped {smoke} file; give a sweep file ({args.sweep_file}) or --smoke, not both"
        )
    sweep = load(args.sweep_file or (smoke if args.smoke else default), kind)
    sweep.max_trials = getattr(args, "max_trials", DEFAULT_MAX_TRIALS)
    return sweep


def _max_trials(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed; expected an integer >= 1")
    return value


def apply_common(sweep: SweepFile, args: argparse.Namespace, given: set[str]) -> None:
    """The flags both kinds share: fixed values and resources."""
    for dest, key in FIXED_FLAGS.items():
        if dest in given:
            set_fixed(sweep, key, getattr(args, dest), f"--{dest.replace('_', '-')}")
    if "data_root" in given:
        set_fixed(sweep, "data_root", args.data_root, "--data-root")
    elif args.data_root is not None and "data_root" not in sweep.doc["fixed"]:
        sweep.doc["fixed"]["data_root"] = args.data_root  # $PSREVAL_DATA_ROOT, unless the file names a folder
    doc = sweep.doc
    for dest in RESOURCE_FLAGS:
        if dest in given:
            doc["resources"][dest] = getattr(args, dest)
            sweep.flags.append(f"--{dest.replace('_', '-')}")


def set_fixed(sweep: SweepFile, key: str, value: Any, flag: str) -> None:
    """A flag's value for a field: fixed in every trial (no longer an axis or a searched param)."""
    sweep.doc["fixed"][key] = value
    sweep.doc.get("axes", {}).pop(key, None)
    sweep.doc.get("params", {}).pop(key, None)
    sweep.flags.append(flag)


def use_resources(args: argparse.Namespace, resolved: dict[str, Any]) -> None:
    """run_sweep reads the resources from args: the resolved ones."""
    for key, value in resolved["resources"].items():
        setattr(args, key, value)


# --- resolving --------------------------------------------------------------------------


def resolve(sweep: SweepFile) -> dict[str, Any]:
    """The sweep as it runs: by_dataset applied for the resolved dataset, every default filled in."""
    doc = copy.deepcopy(sweep.doc)
    by = doc.pop("by_dataset", {})
    dataset = doc["fixed"].get("dataset", DEFAULTS["dataset"])
    doc["fixed"].update(by.get(dataset, {}))
    doc["resources"] = {**RESOURCE_DEFAULTS, **doc["resources"]}
    check_trial_count(sweep, doc)
    return doc


def trial_count(resolved: dict[str, Any]) -> int:
    """Trials the sweep asks for: a grid's product of axis lengths, a search's num_samples."""
    if resolved["kind"] == "grid":
        return math.prod(len(values) for values in resolved["axes"].values())
    return resolved["num_samples"]


def check_trial_count(sweep: SweepFile, resolved: dict[str, Any]) -> None:
    """More than max_trials trials: one line with the count, before a config is built (a 10^6-point grid
    took minutes to check, silently)."""
    count = trial_count(resolved)
    if count <= sweep.max_trials:
        return
    if resolved["kind"] == "grid":
        how = " x ".join(f"{len(v)} {k}" for k, v in resolved["axes"].items())
        what = f"a grid of {count} trials ({how})"
    else:
        what = f"num_samples={count}"
    raise sweep.fail(
        f"{what} is not allowed; expected at most --max-trials={sweep.max_trials} trials per sweep "
        "(raise --max-trials to run it, or shrink the grid)"
    )


def identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """What a sweep computes: --resume refuses a sweep whose identity changed (resources and the
    description may change)."""
    return {k: v for k, v in resolved.items() if k not in ("resources", "description")}


def dump(resolved: dict[str, Any], source: str, flags: list[str]) -> str:
    """The resolved sweep as a sweep file (comments say where it came from)."""
    import yaml

    how = f"{source}{' with ' + ' '.join(flags) if flags else ''}"
    head = (
        f"# The resolved sweep: {how}.\n"
        f"# Run it again with: psreval {resolved['kind']} sweep.yaml  (flags given then override it)\n"
    )
    doc = {k: resolved[k] for k in TOP_KEYS[resolved["kind"]] if k in resolved}  # the documented order
    if "params" in doc:  # the short forms a person writes; loading expands them again
        doc["params"] = {name: _short(name, p) for name, p in doc["params"].items()}
    return head + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)


def _short(name: str, param: dict[str, Any]) -> Any:
    if set(param) == {"choices"}:
        return param["choices"]
    is_int_field = FIELDS[name].removesuffix(" | None") == "int"
    return {
        k: v for k, v in param.items() if not (k == "log" and v is False) and not (k == "int" and v is is_int_field)
    }


def flatten(params: dict[str, Any]) -> dict[str, Any]:
    """A trial's params -> CycleConfig fields (a pseudo-axis value's fields merged in), recipe fields left
    to the recipe still None (asked(), not to_dict(): rebuilt, the config has the trial's own twin)."""
    return CycleConfig.from_params(params).asked() if params else {}


def grid_trials(resolved: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every trial of a grid, as Tune expands it (the last axis varies fastest)."""
    axes = resolved["axes"]
    for combo in itertools.product(*axes.values()):
        yield {**resolved["fixed"], **dict(zip(axes, combo))}


def check_config(sweep: SweepFile, params: dict[str, Any], resources: dict[str, Any] | None = None) -> CycleConfig:
    """One trial's config, or the config error as a file error. With the sweep's resources: a trial on
    device cuda needs a GPU share (Ray hides every GPU from a trial without one, so it could only fail)."""
    try:
        cfg = CycleConfig.from_dict(flatten(params))
    except ConfigError as exc:
        raise sweep.fail(str(exc)) from None
    if resources is not None and cfg.device == "cuda" and not resources.get("gpus_per_trial"):
        raise sweep.fail("device='cuda' is not allowed with gpus_per_trial=0; give --gpus-per-trial or use auto")
    return cfg
