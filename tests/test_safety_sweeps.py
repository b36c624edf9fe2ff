"""Sweeps: the local Ray a sweep starts listens on loopback only.

The sweep refusals (unreachable or hung MLflow, no Ray at --address, resources larger than the
machine, --resume with other flags, ...) are cases of tests/test_safety_bad_inputs.py.

Run as a script, this file is a one-trial sweep driver (the smallest sweep there is).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_helpers import kill_group, start_script, sweep_runs  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a one-trial sweep on a local Ray

THIS = "tests/test_safety_sweeps.py"
ONE_TRIAL = {
    "dataset": "digits",
    "arch": "cnn",
    "rounds": 2,
    "eval_attacks": ["FGSM"],
    "eval_samples": 16,
    "attack_repeats": 1,
    "train_samples": 400,
}


# --- listening sockets, from /proc (Linux) ----------------------------------------------


def _addr(hexaddr: str) -> tuple[str, int]:
    ip, port = hexaddr.split(":")
    raw = bytes.fromhex(ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))), int(port, 16)


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
def test_local_sweep_listens_on_loopback_only(tmp_path):
    """During a one-trial sweep, no process of it listens outside 127.0.0.1/::1 (the old code's GCS, raylet
    and workers listened on ::). Its flags are recorded for --resume (the refusals are cases of
    tests/test_safety_bad_inputs.py)."""
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
    recorded = tmp_path / "runs" / "ray_results" / "loop" / ".psreval-sweep.json"
    assert '"seeds": [\n    0\n  ]' in recorded.read_text()  # what --resume compares against


# --- the one-trial driver --------------------------------------------------------------

if __name__ == "__main__":
    from psreval_tune.sweeps.engine import SweepSpec, main_guard, parser, run_sweep

    @main_guard
    def main(argv=None) -> int:
        args = parser("one tiny trial").parse_args(argv)
        space = {**ONE_TRIAL, "seed": args.seeds[0]}
        run_sweep(args, SweepSpec(kind="safety", param_space=space))
        return 0

    sys.exit(main())
