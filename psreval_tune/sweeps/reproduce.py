"""Reproduce the PSREval paper's checkable claims on digits, with 3 seeds.

    python sweeps/reproduce.py                 # writes docs/reproduction.md (<= 90 min on 2 CPU cores)
    python sweeps/reproduce.py --smoke --doc /tmp/repro.md    # the plumbing in minutes (no conclusions)
    python sweeps/reproduce.py --dataset cifar10 --data-root ~/data --address auto --gpus-per-trial 0.25 \
        --attack-repeats 10 --doc docs/reproduction-cifar10.md           # the paper's scale, on a cluster
    python sweeps/reproduce.py --dataset fashion_mnist --arch cnn --epsilons 1.7,3.4,7.0 --settings none \
        --attacks PGD,FGSM --seeds 0,1,2,3,4 --dry-run                   # plan a cut design first

One grid, every trial a DP model (epsilon 3.4) and its non-private twin
trained with the recipes (psreval_tune/recipes.toml), quantized, and
attacked on the whole test split with every registered attack (the paper's
PGD with 3 random starts, FGSM and FAB):

    threat none                       -> size, PTQ, transfer, DP-generator claims
    adv_training 40% with PGD, FGSM   -> robustness gain, utility cost, PGD/FGSM cost (paper: up to 8x at 40%)
    train_time_attack 40% with PGD    -> DP against a train-time attacker (self-labelling, the paper's)
    train_time_attack_ref 40%, PGD    -> the same, examples labelled by the adversary's reference model

x seeds 0, 1, 2 (--seeds). ``--epsilons`` runs the no-threat setting at several budgets (claims c, d, e are
judged per budget), ``--settings`` cuts the design to some settings (the claims of the others then read
"not measured"), ``--attacks`` chooses the attacks run on the whole test split. After the trials, each
threat-none trial is attacked with examples crafted on the models of the OTHER seeds of its setting (cross-seed
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
from ..baselines import NO_THREAT, PAPER_ARCH
from ..threats.train_time_attack_ref import NAME as REFERENCE_LABELLED
from ..tracking import git_commit
from ..trainable import cycle_config
from .engine import SweepSpec, _csv, add_cost_flags, exit_status, main_guard, parser, report, run_sweep, write_report
from .paper_grid import DELTA, EVAL_SAMPLES

# The four settings of the paper's section 4, by name (--settings cuts the design to some of them), and the
# train-time attack under a second label rule (issue 21): claim h is judged under each.
SETTINGS = {
    NO_THREAT: {"threat": NO_THREAT, "adv_fraction": 0.0, "attack": "PGD"},  # claims a-e; every --epsilons value
    "adv_pgd": {"threat": "adv_training", "adv_fraction": 0.4, "attack": "PGD"},
    "adv_fgsm": {"threat": "adv_training", "adv_fraction": 0.4, "attack": "FGSM"},
    "train_time_pgd": {"threat": "train_time_attack", "adv_fraction": 0.4, "attack": "PGD"},
    "train_time_ref_pgd": {"threat": REFERENCE_LABELLED, "adv_fraction": 0.4, "attack": "PGD"},
}
SMOKE = {
    "rounds": 2,
    "eval_samples": 64,
    "eval_attacks": ["PGD", "FGSM"],
    "attack_repeats": 2,
    "autoattack": False,
    "masking_checks": False,
}


DEFAULT_REPEATS = 3  # PGD restarts per trial; the headline counts an image robust only if it survives all


def settings(args) -> list[dict[str, Any]]:
    """The setting axis: the no-threat setting at each of --epsilons (claims c/d/e per privacy regime), every
    other chosen setting at --epsilon."""
    out = []
    for name in args.settings:
        epsilons = args.epsilons if name == NO_THREAT else [args.epsilon]
        out += [{**SETTINGS[name], "epsilon": eps} for eps in epsilons]
    return out


def design(args) -> tuple[dict[str, Any], dict[str, list]]:
    """(fixed fields, axes) of the reproduction grid; every trial's config is validated here, so a bad value
    fails the command, not 12 trials."""
    dataset = "digits" if args.smoke else args.dataset
    fixed = {
        "dataset": dataset,
        "data_root": args.data_root,
        "download": args.download,
        "arch": args.arch,
        "delta": DELTA.get(dataset, 1e-5),
        "eval_samples": EVAL_SAMPLES.get(dataset),
        "attack_repeats": args.attack_repeats or DEFAULT_REPEATS,
        "eval_attacks": list(args.attacks),  # default the paper's: PGD, FGSM, FAB (its FAB-T)
        # a reviewer's checks (issue 22): AutoAttack on a fixed subset, the gradient-masking flags
        "autoattack": True,
        "masking_checks": True,
        **(SMOKE if args.smoke else {}),
    }
    axes = {"setting": settings(args), "seed": list(args.seeds)}
    return fixed, axes


def trial_configs(fixed: dict[str, Any], axes: dict[str, list]) -> list:
    return [cycle_config({**fixed, **dict(zip(axes, combo))}) for combo in itertools.product(*axes.values())]


def grid(args) -> dict[str, Any]:
    fixed, axes = design(args)
    trial_configs(fixed, axes)  # validated before Ray starts
    return {**fixed, **{k: tune.grid_search(v) for k, v in axes.items()}}


def dry_run(args) -> int:
    """--dry-run: the trials, twins and estimated cost of this design (sweeps/cost.py); nothing starts."""
    from . import cost

    configs = trial_configs(*design(args))
    return cost.dry_run(args, configs, len(configs), f"reproduce on {configs[0].dataset} ({args.arch})")


def regenerate_command(args) -> str:
    """The command that regenerates the document (infrastructure flags such as --run-dir left out)."""
    flags = ["--smoke"] if args.smoke else []
    if args.arch != PAPER_ARCH:
        flags += ["--arch", args.arch]
    if args.dataset != "digits" and not args.smoke:
        flags += ["--dataset", args.dataset, "--data-root", "DATA"]
    if list(args.seeds) != [0, 1, 2]:
        flags += ["--seeds", ",".join(map(str, args.seeds))]
    if args.epsilons != [args.epsilon] or args.epsilon != 3.4:
        flags += ["--epsilon", f"{args.epsilon:g}", "--epsilons", ",".join(f"{e:g}" for e in args.epsilons)]
    if list(args.settings) != list(SETTINGS):
        flags += ["--settings", ",".join(args.settings)]
    if list(args.attacks) != list(config.PAPER_ATTACKS):
        flags += ["--attacks", ",".join(args.attacks)]
    if args.attack_repeats not in (None, DEFAULT_REPEATS):  # a cut design says so in its command
        flags += ["--attack-repeats", str(args.attack_repeats)]
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
    p.add_argument("--arch", default=PAPER_ARCH, help=f"architecture (default: {PAPER_ARCH}, the paper's)")
    p.add_argument(
        "--epsilon", type=float, default=3.4, help="DP budget of the adversarial settings' trials (default: 3.4)"
    )
    p.add_argument(
        "--epsilons",
        type=_csv(float),
        default=None,
        help="DP budgets of the no-threat setting, comma-separated; claims c, d, e are judged at each "
        "(default: --epsilon; the paper's three: 1.7,3.4,7.0)",
    )
    p.add_argument(
        "--settings",
        type=_csv(str),
        default=list(SETTINGS),
        help=f"which of the paper's settings to run, comma-separated (default: all: {', '.join(SETTINGS)}); "
        "a cut design says in its document which claims it leaves unmeasured",
    )
    p.add_argument(
        "--attacks",
        type=_csv(str),
        default=list(config.PAPER_ATTACKS),
        help=f"attacks on the whole test split (default: the paper's, {', '.join(config.PAPER_ATTACKS)}); "
        "AutoAttack, which contains FAB-T, runs on its fixed subset whatever this says",
    )
    add_cost_flags(p)
    p.add_argument(
        "--doc",
        default="docs/reproduction.md",
        help="where to write the reproduction document (default: docs/reproduction.md)",
    )
    p.add_argument("--machine", default="2-core CPU machine, no GPU", help="what ran it, for the document")
    p.set_defaults(seeds=[0, 1, 2], max_concurrent=2)
    args = p.parse_args(argv)
    args.epsilons = args.epsilons or [args.epsilon]
    unknown = [name for name in args.settings if name not in SETTINGS]
    if unknown:
        p.error(f"--settings {unknown[0]!r} is not a setting; expected some of: {', '.join(SETTINGS)}")
    if args.dry_run:  # before anything starts or is written
        return dry_run(args)
    space = grid(args)
    start = time.perf_counter()
    # the sweep's report comes after the cross-seed step (its claims read the cross-seed metrics), so the
    # sweep itself writes none
    results, _, tracking = run_sweep(
        args,
        SweepSpec(kind="reproduce", param_space=space, sweep_params={"smoke": args.smoke, "arch": args.arch}),
    )
    parent = cross_seed(args, tracking)
    if parent is not None and not args.no_report:
        write_report(
            report, tracking, parent, Path(args.run_dir).expanduser().resolve() / "reports" / tracking.sweep_name
        )
    doc = write_doc(args, tracking, time.perf_counter() - start)
    print(f"\nreproduction: {doc}")
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
