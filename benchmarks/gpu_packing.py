"""Trials per GPU: the same short DP trials packed 1, 2, 4 and 8 to a GPU.

Each packing level k runs the same ``--trials`` short cycles (psreval_tune.cycle.run_cycle, the real path)
as Ray tasks of ``num_gpus=1/k`` each, so up to k run on the GPU at once: what a sweep's fractional
``--gpus-per-trial 1/k`` gives (Ray reserves the same fraction for a Tune trial). Every task first calls
psreval_tune.trainable.fit_to_allotment(), as a trial does: torch threads = its CPUs, and on CUDA at
most its fraction of GPU memory (torch.cuda.set_per_process_memory_fraction). Reported per level:
trials/hour (trials / wall time of the level), each trial's torch.cuda.max_memory_allocated, and GPU
utilisation / memory sampled with nvidia-smi every 0.5 s while the level runs (when nvidia-smi exists).
A trial that fails (out of memory under its cap) is counted and its error kept, never a crash.

Every level runs once per ``--precisions`` value (default fp32,bf16): the trials' ``precision`` field,
bf16 autocast for their non-private part (each trial trains its own non-private twin: no twin cache
here) while DP training stays fp32 (config.PRECISIONS says why). Each trial reports its DP and twin
training seconds, so the twin's speed-up is read apart from the DP part's.

``--dry`` (no GPU needed, seconds): tiny CPU trials, 1 and 2 per "slot", where a slot is one CPU
(num_cpus=1/k per trial): it exercises the same code path (Ray tasks, fit_to_allotment, run_cycle,
JSON) and its figures say nothing about GPUs.

    .venv/bin/python benchmarks/gpu_packing.py                # on a GPU machine: levels 1,2,4,8
    .venv/bin/python benchmarks/gpu_packing.py --dry          # anywhere: the code path, ~30 s
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import threading
import time

import _common as common

GPU_LEVELS = (1, 2, 4, 8)
DRY_LEVELS = (1, 2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="CPU only: tiny trials, 1 and 2 per one-CPU slot")
    p.add_argument("--levels", default=None, help="comma list of trials per GPU (default 1,2,4,8; --dry 1,2)")
    p.add_argument("--trials", type=int, default=None, help="trials per level (default 8; --dry: k at level k)")
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs Ray reserves per trial on a GPU (1)")
    p.add_argument("--arch", default="resnet9", help="the trials' arch (GPU runs; --dry uses cnn)")
    p.add_argument("--rounds", type=int, default=2, help="FL rounds per trial (GPU runs; --dry 1)")
    p.add_argument("--epsilon", type=float, default=8.0, help="the trials' DP epsilon")
    p.add_argument("--precisions", default="fp32,bf16", help="comma list of the trials' precision (fp32,bf16)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_packing[_dry].json)")
    args = p.parse_args(argv)
    default_levels = DRY_LEVELS if args.dry else GPU_LEVELS
    args.levels = [int(v) for v in args.levels.split(",")] if args.levels else list(default_levels)
    args.precisions = [v.strip() for v in args.precisions.split(",") if v.strip()]
    from psreval_tune.config import PRECISIONS

    bad = [v for v in args.precisions if v not in PRECISIONS]
    if bad or not args.precisions:
        # one line and exit 2, as the project's other flags (not argparse's usage dump)
        given, allowed = ",".join(args.precisions), ", ".join(PRECISIONS)
        p.exit(2, f"error: --precisions={given} is not allowed; expected a comma list of {allowed}\n")
    if not args.dry:
        args.trials = args.trials or 8
    return args


def trial_config(args: argparse.Namespace, seed: int, precision: str = "fp32") -> dict:
    """One short DP cycle and its non-private twin. GPU: CIFAR-sized synthetic data; --dry: a few digits."""
    if args.dry:
        return dict(
            dataset="digits",
            arch="cnn",
            rounds=1,
            train_samples=300,
            test_samples=64,
            batch_size=32,
            eval_samples=16,
            eval_attacks=["PGD"],
            attack_steps=1,
            attack_repeats=1,
            epsilon=args.epsilon,
            precision=precision,
            device="cpu",
            seed=seed,
        )
    return dict(
        dataset="synthetic",
        image_size=32,
        arch=args.arch,
        rounds=args.rounds,
        train_samples=4000,
        test_samples=512,
        eval_samples=256,
        eval_attacks=["PGD"],
        attack_repeats=1,
        epsilon=args.epsilon,
        precision=precision,
        device="cuda",
        seed=seed,
    )


def one_trial(params: dict) -> dict:
    """A Ray task: what run_trial does for threads / GPU memory, then the cycle; its numbers or its error."""
    import torch

    from psreval_tune._warnings import quiet_known_warnings
    from psreval_tune.cycle import run_cycle
    from psreval_tune.trainable import assigned_resources, cycle_config, fit_to_allotment

    quiet_known_warnings()
    applied = fit_to_allotment()
    cuda = torch.cuda.is_available()
    out = {"assigned": assigned_resources(), "applied": applied}
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        result = run_cycle(cycle_config(params))
        out["acc_clean_float"] = result.metrics.get("acc_clean_float")
        out["acc_clean_float_nonprivate"] = result.metrics.get("acc_clean_float_nonprivate")
        out["train_s"] = result.metrics.get("time_train_s")
        out["train_twin_s"] = result.metrics.get("time_train_twin_s")
        out["dp"] = result.dp
    except Exception as exc:  # noqa: BLE001 - e.g. out of memory under the cap: counted, not fatal
        out["error"] = common.error_string(exc)
    out["seconds"] = time.perf_counter() - start
    out["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return out


class GpuSampler:
    """nvidia-smi's utilisation.gpu (%) and memory.used (MiB) every ``period`` s, in a thread."""

    QUERY = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"]

    def __init__(self, period: float = 0.5):
        self.period, self.samples = period, []
        self.available = shutil.which("nvidia-smi") is not None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                line = subprocess.run(self.QUERY, capture_output=True, text=True, timeout=5).stdout.splitlines()[0]
                util, mem = (float(v) for v in line.split(","))
                self.samples.append((util, mem))
            except Exception:  # noqa: BLE001 - a missed sample
                pass
            self._stop.wait(self.period)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> dict | None:
        if not self.samples:
            return None
        util = [u for u, _ in self.samples]
        return {
            "util_mean_pct": statistics.mean(util),
            "util_max_pct": max(util),
            "memory_used_max_mib": max(m for _, m in self.samples),
            "samples": len(self.samples),
        }


def run_level(k: int, args: argparse.Namespace, device: str, precision: str) -> dict:
    import ray

    task = ray.remote(one_trial)
    if args.dry:
        task = task.options(num_cpus=1.0 / k)  # the "slot" is one CPU
    else:
        task = task.options(num_gpus=1.0 / k, num_cpus=args.cpus_per_trial)
    params = [trial_config(args, seed, precision) for seed in range(args.trials or k)]
    with GpuSampler() as sampler:
        start = time.perf_counter()
        trials = ray.get([task.remote(p) for p in params])
        wall = time.perf_counter() - start
    ok = [t for t in trials if "error" not in t]
    peaks = [t["cuda_peak_gib"] for t in ok if t["cuda_peak_gib"] is not None]
    twin = [t["train_twin_s"] for t in ok if t.get("train_twin_s") is not None]
    return {
        "trials_per_slot": k,
        "precision": precision,
        "trials": len(trials),
        "failed": len(trials) - len(ok),
        "wall_seconds": wall,
        "trials_per_hour": 3600 * len(ok) / wall,
        "trial_seconds": common.summary([t["seconds"] for t in ok]) if ok else None,
        "twin_train_seconds": common.summary(twin) if twin else None,
        "cuda_peak_gib_max": max(peaks) if peaks else None,
        "gpu": sampler.summary(),
        "errors": sorted({t["error"] for t in trials if "error" in t}),
        "per_trial": trials,
    }


def main() -> None:
    args = parse_args()
    device = "cpu" if args.dry else common.pick_device("cuda")
    import ray

    t0 = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=1 if args.dry else None,  # --dry: one slot of one CPU
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
    )
    try:
        levels = []
        for precision in args.precisions:
            for k in args.levels:
                where = "slot" if args.dry else "GPU"
                print(f"{precision}: {k} trial(s) per {where}: {args.trials or k} trials", flush=True)
                levels.append(run_level(k, args, device, precision))
    finally:
        ray.shutdown()
    wall = time.perf_counter() - t0
    rows = [
        [
            lv["precision"],
            lv["trials_per_slot"],
            lv["trials"],
            lv["failed"],
            lv["wall_seconds"],
            lv["trials_per_hour"],
            lv["trial_seconds"]["median"] if lv["trial_seconds"] else None,
            lv["twin_train_seconds"]["median"] if lv["twin_train_seconds"] else None,
            lv["cuda_peak_gib_max"],
            lv["gpu"]["util_mean_pct"] if lv["gpu"] else None,
            lv["gpu"]["memory_used_max_mib"] if lv["gpu"] else None,
        ]
        for lv in levels
    ]
    print()
    print(
        common.table(
            [
                "precision",
                "per " + ("slot" if args.dry else "GPU"),
                "trials",
                "failed",
                "wall s",
                "trials/hour",
                "s/trial (median)",
                "twin train s (median)",
                "peak GiB/trial",
                "GPU util % (mean)",
                "GPU MiB (max)",
            ],
            rows,
        )
    )
    if args.dry:
        print("\n--dry: CPU stand-in trials; these figures say nothing about GPU packing")
    print(f"wall time {wall:.0f} s")
    common.write_json(
        "gpu_packing_dry" if args.dry else "gpu_packing",
        {
            "benchmark": "gpu_packing",
            "dry": args.dry,
            "machine": common.machine_info(device),
            "settings": {**vars(args), "trial_config": trial_config(args, 0)},
            "mixed_precision": {
                p: "bf16 autocast, non-private twin only" if p == "bf16" else "none" for p in args.precisions
            },
            "wall_seconds": round(wall, 1),
            "levels": levels,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
