"""Sweeps: the local Ray a sweep starts listens on loopback only, and nothing of it outlives the sweep.

Checked on the session's smoke sweep (conftest.smoke_sweep: sweep_helpers.run_watched samples the listening
sockets of its process session twice a second while it runs). The sweep refusals (unreachable or hung MLflow,
no Ray at --address, resources larger than the machine, --resume with other flags, ...) are cases of
tests/test_safety_bad_inputs.py.
"""

from __future__ import annotations

import pytest
from proc_sockets import AVAILABLE, is_loopback
from sweep_helpers import sweep_runs

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # the session's smoke sweep on a local Ray


@pytest.mark.timeout(700)
@pytest.mark.skipif(not AVAILABLE, reason="reads /proc/net (Linux)")
def test_local_sweep_listens_on_loopback_only(smoke_sweep):
    """While the smoke sweep ran, no process of it listened outside 127.0.0.1/::1 (the old code's GCS, raylet
    and workers listened on ::); none outlived it. Its flags are recorded for --resume."""
    names = {s[0] for s in smoke_sweep.sockets}
    assert {"gcs_server", "raylet"} & names, f"never saw Ray's servers: {sorted(smoke_sweep.sockets)}"
    outside = sorted(s for s in smoke_sweep.sockets if not is_loopback(s[2]))
    assert not outside, f"listening outside loopback: {outside}"
    assert not smoke_sweep.left, f"processes of the sweep outlived it: {smoke_sweep.left}"
    parents, trials = sweep_runs(f"sqlite:///{smoke_sweep.run_dir}/mlflow.db")
    assert len(parents) == 1 and {t.info.status for t in trials} == {"FINISHED"}
    recorded = smoke_sweep.run_dir / "ray_results" / "smoke" / ".psreval-sweep.json"
    assert '"seeds": [\n    0\n  ]' in recorded.read_text()  # what --resume compares against
