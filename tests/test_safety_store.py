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


@pytest.mark.slow
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


# --- a damaged store (issue 27): one line naming the file, at the check and when it is read -------------


def _damaged_store(tmp_path: Path) -> Path:
    """A real MLflow store with one finished trial run, copied with its runs table's root page overwritten:
    SQLite's header and schema page stay intact, so only reading the runs finds the damage."""
    import contextlib
    import sqlite3

    from mlflow import MlflowClient

    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    exp = client.create_experiment("psreval", artifact_location=str(tmp_path / "artifacts"))
    run = client.create_run(exp, run_name="trial", tags={"psreval.kind": "trial"})
    client.log_param(run.info.run_id, "epsilon", "3.4")
    client.log_metric(run.info.run_id, "acc_clean_float", 0.9)
    client.set_terminated(run.info.run_id)
    with contextlib.closing(sqlite3.connect(db)) as con:
        page = con.execute("SELECT rootpage FROM sqlite_master WHERE name = 'runs'").fetchone()[0]
        size = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[(page - 1) * size : page * size] = bytes(range(256)) * (size // 256)
    # a copy under another name: MLflow keeps this process's engine (and SQLite its page cache) per URI
    damaged = tmp_path / "damaged" / "mlflow.db"
    damaged.parent.mkdir()
    damaged.write_bytes(bytes(data))
    return damaged


@pytest.mark.timeout(120)
def test_damaged_store_is_one_line_naming_the_file(tmp_path, monkeypatch):
    from psreval_tune import tracking
    from psreval_tune.analysis.load import AnalysisError, load_mlflow

    db = _damaged_store(tmp_path)
    uri = f"sqlite:///{db}"
    # the check before any work: SQLite's quick_check of every page (bounded in time)
    with pytest.raises(tracking.TrackingError) as check:
        tracking.check_tracking_uri(uri, must_exist=True)
    assert f"{db} is damaged" in str(check.value) and "malformed" in str(check.value)
    # a store too large to check in time passes the check (test_quick_check_is_bounded); its damage is then
    # one line naming the file when it is read (MLflow wraps it as "(sqlite3.DatabaseError) database disk
    # image is malformed", naming no file)
    with pytest.raises(AnalysisError) as read:
        load_mlflow("psreval", uri)
    line = str(read.value)
    assert line.startswith(f"the MLflow store {db} cannot be read (sqlite3.DatabaseError: ")
    assert "malformed" in line and "\n" not in line


def test_intact_store_passes_the_check(tmp_path):
    from mlflow import MlflowClient

    from psreval_tune import tracking

    db = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{db}").create_experiment("psreval", artifact_location=str(tmp_path / "a"))
    assert tracking.sqlite_problem(db) is None
    tracking.check_tracking_uri(f"sqlite:///{db}", must_exist=True)


def test_quick_check_is_bounded(tmp_path):
    """The integrity check stops after its time: damage in the last page of a 4 MB table is found with
    the default bound and left to the read with none."""
    import contextlib
    import sqlite3
    import time

    from psreval_tune import tracking

    db = tmp_path / "mlflow.db"
    with contextlib.closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE experiments (id INTEGER)")
        con.execute("CREATE TABLE runs (id INTEGER, blob BLOB)")
        con.executemany("INSERT INTO runs VALUES (?, ?)", ((i, bytes(200)) for i in range(20_000)))
        con.commit()
        size = con.execute("PRAGMA page_size").fetchone()[0]
    data = bytearray(db.read_bytes())
    data[-size:] = bytes(range(256)) * (size // 256)
    db.write_bytes(bytes(data))
    start = time.monotonic()
    assert tracking.sqlite_problem(db, seconds=0) is None
    assert time.monotonic() - start < 1
    assert "is damaged" in tracking.sqlite_problem(db)
