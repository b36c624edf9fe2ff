"""--resume after a killed driver ends the Ray processes that driver left (sweeps/ray_procs.py).

Stand-ins for Ray's servers are `sleep` processes: what is under test is which processes are ended
(the recorded ones and what they started, only when the recorded driver is gone, never a recycled pid)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from psreval_tune.sweeps import ray_procs

psutil = ray_procs._psutil()

pytestmark = pytest.mark.timeout(60)


def _spawn(cmd: str) -> subprocess.Popen:
    return subprocess.Popen(["sh", "-c", cmd])


def _entry(proc: subprocess.Popen) -> dict:
    p = psutil.Process(proc.pid)
    return {"pid": p.pid, "started": p.create_time(), "name": p.name(), "cmdline": p.cmdline()}


def _write(folder, driver: dict, processes: list[dict]) -> None:
    (folder / ray_procs.RECORD).write_text(json.dumps({"driver": driver, "processes": processes}))


def _children(proc: subprocess.Popen, n: int) -> list:
    """The ``n`` children ``proc`` forks right after it starts (polled: the shell forks when it gets to it)."""
    deadline = time.monotonic() + 10
    while len(children := psutil.Process(proc.pid).children()) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(children) == n
    return children


@pytest.fixture
def procs():
    started: list[subprocess.Popen] = []
    yield lambda cmd: started.append(_spawn(cmd)) or started[-1]
    for p in started:
        p.kill()
        p.wait()


def test_a_dead_drivers_processes_and_their_children_are_ended(tmp_path, procs):
    driver, raylet = procs("sleep 60"), procs("sleep 60 & sleep 60 & wait")  # raylet: with 2 later workers
    _write(tmp_path, _entry(driver), [_entry(raylet)])
    workers = _children(raylet, 2)
    driver.kill(), driver.wait()  # SIGKILL, as the fault test does to a sweep's driver
    line = ray_procs.end_stale(tmp_path)
    assert line.startswith("resume: ended 3 Ray process(es) left by the killed driver (pids ")
    assert str(raylet.pid) in line and "still running" not in line
    assert raylet.wait(timeout=10) is not None and not any(w.is_running() and w.status() != "zombie" for w in workers)
    assert not (tmp_path / ray_procs.RECORD).exists()


def test_nothing_is_ended_while_the_recorded_driver_runs(tmp_path, procs):
    driver, raylet = procs("sleep 60"), procs("sleep 60")
    _write(tmp_path, _entry(driver), [_entry(raylet)])
    assert "still runs" in ray_procs.end_stale(tmp_path)
    assert raylet.poll() is None


def test_a_recycled_pid_is_another_process_and_is_left_alone(tmp_path, procs):
    driver, other = procs("sleep 60"), procs("sleep 60")
    recycled = {**_entry(other), "started": _entry(other)["started"] - 100}  # same pid, another start time
    dead = {**_entry(driver), "started": 0.0}
    _write(tmp_path, dead, [recycled])
    assert ray_procs.end_stale(tmp_path) is None
    assert other.poll() is None


def test_record_lists_this_process_and_its_children(tmp_path, procs):
    child = procs("sleep 60")
    ray_procs.record(tmp_path)
    payload = json.loads((tmp_path / ray_procs.RECORD).read_text())
    assert payload["driver"]["pid"] == psutil.Process().pid
    assert child.pid in {p["pid"] for p in payload["processes"]}
    assert ray_procs.end_stale(tmp_path / "nothing-here") is None  # no record: nothing to end


def test_a_damaged_record_ends_nothing(tmp_path, procs):
    (tmp_path / ray_procs.RECORD).write_text("[1, 2")
    assert ray_procs.end_stale(tmp_path) is None


def test_the_record_keeps_each_command_line(tmp_path, procs):
    child = procs("sleep 61")
    ray_procs.record(tmp_path)
    (entry,) = [p for p in json.loads((tmp_path / ray_procs.RECORD).read_text())["processes"] if p["pid"] == child.pid]
    assert entry["cmdline"] == ["sh", "-c", "sleep 61"]


def test_a_process_under_another_command_line_is_left_alone_and_named(tmp_path, procs):
    """Same pid and start time, but not the recorded command line: not ended; the line names it, beside
    the one that still matches and is ended."""
    driver, ours, other = procs("sleep 60"), procs("exec sleep 60"), procs("exec sleep 60")
    for proc in (ours, other):  # the shell has become sleep: the command line recorded is the one it keeps
        deadline = time.monotonic() + 10
        while psutil.Process(proc.pid).cmdline() != ["sleep", "60"] and time.monotonic() < deadline:
            time.sleep(0.02)
    _write(tmp_path, _entry(driver), [_entry(ours), {**_entry(other), "cmdline": ["gcs_server", "--port=1"]}])
    driver.kill(), driver.wait()
    line = ray_procs.end_stale(tmp_path)
    assert line == (
        f"resume: ended 1 Ray process(es) left by the killed driver (pids {ours.pid}); left alone, their command "
        f"line changed: {other.pid} (now 'sleep 60', recorded 'gcs_server --port=1')"
    )
    assert ours.wait(timeout=10) is not None and other.poll() is None


def test_a_ray_worker_retitling_itself_is_still_the_recorded_process():
    assert ray_procs.same_command(["ray::IDLE"], ["ray::ImplicitFunc.train"])
    assert ray_procs.same_command(None, ["anything"])  # a record from before command lines were kept
    assert not ray_procs.same_command(["ray::IDLE"], ["python", "other.py"])
    assert not ray_procs.same_command(["/usr/bin/raylet", "--a"], ["/usr/bin/raylet", "--b"])
    # recorded before it retitled itself: Ray's worker entry point, later its ray:: title
    started = ["/venv/bin/python", "/venv/lib/ray/_private/workers/default_worker.py", "--node-ip-address=127.0.0.1"]
    assert ray_procs.same_command(started, ["ray::IDLE"])
    assert not ray_procs.same_command(["/venv/bin/python", "other.py"], ["ray::IDLE"])


def test_a_recorded_process_that_is_exiting_is_neither_ended_nor_named(monkeypatch):
    """A fresh-clone run saw 'left alone, their command line changed: PID (now '', ...)': a Ray process
    exiting on its own after its driver's death (a zombie) has an empty command line."""

    class Exiting:
        pid = 4242

        def cmdline(self):
            return []

    monkeypatch.setattr(ray_procs, "_alive", lambda entry: Exiting())
    assert ray_procs._ours([{"pid": 4242, "started": 0.0, "cmdline": ["/venv/bin/python", "-u", "x.py"]}]) == ([], [])


DRIVER = """
import sys, time
from psreval_tune.sweeps import connection, ray_procs
connection.connect("none")  # a local Ray, as a sweep's driver starts it
ray_procs.record(sys.argv[1])  # as engine._record_start does, before any trial
import ray
ray.get(ray.remote(lambda: 1).remote())  # a worker runs a task after the record (it retitles itself)
print("ready", flush=True)
time.sleep(300)
"""


@pytest.mark.ray
@pytest.mark.slow  # starts a real local Ray (~11 s)
@pytest.mark.timeout(120)
def test_a_real_local_rays_processes_are_all_ended_after_its_driver_is_killed(tmp_path):
    """A driver that started a local Ray and ran a task is SIGKILLed: end_stale ends every recorded
    process still alive (none is spared by the command-line check) and nothing is left alone."""
    import sys

    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(tmp_path)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    recorded: list[dict] = []
    try:
        assert driver.stdout.readline().strip() == "ready"
        recorded = json.loads((tmp_path / ray_procs.RECORD).read_text())["processes"]
        assert recorded and all(e["cmdline"] for e in recorded)
        driver.kill(), driver.wait()
        line = ray_procs.end_stale(tmp_path)
        # None only when every recorded process had already exited on its own (nothing to end)
        assert line is None or line.startswith("resume: ended "), line
        assert line is None or ("left alone" not in line and "still running" not in line), line
        assert not [e for e in recorded if ray_procs._alive(e) is not None], line
        print(line, f"({len(recorded)} recorded)")
    finally:
        driver.kill()
        for proc in filter(None, map(ray_procs._alive, recorded)):  # only if the test failed first
            proc.kill()
