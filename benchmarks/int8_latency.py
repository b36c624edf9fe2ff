"""int8 vs float inference latency, per instruction set: what the cycle's int8 model runs at here.

The converted PT2E graph (quantize.quantize_static, the "reference" int8 model) has int8 weights and
activations but runs quantize/dequantize around fp32 kernels; quantize.lower_int8 lowers it with
inductor (torch.compile with freezing) to oneDNN int8 kernels, the model a cycle deploys, evaluates
and attacks (cycle.lower_models). Their speed depends on the processor far more than their size does.
This runs the float model, the reference int8 graph and the lowered int8 model at batch 1 and 256
under each ``--isas`` level, each in its own process (oneDNN and ATen read their caps once, at
start), and reports the lowered model's compile seconds (not in any latency) and how its
predictions compare with the reference graph's on the timed images (an untrained model on random
images: near-ties make this a harsher check than trained models on real images):

    default  whatever this CPU has
    AVX2     ONEDNN_MAX_CPU_ISA=AVX2 and ATEN_CPU_CAPABILITY=avx2: an AVX2-only x86 CPU (no AVX-512,
             no VNNI, no AVX512-BF16), as the CPU of issue 28
    AVX512_CORE   AVX-512 without VNNI or BF16

    .venv/bin/python benchmarks/int8_latency.py                      # cnn and resnet9, default and AVX2
    .venv/bin/python benchmarks/int8_latency.py --isas default,AVX2,AVX512_CORE --archs resnet9

Prints a table (median ms per batch; int8/float and lowered/float throughput, > 1 = faster than float)
and writes JSON with each level's cpu_info, so every figure names the ISA it was measured under.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import _common as common

ISA_ENV = {
    "default": {},
    "AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
    "AVX512_CORE": {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"},
}
SHAPES = {"cnn": (1, 8, 8), "resnet9": (3, 32, 32)}  # digits' and CIFAR-10's images


def measure_one(arch: str, batches: list[int], repeats: int) -> list[dict]:
    """Float, reference int8 and lowered int8 latency of ``arch`` in this process (under whatever caps it
    started with)."""
    import time

    import torch

    from psreval_tune.hardware import cpu_info
    from psreval_tune.models import build_model
    from psreval_tune.quantize import LoweredInt8Model, lower_int8, quantize_static, size_bytes

    torch.manual_seed(0)
    c, h, w = SHAPES[arch]
    model = build_model(arch, c, 10, [0.5] * c, [0.25] * c).eval()
    int8 = quantize_static(model, torch.rand(64, c, h, w))
    start = time.perf_counter()
    lowered, why = lower_int8(int8)
    compile_s = {256: time.perf_counter() - start}
    rows = []
    for batch in batches:
        if isinstance(lowered, LoweredInt8Model) and batch == 1:
            compile_s[1] = lowered.compile_batch(1)
        x = torch.rand(batch, c, h, w)
        row = {"arch": arch, "batch": batch, **cpu_info(), "lowered": why is None, "lowering_fallback": why}
        with torch.no_grad():
            for name, m in (("float", model), ("int8", int8), ("int8_lowered", lowered)):
                times = common.measure(lambda m=m: m(x), "cpu", warmup=2, repeats=repeats)
                row[f"ms_{name}"] = 1000 * common.summary(times)["median"]
            ref, low = int8(x), lowered(x)
        row["throughput_int8_over_float"] = row["ms_float"] / row["ms_int8"]
        row["throughput_lowered_over_float"] = row["ms_float"] / row["ms_int8_lowered"]
        row["lowered_disagree"] = int((ref.argmax(1) != low.argmax(1)).sum())
        row["lowered_max_logit_diff"] = float((ref - low).abs().max())
        row["compile_s_lowered"] = compile_s.get(batch, compile_s[256])
        row["size_bytes_float"], row["size_bytes_int8"] = size_bytes(model), size_bytes(int8)
        row["size_bytes_int8_lowered"] = size_bytes(lowered)
        rows.append(row)
    return rows


def run_level(isa: str, args: argparse.Namespace) -> list[dict]:
    """This script's --child mode in a fresh process under ``isa``'s caps."""
    env = {**os.environ, **ISA_ENV[isa]}
    for key in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        if key not in ISA_ENV[isa]:
            env.pop(key, None)
    cmd = [sys.executable, __file__, "--child", "--archs", args.archs, "--batches", args.batches]
    out = subprocess.run(cmd + ["--repeats", str(args.repeats)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"the {isa} run failed: {out.stderr.strip().splitlines()[-1:]}")
    return [{"isa": isa, **row} for row in json.loads(out.stdout.strip().splitlines()[-1])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isas", default="default,AVX2", help=f"comma-separated, of {', '.join(ISA_ENV)}")
    p.add_argument("--archs", default="cnn,resnet9", help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps([r for a in args.archs.split(",") for r in measure_one(a, batches, args.repeats)]))
        return
    bad = [v for v in args.isas.split(",") if v not in ISA_ENV] + [a for a in args.archs.split(",") if a not in SHAPES]
    if bad:
        raise SystemExit(
            f"error: {bad[0]!r} is not allowed; --isas takes {', '.join(ISA_ENV)}, --archs {', '.join(SHAPES)}"
        )
    rows = [row for isa in args.isas.split(",") for row in run_level(isa, args)]
    keys = ("isa", "cpu_torch_capability", "cpu_int8_vnni", "arch", "batch", "ms_float", "ms_int8", "ms_int8_lowered")
    ratios = ("throughput_int8_over_float", "throughput_lowered_over_float", "lowered_disagree", "compile_s_lowered")
    heads = ["int8/float throughput", "lowered/float throughput", "lowered vs int8: disagree", "compile s"]
    print(common.table([*keys, *heads], [[r[k] for k in (*keys, *ratios)] for r in rows]))
    for r in rows:
        if r["lowering_fallback"]:
            print(f"{r['isa']} {r['arch']}: not lowered ({r['lowering_fallback']}); ms_int8_lowered = reference")
    common.write_json(
        "int8_latency", {"benchmark": "int8_latency", "machine": common.machine_info("cpu"), "rows": rows}, args.out
    )


if __name__ == "__main__":
    main()
