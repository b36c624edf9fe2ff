"""Several sweeps initialising the same new SQLite MLflow store at the same moment: MLflow creates
its tables on first use, and without a lock the losers crash on that race ("table metrics already
exists", "duplicate column name")."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
N = 4

# Each process loads MLflow, says it is ready, then waits for the go file and opens the store.
INIT = """
import os, sys, time
import mlflow, sqlalchemy  # loaded before the start line, so every process reaches it ready
from psreval_tune.tracking import Tracker, TrackingSpec
uri, name, folder = sys.argv[1], sys.argv[2], sys.argv[3]
open(os.path.join(folder, name + ".ready"), "w").close()
go = os.path.join(folder, "go")
while not os.path.exists(go):
    time.sleep(0.01)
time.sleep(0.05)
at = float(open(go).read())
while time.time() < at:  # every process wakes at the same instant
    time.sleep(0.0005)
tracker = Tracker(TrackingSpec(uri, "psreval", name))
print(tracker.experiment_id, tracker.sweep_run({"kind": "test"}))
"""


@pytest.mark.timeout(240)
def test_parallel_first_use_of_a_new_store(tmp_path):
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    sync = tmp_path / "sync"
    sync.mkdir()
    uri = f"sqlite:///{db}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", INIT, uri, f"sweep{i}", str(sync)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(N)
    ]
    try:
        deadline = time.monotonic() + 180
        while len(list(sync.glob("*.ready"))) < N and time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.05)
        (sync / "go.tmp").write_text(str(time.time() + 1.0))
        (sync / "go.tmp").rename(sync / "go")  # all at once, one second from now
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert len({out.split()[0] for out, _ in outs}) == 1  # one experiment, found again by the others

    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("psreval")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"sweep{i}" for i in range(N)]
    assert sorted(os.listdir(db.parent)) == ["mlflow.db", "mlflow.db.lock"]
