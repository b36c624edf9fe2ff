"""DP-SGD step throughput: non-private SGD vs every Opacus 1.6 per-sample-gradient mode.

For each architecture (psreval_tune.models.build_model, 3 channels, 10
classes, mean/std (0.5,)*3 / (0.25,)*3) it times a full optimizer step --
zero_grad, forward, loss, backward, per-sample clipping + noise, step -- of

- ``sgd``:       plain torch.optim.SGD (momentum 0.9), the baseline;
- ``hooks``:     Opacus GradSampleModule, per-layer grad samplers (Opacus' default,
                 and what psreval_tune used before the optimisation; grad_sampler=opacus);
- ``conv-loop``: hooks with psreval_tune.privacy.conv2d_grad_sample for Conv2d
                 (per-sample weight-gradient convolutions instead of unfold+bmm):
                 what the cycle uses on CPU (grad_sampler=auto). Forced here on a
                 GPU too, to measure it there;
- ``bk``:        book-keeping clipping (psreval_tune.bookkeeping): one backward pass
                 of activation gradients, ghost norms / per-sample norms per layer,
                 clipped sum as one weight gradient; Opacus' sampler, noise and
                 accountant. What the cycle uses (grad_sampler=auto);
- ``functorch``: GradSampleModule with force_functorch (vmap per layer);
- ``ew``:        torch's ExpandedWeights (call_for_per_sample_grads);
- ``ghost``:     ghost clipping (GradSampleModuleFastGradientClipping; make_private
                 returns an extra criterion whose backward() runs two backward
                 passes and never materialises per-sample gradients),

and reports images/s and the ratio DP time / SGD time per image.

Data and sampling. Inputs are fixed in-memory random tensors on the device:
no DataLoader, no collation, no host-to-device copies are timed. Every
mode keeps Poisson sampling (make_private(poisson_sampling=True)), and the
batches themselves are drawn the way Opacus' UniformWithReplacementSampler
draws them: each of N = batch * pool_batches pool images joins a step's batch
independently with probability q = 1 / pool_batches, so batch sizes are
~Binomial(N, q) with mean ``--batch``. The batches are drawn once, before
timing, from a fixed seed; every mode (SGD included) steps through the
same sequence of batches, so ratios compare identical work.

Fairness on a shared machine: all modes of one architecture live in one
worker process and are stepped round-robin (step i of every mode, then
step i+1), so a change in machine load hits all modes alike. Each
architecture runs in its own worker process; if a worker is killed (out
of memory), the mode it was running is reported as an error and the others
are re-run in a fresh worker. A mode that raises (unsupported layer,
bad API use) is reported as an error string, never a crash.

    .venv/bin/python benchmarks/dp_sgd.py                         # CPU defaults (a few steps per arch)
    .venv/bin/python benchmarks/dp_sgd.py --archs cnn --steps 2   # a quick check
    .venv/bin/python benchmarks/dp_sgd.py --steps 30 --warmup 3   # on a GPU: more steps
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import time
import warnings

import _common as common

from psreval_tune.config import ARCHS  # the architecture registry's names (psreval_tune/models/)

MODES = ("hooks", "conv-loop", "bk", "functorch", "ew", "ghost")
# Measured steps per arch when --steps is not given: enough for a median on a
# 2-core CPU in a few minutes; a GPU gets many more.
CPU_STEPS = {"cnn": 8, "resnet9": 2, "resnet18": 2}
CPU_STEPS_OTHER = 2  # an architecture added since
GPU_STEPS = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", default=",".join(ARCHS), help=f"comma list of {', '.join(ARCHS)} (default: all)")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        help=f"comma list of DP modes {', '.join(MODES)} (default: all; the SGD baseline always runs)",
    )
    p.add_argument("--batch", type=int, default=128, help="expected (mean Poisson) batch size (default 128)")
    p.add_argument("--image-size", type=int, default=32, help="square input size (default 32)")
    p.add_argument(
        "--steps", type=int, default=None, help=f"measured steps per mode (default: CPU {CPU_STEPS}, GPU {GPU_STEPS})"
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first (default 1)")
    p.add_argument(
        "--warmup-batch",
        type=int,
        default=None,
        help="images per warm-up step (default: CPU 16, GPU --batch); the first call's one-off "
        "costs (hook set-up, vmap, allocator) do not depend on it",
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--pool-batches", type=int, default=8, help="pool of batch*K images, sample rate q=1/K (default 8)")
    p.add_argument("--noise-multiplier", type=float, default=1.0)
    p.add_argument("--max-grad-norm", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/dp_sgd.json)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: run one arch, stream results
    args = p.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    args.modes = [m for m in args.modes.split(",") if m]
    for a in args.archs:
        if a not in ARCHS:
            p.error(f"--archs: {a!r} is not one of {', '.join(ARCHS)}")
    for m in args.modes:
        if m not in MODES:
            p.error(f"--modes: {m!r} is not one of {', '.join(MODES)}")
    return args


# --- worker: one architecture, all modes, round-robin -------------------------------


def _emit(kind: str, **payload) -> None:
    print(kind, json.dumps(payload), flush=True)


def _draw_batches(n_pool: int, q: float, count: int, seed: int):
    """Index tensors as Opacus' UniformWithReplacementSampler draws them."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    return [torch.nonzero(torch.rand(n_pool, generator=gen) < q).squeeze(1) for _ in range(count)]


class Runner:
    """One mode's model/optimizer/criterion and its step function."""

    def __init__(self, mode: str, args: argparse.Namespace, device: str, pool_loader, seed: int):
        import torch
        from torch import nn

        from psreval_tune.models import build_model

        self.mode = mode
        self.poisson = None
        self.note = ""
        torch.manual_seed(seed)  # identical initial weights in every mode
        model = build_model(self.arch, 3, 10, (0.5,) * 3, (0.25,) * 3).to(device)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        criterion = nn.CrossEntropyLoss()
        if mode != "sgd":
            from opacus import PrivacyEngine

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                engine = PrivacyEngine(accountant="rdp")
                kwargs = dict(
                    module=model,
                    optimizer=optimizer,
                    data_loader=pool_loader,
                    noise_multiplier=args.noise_multiplier,
                    max_grad_norm=args.max_grad_norm,
                    poisson_sampling=True,
                    grad_sample_mode="hooks" if mode in ("conv-loop", "bk") else mode,
                    noise_generator=torch.Generator(device=device).manual_seed(seed),
                )
                if mode == "ghost":
                    kwargs["criterion"] = criterion
                    model, optimizer, criterion, _ = engine.make_private(**kwargs)
                else:
                    model, optimizer, _ = engine.make_private(**kwargs)
                if mode == "conv-loop":
                    from psreval_tune.privacy import conv2d_grad_sample

                    model.GRAD_SAMPLERS = {**model.GRAD_SAMPLERS, nn.Conv2d: conv2d_grad_sample}
                if mode == "bk":
                    from psreval_tune.privacy import fast_clipping

                    model, optimizer = fast_clipping(model._module, model, optimizer, torch.device(device))
            self.poisson = True
        model.train()
        self.model, self.optimizer, self.criterion = model, optimizer, criterion

    arch = ""  # set on the class by the worker

    def step(self, x, y) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.criterion(self.model(x), y)
        loss.backward()
        self.optimizer.step()

    def release(self) -> None:
        """Untimed: drop grads / per-sample grads so only one mode's are alive at a time."""
        self.optimizer.zero_grad(set_to_none=True)


def worker(args: argparse.Namespace) -> None:
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from psreval_tune._warnings import quiet_known_warnings

    quiet_known_warnings()
    warnings.filterwarnings("ignore", message=r".*Using a non-full backward hook.*")
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    arch = args.worker
    steps = args.steps or (GPU_STEPS if device == "cuda" else CPU_STEPS.get(arch, CPU_STEPS_OTHER))
    Runner.arch = arch

    n_pool = args.batch * args.pool_batches
    q = 1.0 / args.pool_batches
    gen = torch.Generator().manual_seed(args.seed)
    x_pool = torch.rand(n_pool, 3, args.image_size, args.image_size, generator=gen)
    y_pool = torch.randint(0, 10, (n_pool,), generator=gen)
    # make_private needs a loader; it sets the sample rate (1/len) and expected batch
    # size. Its Poisson loader is never iterated: the timed batches are drawn below.
    pool_loader = DataLoader(TensorDataset(x_pool, y_pool), batch_size=args.batch)
    warmup_batch = min(args.warmup_batch or (args.batch if device == "cuda" else 16), n_pool)
    idx = [torch.arange(warmup_batch)] * args.warmup + _draw_batches(n_pool, q, steps, args.seed + 1)
    batches = [(x_pool[i].to(device), y_pool[i].to(device)) for i in idx]

    runners: dict[str, Runner] = {}
    peaks: dict[str, float] = {}  # CUDA only: peak GiB allocated during one step of the mode
    for mode in ["sgd", *args.modes]:
        _emit("RUN", mode=mode, phase="setup")
        try:
            runners[mode] = Runner(mode, args, device, pool_loader, args.seed)
        except Exception as exc:
            _emit("ERROR", mode=mode, error=common.error_string(exc), phase="setup")
    for i, (x, y) in enumerate(batches):
        phase = "warmup" if i < args.warmup else "measure"
        for mode, runner in list(runners.items()):
            _emit("RUN", mode=mode, phase=phase)
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            try:
                seconds, cpu_seconds = common.timed_cpu(lambda: runner.step(x, y), device)
                if device == "cuda":
                    peaks[mode] = max(peaks.get(mode, 0.0), torch.cuda.max_memory_allocated() / 2**30)
                runner.release()
            except Exception as exc:
                _emit("ERROR", mode=mode, error=common.error_string(exc), phase=phase)
                del runners[mode]
                continue
            if phase == "measure":
                _emit("STEP", mode=mode, seconds=seconds, cpu_seconds=cpu_seconds, batch=len(y))
    for mode, runner in runners.items():
        _emit("DONE", mode=mode, poisson=runner.poisson, cuda_peak_gib=peaks.get(mode))


# --- parent: one worker per arch, restart after a killed worker ------------------------


def run_arch(arch: str, args: argparse.Namespace, argv: list[str]) -> dict[str, dict]:
    """Results per mode for one arch: {'steps': [(wall s, batch, cpu s), ...], 'poisson': bool} or {'error': str}."""
    results: dict[str, dict] = {}
    todo = list(args.modes)
    while True:
        cmd = [sys.executable, __file__, *argv, "--worker", arch, "--modes", ",".join(todo)]
        finished: dict[str, dict] = {}
        steps: dict[str, list] = {}
        running = None
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            kind, _, rest = line.partition(" ")
            if kind not in ("RUN", "STEP", "ERROR", "DONE"):
                print(line, end="")
                continue
            msg = json.loads(rest)
            if kind == "RUN":
                running = msg["mode"]
                if sys.stdout.isatty():
                    print(f"  {arch:9} {msg['mode']:10} {msg['phase']:8}", end="\r", flush=True)
            elif kind == "STEP":
                steps.setdefault(msg["mode"], []).append((msg["seconds"], msg["batch"], msg["cpu_seconds"]))
            elif kind == "ERROR":  # the mode raised: final
                results[msg["mode"]] = {"error": f"{msg['error']} (in {msg['phase']})"}
            elif kind == "DONE":
                finished[msg["mode"]] = {
                    "steps": steps.get(msg["mode"], []),
                    "poisson": msg["poisson"],
                    "cuda_peak_gib": msg["cuda_peak_gib"],
                }
        rc = proc.wait()
        if sys.stdout.isatty():
            print(" " * 40, end="\r")
        if rc == 0:
            results.update(finished)
            return results
        # The worker died (e.g. killed for memory): blame the mode that was running and
        # measure the others (baseline included) again together in a fresh worker.
        reason = f"signal {signal.Signals(-rc).name}" if rc < 0 else f"exit code {rc}"
        if running in (None, "sgd"):
            for mode in ["sgd", *todo]:
                results.setdefault(mode, {"error": f"worker died ({reason}) in the SGD baseline or setup"})
            return results
        results[running] = {"error": f"worker died ({reason}; out of memory?)"}
        todo = [m for m in todo if m not in results]


def per_image(steps: list, cpu: bool = False) -> list[float]:
    return [(c if cpu else s) / b for s, b, c in steps if b > 0]


def main() -> None:
    argv = sys.argv[1:]
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    # Worker argv: everything but --archs/--modes (the parent sets them per worker).
    base_argv = []
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--archs", "--modes", "--out"):
            skip = True
            continue
        if a.startswith(("--archs=", "--modes=", "--out=")):
            continue
        base_argv.append(a)

    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    t0 = time.perf_counter()
    rows, records = [], []
    for arch in args.archs:
        steps = args.steps or (GPU_STEPS if device == "cuda" else CPU_STEPS.get(arch, CPU_STEPS_OTHER))
        print(
            f"{arch}: batch ~{args.batch}, {args.image_size}x{args.image_size}, {args.warmup} warm-up + {steps} "
            f"measured steps per mode, modes sgd,{','.join(args.modes)}",
            flush=True,
        )
        res = run_arch(arch, args, base_argv)
        base = res.get("sgd", {})
        base_pi = statistics.median(per_image(base["steps"])) if base.get("steps") else None
        base_cpu = statistics.median(per_image(base["steps"], cpu=True)) if base.get("steps") else None
        for mode in ["sgd", *args.modes]:
            r = res.get(mode, {"error": "no result"})
            rec = {"arch": arch, "mode": mode}
            if "error" in r:
                rec["error"] = r["error"]
                rows.append([arch, mode, None, None, None, None, None, None, r["error"]])
            elif not r["steps"]:
                rec["error"] = "no measured steps"
                rows.append([arch, mode, None, None, None, None, None, None, rec["error"]])
            else:
                pi = per_image(r["steps"])
                ips = common.summary([1 / v for v in pi])
                step_s = common.summary([s for s, _, _ in r["steps"]])
                ratio = statistics.median(pi) / base_pi if base_pi else None
                cpu_pi = per_image(r["steps"], cpu=True)
                cpu_ratio = statistics.median(cpu_pi) / base_cpu if base_cpu else None
                rec.update(
                    images_per_s=ips,
                    step_seconds=step_s,
                    cpu_seconds_per_image=common.summary(cpu_pi),
                    batch_sizes=[b for _, b, _ in r["steps"]],
                    poisson_sampling=r["poisson"],
                    ratio_dp_over_sgd=ratio,
                    cpu_time_ratio_dp_over_sgd=cpu_ratio,
                    cuda_peak_gib=r["cuda_peak_gib"],
                )
                rows.append(
                    [
                        arch,
                        mode,
                        ips["median"],
                        f"{ips['min']:.1f}-{ips['max']:.1f}",
                        step_s["median"],
                        ratio,
                        cpu_ratio,
                        "yes" if r["poisson"] else ("-" if mode == "sgd" else "no"),
                        "",
                    ]
                )
            records.append(rec)
    wall = time.perf_counter() - t0

    print()
    print(
        common.table(
            [
                "arch",
                "mode",
                "img/s (median)",
                "img/s min-max",
                "s/step (median)",
                "DP/SGD time",
                "DP/SGD CPU time",
                "Poisson",
                "error",
            ],
            rows,
        )
    )
    print(f"\nwall time {wall:.0f} s")
    settings = {k: v for k, v in vars(args).items() if k != "worker"}
    settings["steps_per_arch"] = {
        a: args.steps or (GPU_STEPS if device == "cuda" else CPU_STEPS.get(a, CPU_STEPS_OTHER)) for a in args.archs
    }
    settings["warmup_batch"] = args.warmup_batch or (args.batch if device == "cuda" else 16)
    settings["sampling"] = (
        "Poisson: each of batch*pool_batches fixed random images joins a step with "
        "q=1/pool_batches (batch ~ Binomial), drawn once before timing; same batches "
        "for every mode; modes stepped round-robin"
    )
    common.write_json(
        "dp_sgd",
        {
            "benchmark": "dp_sgd",
            "machine": common.machine_info(device),
            "settings": settings,
            "wall_seconds": round(wall, 1),
            "results": records,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
