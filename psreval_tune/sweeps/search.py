"""Optuna search over the PSREval space, with ASHA early stopping, on the
validation split only.

    python sweeps/search.py --num-samples 8                   # validation clean and PGD accuracy, Pareto set
    python sweeps/search.py --space recipe --archs resnet9 --epsilons none --num-samples 12   # a training recipe

Two spaces:
- ``paper``: epsilon, threat, adversarial fraction and training attack (only
  when there is a threat), attack step size, architecture. The space is
  conditional (Optuna define-by-run), so no two trials differ only in a
  value that does nothing.
- ``recipe``: lr, batch size, local epochs, momentum, schedule, optimizer
  reset and (DP) clipping norm for one dataset/arch/epsilon: how the
  recipes in psreval_tune/recipes.toml were found.

Model selection never sees the test split: ASHA compares the per-round
validation accuracy (``acc_val``) or training loss, and Optuna's objectives
must be validation metrics (``acc_val_float``, ``acc_val_wb_pgd``). Test
metrics appear once, in the summary printed when the search is over.
"""

from __future__ import annotations

import functools
import itertools
import sys
from typing import Any, Sequence

from .. import recipes
from .engine import SweepError, SweepSpec, _csv, main_guard, parser, run_sweep
from ..trainable import SELECTION_METRICS, cycle_config

from .engine import report

MODES = ("max", "min")
ASHA_METRICS = {"acc_val": "max", "train_loss": "min"}  # per-round, never a test metric
THREATS = ("none", "adv_training", "train_time_attack")
FRACTIONS = (0.1, 0.2, 0.3, 0.4)
RECIPE_ROUNDS = {False: [5, 10], True: [5, 10, 20]}  # by private


def pareto(frame, objectives: Sequence[str], modes: Sequence[str]):
    """Rows not dominated by any other row (all objectives as good, one better)."""
    done = frame.dropna(subset=list(objectives))
    signs = [1 if m == "max" else -1 for m in modes]
    values = [[s * row[o] for o, s in zip(objectives, signs)] for _, row in done.iterrows()]

    def dominated(i: int) -> bool:
        return any(all(b >= a for a, b in zip(values[i], other)) and any(b > a for a, b in zip(values[i], other))
                   for j, other in enumerate(values) if j != i)

    keep = [i for i in range(len(values)) if not dominated(i)]
    return done.iloc[keep].sort_values(list(objectives), ascending=[m == "min" for m in modes])


def paper_space(trial, epsilons: list, archs: list, lrs: list, fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run: the paper's axes, a fraction and training attack only under a threat."""
    trial.suggest_categorical("epsilon", epsilons)
    trial.suggest_categorical("arch", archs)
    trial.suggest_float("attack_alpha", 0.5 / 255, 8 / 255)
    if trial.suggest_categorical("threat", THREATS) != "none":
        trial.suggest_categorical("adv_fraction", FRACTIONS)
        trial.suggest_categorical("attack", ["PGD", "FGSM"])
    if len(lrs) > 1:
        trial.suggest_categorical("lr", lrs)
    return {**fixed, **({"lr": lrs[0]} if len(lrs) == 1 else {})}


def recipe_space(trial, fixed: dict[str, Any]) -> dict[str, Any]:
    """Optuna define-by-run: the training fields of a recipe (clipping only under DP)."""
    private = fixed["epsilon"] is not None
    if private:
        trial.suggest_float("lr", 0.05, 2.0, log=True)
        trial.suggest_categorical("batch_size", [64, 128, 256])
        trial.suggest_float("max_grad_norm", 0.1, 4.0, log=True)
    else:
        trial.suggest_float("lr", 0.003, 0.2, log=True)
        trial.suggest_categorical("batch_size", [16, 32, 64])
    if "rounds" not in fixed:
        trial.suggest_categorical("rounds", RECIPE_ROUNDS[private])
    trial.suggest_categorical("local_epochs", [1, 2, 3])
    trial.suggest_categorical("momentum", [0.0, 0.5, 0.9])
    trial.suggest_categorical("lr_schedule", ["constant", "cosine"])
    trial.suggest_categorical("reset_optimizer", [True, False])
    return fixed


def start_points(args, fixed: dict[str, Any]) -> list[dict[str, Any]] | None:
    """--start-from RECIPE: evaluate that recipe's values first (e.g. a neighbour arch's recipe)."""
    if args.start_from is None:
        return None
    if args.space != "recipe":
        raise SweepError("--start-from is not allowed with --space paper; it seeds a --space recipe search")
    if args.start_from not in recipes.load():
        raise SweepError(f"--start-from={args.start_from} is not allowed; expected one of "
                         f"{', '.join(recipes.names())}")
    searched = {"lr", "batch_size", "local_epochs", "momentum", "lr_schedule", "reset_optimizer", "rounds"}
    if fixed["epsilon"] is not None:
        searched.add("max_grad_norm")
    values = recipes.fields_of(args.start_from)
    return [{k: values[k] for k in sorted(searched - set(fixed))}]


def _fixed(args) -> dict[str, Any]:
    common = {"dataset": "digits" if args.smoke else args.dataset, "data_root": args.data_root,
              "download": args.download, "seed": args.seeds[0], "attack_repeats": args.attack_repeats or 1}
    if args.smoke:
        common.update(recipes.SMOKE)
    if args.rounds is not None:
        common["rounds"] = args.rounds
    if args.space == "recipe":
        # One setting; attacks only as far as the cycle needs one (cheap FGSM), no twin.
        return {**common, "arch": args.archs[0], "epsilon": args.epsilons[0], "threat": "none",
                "eval_attacks": ["FGSM"], "train_twin": False}
    return {**common, "eval_attacks": ["PGD", "FGSM"], "eval_samples": 64 if args.smoke else None}


def _check(args, fixed: dict[str, Any]) -> None:
    """Every sample must be a valid cycle and every objective a validation metric."""
    bad = [o for o in args.objectives if o not in SELECTION_METRICS]
    if bad:
        raise SweepError(f"--objectives={bad[0]} is not allowed; model selection reads validation metrics only: "
                         f"{', '.join(SELECTION_METRICS)}")
    if len(args.modes) != len(args.objectives) or any(m not in MODES for m in args.modes):
        raise SweepError(f"--modes={','.join(args.modes)} is not allowed; expected one of max|min per objective "
                         f"({len(args.objectives)} objectives)")
    if args.space == "recipe" and (len(args.archs) != 1 or len(args.epsilons) != 1):
        raise SweepError("--space recipe searches one setting; give one --archs value and one --epsilons value")
    for eps, arch, lr in itertools.product(args.epsilons, args.archs, args.lr or [None]):
        corner = {**fixed, "epsilon": eps, "arch": arch, **({"lr": lr} if lr is not None else {})}
        if args.space == "paper":
            corner.update(threat="train_time_attack", adv_fraction=0.4, attack_alpha=8 / 255)
        cycle_config(corner)


def build(args):
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    args.modes = args.modes or ["max"] * len(args.objectives)
    fixed = _fixed(args)
    _check(args, fixed)
    # partials of module-level functions: Tune pickles the searcher into its checkpoints
    space = (functools.partial(recipe_space, fixed=fixed) if args.space == "recipe" else
             functools.partial(paper_space, epsilons=args.epsilons, archs=args.archs, lrs=args.lr, fixed=fixed))
    multi = len(args.objectives) > 1
    searcher = OptunaSearch(space=space, metric=args.objectives if multi else args.objectives[0],
                            mode=args.modes if multi else args.modes[0], seed=args.seeds[0],
                            points_to_evaluate=start_points(args, fixed))
    rounds = cycle_config(fixed).rounds
    if args.space == "recipe" and "rounds" not in fixed:  # ASHA must let the longest trial finish
        rounds = max(RECIPE_ROUNDS[fixed["epsilon"] is not None])
    scheduler = ASHAScheduler(metric=args.asha_metric, mode=ASHA_METRICS[args.asha_metric],
                              time_attr="training_iteration", max_t=rounds + 1, grace_period=args.asha_grace,
                              reduction_factor=2)
    return searcher, scheduler


def _none_or_float(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "nonprivate") else float(text)


def add_flags(p) -> None:
    p.add_argument("--space", default="paper", choices=["paper", "recipe"],
                   help="paper: the paper's axes; recipe: training hyperparameters of one setting (default: paper)")
    p.add_argument("--num-samples", type=int, default=8, help="trials Optuna proposes (default: 8)")
    p.add_argument("--objectives", type=_csv(str), default=None,
                   help=f"validation metrics to optimise, comma-separated: {', '.join(SELECTION_METRICS)} "
                        "(default: both for --space paper, acc_val_float for --space recipe)")
    p.add_argument("--modes", type=_csv(str), default=None, help="max|min per objective (default: max)")
    p.add_argument("--epsilons", type=_csv(_none_or_float), default=None,
                   help="epsilon choices; 'none' = non-private (default: 1.7,3.4,7.0)")
    p.add_argument("--archs", type=_csv(str), default=["cnn", "resnet9"], help="architecture choices")
    p.add_argument("--lr", type=_csv(float), default=None,
                   help="learning-rate choices for --space paper (default: each setting's recipe)")
    p.add_argument("--rounds", type=int, default=None, help="FL rounds per trial (default: the recipe's)")
    p.add_argument("--start-from", default=None,
                   help="--space recipe: evaluate this recipe (e.g. digits/resnet9/dp) first, then search")
    p.add_argument("--asha-grace", type=int, default=2, help="rounds before ASHA may stop a trial (default: 2)")
    p.add_argument("--asha-metric", default="acc_val", choices=sorted(ASHA_METRICS),
                   help="per-round metric ASHA compares: acc_val (validation accuracy, higher is better) or "
                        "train_loss (lower is better) (default: acc_val)")


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    add_flags(p)
    args = p.parse_args(argv)
    args.epsilons = args.epsilons or [1.7, 3.4, 7.0]
    args.lr = args.lr or []
    args.objectives = args.objectives or (["acc_val_float"] if args.space == "recipe" else list(SELECTION_METRICS))
    if args.num_samples < 1:
        raise SweepError(f"--num-samples={args.num_samples} is not allowed; expected an integer >= 1")
    if args.rounds is not None and args.rounds < 1:
        raise SweepError(f"--rounds={args.rounds} is not allowed; expected an integer >= 1")
    searcher, scheduler = build(args)
    results, summary, _ = run_sweep(args, SweepSpec(
        kind="search", param_space={}, num_samples=args.num_samples, search_alg=searcher, scheduler=scheduler,
        sweep_params={"space": args.space, "objectives": ",".join(args.objectives), "modes": ",".join(args.modes),
                      "num_samples": args.num_samples},
        summary_metrics=list(args.objectives), report=report))
    front = pareto(summary, args.objectives, args.modes)
    stopped = int((summary["status"] == "stopped early").sum())
    print(f"\nPareto set over {', '.join(args.objectives)} (validation split; {len(front)} of {len(summary)} trials; "
          f"{stopped} stopped early by ASHA):")
    print(front.to_string(index=False) if len(front) else "  (no finished trial)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
