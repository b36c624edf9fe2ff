"""Attack generation cost: the attack loop's overhead over the model's own passes.

For each input shape (digits-like 1x8x8, CIFAR-like 3x32x32) and
architecture (cnn, resnet9) it times psreval_tune.attacks.generate -- the
real path: build the torchattacks attack, freeze the parameters, copy each
batch to the device and the result back -- on one batch of random images,
and compares it with the model's own cost:

    fb   = one forward + cross-entropy + backward w.r.t. the input only
           (eval mode, parameters frozen: exactly what an attack step does)
    PGD-k overhead  = time(PGD-k)  / (k * fb)     goal <= 1.1
    FGSM overhead   = time(FGSM)   / fb           goal <= 1.1
    FAB-k           = time(FAB-k)  / (k * fb), and also / (k * (2 fwd + C bwd)):
                      one FAB step does a forward, C backward passes (one per
                      class, for the Jacobian), a projection and a second forward,
                      so its ratio to k*fb is large by construction; the second
                      ratio shows the loop's own overhead.

Labels are the model's own predictions on the clean images, so every image
is "correctly classified" and FAB (which attacks only those) works on the
whole batch like PGD and FGSM do.

Each repeat measures fb (median of --fb-calls calls) right before the attack
and forms the ratio from the pair, so a change in machine load between the
two hurts less; the table gives the median ratio over repeats and its
min-max. A cell runs --repeats repeats, and more (up to --max-repeats) while
it has run for less than --cell-seconds, so cheap cells get a steadier
median. Warm-up: before the repeats, --warmup untimed fb calls and one
untimed call of the attack (with k=1 for PGD/FAB: the same kernels and shapes).
Wall time (perf_counter) is the measurement; the CPU-time ratio
(process_time, all threads) is printed beside it because a shared machine
disturbs it less.

    .venv/bin/python benchmarks/attacks.py                       # defaults: see --help
    .venv/bin/python benchmarks/attacks.py --inputs digits --repeats 2 --attacks PGD,FGSM
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common as common

from psreval_tune.config import ARCHS, ATTACKS  # the registries' names (psreval_tune/models/, attacks/)

INPUTS = {"digits": (1, 8), "cifar": (3, 32)}  # channels, size
DEFAULT_ARCHS = ("cnn", "resnet9")  # of ARCHS: resnet18 only when asked (--archs), to fit `make bench`
NUM_CLASSES = 10
# On a CPU (when --batch/--k/--fab-batch are not given) the costly cells get a
# smaller batch and/or fewer steps so that `make bench` fits its budget: one FAB
# step costs about 2 forward + C=10 backward passes plus a projection, and
# ResNet-9 on 3x32x32 takes seconds per pass of 256 images on 2 cores. Ratios stay
# comparable (they divide by fb of the same batch); every row shows its batch and k.
CPU_CASES = {  # (input, arch, attack): (batch, k)
    ("digits", "cnn", "FAB"): (64, 10),
    ("digits", "resnet9", "FAB"): (16, 3),
    ("cifar", "cnn", "FAB"): (16, 3),
    ("cifar", "resnet9", "PGD"): (32, 10),
    ("cifar", "resnet9", "FGSM"): (32, 1),
    ("cifar", "resnet9", "FAB"): (8, 2),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", default="digits,cifar", help="comma list of digits (1x8x8), cifar (3x32x32)")
    p.add_argument("--archs", default=",".join(DEFAULT_ARCHS), help=f"comma list of {', '.join(ARCHS)}")
    p.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma list of {', '.join(ATTACKS)} (default: all)")
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="images per generate() batch (default 256; on CPU see CPU_CASES for the costly cells)",
    )
    p.add_argument("--k", type=int, default=None, help="PGD/FAB steps (default 10; on CPU see CPU_CASES)")
    p.add_argument("--fab-batch", type=int, default=None, help="FAB batch (default: --batch, or CPU_CASES)")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed attack calls per cell, at least (default: CPU 2, GPU 5)"
    )
    p.add_argument(
        "--max-repeats", type=int, default=9, help="more repeats while a cell has run under --cell-seconds (default 9)"
    )
    p.add_argument(
        "--cell-seconds", type=float, default=8.0, help="time after which a cell stops adding repeats (default 8)"
    )
    p.add_argument("--fb-calls", type=int, default=3, help="fb calls per repeat, median taken (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed fb calls before a cell (default 2)")
    p.add_argument("--eps", type=float, default=8 / 255)
    p.add_argument("--alpha", type=float, default=2 / 255)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    p.add_argument("--out", default=None, help="JSON path (default benchmarks/results/attacks.json)")
    args = p.parse_args()
    args.inputs = [s for s in args.inputs.split(",") if s]
    args.archs = [s for s in args.archs.split(",") if s]
    args.attacks = [s for s in args.attacks.split(",") if s]
    for name, allowed in (("inputs", INPUTS), ("archs", ARCHS), ("attacks", ATTACKS)):
        for v in getattr(args, name):
            if v not in allowed:
                p.error(f"--{name}: {v!r} is not one of {', '.join(allowed)}")
    return args


def main() -> None:
    args = parse_args()
    import torch
    import torch.nn.functional as F

    from psreval_tune._warnings import quiet_known_warnings
    from psreval_tune.attacks import AttackSpec, generate
    from psreval_tune.models import build_model

    quiet_known_warnings()
    common.set_threads(args.threads)
    device = common.pick_device(args.device)
    on_cpu = device == "cpu"
    max_batch = args.batch or 256
    args.repeats = args.repeats or (2 if on_cpu else 5)
    t_start = time.perf_counter()
    rows, records = [], []

    for inp in args.inputs:
        channels, size = INPUTS[inp]
        for arch in args.archs:
            torch.manual_seed(args.seed)
            model = build_model(arch, channels, NUM_CLASSES, (0.5,) * channels, (0.25,) * channels).to(device)
            model.eval()
            for p in model.parameters():
                p.requires_grad_(False)
            gen = torch.Generator().manual_seed(args.seed)
            x_all = torch.rand(max_batch, channels, size, size, generator=gen)
            with torch.no_grad():
                y_all = model(x_all.to(device)).argmax(1).cpu()

            def passes(xb: torch.Tensor, yb: torch.Tensor, backward: bool) -> None:
                xi = xb.clone().requires_grad_(True)
                loss = F.cross_entropy(model(xi), yb)
                if backward:
                    torch.autograd.grad(loss, xi)

            for attack in args.attacks:
                cpu_batch, cpu_k = CPU_CASES.get((inp, arch, attack), (max_batch, 10)) if on_cpu else (max_batch, 10)
                k = 1 if attack == "FGSM" else (args.k or cpu_k)
                batch = (args.fab_batch if attack == "FAB" else None) or args.batch or cpu_batch
                batch = min(batch, max_batch)
                x, y = x_all[:batch], y_all[:batch]
                xd, yd = x.to(device), y.to(device)

                def run_attack(steps: int = k) -> None:
                    generate(
                        model,
                        x,
                        y,
                        AttackSpec(attack, args.eps, args.alpha, steps),
                        num_classes=NUM_CLASSES,
                        seed=args.seed,
                        device=device,
                        batch_size=batch,
                    )

                print(f"{inp:6} {arch:8} {attack:4} k={k:<3} batch {batch}: warm-up", flush=True)
                for _ in range(args.warmup):
                    passes(xd, yd, True)
                run_attack(1 if attack != "FGSM" else k)
                fb, fwd, att, ratios, cpu_ratios, ratios_fab_ideal = [], [], [], [], [], []
                cell_start = time.perf_counter()
                while len(att) < args.repeats or (
                    len(att) < args.max_repeats and time.perf_counter() - cell_start < args.cell_seconds
                ):
                    fb_pairs = [common.timed_cpu(lambda: passes(xd, yd, True), device) for _ in range(args.fb_calls)]
                    t_fb = statistics.median(w for w, _ in fb_pairs)
                    c_fb = statistics.median(c for _, c in fb_pairs)
                    t_att, c_att = common.timed_cpu(run_attack, device)
                    fb.append(t_fb)
                    att.append(t_att)
                    ratios.append(t_att / (k * t_fb))
                    cpu_ratios.append(c_att / (k * c_fb) if c_fb > 0 else float("nan"))
                    if attack == "FAB":
                        with torch.enable_grad():
                            t_f = statistics.median(
                                common.timed(lambda: passes(xd, yd, False), device) for _ in range(args.fb_calls)
                            )
                        fwd.append(t_f)
                        ideal = k * (2 * t_f + NUM_CLASSES * max(t_fb - t_f, 0.0))
                        ratios_fab_ideal.append(t_att / ideal)
                per_image_ms = [1000 * t / batch for t in att]
                r = common.summary(ratios)
                rec = {
                    "input": inp,
                    "shape": [channels, size, size],
                    "arch": arch,
                    "attack": attack,
                    "k": k,
                    "batch": batch,
                    "attack_seconds": common.summary(att),
                    "fb_seconds": common.summary(fb),
                    "attack_ms_per_image": common.summary(per_image_ms),
                    "ratio_over_k_fb": r,
                    "ratio_over_k_fb_per_repeat": ratios,
                    "cpu_time_ratio_over_k_fb": common.summary(cpu_ratios),
                }
                if attack == "FAB":
                    rec["fwd_seconds"] = common.summary(fwd)
                    rec["ratio_over_k_2fwd_Cbwd"] = common.summary(ratios_fab_ideal)
                records.append(rec)
                note = ""
                if attack == "FAB":
                    note = f"{common.summary(ratios_fab_ideal)['median']:.2f}"
                rows.append(
                    [
                        inp,
                        arch,
                        attack,
                        k,
                        batch,
                        len(att),
                        statistics.median(per_image_ms),
                        1000 * statistics.median(fb) / batch,
                        r["median"],
                        f"{r['min']:.2f}-{r['max']:.2f}",
                        statistics.median(cpu_ratios),
                        note,
                    ]
                )
    wall = time.perf_counter() - t_start
    print()
    print(
        common.table(
            [
                "input",
                "arch",
                "attack",
                "k",
                "batch",
                "reps",
                "attack ms/img",
                "fb ms/img",
                "time/(k*fb)",
                "min-max",
                "CPU-time ratio",
                "FAB vs k*(2fwd+C*bwd)",
            ],
            rows,
        )
    )
    print(f"\nwall time {wall:.0f} s")
    settings = vars(args).copy()
    settings.update(
        cpu_cases_batch_k={":".join(key): v for key, v in CPU_CASES.items()} if on_cpu else None,
        labels="model's own predictions on the clean random images",
        num_classes=NUM_CLASSES,
        model_mean_std="(0.5,)*C, (0.25,)*C",
    )
    common.write_json(
        "attacks",
        {
            "benchmark": "attacks",
            "machine": common.machine_info(device),
            "settings": settings,
            "wall_seconds": round(wall, 1),
            "results": records,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
