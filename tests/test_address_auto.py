"""--address auto where Ray's discovery finds a cluster that is stopped or dying: refused in seconds, in one
line naming the address, instead of ray.init(address="auto") retrying that GCS for minutes.

No test here starts Ray or connects to one. Ray's discovery also scans the processes on this machine for
raylets, and prefers the one cluster they name over the address file; other people's live Ray clusters may
run here, so the in-process tests replace that scan, and the CLI test points Ray at the dead address with
RAY_ADDRESS, which Ray reads before any discovery (the address file would lose to such a cluster, and the
sweep would run on it)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from psreval_tune.sweeps import connection
from psreval_tune.sweeps.failures import SweepError


def closed_port() -> int:
    """A loopback port nothing listens on (bound, read, closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_discovery(tmp_path, monkeypatch):
    """Ray's own discovery, confined to an address file in tmp_path: no RAY_ADDRESS, no raylets seen by the
    process scan (whatever runs on this machine), localhost kept as 127.0.0.1 (not mapped to the node IP).
    Returns a function that writes the address file."""
    services = pytest.importorskip("ray._private.services")
    from ray._private import ray_constants

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(services, "find_gcs_addresses", lambda: frozenset())
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)

    def write(address: str) -> None:
        (tmp_path / "ray").mkdir(exist_ok=True)
        (tmp_path / "ray" / "ray_current_cluster").write_text(address + "\n")

    return write


def refused(address: str = "auto") -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(SweepError) as info:
        connection.check_address(address)
    return str(info.value), time.monotonic() - start


def assert_one_line_naming(message: str, address: str) -> None:
    assert "\n" not in message and message.startswith("--address=auto: "), message
    assert address in message, message
    assert "`ray start --head`" in message and "--address none" in message, message


@pytest.mark.timeout(60)
def test_auto_address_file_with_dead_gcs_is_refused(ray_discovery):
    address = f"127.0.0.1:{closed_port()}"
    ray_discovery(address)
    message, seconds = refused()
    assert_one_line_naming(message, address)
    assert "the address file of a `ray start`" in message, message
    assert seconds < 15


@pytest.mark.timeout(60)
def test_auto_address_file_with_live_gcs_passes_fast(ray_discovery):
    with socket.socket() as server:  # stands in for a live GCS: something accepts connections there
        server.bind(("127.0.0.1", 0))
        server.listen()
        ray_discovery(f"127.0.0.1:{server.getsockname()[1]}")
        start = time.monotonic()
        connection.check_address("auto")
        assert time.monotonic() - start < 2


@pytest.mark.timeout(60)
def test_auto_with_nothing_found_is_left_to_ray(ray_discovery):
    # No address file, no raylet: ray.init raises at once and connect() gives today's one line
    # (test_sweeps.py::test_address_auto_without_cluster_is_one_line_error runs that end to end).
    connection.check_address("auto")


@pytest.mark.timeout(60)
@pytest.mark.parametrize("scheme", ["", "ray://"])
def test_auto_ray_address_variable_with_dead_gcs_is_refused(ray_discovery, monkeypatch, scheme):
    address = f"{scheme}127.0.0.1:{closed_port()}"
    ray_discovery(f"127.0.0.1:{closed_port()}")  # RAY_ADDRESS comes first
    monkeypatch.setenv("RAY_ADDRESS", address)
    message, seconds = refused()
    assert_one_line_naming(message, address)
    assert " in RAY_ADDRESS" in message and seconds < 15


@pytest.mark.timeout(60)
def test_check_auto_with_resolver_given(monkeypatch):
    dead = f"127.0.0.1:{closed_port()}"
    monkeypatch.setattr(connection, "_auto_address", lambda: ("localhost:" + dead.split(":")[1], dead))
    message, seconds = refused()
    assert_one_line_naming(message, f"localhost:{dead.split(':')[1]} in ")
    assert f", which Ray connects to as {dead}, " in message
    assert seconds < 15
    monkeypatch.setattr(connection, "_auto_address", lambda: None)
    connection.check_address("auto")  # nothing found: Ray's to say


@pytest.mark.slow  # a CLI subprocess; it never starts Ray (refused before ray.init)
@pytest.mark.timeout(60)
@pytest.mark.parametrize("command", [["grid", "--smoke"], ["search", "--smoke"]])
def test_cli_address_auto_with_dead_gcs_is_one_line_error(tmp_path, command):
    from sweep_helpers import ROOT, env

    address = f"127.0.0.1:{closed_port()}"
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "psreval_tune.console", *command, "--address", "auto", "--run-dir", str(tmp_path)],
        cwd=ROOT,
        # RAY_ADDRESS: read by Ray before its process scan, which may see other people's live clusters here;
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray keeps 127.0.0.1 instead of mapping it to the node IP.
        env=env(RAY_ADDRESS=address, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
        capture_output=True,
        text=True,
        timeout=50,
    )
    seconds = time.monotonic() - start
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: --address=auto: "), proc.stderr
    assert_one_line_naming(lines[0][len("error: ") :], address)
    assert "Traceback" not in proc.stdout + proc.stderr
    assert seconds < 15
