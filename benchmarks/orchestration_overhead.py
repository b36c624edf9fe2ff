"""What Ray Tune + MLflow add on top of the science.

Runs N identical cycles directly (run_cycle in this process, one after the
other) and then the same N through a sweep (one trial at a time, each with
all this machine's CPUs, checkpoints (--checkpoint-every-s, default), MLflow logging and
artifacts), and prints the ratio of wall times. Ray's start-up is counted on
the sweep's side.

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
    differ = _differences(direct_metrics, [r.metrics for r in results])

    row = {
        "n": args.n,
        "arch": args.arch,
        "rounds": args.rounds,
        "cpus": cpus,
        "machine": platform.machine(),
        "direct_total_s": round(direct, 2),
        "sweep_total_s": round(swept, 2),
        "direct_per_cycle_s": [round(t, 2) for t in direct_times],
        "sweep_cycle_inside_trial_s": [round(t, 2) for t in trial_times],
        "ratio_sweep_over_direct": round(swept / direct, 4),
        "overhead_pct": round(100 * (swept / direct - 1), 2),
        "same_numbers": not differ,
    }
    print(f"\n{'':28}{'direct':>10}{'sweep':>10}")
    print(f"{'wall time, N cycles (s)':28}{direct:10.1f}{swept:10.1f}")
    print(f"{'mean cycle (s)':28}{direct / args.n:10.1f}{sum(trial_times) / args.n:10.1f}  (sweep: inside the trial)")
    print(
        f"ratio sweep/direct: {row['ratio_sweep_over_direct']:.3f}  ({row['overhead_pct']:+.1f}% overhead, N={args.n})"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")
    if differ:  # the two sides did different work: their times compare nothing
        raise SystemExit(f"the sweep's trials computed other numbers than the direct cycle: {', '.join(differ[:5])}")


def _differences(direct: dict, trials: list[dict]) -> list[str]:
    """The cycle's metrics (not its times) on which a trial differs from the direct cycle: the same config
    and seed give the same numbers on CPU, so any key here means the two sides ran different work."""
    keys = [k for k in direct if not k.startswith("time_")]
    return sorted({k for m in trials for k in keys if m.get(k) != direct[k]})


if __name__ == "__main__":
    main()
