"""Where a whole PSREval cycle spends its time: wall seconds per phase.

Runs psreval_tune.run_cycle (the real path; no twin cache, so a private
cycle trains its non-private twin too) and reads its time_*_s metrics:

    data        load and split the dataset
    train       federated training of the cycle's own model (every round's
                local steps, aggregation and the per-round test accuracy)
    train_twin  the same for the non-private twin (private cycles only)
    adv_gen     adversarial examples made for the adversary client during
                training (threat != none); nested: part of train/train_twin
    quantize    static int8 PTQ of every model (calibration on the val split)
    eval        clean accuracy of the float and int8 models
    attack      inference-time attacks: generator x target matrix, all repeats
    total       run_cycle from start to end

Cycles (override any CycleConfig field with --digits KEY=VALUE / --cifar KEY=VALUE; a
--digits override applies to digits_opacus too, --cifar to the cifar_* cycles):

    digits  CycleConfig defaults with epsilon 3.4: cnn on 8x8 digits, 10 rounds,
            DP-SGD, PGD/FGSM/FAB x 3 repeats on 256 test images
    digits_opacus    the same with grad_sampler=opacus (Opacus' hooks: before book-keeping)
    cifar_dp         synthetic 3x32x32, resnet9, 1024 train images, 1 round, epsilon 7,
                     PGD on 32 images: DP training next to its non-private twin
    cifar_dp_opacus  the same with grad_sampler=opacus
    cifar   CIFAR-sized synthetic data (3x32x32, 10 classes), resnet9, 1024 train /
            256 test images, 2 rounds, adversarial training (adv_fraction 0.2, PGD-10),
            PGD and FGSM on 64 test images, 1 repeat; non-private

    .venv/bin/python benchmarks/cycle_phases.py
    .venv/bin/python benchmarks/cycle_phases.py --cycles cifar --cifar epsilon=7.0 --cifar rounds=1
"""

from __future__ import annotations

import argparse
import json
import time

import _common as common

CYCLES = {
    "digits": dict(dataset="digits", epsilon=3.4),
    # The digits cycle with Opacus' stock per-sample clipping: the "before" of the
    # book-keeping optimisation, side by side in one run.
    "digits_opacus": dict(dataset="digits", epsilon=3.4, grad_sampler="opacus"),
    # DP resnet9 at CIFAR size: the DP-SGD training next to its non-private twin.
    "cifar_dp": dict(
        dataset="synthetic",
        image_size=32,
        arch="resnet9",
        train_samples=1024,
        test_samples=256,
        rounds=1,
        epsilon=7.0,
        eval_samples=32,
        attack_repeats=1,
        eval_attacks=["PGD"],
    ),
    "cifar_dp_opacus": dict(
        dataset="synthetic",
        image_size=32,
        arch="resnet9",
        train_samples=1024,
        test_samples=256,
        rounds=1,
        epsilon=7.0,
        eval_samples=32,
        attack_repeats=1,
        eval_attacks=["PGD"],
        grad_sampler="opacus",
    ),
    "cifar": dict(
        dataset="synthetic",
        image_size=32,
        arch="resnet9",
        train_samples=1024,
        test_samples=256,
        rounds=2,
        eval_samples=64,
        attack_repeats=1,
        eval_attacks=["PGD", "FGSM"],
        threat="adv_training",
        adv_fraction=0.2,
    ),
}
TOP = ("data", "train", "train_twin", "quantize", "eval", "attack")


def _overrides(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"override {pair!r}: expected KEY=VALUE")
        if value.lower() in ("none", "null"):
            out[key] = None
        else:
            try:
                out[key] = json.loads(value)
            except json.JSONDecodeError:
                out[key] = value.split(",") if key == "eval_attacks" else value
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cycles",
        default="digits_opacus,digits,cifar_dp_opacus,cifar_dp,cifar",
        help="comma list of " + ", ".join(CYCLES),
    )
    p.add_argument("--digits", action="append", default=[], metavar="KEY=VALUE", help="override a digits field")
    p.add_argument("--cifar", action="append", default=[], metavar="KEY=VALUE", help="override a cifar field")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--quiet", action="store_true", help="no per-round progress lines")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/cycle_phases.json)")
    args = p.parse_args()

    from psreval_tune._warnings import quiet_known_warnings
    from psreval_tune.config import CycleConfig
    from psreval_tune.cycle import run_cycle

    quiet_known_warnings()
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    records, tables = [], []
    for name in [c for c in args.cycles.split(",") if c]:
        if name not in CYCLES:
            p.error(f"--cycles: {name!r} is not one of {', '.join(CYCLES)}")
        cfg = CycleConfig(**{**CYCLES[name], **_overrides(getattr(args, name.split("_")[0])), "device": args.device})
        print(
            f"== {name}: {cfg.dataset} {cfg.arch}, {cfg.rounds} rounds, epsilon {cfg.epsilon}, threat {cfg.threat}",
            flush=True,
        )
        progress = None if args.quiet else (lambda msg: print("   ", msg, flush=True))
        start = time.perf_counter()
        result = run_cycle(cfg, progress=progress)
        wall = time.perf_counter() - start
        m = result.metrics
        total = m["time_total_s"]
        phases = {k[len("time_") : -len("_s")]: v for k, v in m.items() if k.startswith("time_") and k.endswith("_s")}
        rows = []
        for ph in TOP:
            if ph in phases:
                rows.append([ph, phases[ph], f"{100 * phases[ph] / total:.1f}"])
        if "adv_gen" in phases:
            rows.append(["  adv_gen (inside train*)", phases["adv_gen"], f"({100 * phases['adv_gen'] / total:.1f})"])
        other = total - sum(phases.get(ph, 0.0) for ph in TOP)
        rows.append(["other (metrics, sizes)", other, f"{100 * other / total:.1f}"])
        rows.append(["total", total, "100.0"])
        table = common.table(["phase", "seconds", "% of total"], rows)
        tables.append((name, table))
        print(table, flush=True)
        records.append(
            {
                "cycle": name,
                "config": cfg.to_dict(),
                "phases_s": phases,
                "phases_pct_of_total": {k: round(100 * v / total, 2) for k, v in phases.items()},
                "other_s": round(other, 4),
                "wall_s": round(wall, 3),
                "acc_clean_float": m.get("acc_clean_float"),
                "epsilon_spent": m.get("epsilon_spent"),
                "seconds_per_round_train": round(phases.get("train", 0.0) / cfg.rounds, 4),
            }
        )
    print()
    for name, table in tables:
        print(f"{name}:\n{table}\n")
    common.write_json(
        "cycle_phases",
        {
            "benchmark": "cycle_phases",
            "machine": common.machine_info(device),
            "settings": {"cycles": args.cycles, "device": args.device, "threads": args.threads},
            "results": records,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
