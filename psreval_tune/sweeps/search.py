"""Optuna search over the PSREval space, with ASHA early stopping, on the validation split only.

    psreval search                                     # the shipped paper_search file: validation clean, PGD accuracy
    psreval search --smoke                             # the shipped demo_search file (make demo): minutes on 2 cores
    psreval search my_search.yaml --num-samples 12     # your own file; flags the user gives override it
    psreval search --space recipe --archs resnet9 --epsilons none --num-samples 12   # a training recipe

Two spaces:
- ``paper``: the file's ``params`` (default: epsilon, architecture, threat,
  adversarial fraction and training attack only under a threat, step size
  only for the iterative training attack). The space is conditional (Optuna
  define-by-run), so no two trials differ only in a value that does nothing,
  and no config is proposed twice.
- ``recipe``: lr, batch size, local epochs, momentum, schedule, optimizer
  reset and (DP) clipping norm for one dataset/arch/epsilon: how the
  recipes in psreval_tune/recipes.toml were found.

Model selection never sees the test split: ASHA compares the per-round
validation accuracy (``acc_val``) or training loss, and Optuna's objectives
must be validation metrics (``acc_val_float``, ``acc_val_wb_pgd``). A trial
ASHA stops reaches Optuna as pruned (it has no final objective), never as a
NaN result. Test metrics appear once, in the summary printed when the search
is over. Sweep files: psreval_tune/sweeps/spec.py; the resolved search is
logged to the sweep's MLflow run as sweep.yaml.
"""

from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Iterator, Sequence

from .. import recipes
from ..config import CycleConfig
from . import spec
from .engine import SweepError, SweepSpec, _csv, add_cost_flags, exit_status, main_guard, parser, report, run_sweep
from .search_space import (  # noqa: F401 - the spaces and the searcher, importable from here as before
    ASHA_METRICS,
    DEFAULT_OBJECTIVES,
    ENUMERATE_LIMIT,
    MAX_PROPOSALS,
    MODES,
    RECIPE_FIXED,
    RECIPE_ROUNDS,
    RECIPE_SETTING,
    SELECTION_METRICS,
    _finite_values,
    _key,
    active,
    conditional_space,
    enumerate_space,
    finite,
    pareto,
    recipe_space,
    searcher_class,
)

DEFAULT_FILE = "paper_search"
SMOKE_FILE = "demo_search"

log = logging.getLogger(__name__)


def __getattr__(name: str):
    # Tune pickles the searcher into its checkpoints by reference to this module (search_space.SEARCHER_MODULE):
    # a fresh process that restores a search (--resume) finds the class here without importing Ray Tune up front.
    if name == "PsrevalOptunaSearch":
        return searcher_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --- flags over the file ----------------------------------------------------------------


def _set_param(sweep: spec.SweepFile, name: str, values: list, flag: str) -> None:
    doc = sweep.doc
    doc["fixed"].pop(name, None)
    old = doc["params"].get(name, {})
    new = {"choices": list(values), **({"when": old["when"]} if "when" in old else {})}
    if name in doc["params"]:
        doc["params"][name] = new
    else:  # unconditional: first, so that conditions below may name it
        doc["params"] = {name: new, **doc["params"]}
    sweep.flags.append(flag)


def resolve_search(sweep: spec.SweepFile, args, given: set[str]) -> dict[str, Any]:
    """File + flags -> the resolved search; every config it can propose checked."""
    doc = sweep.doc
    spec.apply_common(sweep, args, given)
    switched = "space" in given and args.space != doc["space"]
    if switched:
        sweep.flags.append("--space")
        if args.space == "paper":
            raise sweep.fail(
                "--space paper needs a file with params (this one is space: recipe); give a "
                f"paper-space file, e.g. {DEFAULT_FILE}"
            )
        # the paper-space params do not exist in the recipe space; its one setting is epsilon and arch
        doc["params"] = {k: v for k, v in doc["params"].items() if k in RECIPE_SETTING}
        doc["space"] = "recipe"
        doc["fixed"].update(RECIPE_FIXED)
        if "objectives" not in given:
            doc.pop("objectives", None)
    for dest, name in (("epsilons", "epsilon"), ("archs", "arch"), ("lr", "lr")):
        if dest in given:
            _set_param(sweep, name, getattr(args, dest), f"--{dest}")
    if "rounds" in given:
        spec.set_fixed(sweep, "rounds", args.rounds, "--rounds")
    for dest, key in (("seeds", "seed"), ("num_samples", "num_samples"), ("start_from", "start_from")):
        if dest in given:
            doc[key] = getattr(args, dest)[0] if dest == "seeds" else getattr(args, dest)
            sweep.flags.append(f"--{dest.replace('_', '-')}")
    for dest, key in (("asha_metric", "metric"), ("asha_grace", "grace")):
        if dest in given:
            doc["asha"][key] = getattr(args, dest)
            sweep.flags.append(f"--{dest.replace('_', '-')}")
    _objective_flags(sweep, args, given)
    # a param with one choice and no condition is fixed (a recipe search's epsilon and arch must be)
    for name, param in list(doc["params"].items()):
        if "when" not in param and len(param.get("choices", ())) == 1:
            doc["params"].pop(name)
            doc["fixed"][name] = param["choices"][0]
    if doc["space"] == "recipe":
        for key, value in RECIPE_FIXED.items():
            doc["fixed"].setdefault(key, value)
        if any(name in doc["params"] for name in RECIPE_SETTING):
            raise sweep.fail("--space recipe searches one setting; give one --archs value and one --epsilons value")
    if sweep.flags:  # the flags' values checked as the file's are (types, a field set twice, conditions)
        doc["fixed"] = spec.check_fields(doc["fixed"], "fixed", sweep.fail)
        doc["params"] = spec.check_params(doc["params"], doc["fixed"], sweep.fail)
    if "seed" in doc["fixed"]:
        raise sweep.fail(
            "fixed.seed is not allowed in a search file; the top-level seed: is Optuna's and every trial's"
        )
    resolved = spec.resolve(sweep)
    resolved.setdefault("objectives", dict(DEFAULT_OBJECTIVES[resolved["space"]]))
    _check(sweep, resolved, given)
    return resolved


def _objective_flags(sweep: spec.SweepFile, args, given: set[str]) -> None:
    doc = sweep.doc
    if "objectives" not in given and "modes" not in given:
        return
    names = (
        list(args.objectives)
        if "objectives" in given
        else list(doc.get("objectives") or DEFAULT_OBJECTIVES[doc["space"]])
    )
    modes = list(args.modes) if "modes" in given else ["max"] * len(names)
    if len(modes) != len(names) or any(m not in MODES for m in modes):
        raise SweepError(
            f"--modes={','.join(modes)} is not allowed; expected one of max|min per objective ({len(names)} objectives)"
        )
    doc["objectives"] = dict(zip(names, modes))
    sweep.flags += [f for f, d in (("--objectives", "objectives"), ("--modes", "modes")) if d in given]


def _check(sweep: spec.SweepFile, resolved: dict[str, Any], given: set[str]) -> None:
    """Every proposal must be a valid cycle and every objective a validation metric."""
    for name in resolved["objectives"]:
        if name not in SELECTION_METRICS:
            where = f"--objectives={name}" if "objectives" in given else f"{sweep.label}: objectives.{name}"
            raise SweepError(
                f"{where} is not allowed; model selection reads validation metrics only: {', '.join(SELECTION_METRICS)}"
            )
    metric = resolved["asha"]["metric"]
    if metric not in ASHA_METRICS:
        raise sweep.fail(
            f"asha.metric={metric!r} is not allowed; expected a per-round metric: "
            f"{', '.join(ASHA_METRICS)} (never a test metric)"
        )
    start = resolved.get("start_from")
    if start is not None:
        if resolved["space"] != "recipe":
            raise SweepError("--start-from is not allowed with --space paper; it seeds a --space recipe search")
        if start not in recipes.load():
            raise SweepError(f"--start-from={start} is not allowed; expected one of {', '.join(recipes.names())}")
    for config in configs(resolved):
        spec.check_config(sweep, config, resolved["resources"])


def trial_fixed(resolved: dict[str, Any]) -> dict[str, Any]:
    return {**resolved["fixed"], "seed": resolved["seed"]}


def configs(resolved: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """What to check before a search starts: every proposal of a paper space (ranges at both ends), or the
    recipe space's setting."""
    if resolved["space"] == "recipe":
        return iter([trial_fixed(resolved)])
    return enumerate_space(resolved["params"], trial_fixed(resolved))


def start_points(resolved: dict[str, Any]) -> list[dict[str, Any]] | None:
    """start_from RECIPE: evaluate that recipe's values first (e.g. a neighbour arch's recipe)."""
    if resolved.get("start_from") is None:
        return None
    fixed = resolved["fixed"]
    searched = {"lr", "batch_size", "local_epochs", "momentum", "lr_schedule", "reset_optimizer", "rounds"}
    if fixed.get("epsilon") is not None:
        searched.add("max_grad_norm")
    values = recipes.fields_of(resolved["start_from"])
    return [{k: values[k] for k in sorted(searched - set(fixed))}]


def max_rounds(resolved: dict[str, Any]) -> int:
    """The most rounds any trial can run (ASHA must let the longest finish)."""
    fixed = trial_fixed(resolved)
    if resolved["space"] == "recipe":
        return (
            CycleConfig.from_dict(fixed).rounds
            if "rounds" in fixed
            else max(RECIPE_ROUNDS[fixed.get("epsilon") is not None])
        )
    return max(CycleConfig.from_dict(spec.flatten(c)).rounds for c in configs(resolved))


def build(resolved: dict[str, Any]):
    """(searcher, scheduler) of a resolved search."""
    from ray.tune.schedulers import ASHAScheduler

    fixed = trial_fixed(resolved)
    if resolved["space"] == "recipe":
        space, distinct = functools.partial(recipe_space, fixed=fixed), None
    else:
        space = functools.partial(conditional_space, params=resolved["params"], fixed=fixed)
        distinct = (
            len({_key(c) for c in enumerate_space(resolved["params"], fixed)}) if finite(resolved["params"]) else None
        )
    objectives, modes = list(resolved["objectives"]), list(resolved["objectives"].values())
    multi = len(objectives) > 1
    searcher = searcher_class()(
        space=space,
        metric=objectives if multi else objectives[0],
        mode=modes if multi else modes[0],
        seed=resolved["seed"],
        points_to_evaluate=start_points(resolved),
        distinct=distinct,
    )
    asha = resolved["asha"]
    scheduler = ASHAScheduler(
        metric=asha["metric"],
        mode=ASHA_METRICS[asha["metric"]],
        time_attr="training_iteration",
        max_t=max_rounds(resolved) + 1,
        grace_period=asha["grace"],
        reduction_factor=2,
    )
    return searcher, scheduler


def _none_or_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "nonprivate") else float(text)


def add_flags(p) -> None:
    """The search's flags; each left out keeps the sweep file's value (shown as the shipped default)."""
    p.add_argument(
        "--space",
        default=None,
        choices=["paper", "recipe"],
        help="paper: the file's params; recipe: training hyperparameters of one setting (default: the file's, paper)",
    )
    p.add_argument("--num-samples", type=int, default=None, help="trials Optuna proposes (default: the file's, 8)")
    p.add_argument(
        "--objectives",
        type=_csv(str),
        default=None,
        help=f"validation metrics to optimise, comma-separated: {', '.join(SELECTION_METRICS)} "
        "(default: the file's; both for --space paper, acc_val_float for --space recipe)",
    )
    p.add_argument("--modes", type=_csv(str), default=None, help="max|min per objective (default: max)")
    p.add_argument(
        "--epsilons",
        type=_csv(_none_or_float),
        default=None,
        help="epsilon choices; 'none' = non-private (default: the file's, 1.7,3.4,7.0)",
    )
    p.add_argument(
        "--archs", type=_csv(str), default=None, help="architecture choices (default: the file's, cnn,resnet9)"
    )
    p.add_argument(
        "--lr",
        type=_csv(float),
        default=None,
        help="learning-rate choices for --space paper (default: each setting's recipe)",
    )
    p.add_argument("--rounds", type=int, default=None, help="FL rounds per trial (default: the recipe's)")
    p.add_argument(
        "--start-from",
        default=None,
        help="--space recipe: evaluate this recipe (e.g. digits/resnet9/dp) first, then search",
    )
    p.add_argument(
        "--asha-grace", type=int, default=None, help="rounds before ASHA may stop a trial (default: the file's, 2)"
    )
    p.add_argument(
        "--asha-metric",
        default=None,
        choices=sorted(ASHA_METRICS),
        help="per-round metric ASHA compares: acc_val (validation accuracy, higher is better) or "
        "train_loss (lower is better) (default: the file's, acc_val)",
    )


def load(argv: Sequence[str] | None = None):
    """(args, sweep file, resolved search) for a command line; SweepError if not allowed."""
    p = parser(__doc__.splitlines()[0])
    spec.add_file_argument(p, DEFAULT_FILE, SMOKE_FILE)
    add_flags(p)
    add_cost_flags(p)
    args = p.parse_args(argv)
    sweep = spec.open_file(args, "search", DEFAULT_FILE, SMOKE_FILE)
    return args, sweep, resolve_search(sweep, args, spec.given_flags(p, argv))


def dry_run(args, sweep: spec.SweepFile, resolved: dict[str, Any]) -> int:
    """psreval search --dry-run: num_samples trials, each costed as the mean of the configs the space can
    propose (ranges at both ends); an upper bound, as ASHA may stop trials early (sweeps/cost.py)."""
    from . import cost

    spec.use_resources(args, resolved)
    proposals = [spec.check_config(sweep, c) for c in configs(resolved)]
    what = f"search {sweep.source} ({resolved['space']} space, at most; ASHA may stop trials early)"
    return cost.dry_run(args, proposals, resolved["num_samples"], what)


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    args, sweep, resolved = load(argv)
    if args.dry_run:  # before Ray Tune and Optuna are imported: nothing starts, nothing is written
        return dry_run(args, sweep, resolved)
    searcher, scheduler = build(resolved)
    spec.use_resources(args, resolved)
    args.sweep = spec.identity(resolved)  # --resume refuses a search whose file changed
    objectives, modes = list(resolved["objectives"]), list(resolved["objectives"].values())
    results, summary, _ = run_sweep(
        args,
        SweepSpec(
            kind="search",
            param_space={},
            num_samples=resolved["num_samples"],
            search_alg=searcher,
            scheduler=scheduler,
            files={"sweep.yaml": spec.dump(resolved, sweep.source, sweep.flags)},
            sweep_params={
                "space": resolved["space"],
                "objectives": ",".join(objectives),
                "modes": ",".join(modes),
                "num_samples": resolved["num_samples"],
                "sweep_file": sweep.source,
            },
            summary_metrics=objectives,
            report=report,
        ),
    )
    front = pareto(summary, objectives, modes)
    stopped = int((summary["status"] == "stopped early").sum())
    print(
        f"\nPareto set over {', '.join(objectives)} (validation split; {len(front)} of {len(summary)} trials; "
        f"{stopped} stopped early by ASHA):"
    )
    print(front.to_string(index=False) if len(front) else "  (no finished trial)")
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
