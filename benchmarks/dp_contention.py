"""DP-SGD step time when trials share the CPU: book-keeping vs Opacus hooks, idle and 2 at once.

A sweep runs several trials per machine. Each is a process that trains with
torch's intra-op threads; torch's default is one thread per core of the
*machine*, so 2 trials on N cores run 2 x N OpenMP threads that spin-wait for
each other. psreval_tune.trainable.fit_to_allotment now gives each trial
max(1, floor(its Ray CPUs)) threads. This script times one DP-SGD optimizer
step (zero_grad, forward, loss, backward, per-sample clipping + noise, step;
not a whole cycle) of one arch in these scenarios, per mode:

- ``idle-1t``:   1 process, 1 thread (fit_to_allotment({"CPU": 1}), as a 1-CPU trial);
- ``pair-1t``:   2 processes at once, 1 thread each (2 trials of 1 CPU under the fix);
- ``idle-def``:  1 process, torch's default threads (one per core);
- ``pair-def``:  2 processes at once, default threads each (the behaviour before the fix).

Modes (benchmarks/dp_sgd.py's Runner, so the same set-up as that benchmark):
``bk`` book-keeping (grad_sampler=auto, psreval_tune.privacy.fast_clipping) and
``hooks`` Opacus' GradSampleModule hooks (grad_sampler=opacus). Both processes
of a pair run the same mode, start their measured steps together (a barrier
after set-up and warm-up) and keep stepping, untimed, until both have their
measured steps, so every measured step runs beside the other process.
Batches: the same Poisson-drawn sequence as dp_sgd.py (mean ``--batch``) in
every process and scenario.

Acceptance (issue 14): in ``pair-1t``, bk's median step time <= hooks', and
<= 1.3 x bk's ``idle-1t`` (idle measured with the same thread count).

    .venv/bin/python benchmarks/dp_contention.py                 # resnet9, 32x32, batch ~32, ~3 min on 2 cores
    .venv/bin/python benchmarks/dp_contention.py --steps 2 --batch 8   # a quick check
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
import warnings

import _common as common
import dp_sgd

MODES = ("bk", "hooks")
SCENARIOS = {  # name -> (processes, threads per process; None = torch's default)
    "idle-1t": (1, 1),
    "pair-1t": (2, 1),
    "idle-def": (1, None),
    "pair-def": (2, None),
}
ACCEPT_RATIO = 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="resnet9", choices=dp_sgd.ARCHS)
    p.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    p.add_argument("--batch", type=int, default=32, help="expected (mean Poisson) batch size (default 32)")
    p.add_argument("--image-size", type=int, default=32, help="square input size (default 32, CIFAR-sized)")
    p.add_argument("--steps", type=int, default=6, help="measured steps per process (default 6)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--pool-batches", type=int, default=8, help="sample rate q=1/K (default 8)")
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/dp_contention.json)")
    args = p.parse_args(argv)
    args.modes = [m for m in args.modes.split(",") if m]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    for m in args.modes:
        if m not in MODES:
            p.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    for s in args.scenarios:
        if s not in SCENARIOS:
            p.error(f"--scenarios: {s!r} is not one of {', '.join(SCENARIOS)}")
    return args


def worker(mode: str, threads: int | None, args: argparse.Namespace, barrier, done, queue) -> None:
    """One trial-like process: set threads as a trial would, set up, warm up, wait for the others, measure."""
    try:
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        from psreval_tune._warnings import quiet_known_warnings

        quiet_known_warnings()
        warnings.filterwarnings("ignore", message=r".*Using a non-full backward hook.*")
        if threads is not None:
            from psreval_tune.trainable import fit_to_allotment

            fit_to_allotment({"CPU": threads})  # exactly what a Ray trial of `threads` CPUs does
        dp_sgd.Runner.arch = args.arch
        n_pool = args.batch * args.pool_batches
        gen = torch.Generator().manual_seed(args.seed)
        x_pool = torch.rand(n_pool, 3, args.image_size, args.image_size, generator=gen)
        y_pool = torch.randint(0, 10, (n_pool,), generator=gen)
        pool_loader = DataLoader(TensorDataset(x_pool, y_pool), batch_size=args.batch)
        runner = dp_sgd.Runner(mode, args, "cpu", pool_loader, args.seed)
        idx = dp_sgd._draw_batches(n_pool, 1.0 / args.pool_batches, args.warmup + args.steps, args.seed + 1)
        batches = [(x_pool[i], y_pool[i]) for i in idx]
        for x, y in batches[: args.warmup]:
            runner.step(x, y)
            runner.release()
        info = {"torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}
    except Exception as exc:  # set-up failed: the others must not wait for this process forever
        barrier.abort()
        queue.put({"error": common.error_string(exc)})
        return
    try:
        barrier.wait()
    except Exception:  # noqa: BLE001 - BrokenBarrierError: another process failed its set-up
        queue.put({"error": "another process of the scenario failed its set-up"})
        return
    steps = []
    for x, y in batches[args.warmup :]:
        wall, cpu = common.timed_cpu(lambda x=x, y=y: runner.step(x, y), "cpu")
        runner.release()
        steps.append((wall, cpu, len(y)))
    with done.get_lock():
        done.value += 1
    extra = 0
    while done.value < barrier.parties:  # keep the others company until they have their measured steps too
        x, y = batches[args.warmup + extra % args.steps]
        runner.step(x, y)
        runner.release()
        extra += 1
    queue.put({"steps": steps, "untimed_extra_steps": extra, **info})


def run_scenario(mode: str, scenario: str, args: argparse.Namespace) -> list[dict]:
    """Each process's result dict ({'steps': [(wall, cpu, batch), ...], ...} or {'error': ...})."""
    nproc, threads = SCENARIOS[scenario]
    ctx = mp.get_context("spawn")  # a fresh interpreter per process: torch's default threads as a new trial gets
    barrier, done, queue = ctx.Barrier(nproc), ctx.Value("i", 0), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(mode, threads, args, barrier, done, queue)) for _ in range(nproc)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=1800) for _ in procs]
    for p in procs:
        p.join()
    return results


def main() -> None:
    args = parse_args()
    t0 = time.perf_counter()
    records, medians = [], {}
    for mode in args.modes:
        for scenario in args.scenarios:
            nproc, threads = SCENARIOS[scenario]
            label = f"{nproc} process(es), threads {threads or 'default'}"
            print(f"{args.arch} {mode:5} {scenario:8} ({label})", flush=True)
            res = run_scenario(mode, scenario, args)
            errors = [r["error"] for r in res if "error" in r]
            rec = {"mode": mode, "scenario": scenario, "processes": nproc, "threads_requested": threads}
            if errors:
                rec["error"] = errors[0]
            else:
                walls = [w for r in res for w, _, _ in r["steps"]]
                rec.update(
                    step_seconds=common.summary(walls),
                    cpu_seconds=common.summary([c for r in res for _, c, _ in r["steps"]]),
                    per_process_median_s=[statistics.median(w for w, _, _ in r["steps"]) for r in res],
                    torch_threads=[r["torch_threads"] for r in res],
                    interop_threads=[r["interop_threads"] for r in res],
                    batch_sizes=[b for _, _, b in res[0]["steps"]],
                    untimed_extra_steps=[r["untimed_extra_steps"] for r in res],
                    steps=[r["steps"] for r in res],
                )
                medians[(mode, scenario)] = rec["step_seconds"]["median"]
            records.append(rec)
    wall = time.perf_counter() - t0

    rows = []
    for rec in records:
        idle = "idle-1t" if rec["threads_requested"] == 1 else "idle-def"
        med = medians.get((rec["mode"], rec["scenario"]))
        base = medians.get((rec["mode"], idle))
        s = rec.get("step_seconds")
        rows.append(
            [
                rec["mode"],
                rec["scenario"],
                rec["processes"],
                ",".join(map(str, rec.get("torch_threads", []))) or "-",
                med,
                f"{s['min']:.2f}-{s['max']:.2f}" if s else None,
                med / base if med and base else None,
                rec["processes"] * args.batch / med if med else None,
                rec.get("error", ""),
            ]
        )
        rec["ratio_to_idle_same_threads"] = med / base if med and base else None
    print()
    print(
        common.table(
            [
                "mode",
                "scenario",
                "procs",
                "threads",
                "s/step (median)",
                "min-max",
                "x idle (same threads)",
                "img/s all procs",
                "error",
            ],
            rows,
        )
    )
    acceptance = None
    keys = (("bk", "pair-1t"), ("hooks", "pair-1t"), ("bk", "idle-1t"))
    bk_pair, hooks_pair, bk_idle = (medians.get(k) for k in keys)
    if bk_pair and hooks_pair and bk_idle:
        acceptance = {
            "bk_pair_1t_s": bk_pair,
            "hooks_pair_1t_s": hooks_pair,
            "bk_idle_1t_s": bk_idle,
            "bk_not_slower_than_hooks": bk_pair <= hooks_pair,
            "bk_pair_over_idle": bk_pair / bk_idle,
            "bk_within_1_3x_idle": bk_pair / bk_idle <= ACCEPT_RATIO,
        }
        acceptance["met"] = acceptance["bk_not_slower_than_hooks"] and acceptance["bk_within_1_3x_idle"]
        print(
            f"\nacceptance (pair-1t): bk {bk_pair:.3f} s <= hooks {hooks_pair:.3f} s: "
            f"{acceptance['bk_not_slower_than_hooks']}; bk pair / idle = {bk_pair / bk_idle:.2f} <= "
            f"{ACCEPT_RATIO}: {acceptance['bk_within_1_3x_idle']} -> {'met' if acceptance['met'] else 'NOT met'}"
        )
    print(f"wall time {wall:.0f} s")
    settings = dict(vars(args))
    settings["scenarios_defined"] = {k: {"processes": n, "threads": t} for k, (n, t) in SCENARIOS.items()}
    common.write_json(
        "dp_contention",
        {
            "benchmark": "dp_contention",
            "machine": common.machine_info("cpu"),
            "settings": settings,
            "wall_seconds": round(wall, 1),
            "acceptance": acceptance,
            "results": records,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
