"""A sweep file's document checked key by key (``validate``): the first problem is one line naming the
file, the key and what is allowed (SweepFileError). Returns the normalised document."""

from __future__ import annotations

from typing import Any

from .. import config
from ..checks import finite_number
from .spec_schema import (
    ASHA_DEFAULTS,
    CHOICE_KEYS,
    FIELDS,
    KINDS,
    MODES,
    PSEUDO_AXES,
    RANGE_KEYS,
    RESOURCE_DEFAULTS,
    SPACES,
    TOP_KEYS,
    SweepFile,
    SweepFileError,
)


def validate(data: Any, sweep: SweepFile, kind: str | None = None) -> dict[str, Any]:
    """The normalised document, or SweepFileError naming the first problem."""
    fail = sweep.fail
    _check_kind(data, sweep, kind)
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
        doc["by_dataset"] = _by_dataset(data["by_dataset"], fail)
    if data["kind"] == "grid":
        doc["axes"] = check_axes(data.get("axes", {}), doc["fixed"], fail)
    else:
        _check_search(data, doc, fail)
    doc["resources"] = _resources(data.get("resources", {}), fail)
    return doc


def _check_kind(data: Any, sweep: SweepFile, kind: str | None) -> None:
    """A mapping whose kind is grid or search, and the kind the command runs (``kind``) when given."""
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


def _by_dataset(value: Any, fail) -> dict[str, dict[str, Any]]:
    """by_dataset: dataset name -> the fields it sets (not the dataset itself)."""
    by = _mapping(value, "by_dataset", fail)
    datasets = config.DATASETS  # the dataset registry's names
    for name in by:
        if name not in datasets:
            raise fail(f"by_dataset.{name} is not allowed; expected dataset names: {', '.join(datasets)}")
    checked = {name: check_fields(values, f"by_dataset.{name}", fail) for name, values in by.items()}
    for name, values in checked.items():
        if "dataset" in values:
            raise fail(f"by_dataset.{name}.dataset is not allowed; by_dataset sets fields for a dataset")
    return checked


def _check_search(data: dict[str, Any], doc: dict[str, Any], fail) -> None:
    """A search file's own keys, into ``doc``: params, objectives, asha, num_samples, seed, start_from."""
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
