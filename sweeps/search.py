"""Optuna search over the PSREval space, with ASHA early stopping.

    python sweeps/search.py --num-samples 8                   # clean and PGD-robust accuracy, Pareto set
    python sweeps/search.py --objectives acc_clean_float --num-samples 20 --address auto

Optuna (through Ray Tune's OptunaSearch) proposes epsilon, adversarial
fraction, attack step size, architecture, attack and threat; with several
objectives its TPE sampler searches their Pareto front. ASHA stops trials whose
per-round clean accuracy trails the others.
"""

from __future__ import annotations

import sys
from typing import Sequence

from ray import tune

from psreval_tune.sweep import SweepError, SweepSpec, _csv, main_guard, parser, run_sweep
from psreval_tune.trainable import cycle_config

from _report import report  # the script's folder is on sys.path

MODES = {"max": "max", "min": "min"}


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


def build(args):
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    objectives, modes = args.objectives, args.modes or ["max"] * len(args.objectives)
    if len(modes) != len(objectives) or any(m not in MODES for m in modes):
        raise SweepError(f"--modes={','.join(modes)} is not allowed; expected one of max|min per objective "
                         f"({len(objectives)} objectives)")
    rounds = 3 if args.smoke else args.rounds
    fixed = {"dataset": "digits" if args.smoke else args.dataset, "data_root": args.data_root,
             "download": args.download, "rounds": rounds, "attack_repeats": args.attack_repeats or 1,
             "eval_attacks": ["PGD", "FGSM"], "eval_samples": 64 if args.smoke else 256, "seed": args.seeds[0]}
    space = {
        **fixed,
        "epsilon": tune.choice(args.epsilons),
        "adv_fraction": tune.choice([0.1, 0.2, 0.3, 0.4]),
        "attack_alpha": tune.uniform(0.5 / 255, 8 / 255),
        "arch": tune.choice(args.archs),
        "attack": tune.choice(["PGD", "FGSM"]),
        "threat": tune.choice(["none", "adv_training", "train_time_attack"]),
        "lr": tune.choice(args.lr),
    }
    # Any sample of this space must be a valid cycle: check its corners now.
    for eps in args.epsilons:
        for arch in args.archs:
            for lr in args.lr:
                cycle_config({**fixed, "epsilon": eps, "arch": arch, "lr": lr, "threat": "train_time_attack",
                              "adv_fraction": 0.4, "attack_alpha": 8 / 255})
    searcher = OptunaSearch(metric=objectives if len(objectives) > 1 else objectives[0],
                            mode=modes if len(modes) > 1 else modes[0], seed=args.seeds[0])
    # ASHA ranks trials by a per-round metric (reported every FL round).
    scheduler = ASHAScheduler(metric=args.asha_metric, mode="min" if args.asha_metric == "train_loss" else "max",
                              time_attr="training_iteration",
                              max_t=rounds + 1, grace_period=args.asha_grace, reduction_factor=2)
    return space, searcher, scheduler, objectives, modes


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=8, help="trials Optuna proposes (default: 8)")
    p.add_argument("--objectives", type=_csv(str), default=["acc_clean_float", "acc_wb_pgd_mean"],
                   help="metrics to optimise, comma-separated (default: acc_clean_float,acc_wb_pgd_mean)")
    p.add_argument("--modes", type=_csv(str), default=None, help="max|min per objective (default: max)")
    p.add_argument("--epsilons", type=_csv(float), default=[1.7, 3.4, 7.0], help="epsilon choices")
    p.add_argument("--archs", type=_csv(str), default=["cnn", "resnet9"], help="architecture choices")
    p.add_argument("--lr", type=_csv(float), default=[0.2], help="learning-rate choices (default: 0.2)")
    p.add_argument("--rounds", type=int, default=10, help="FL rounds per trial (default: 10)")
    p.add_argument("--asha-grace", type=int, default=2, help="rounds before ASHA may stop a trial (default: 2)")
    p.add_argument("--asha-metric", default="acc_clean", choices=["acc_clean", "train_loss"],
                   help="per-round metric ASHA compares: acc_clean (higher is better) or train_loss "
                        "(lower is better; no ties between diverged trials) (default: acc_clean)")
    args = p.parse_args(argv)
    if args.num_samples < 1:
        raise SweepError(f"--num-samples={args.num_samples} is not allowed; expected an integer >= 1")
    space, searcher, scheduler, objectives, modes = build(args)
    results, summary, _ = run_sweep(args, SweepSpec(
        kind="search", param_space=space, num_samples=args.num_samples, search_alg=searcher, scheduler=scheduler,
        sweep_params={"objectives": ",".join(objectives), "modes": ",".join(modes), "num_samples": args.num_samples},
        summary_metrics=list(objectives), report=report))
    front = pareto(summary, objectives, modes)
    stopped = int((summary["status"] == "stopped early").sum())
    print(f"\nPareto set over {', '.join(objectives)} ({len(front)} of {len(summary)} trials; "
          f"{stopped} stopped early by ASHA):")
    print(front.to_string(index=False) if len(front) else "  (no finished trial)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
