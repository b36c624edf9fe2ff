"""Running on a Ray cluster: `cluster.yaml` passes Ray's own cluster-config
validation (offline, no cloud credentials), and a grid (the smoke grid cut to
one trial per node) runs across a real multi-node Ray cluster with token
authentication on this machine, logging to an MLflow server."""

from __future__ import annotations

import contextlib
import copy
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from sweep_helpers import (
    ROOT,
    env,
    free_port,
    kill_group,
    run_script,
    start_mlflow_server,
    sweep_runs,
    tune_results,
    wait_for,
    wait_healthy,
)

pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a real multi-node Ray cluster and an MLflow server

CLUSTER_YAML = ROOT / "cluster.yaml"
BIN = Path(sys.executable).parent
SMOKE_FILE = ROOT / "psreval_tune" / "sweeps" / "files" / "paper_smoke.yaml"
TRIALS = 2  # the smoke grid cut to one trial per node (two_trial_grid)
MARK = "PSREVAL_TEST_CLUSTER"  # every process the cluster test starts inherits MARK=<its own random value>
COMMAND_KEYS = (
    "initialization_commands",
    "setup_commands",
    "head_setup_commands",
    "worker_setup_commands",
    "head_start_ray_commands",
    "worker_start_ray_commands",
)


# --- cluster.yaml ---------------------------------------------------------------


def _validated(config: dict) -> dict:
    """What `ray up` does to a config before it needs the cloud: merge Ray's
    provider defaults, then check the result against Ray's JSON schema."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _commands(config: dict) -> str:
    return "\n".join(cmd for key in COMMAND_KEYS for cmd in config.get(key) or [])


def test_cluster_yaml_passes_rays_validation():
    prepared = _validated(yaml.safe_load(CLUSTER_YAML.read_text()))
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    workers = [spec for name, spec in types.items() if name != prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0  # a CPU head
    assert len(workers) == 1
    gpu = workers[0]
    assert gpu["resources"]["GPU"] == 1 and gpu["min_workers"] == 0 and gpu["max_workers"] >= 1  # autoscaling
    commands = _commands(prepared)
    assert "ray-wheels" not in commands  # every command list is ours, none of Ray's defaults (a nightly Ray)
    # The project at its pinned versions, as `make install` does it.
    torchattacks = re.search(r"^TORCHATTACKS := (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    for step in (r"-r requirements\.txt", rf"--no-deps {re.escape(torchattacks)}", r"--no-deps -e \."):
        assert re.search(rf"pip install [^&;\n]*{step}", commands), step
    pinned_ray = re.search(r"^ray\[tune\]==(\S+)", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    assert f'"ray[default]=={pinned_ray}"' in commands  # the cluster extras of the same Ray
    import ray

    assert pinned_ray == ray.__version__  # `ray up` must run the Ray the nodes get
    # Token authentication: on for every node, the token made on the head and copied to the workers.
    assert "export RAY_AUTH_MODE=token" in "\n".join(prepared["setup_commands"])
    head_start = prepared["head_start_ray_commands"]
    generate = next(i for i, c in enumerate(head_start) if "ray get-auth-token --generate" in c)
    start = next(i for i, c in enumerate(head_start) if "ray start --head" in c)
    assert generate < start
    assert "~/.ray/auth_token" in prepared["cluster_synced_files"]
    # Nothing listens on a public interface, and the launcher opens no extra port.
    assert "0.0.0.0" not in commands and "--dashboard-host" not in commands
    assert "security_group" not in prepared["provider"]
    # Shared storage and a tracking server for the jobs, without code edits.
    for var in ("PSREVAL_STORAGE", "MLFLOW_TRACKING_URI", "PSREVAL_RAY_ADDRESS"):
        assert f"export {var}=" in commands, var
    assert re.search(r"export PSREVAL_S3=s3://", commands)


@pytest.mark.parametrize(
    "pattern, typo",
    [
        (r"^max_workers:", "max_wokers:"),  # top level
        (r"^(\s+)min_workers:", r"\1min_wokers:"),  # inside a node type
    ],
)
def test_cluster_yaml_with_a_typo_fails_validation(tmp_path, pattern, typo):
    import jsonschema

    text, count = re.subn(pattern, typo, CLUSTER_YAML.read_text(), count=1, flags=re.M)
    assert count == 1
    broken = tmp_path / "cluster.yaml"
    broken.write_text(text)
    with pytest.raises(jsonschema.ValidationError, match=r"'m(ax|in)_wokers' was unexpected"):
        _validated(yaml.safe_load(broken.read_text()))


# --- a multi-node cluster on this machine ---------------------------------------


def _marked(marker: str) -> list[int]:
    """Processes started by this test's cluster, however they were re-parented
    (Linux: the environment each process was started with)."""
    needle = f"{MARK}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:  # gone, or not ours to read
                continue
    return found


def _stop(procs: list[subprocess.Popen], marker: str) -> None:
    for proc in procs:  # `ray start --block` stops its node's processes on SIGTERM
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    # Ray's workers run in process groups of their own: whatever is left of ours goes by pid.
    for pid in _marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class LocalCluster:
    address: str
    env: dict[str, str]  # what a process needs to join: token auth and the test's marker
    temp_dirs: dict[str, Path]  # node name -> its Ray temp dir

    def nodes_of(self, pid: int) -> list[str]:
        """The nodes whose raylet started worker process `pid` (its log file is in that node's temp dir)."""
        return [
            name for name, temp in self.temp_dirs.items() if list(temp.glob(f"session_latest/logs/worker-*-{pid}.out"))
        ]


def _start(cmd: list[str], log: Path, node_env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=log.parent, env=node_env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True
    )


def _wait_logged(proc: subprocess.Popen, log: Path, text: str, what: str, timeout: float = 180) -> None:
    def ready():
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        return text in log.read_text()

    wait_for(ready, timeout=timeout, interval=0.5, what=what)


def join_env() -> dict[str, str]:
    """What a process needs to join a new local_cluster: token auth (a fresh token) and a fresh marker."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32), MARK: secrets.token_hex(8)}


@contextlib.contextmanager
def local_cluster(logs: Path, joining: dict[str, str] | None = None):
    """A head and a worker node on 127.0.0.1, token authentication on both, one
    CPU and one (declared, fake) GPU each, so that trials asking for 1 CPU and
    half a GPU must spread over both nodes. Non-default ports and temp dirs
    keep it apart from any other Ray on this machine; `ray stop` is never used
    (it stops every Ray on the machine). ``joining``: its join_env() (default: a new one)."""
    temp = Path(tempfile.mkdtemp(prefix="psr-", dir="/tmp"))  # Ray's socket paths must stay short
    joined = joining or join_env()
    marker = joined[MARK]
    node_env = env(**joined)
    node_env.pop("RAY_AUTH_TOKEN_PATH", None)
    port = free_port()
    common = [
        "--block",
        "--node-ip-address",
        "127.0.0.1",
        "--num-cpus",
        "1",
        "--num-gpus",
        "1",
        "--object-store-memory",
        str(150 * 2**20),
        "--disable-usage-stats",
    ]
    temp_dirs = {"head": temp / "head", "worker": temp / "worker"}
    procs: list[subprocess.Popen] = []
    try:
        head = _start(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--port",
                str(port),
                *common,
                "--temp-dir",
                str(temp_dirs["head"]),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(free_port()),
                "--dashboard-agent-listen-port",
                str(free_port()),
            ],
            logs / "ray-head.log",
            node_env,
        )
        procs.append(head)
        _wait_logged(head, logs / "ray-head.log", "Ray runtime started", "the head node")
        worker = _start(
            [
                str(BIN / "ray"),
                "start",
                "--address",
                f"127.0.0.1:{port}",
                *common,
                "--temp-dir",
                str(temp_dirs["worker"]),
                "--dashboard-agent-listen-port",
                str(free_port()),
            ],
            logs / "ray-worker.log",
            node_env,
        )
        procs.append(worker)
        _wait_logged(worker, logs / "ray-worker.log", "Ray runtime started", "the worker node")  # registered
        yield LocalCluster(f"127.0.0.1:{port}", joined, temp_dirs)
    finally:
        _stop(procs, marker)
        shutil.rmtree(temp, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(folder: Path, extra_env: dict[str, str]):
    """An MLflow server starting (seconds of imports) while the caller does other things: (uri, wait until
    it answers)."""
    port = free_port()
    server = start_mlflow_server(folder, port, **extra_env)
    uri = f"http://127.0.0.1:{port}"
    try:
        yield uri, lambda: wait_healthy(uri, server, folder / "mlflow.log")
    finally:
        kill_group(server)


def two_trial_grid(folder: Path) -> Path:
    """The shipped smoke grid (paper_smoke.yaml: 2 epsilons x 3 threat settings) cut to its first epsilon and
    its first and last settings: two DP trials that run at once, one per node (each node has the one CPU a
    trial asks for). Six trials took three waves of two and the end-of-sweep report, for the same proof."""
    doc = yaml.safe_load(SMOKE_FILE.read_text())
    doc["description"] = "the smoke grid, one epsilon and two threat settings: one trial per node"
    doc["axes"]["epsilon"] = doc["axes"]["epsilon"][:1]
    doc["axes"]["setting"] = [doc["axes"]["setting"][0], doc["axes"]["setting"][-1]]
    path = folder / "two_trials.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.timeout(900)
def test_paper_grid_runs_on_a_multi_node_cluster_with_token_auth(tmp_path):
    joining = join_env()  # the server carries the cluster's marker too: its teardown is checked with the cluster's
    # The server starts while the nodes start and the refused driver runs (it needs no tracking).
    with mlflow_server(tmp_path, joining) as (uri, server_up), local_cluster(tmp_path, joining) as cluster:
        marker = cluster.env[MARK]
        # The cluster refuses a driver without its token: one line, exit 2, nothing written.
        refused = run_script(
            "sweeps/paper_grid.py",
            "--smoke",
            "--address",
            "auto",
            "--run-dir",
            str(tmp_path / "refused"),
            timeout=180,
            **{**cluster.env, "RAY_ADDRESS": cluster.address, "RAY_AUTH_TOKEN": "not-the-token"},
        )
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert (
            refused.stderr.strip().splitlines()[-1].startswith("error: --address=auto: Ray token authentication failed")
        ), refused.stderr[-2000:]
        assert "Traceback" not in refused.stderr and not (tmp_path / "refused").exists()
        server_up()

        shared = tmp_path / "shared"  # every node sees this folder: Tune's storage_path, as s3:// on a real cluster
        proc = run_script(
            "sweeps/paper_grid.py",
            str(two_trial_grid(tmp_path)),
            "--address",
            "auto",
            "--no-report",  # the report is not what this test checks (tests/test_analysis.py does)
            "--gpus-per-trial",
            "0.5",
            "--cpus-per-trial",
            "1",
            "--tracking-uri",
            uri,
            "--storage",
            str(shared),
            "--run-dir",
            str(tmp_path / "runs"),
            "--name",
            "cluster",
            timeout=600,
            **{**cluster.env, "RAY_ADDRESS": cluster.address},
        )
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

        results = tune_results(shared / "cluster")
        assert len(results) == TRIALS
        assert all(lines[-1].get("cycle_complete") for lines in results.values())
        # Every node has the same IP and hostname here; the raylet that started a
        # trial's process keeps its log file in that node's own temp dir.
        where = {tid: cluster.nodes_of(lines[-1]["pid"]) for tid, lines in results.items()}
        print("trial -> node:", where)
        assert all(len(nodes) == 1 for nodes in where.values()), where
        assert {nodes[0] for nodes in where.values()} == {"head", "worker"}, where
        # Ray counted both nodes' CPUs and GPUs, and each trial held half a GPU.
        usage = re.findall(r"Logical resource usage: ([\d.]+)/2 CPUs, ([\d.]+)/2 GPUs", proc.stdout)
        assert usage, proc.stdout[-3000:]
        assert all(float(gpus) == float(cpus) / 2 for cpus, gpus in usage), usage

        parents, trials = sweep_runs(uri)
        parents = [p for p in parents if p.data.tags["psreval.sweep"] == "cluster"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        nested = [t for t in trials if t.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
        assert Counter(t.data.tags["psreval.trial_id"] for t in nested) == Counter(set(results))
        assert [t.info.status for t in nested] == ["FINISHED"] * TRIALS
        assert len(list((tmp_path / "art").rglob("model_int8.pt2"))) == TRIALS  # through the server
        assert not (tmp_path / "runs" / "mlflow.db").exists()
    assert not _marked(marker), "processes of the test cluster survived its teardown"
