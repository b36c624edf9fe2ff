"""A grid sweep on Ray Tune from a sweep file (default: the PSREval paper's grid).

    psreval grid --smoke                                      # the shipped paper_smoke file: minutes on a laptop
    psreval grid paper_smoke --seeds 0,1                      # a shipped file by name; flags override it
    psreval grid my_grid.yaml                                 # your own file (format: psreval_tune/sweeps/spec.py)
    psreval grid --dataset cifar10 --data-root ~/data --address auto --gpus-per-trial 0.25

The grids live in psreval_tune/sweeps/files/*.yaml (paper_grid.yaml: 3 epsilons x 25 threat settings
x 2 archs per seed). Flags the user gives override the file: --dataset, --data-root, --download,
--attack-repeats (fixed values), --seeds (the seed axis), --cpus-per-trial, --gpus-per-trial,
--max-concurrent, --max-failures (resources). The resolved sweep is logged to the sweep's MLflow run
as sweep.yaml; `psreval grid sweep.yaml` runs the same trials again.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from . import spec
from .engine import SweepSpec, add_cost_flags, exit_status, main_guard, parser, report, run_sweep

DEFAULT_FILE = "paper_grid"
SMOKE_FILE = "paper_smoke"


def _paper_values(key: str) -> dict[str, Any]:
    """``key`` per dataset in the shipped paper grid's by_dataset."""
    doc = spec.load(DEFAULT_FILE, "grid").doc
    by = doc.get("by_dataset", {})
    return {name: values[key] for name, values in by.items() if key in values}


# The paper's per-dataset values, read from paper_grid.yaml (sweeps/reproduce.py uses them).
DELTA = _paper_values("delta")
EVAL_SAMPLES = _paper_values("eval_samples")


def resolve_grid(sweep: spec.SweepFile, args: argparse.Namespace, given: set[str]) -> dict[str, Any]:
    """File + flags -> the resolved grid, every trial's config validated (a bad value fails the command,
    not 200 trials)."""
    spec.apply_common(sweep, args, given)
    if "seeds" in given:
        sweep.doc["fixed"].pop("seed", None)
        sweep.doc["axes"]["seed"] = list(args.seeds)
        sweep.flags.append("--seeds")
    if sweep.flags:  # the flags' values checked as the file's are (types, a field set twice)
        sweep.doc["fixed"] = spec.check_fields(sweep.doc["fixed"], "fixed", sweep.fail)
        sweep.doc["axes"] = spec.check_axes(sweep.doc["axes"], sweep.doc["fixed"], sweep.fail)
    resolved = spec.resolve(sweep)
    for trial in spec.grid_trials(resolved):
        spec.check_config(sweep, trial, resolved["resources"])
    return resolved


def param_space(resolved: dict[str, Any]) -> dict[str, Any]:
    from ray import tune

    return {**resolved["fixed"], **{k: tune.grid_search(list(v)) for k, v in resolved["axes"].items()}}


def grid(args: argparse.Namespace, given: set[str] = frozenset()) -> tuple[dict[str, Any], spec.SweepFile, dict]:
    """(Tune param space, the sweep file, the resolved sweep) for these flags."""
    sweep = spec.open_file(args, "grid", DEFAULT_FILE, SMOKE_FILE)
    resolved = resolve_grid(sweep, args, set(given))
    return param_space(resolved), sweep, resolved


def dry_run(args: argparse.Namespace, given: set[str]) -> int:
    """psreval grid --dry-run: the grid's trials, twins and estimated cost (sweeps/cost.py)."""
    from . import cost

    sweep = spec.open_file(args, "grid", DEFAULT_FILE, SMOKE_FILE)
    resolved = resolve_grid(sweep, args, set(given))
    spec.use_resources(args, resolved)
    configs = [spec.check_config(sweep, trial) for trial in spec.grid_trials(resolved)]
    dataset = configs[0].dataset if configs else "digits"
    return cost.dry_run(args, configs, len(configs), f"grid {sweep.source} on {dataset}")


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    spec.add_file_argument(p, DEFAULT_FILE, SMOKE_FILE)
    add_cost_flags(p)
    args = p.parse_args(argv)
    if args.dry_run:  # before Ray Tune is imported: nothing starts, nothing is written
        return dry_run(args, spec.given_flags(p, argv))
    space, sweep, resolved = grid(args, spec.given_flags(p, argv))
    spec.use_resources(args, resolved)
    args.sweep = spec.identity(resolved)  # --resume refuses a sweep whose file changed
    text = spec.dump(resolved, sweep.source, sweep.flags)
    results, _, _ = run_sweep(
        args,
        SweepSpec(
            kind="paper_grid",
            param_space=space,
            files={"sweep.yaml": text},
            sweep_params={
                "smoke": args.smoke,
                "dataset": space["dataset"] if "dataset" in space else "digits",
                "sweep_file": sweep.source,
            },
            report=report,
        ),
    )
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
