"""Sweeps: the local Ray listens on loopback only, and what cannot work is refused in seconds,
with one line, before Ray starts (unreachable MLflow, no Ray at --address, resources larger
than the machine, --resume with other flags).

Run as a script, this file is a one-trial sweep driver (the smallest sweep there is).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import ROOT, env, free_port, kill_group, run_script, start_script, sweep_runs  # noqa: E402

THIS = "tests/test_safety_sweeps.py"
ONE_TRIAL = {"dataset": "digits", "arch": "cnn", "rounds": 2, "eval_attacks": ["FGSM"], "eval_samples": 16,
             "attack_repeats": 1, "train_samples": 400}


# --- listening sockets, from /proc (Linux) ----------------------------------------------


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))), int(port, 16)


def listening() -> dict[int, tuple[str, str, int]]:
    """socket inode -> (proto, ip, port) for every listening TCP socket and bound UDP socket."""
    out = {}
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{proto}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if proto.startswith("tcp") and f[3] != "0A":  # 0A = LISTEN
                continue
            out[int(f[9])] = (proto, *_addr(f[1]))
    return out


def session_sockets(sid: int) -> set[tuple[str, str, str, int]]:
    """(process name, proto, ip, port) of the listening sockets of every process in session ``sid``."""
    socks, found = listening(), set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        try:
            if os.getsid(pid) != sid:
                continue
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:[") and int(link[8:-1]) in socks:
                found.add((name, *socks[int(link[8:-1])]))
    return found


def session_processes(sid: int) -> list[str]:
    names = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.getsid(int(entry)) == sid:
                    names.append(Path(f"/proc/{entry}/comm").read_text().strip())
            except OSError:
                pass
    return names


def is_loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


# --- tests ---------------------------------------------------------------------------


@pytest.mark.timeout(420)
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads /proc/net (Linux)")
def test_local_sweep_listens_on_loopback_only_and_resume_checks_flags(tmp_path):
    """During a one-trial sweep, no process of it listens outside 127.0.0.1/::1. Afterwards, --resume
    with another --seeds is refused naming the flag, and the same --name without --resume too."""
    log = tmp_path / "sweep.log"
    proc = start_script(THIS, "--run-dir", str(tmp_path / "runs"), "--name", "loop", log=log)
    seen: set = set()
    try:
        deadline = time.monotonic() + 380
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= session_sockets(proc.pid)
            time.sleep(0.5)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    names = {s[0] for s in seen}
    assert {"gcs_server", "raylet"} & names, f"never saw Ray's servers: {sorted(seen)}"
    outside = sorted(s for s in seen if not is_loopback(s[2]))
    assert not outside, f"listening outside loopback: {outside}"
    assert not session_processes(proc.pid), "processes of the sweep outlived it"
    parents, trials = sweep_runs(f"sqlite:///{tmp_path}/runs/mlflow.db")
    assert len(parents) == 1 and [t.info.status for t in trials] == ["FINISHED"]

    start = time.monotonic()
    again = run_script(THIS, "--run-dir", str(tmp_path / "runs"), "--name", "loop", "--resume", "--seeds", "1",
                       timeout=120)
    assert again.returncode == 2, again.stderr[-2000:]
    assert again.stderr.strip().splitlines() == [
        "error: --resume: --seeds=1 differs from the sweep's --seeds=0; resume with the flags it was started "
        "with, or start a new sweep (another --name)"]
    same = run_script(THIS, "--run-dir", str(tmp_path / "runs"), "--name", "loop", timeout=120)
    assert same.returncode == 2 and "a sweep of that name exists" in same.stderr and "--resume" in same.stderr
    assert time.monotonic() - start < 120


def _one_line(proc, *texts: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout[-1500:], proc.stderr[-1500:])
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-2000:]
    for text in texts:
        assert text in lines[0], (text, lines[0])
    return lines[0]


def _timed(*args: str, cwd: Path, **kw):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / THIS), *args], cwd=cwd, env=env(**kw), capture_output=True,
                          text=True, timeout=120)
    return proc, time.monotonic() - start


@pytest.mark.timeout(150)
def test_unreachable_mlflow_server_fails_in_seconds(tmp_path):
    """Nothing listens on the port: one line naming the URI, before Ray starts (was a traceback after ~270 s)."""
    uri = f"http://127.0.0.1:{free_port()}"
    proc, seconds = _timed("--tracking-uri", uri, cwd=tmp_path)
    _one_line(proc, uri, "no MLflow server reachable", "Connection refused")
    assert seconds < 30
    assert list(tmp_path.iterdir()) == []
    print(f"unreachable MLflow: exit 2 after {seconds:.1f} s (imports included)")


@pytest.mark.timeout(150)
def test_mlflow_port_that_never_answers_fails_in_seconds(tmp_path):
    """A port that accepts connections but never answers HTTP (a hung server): refused after the probe's timeout."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # never reply
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        proc, seconds = _timed("--tracking-uri", uri, cwd=tmp_path)
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in held:
            conn.close()
        server.close()
    _one_line(proc, uri, "no MLflow server reachable", "no HTTP answer")
    assert seconds < 30
    print(f"hung MLflow port: exit 2 after {seconds:.1f} s (imports included)")


@pytest.mark.timeout(150)
def test_address_without_ray_fails_in_seconds(tmp_path):
    """--address HOST:PORT with nothing there: one line (Ray itself retries for minutes)."""
    address = f"127.0.0.1:{free_port()}"
    proc, seconds = _timed("--address", address, cwd=tmp_path)
    _one_line(proc, f"--address={address}", "no Ray cluster there", "--address none")
    assert seconds < 30
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(150)
def test_cpus_per_trial_above_the_machine_is_refused_before_ray(tmp_path):
    proc, seconds = _timed("--cpus-per-trial", "64", cwd=tmp_path)
    _one_line(proc, "--cpus-per-trial=64", "CPUs", "--wait-for-resources")
    assert seconds < 30
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(200)
def test_gpus_per_trial_on_a_machine_without_gpus_is_refused_and_ray_stopped(tmp_path):
    """The GPU count is Ray's to detect: it starts, finds none, stops. One line; no process left."""
    import shutil as _shutil

    if _shutil.which("nvidia-smi"):
        pytest.skip("this machine has GPUs")
    log = tmp_path / "log"
    work = tmp_path / "work"
    work.mkdir()
    proc = subprocess.Popen([sys.executable, str(ROOT / THIS), "--gpus-per-trial", "1", "--run-dir",
                             str(work / "runs")], cwd=work, env=env(), stdout=subprocess.PIPE,
                            stderr=open(log, "w"), start_new_session=True, text=True)
    try:
        proc.wait(timeout=150)
        time.sleep(2)
        left = session_processes(proc.pid)
    finally:
        kill_group(proc)
    err = log.read_text()
    assert proc.returncode == 2, err[-2000:]
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: --gpus-per-trial=1 but this machine's Ray has 0 GPUs"), err[-2000:]
    assert [line for line in lines if line.startswith("error")] == lines[-1:] and "Traceback" not in err
    assert not left, f"left behind: {left}"
    assert list(work.iterdir()) == []


# --- the one-trial driver --------------------------------------------------------------

if __name__ == "__main__":
    from psreval_tune.sweep import SweepSpec, main_guard, parser, run_sweep

    @main_guard
    def main(argv=None) -> int:
        args = parser("one tiny trial").parse_args(argv)
        space = {**ONE_TRIAL, "seed": args.seeds[0]}
        run_sweep(args, SweepSpec(kind="safety", param_space=space))
        return 0

    sys.exit(main())
