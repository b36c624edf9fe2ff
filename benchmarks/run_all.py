"""`make bench`: the three hot-path benchmarks in sequence, each in its own process.

    dp_sgd.py        DP-SGD step throughput per Opacus mode vs SGD   -> results/dp_sgd.json
    attacks.py       attack-loop overhead of PGD / FGSM / FAB         -> results/attacks.json
    cycle_phases.py  wall time per phase of two whole cycles          -> results/cycle_phases.json

Each runs with its own defaults (sized for a 2-core CPU; a GPU is used when
visible). The orchestration benchmark (Ray Tune + MLflow overhead,
orchestration_overhead.py) takes several minutes more and is not run here.

    .venv/bin/python benchmarks/run_all.py
    .venv/bin/python benchmarks/run_all.py --only attacks --threads 1
    make bench BENCH_ARGS="--device cpu"
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import _common as common

HERE = Path(__file__).parent
SCRIPTS = ("dp_sgd", "attacks", "cycle_phases")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SCRIPTS), help="comma list of " + ", ".join(SCRIPTS))
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="passed to every script")
    p.add_argument("--threads", type=int, default=None, help="passed to every script")
    args = p.parse_args()
    names = [n for n in args.only.split(",") if n]
    for n in names:
        if n not in SCRIPTS:
            p.error(f"--only: {n!r} is not one of {', '.join(SCRIPTS)}")

    extra = ["--device", args.device] + (["--threads", str(args.threads)] if args.threads else [])
    timings, failed = {}, []
    start = time.perf_counter()
    for name in names:
        print(f"\n######## {name} ########", flush=True)
        t = time.perf_counter()
        rc = subprocess.call([sys.executable, str(HERE / f"{name}.py"), *extra])
        timings[name] = {"seconds": round(time.perf_counter() - t, 1), "rc": rc}
        if rc != 0:
            failed.append(name)
    total = time.perf_counter() - start

    print("\n######## make bench ########")
    print(common.table(["benchmark", "wall s", "exit"], [[n, v["seconds"], v["rc"]] for n, v in timings.items()]))
    print(f"total {total:.0f} s ({total / 60:.1f} min)")
    common.write_json(
        "run_all",
        {
            "benchmark": "run_all",
            "machine": common.machine_info(common.pick_device(args.device)),
            "settings": vars(args),
            "scripts": timings,
            "total_seconds": round(total, 1),
        },
    )
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
