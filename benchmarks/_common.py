"""Shared helpers for the benchmark scripts: timing, statistics, machine info, output.

Every measurement is: warm-up, then repeats, each timed with
time.perf_counter() between two device synchronisations (a no-op on CPU,
torch.cuda.synchronize() on a GPU, whose kernels run asynchronously).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from psreval_tune.hardware import cpu_info

RESULTS = Path(__file__).parent / "results"


def pick_device(name: str = "auto") -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    return name


def set_threads(n: int | None) -> None:
    """--threads: torch's intra-op threads (default: torch's choice, one per core).

    On a machine shared with other busy processes, fewer threads than cores can
    be faster and much steadier: OpenMP workers spin-wait for each other.
    """
    if n:
        import torch

        torch.set_num_threads(n)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str) -> float:
    """Seconds that ``fn()`` takes, including the device work it queued."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def timed_cpu(fn: Callable[[], Any], device: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all its threads) that ``fn()`` takes.

    Wall time is the measurement. CPU time is a companion that a busy, shared
    machine disturbs less (time spent descheduled is not counted); with
    several threads it also counts OpenMP spin-waiting, so it can exceed wall.
    """
    sync(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    sync(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def measure(fn: Callable[[], Any], device: str, *, warmup: int, repeats: int) -> list[float]:
    """``warmup`` untimed calls, then ``repeats`` timed ones (seconds each)."""
    for _ in range(warmup):
        fn()
    return [timed(fn, device) for _ in range(repeats)]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median and spread (min, max, and the IQR when there are 4+ values)."""
    vals = sorted(float(v) for v in values)
    out = {"median": statistics.median(vals), "min": vals[0], "max": vals[-1], "n": len(vals)}
    if len(vals) >= 4:
        q = statistics.quantiles(vals, n=4, method="inclusive")
        out["q1"], out["q3"] = q[0], q[2]
    return out


def machine_info(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "device": device,
        "load_avg_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        **cpu_info(),  # model, ISA flags and torch's kernel level: speeds and accuracies depend on them
    }
    try:
        import opacus

        info["opacus"] = opacus.__version__
    except Exception:  # pragma: no cover - opacus is a dependency
        pass
    try:
        import torchattacks

        info["torchattacks"] = torchattacks.__version__
    except Exception:  # pragma: no cover
        pass
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table (also valid Markdown), columns sized to fit."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    return str(value)


def write_json(name: str, payload: dict[str, Any], out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return path


def error_string(exc: BaseException, limit: int = 110) -> str:
    msg = " ".join(str(exc).split())
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
