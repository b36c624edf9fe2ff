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

Only PyYAML's safe loader reads a file (``SafeLoader``, or its libyaml twin ``CSafeLoader``: plain data,
never an object; plus ``yaml.compose`` to find duplicate keys and ``yaml.parse`` to count nodes and nesting
before anything is built); every error is one line naming the file, the key and what is allowed
(a SweepFileError: exit 2 before Ray starts). The resolved sweep (file plus
flag overrides, every default filled in) is dumped back as YAML, logged to the
sweep's MLflow run as ``sweep.yaml``, and reproduces the same trials when run
again as a sweep file.

Here: finding and reading a file (``load``), the flags applied over it, and its resolution (``resolve``,
``dump``, the grid's trials). What a file may hold is ``spec_schema.py``; its checks, ``spec_validate.py``;
reading its YAML within bounds (alias bombs, nesting, duplicate keys), ``spec_yaml.py``.
Their names are importable from here too.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import math
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

from ..config import ConfigError, CycleConfig
from .spec_schema import (  # noqa: F401 - what a sweep file may hold, importable from here as before
    ASHA_DEFAULTS,
    CHOICE_KEYS,
    DEFAULT_MAX_TRIALS,
    DEFAULTS,
    FIELDS,
    FILES_DIR,
    KINDS,
    MAX_BYTES,
    MAX_NODES,
    MODES,
    PSEUDO_AXES,
    RANGE_KEYS,
    RESOURCE_DEFAULTS,
    SPACES,
    TOP_KEYS,
    SweepFile,
    SweepFileError,
)
from .spec_validate import (  # noqa: F401 - the checks, importable from here as before
    IMPLIED_WHEN,
    check_axes,
    check_fields,
    check_params,
    check_value,
    validate,
)
from .spec_yaml import parse

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
    data = parse(text, source)
    sweep = SweepFile(source, path, text, {})
    sweep.doc = validate(data, sweep, kind)
    return sweep


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
