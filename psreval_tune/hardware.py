"""Which processor a number was measured on, and what that processor can do natively.

The same config and seed give the same numbers on one machine, but not on every CPU: oneDNN and
ATen pick kernels by instruction set, so fp32 accuracies move by a few images between an AVX2 and
an AVX-512 machine, and bf16 autocast runs natively only where the CPU has AVX512-BF16 or AMX (on
an AVX2-only CPU it is emulated: slower (4x in one loaded run), and on seed 0 it trained the digits cnn 13.4 points
below fp32, where a CPU with AVX512-BF16 lost 10.6). Every metrics.json, MLflow run and benchmark
JSON therefore carries ``cpu_info()``.

The emulation switches count: ``ONEDNN_MAX_CPU_ISA`` caps oneDNN's kernels and
``ATEN_CPU_CAPABILITY`` caps ATen's, so a capped run reports the capped capability.
Imports only the standard library at module level (torch when asked for the backend).
"""

from __future__ import annotations

import os
import platform
import sys
from functools import lru_cache

# /proc/cpuinfo flags that decide which kernels run: vector width, bf16, int8 dot products.
ISA_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx512_vnni",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)

# oneDNN's ONEDNN_MAX_CPU_ISA values in increasing order (oneDNN 3.x "CPU ISA hints" doc); a cap
# at or above AVX512_CORE_BF16 leaves native bf16 to the CPU, a cap at or above AVX2_VNNI
# leaves VNNI int8.
_ONEDNN_ORDER = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX10_1_512",
    "AVX512_CORE_FP16",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX_FP16",
    "AVX512_CORE_AMX_FP16",
)
_UNCAPPED = ("", "ALL", "DEFAULT")


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """The model name and the flags of the first processor in a /proc/cpuinfo text."""
    model, flags = None, frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model is None:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        if model and flags:
            break
    return model, flags


def _cpuinfo() -> tuple[str | None, frozenset[str]]:
    """This machine's processor (Linux); elsewhere the platform's name and no flags."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            return parse_cpuinfo(fh.read(1 << 20))
    except OSError:
        return platform.processor() or None, frozenset()


def _onednn_allows(cap: str, level: str) -> bool:
    """Whether oneDNN capped at ``cap`` may use ``level``'s instructions (an unknown cap: yes)."""
    cap = cap.upper()
    if cap in _UNCAPPED or cap not in _ONEDNN_ORDER:
        return True
    return _ONEDNN_ORDER.index(cap) >= _ONEDNN_ORDER.index(level)


def _torch_capability() -> str | None:
    if "torch" not in sys.modules:  # never import torch just to describe the machine
        return None
    import torch

    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # noqa: BLE001 - older or stripped builds: say unknown
        return None


@lru_cache(maxsize=1)
def _static() -> tuple[str | None, frozenset[str]]:
    return _cpuinfo()


def cpu_info() -> dict[str, object]:
    """The processor and what the kernels may use on it, flat and JSON-able (``cpu_`` keys)."""
    model, flags = _static()
    return {
        "cpu_model": model,
        "cpu_machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": " ".join(f for f in ISA_FLAGS if f in flags),
        "cpu_torch_capability": _torch_capability(),
        "cpu_onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA") or None,
        "cpu_aten_capability_env": os.environ.get("ATEN_CPU_CAPABILITY") or None,
        **native_features(flags, os.environ.get("ONEDNN_MAX_CPU_ISA", "")),
    }


def native_features(flags: frozenset[str], onednn_cap: str = "") -> dict[str, bool]:
    """``cpu_bf16_native``: bf16 runs on hardware (AVX512-BF16 or AMX-BF16, not capped away by
    ``onednn_cap``); ``cpu_int8_vnni``: int8 dot products do (AVX512-VNNI, AVX-VNNI or AMX-INT8)."""
    bf16 = bool(flags & {"avx512_bf16", "amx_bf16"}) and _onednn_allows(onednn_cap, "AVX512_CORE_BF16")
    vnni_level = "AVX2_VNNI" if "avx_vnni" in flags else "AVX512_CORE_VNNI"
    vnni = bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) and _onednn_allows(onednn_cap, vnni_level)
    return {"cpu_bf16_native": bf16, "cpu_int8_vnni": vnni}


def bf16_note(device: str) -> str | None:
    """One line when bf16 autocast on ``device`` is emulated on this CPU (slower, and less accurate
    than on a CPU with native bf16), else None."""
    if device != "cpu" or cpu_info()["cpu_bf16_native"]:
        return None
    return (
        "warning: precision=bf16 on a CPU without native bf16 (no AVX512-BF16 or AMX, or capped by "
        "ONEDNN_MAX_CPU_ISA): bf16 is emulated, slower than fp32 and may train less well; use fp32 here"
    )


def cpu_tags() -> dict[str, str]:
    """``cpu_info()`` as MLflow tags (``psreval.cpu_model``, ...); unknown values left out."""
    return {f"psreval.{k}": str(v) for k, v in cpu_info().items() if v is not None}


_WARNED: set[str] = set()


def warn_once(line: str | None) -> None:
    """Print ``line`` to stderr the first time this process sees it (a sweep worker runs many cycles)."""
    if line and line not in _WARNED:
        _WARNED.add(line)
        print(line, file=sys.stderr, flush=True)
