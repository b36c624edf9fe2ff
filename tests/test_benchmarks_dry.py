"""benchmarks/gpu_packing.py --dry: the GPU-packing benchmark's code path (Ray tasks with fractional
resources, fit_to_allotment, run_cycle, the JSON) on CPU, without a GPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from psreval_tune.hardware import cpu_info

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_gpu_packing_dry_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "gpu_packing_dry.json"
    proc = subprocess.run(
        # level 2 only: two trials sharing one slot is the packing; level 1 (the default's first) is the same path
        [sys.executable, str(ROOT / "benchmarks" / "gpu_packing.py"), "--dry", "--levels", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert {"benchmark", "dry", "machine", "settings", "mixed_precision", "wall_seconds", "levels"} <= set(result)
    assert result["benchmark"] == "gpu_packing" and result["dry"] is True
    assert set(cpu_info()) <= set(result["machine"])  # speeds say which processor and ISA they were met on
    # the packing level once per precision: fp32, then bf16 (the twin's autocast; DP stays fp32)
    assert [(lv["precision"], lv["trials_per_slot"]) for lv in result["levels"]] == [("fp32", 2), ("bf16", 2)]
    assert result["mixed_precision"]["bf16"].startswith("bf16 autocast")
    for lv in result["levels"]:
        keys = {"trials", "failed", "wall_seconds", "trials_per_hour", "cuda_peak_gib_max", "gpu", "per_trial"}
        assert keys <= set(lv)
        assert lv["failed"] == 0, lv["errors"]
        assert lv["trials"] == lv["trials_per_slot"] and lv["trials_per_hour"] > 0
        for trial in lv["per_trial"]:
            # each trial ran with the CPU share Ray gave it, and torch threads followed it
            assert trial["assigned"]["CPU"] == pytest.approx(1 / lv["trials_per_slot"])
            assert trial["applied"]["torch_threads"] == 1
            assert trial["dp"]["clipping"] == "bookkeeping"
            assert trial["cuda_peak_gib"] is None  # no GPU in --dry
            assert trial["train_twin_s"] > 0 and trial["acc_clean_float_nonprivate"] is not None  # a twin trained
