"""What Ray Tune + MLflow add on top of the science.

Runs N identical cycles directly (run_cycle in this process, one after the
other) and then the same N through a sweep (one trial at a time, each with
all this machine's CPUs, checkpoints (--checkpoint-every-s, default), MLflow logging and
artifacts), and prints the ratio of wall times. Ray's start-up is counted on
the sweep's side. ``--bare-tune`` adds a third side, the floor of any sweep on Ray Tune: the same N
cycles as a plain Tune function trainable (a local Ray started as the sweep starts it, one trial at a
time with every CPU, actors reused, the same twin cache) with nothing of the sweep's own (no MLflow, no
live table, no checkpoints, one report at the end).

    .venv/bin/python benchmarks/orchestration_overhead.py            # N=3 DP digits resnet9 cycles of ~30 s
    .venv/bin/python benchmarks/orchestration_overhead.py --n 2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from psreval_tune.hardware import cpu_info

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3, help="cycles on each side (default: 3)")
    p.add_argument("--rounds", type=int, default=10, help="FL rounds per cycle (default 10, the cycle default)")
    p.add_argument(
        "--arch",
        default="resnet9",
        help="model (default resnet9: a ~30 s DP digits cycle on 2 cores, ~1.5 s per round; "
        "cnn with --rounds 120 gives ~17 s cycles of 0.14 s rounds, the worst case for "
        "per-round reporting and checkpointing)",
    )
    p.add_argument("--bare-tune", action="store_true", help="also time the same cycles as a bare Tune trainable")
    p.add_argument("--out", default=str(RESULTS / "orchestration_overhead.json"))
    args = p.parse_args()

    from psreval_tune._warnings import quiet_known_warnings
    from psreval_tune.config import CycleConfig
    from psreval_tune.cycle import TwinCache, run_cycle

    quiet_known_warnings()
    cfg = CycleConfig(
        dataset="digits",
        arch=args.arch,
        epsilon=3.4,
        rounds=args.rounds,
        eval_attacks=("PGD", "FGSM"),
        attack_repeats=2,
        device="cpu",
    )
    cpus = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        # Both sides cache the non-private twin, so both train it once.
        cache = TwinCache(Path(tmp) / "direct-cache")
        direct_times = []
        start = time.perf_counter()
        for _ in range(args.n):
            t = time.perf_counter()
            direct_metrics = run_cycle(cfg, cache=cache).metrics
            direct_times.append(time.perf_counter() - t)
        direct = time.perf_counter() - start

        from ray import tune

        from psreval_tune.sweeps.engine import SweepSpec, parser, run_sweep

        # asked(), not to_dict(): the recipe's fields stay the recipe's, so the trial's twin is this one's
        space = {**cfg.asked(), "replica": tune.grid_search([{"seed": cfg.seed}] * args.n)}
        sweep_args = parser("bench").parse_args(
            [
                "--run-dir",
                str(Path(tmp) / "runs"),
                "--name",
                "bench",
                "--max-concurrent",
                "1",
                "--cpus-per-trial",
                str(cpus),
            ]
        )
        start = time.perf_counter()
        results, _, _ = run_sweep(sweep_args, SweepSpec(kind="bench", param_space=space))
        swept = time.perf_counter() - start
        trial_times = [r.metrics["time_total_s"] for r in results]
        bare = _bare_tune(cfg, args.n, cpus, Path(tmp)) if args.bare_tune else None
    differ = _differences(direct_metrics, [r.metrics for r in results])

    row = {
        "n": args.n,
        "arch": args.arch,
        "rounds": args.rounds,
        "cpus": cpus,
        "machine": platform.machine(),
        **cpu_info(),  # the in-trial slowdown depends on the cores and the kernels they run
        "direct_total_s": round(direct, 2),
        "sweep_total_s": round(swept, 2),
        "direct_per_cycle_s": [round(t, 2) for t in direct_times],
        "sweep_cycle_inside_trial_s": [round(t, 2) for t in trial_times],
        "ratio_sweep_over_direct": round(swept / direct, 4),
        "overhead_pct": round(100 * (swept / direct - 1), 2),
        "same_numbers": not differ,
    }
    if bare is not None:
        row["bare_tune_total_s"] = round(bare[0], 2)
        row["bare_tune_cycle_inside_trial_s"] = [round(t, 2) for t in bare[1]]
        row["ratio_bare_tune_over_direct"] = round(bare[0] / direct, 4)
    print(f"\n{'':28}{'direct':>10}{'sweep':>10}")
    print(f"{'wall time, N cycles (s)':28}{direct:10.1f}{swept:10.1f}")
    print(f"{'mean cycle (s)':28}{direct / args.n:10.1f}{sum(trial_times) / args.n:10.1f}  (sweep: inside the trial)")
    print(
        f"ratio sweep/direct: {row['ratio_sweep_over_direct']:.3f}  ({row['overhead_pct']:+.1f}% overhead, N={args.n})"
    )
    if bare is not None:
        print(
            f"bare Tune: {bare[0]:.1f} s, ratio {row['ratio_bare_tune_over_direct']:.3f}, mean cycle inside the trial "
            f"{sum(bare[1]) / args.n:.1f} s (no MLflow, table or checkpoints: the floor of a sweep on Ray Tune)"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")
    if differ:  # the two sides did different work: their times compare nothing
        raise SystemExit(f"the sweep's trials computed other numbers than the direct cycle: {', '.join(differ[:5])}")


def _bare_tune(cfg, n: int, cpus: int, tmp: Path) -> tuple[float, list[float]]:
    """Wall time of ``n`` cycles as a plain Tune function trainable, Ray's start included, and each cycle's
    time inside its trial. Ray is started as a sweep starts it (engine.connect), after the sweep's is shut."""
    import ray
    from ray import tune

    from psreval_tune.sweeps.engine import connect

    def bare_trial(config: dict) -> None:
        from psreval_tune.config import CycleConfig
        from psreval_tune.cycle import TwinCache, run_cycle
        from psreval_tune.trainable import fit_to_allotment

        fit_to_allotment()  # as a sweep's trial: torch threads = its CPUs
        result = run_cycle(CycleConfig.from_params(config["cycle"]), cache=TwinCache(config["cache"]))
        tune.report({"cycle_s": result.metrics["time_total_s"]})

    ray.shutdown()
    space = {
        "cycle": cfg.asked(),
        "cache": str(tmp / "bare-cache"),
        "replica": tune.grid_search(list(range(n))),
    }
    start = time.perf_counter()
    connect(None)
    tuner = tune.Tuner(
        tune.with_resources(bare_trial, {"cpu": cpus}),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=str(tmp / "bare"), name="bare", verbose=0),
    )
    results = tuner.fit()
    wall = time.perf_counter() - start
    ray.shutdown()
    return wall, [r.metrics["cycle_s"] for r in results]


def _differences(direct: dict, trials: list[dict]) -> list[str]:
    """The cycle's metrics (not its times) on which a trial differs from the direct cycle: the same config
    and seed give the same numbers on CPU, so any key here means the two sides ran different work."""
    keys = [k for k in direct if not k.startswith("time_")]
    return sorted({k for m in trials for k in keys if m.get(k) != direct[k]})


if __name__ == "__main__":
    main()
