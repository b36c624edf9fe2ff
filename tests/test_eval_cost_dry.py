"""benchmarks/eval_cost.py --dry: the evaluation-cost benchmark's code path (one tiny cycle with AutoAttack, the
gradient-masking checks and an eps grid on; the JSON it writes). About 9 CPU-seconds; slow tier."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_eval_cost_dry_runs_and_writes_its_json(tmp_path):
    out = tmp_path / "eval_cost_dry.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "eval_cost.py"), "--dry", "--quiet", "--threads", "1"]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, timeout=170, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["benchmark"] == "eval_cost" and result["dry"] is True
    (rec,) = result["results"]
    assert rec["cycle"] == "digits_cnn"
    secs = rec["eval_seconds"]
    assert set(secs) == {"attack", "autoattack", "masking_checks", "eps_curve"}
    assert all(v > 0 for v in secs.values()), secs
    assert rec["added_seconds"] == pytest.approx(
        secs["autoattack"] + secs["masking_checks"] + secs["eps_curve"], abs=1e-3
    )
    assert rec["images"] == {"attacked": 16, "autoattack": 8, "masking": 16, "curve": 16}
    assert "+ masking checks" in proc.stdout and "seconds per trial" in proc.stdout
