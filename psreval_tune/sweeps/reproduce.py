"""Reproduce the PSREval paper's checkable claims on digits, with 3 seeds.

    python sweeps/reproduce.py                 # writes docs/reproduction.md (<= 90 min on 2 CPU cores)
    python sweeps/reproduce.py --smoke --doc /tmp/repro.md    # the plumbing in minutes (no conclusions)
    python sweeps/reproduce.py --dataset cifar10 --data-root ~/data --address auto --gpus-per-trial 0.25 \
        --attack-repeats 10 --doc docs/reproduction-cifar10.md           # the paper's scale, on a cluster

One grid, every trial a DP model (epsilon 3.4) and its non-private twin
trained with the recipes (psreval_tune/recipes.toml), quantized, and
attacked on the whole test split with every registered attack (the paper's
PGD with 3 random starts, FGSM and FAB):

    threat none                       -> size, PTQ, transfer, DP-generator claims
    adv_training 40% with PGD, FGSM   -> robustness gain, utility cost, PGD/FGSM cost (paper: up to 8x at 40%)
    train_time_attack 40% with PGD    -> DP against a train-time attacker

x seeds 0, 1, 2. After the trials, each threat-none trial is attacked with
examples crafted on the models of the OTHER seeds of its setting (cross-seed
transfer, psreval_tune/xseed.py; ``psreval xseed`` reruns that step on a
store), which claims c, d and e read. Then the claims table (analysis/claims.py: effect, 95% interval
over seeds, paired by seed, verdict) is rendered to docs/reproduction.md with
its figure; the whole sweep is also in MLflow like any other.
For the paper's scale (CIFAR-10, pneumonia, GPU cluster) use paper_grid.py.
"""

from __future__ import annotations

import itertools
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from ray import tune

from .. import config
from ..tracking import git_commit
from ..trainable import cycle_config
from .engine import SweepSpec, exit_status, main_guard, parser, report, run_sweep, write_report
from .paper_grid import DELTA, EVAL_SAMPLES

SETTINGS = (
    {"threat": "none", "adv_fraction": 0.0, "attack": "PGD"},
    {"threat": "adv_training", "adv_fraction": 0.4, "attack": "PGD"},
    {"threat": "adv_training", "adv_fraction": 0.4, "attack": "FGSM"},
    {"threat": "train_time_attack", "adv_fraction": 0.4, "attack": "PGD"},
)
SMOKE = {
    "rounds": 2,
    "eval_samples": 64,
    "eval_attacks": ["PGD", "FGSM"],
    "attack_repeats": 2,
    "autoattack": False,
    "masking_checks": False,
}


def grid(args) -> dict[str, Any]:
    dataset = "digits" if args.smoke else args.dataset
    fixed = {
        "dataset": dataset,
        "data_root": args.data_root,
        "download": args.download,
        "arch": args.arch,
        "epsilon": args.epsilon,
        "delta": DELTA.get(dataset, 1e-5),
        "eval_samples": EVAL_SAMPLES.get(dataset),
        "attack_repeats": args.attack_repeats or 3,
        "eval_attacks": list(config.PAPER_ATTACKS),  # the paper's: PGD, FGSM, FAB (its FAB-T)
        # a reviewer's checks (issue 22): AutoAttack on a fixed subset, the gradient-masking flags
        "autoattack": True,
        "masking_checks": True,
        **(SMOKE if args.smoke else {}),
    }
    axes = {"setting": list(SETTINGS), "seed": list(args.seeds)}
    for combo in itertools.product(*axes.values()):  # a bad value fails the command, not 12 trials
        cycle_config({**fixed, **dict(zip(axes, combo))})
    return {**fixed, **{k: tune.grid_search(v) for k, v in axes.items()}}


def regenerate_command(args) -> str:
    """The command that regenerates the document (infrastructure flags such as --run-dir left out)."""
    flags = ["--smoke"] if args.smoke else []
    if args.arch != "resnet9":
        flags += ["--arch", args.arch]
    if args.dataset != "digits" and not args.smoke:
        flags += ["--dataset", args.dataset, "--data-root", "DATA"]
    if list(args.seeds) != [0, 1, 2]:
        flags += ["--seeds", ",".join(map(str, args.seeds))]
    return " ".join(["python sweeps/reproduce.py", *flags])


def cross_seed(args, tracking) -> str | None:
    """The step between the sweep and its report: cross-seed transfer metrics onto the trials' runs
    (sweeps/xseed.py). A failure is one warning line (the claims then say "not measured") and the command
    to rerun it; returns the sweep's parent run id, None if that failed too."""
    from ..analysis.load import find_sweep_run
    from ..config import resolve_device
    from ..tracking import Tracker
    from .xseed import run_xseed

    device = resolve_device("auto" if args.gpus_per_trial else "cpu")
    print(f"\ncross-seed transfer (generators: the models of the other seeds), on {device}:", flush=True)
    try:
        outcome = run_xseed(
            tracking.tracking_uri,
            tracking.experiment_name,
            tracking.sweep_name,
            device=device,
            progress=lambda msg: print(msg, flush=True),
        )
        return outcome.parent_run_id
    except Exception as exc:  # noqa: BLE001 - the trials are done and tracked whatever happens here
        text = str(exc).strip().splitlines()
        print(
            f"warning: no cross-seed transfer for sweep {tracking.sweep_name!r} ({type(exc).__name__}: "
            f"{text[0] if text else 'no message'}); claims c, d, e read 'not measured'; retry with: psreval xseed "
            f"--tracking-uri {tracking.tracking_uri} --experiment {tracking.experiment_name} "
            f"--sweep {tracking.sweep_name}",
            file=sys.stderr,
            flush=True,
        )
    try:
        tracker = Tracker(tracking)
        return find_sweep_run(tracker.client, tracker.experiment_id, tracking.sweep_name).info.run_id
    except Exception:  # noqa: BLE001
        return None


def write_doc(args, tracking, seconds: float) -> Path:
    from ..analysis.load import load_trials
    from ..analysis.reproduction import write_reproduction

    trials = load_trials(tracking.experiment_name, tracking.tracking_uri, tracking.sweep_name)
    doc = Path(args.doc).resolve()
    command = regenerate_command(args)
    meta = {
        "wall_time_s": seconds,
        "machine": args.machine,
        "sweep": tracking.sweep_name,
        "date": time.strftime("%Y-%m-%d"),
        "git_commit": git_commit()[:7],
    }
    write_reproduction(trials, doc, doc.with_suffix(""), command=command, meta=meta)
    return doc


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet9", help="architecture (default: resnet9, the paper's)")
    p.add_argument("--epsilon", type=float, default=3.4, help="DP budget of every trial (default: 3.4)")
    p.add_argument(
        "--doc",
        default="docs/reproduction.md",
        help="where to write the reproduction document (default: docs/reproduction.md)",
    )
    p.add_argument("--machine", default="2-core CPU machine, no GPU", help="what ran it, for the document")
    p.set_defaults(seeds=[0, 1, 2], max_concurrent=2)
    args = p.parse_args(argv)
    space = grid(args)
    start = time.perf_counter()
    # the sweep's report comes after the cross-seed step (its claims read the cross-seed metrics), so the
    # sweep itself writes none
    results, _, tracking = run_sweep(
        args,
        SweepSpec(kind="reproduce", param_space=space, sweep_params={"smoke": args.smoke, "arch": args.arch}),
    )
    parent = cross_seed(args, tracking)
    if parent is not None:
        write_report(
            report, tracking, parent, Path(args.run_dir).expanduser().resolve() / "reports" / tracking.sweep_name
        )
    doc = write_doc(args, tracking, time.perf_counter() - start)
    print(f"\nreproduction: {doc}")
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
