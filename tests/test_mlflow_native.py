"""What the sweeps record in MLflow besides metrics: the code (git commit, dirty flag, package version), the
float model as an MLflow model that loads back with the trial's accuracy, the data splits as dataset inputs,
optional system metrics, an SQLite store's artifacts beside the database, and the runs-table URL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sweep_helpers import ROOT, env, seed_store, sweep_runs

from psreval_tune import tracking, ui
from psreval_tune.tracking import (
    MODEL_NAME,
    TAG_COMMIT,
    TAG_DIRTY,
    TAG_VERSION,
    Tracker,
    TrackingSpec,
    source_provenance,
)


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def _accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """As evaluate.accuracy computes a metric (batches of 512), for a loaded pt2 program (no .eval())."""
    with torch.inference_mode():
        preds = torch.cat([model(x[i : i + 512]).argmax(1) for i in range(0, len(x), 512)])
    return float((preds == y).float().mean())


def test_source_provenance_is_the_package_checkout_not_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git checkout: the lookup must not depend on it
    tags = source_provenance()
    assert tags[TAG_COMMIT] == _git("rev-parse", "HEAD", cwd=ROOT)
    assert tags[TAG_DIRTY] in ("true", "false") and tags[TAG_VERSION] == tracking.package_version()
    assert tracking.git_commit() == tags[TAG_COMMIT]

    # a checkout of its own: clean, then dirty
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")
    _git("init", "-q", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x", "--allow-empty", cwd=repo)
    _git("add", "pkg", cwd=repo)
    _git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "pkg", cwd=repo)
    head = _git("rev-parse", "HEAD", cwd=repo)
    assert source_provenance(repo / "pkg") == {
        TAG_COMMIT: head,
        TAG_DIRTY: "false",
        TAG_VERSION: tracking.package_version(),
    }
    (repo / "pkg" / "__init__.py").write_text("x = 1\n")
    assert source_provenance(repo / "pkg")[TAG_DIRTY] == "true"

    # installed: no git at all, or an untracked copy inside some repository (a virtualenv in a checkout)
    for installed in (tmp_path / "site-packages" / "pkg", repo / ".venv" / "site-packages" / "pkg"):
        installed.mkdir(parents=True)
        (installed / "__init__.py").write_text("")
        assert source_provenance(installed) == {TAG_COMMIT: "unknown", TAG_VERSION: tracking.package_version()}


@pytest.mark.slow
def test_sqlite_store_keeps_artifacts_beside_the_database(tmp_path, monkeypatch, capsys):
    cwd, store = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir(), store.mkdir()
    monkeypatch.chdir(cwd)
    spec = TrackingSpec(f"sqlite:///{store}/mlflow.db", "psreval", "s", provenance=(("git_commit", "abc"),))
    tracker = Tracker(spec)
    exp = tracker.client.get_experiment(tracker.experiment_id)
    assert exp.artifact_location == (store / "mlartifacts").as_uri()
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    parent = tracker.sweep_run()
    run_id, _ = tracker.trial_run(parent, "t1", "trial")
    tracker.log_dict(run_id, {"a": 1}, "x.json")
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["git_commit"] == "abc"  # the driver's, passed down
    # the trial's own node: its processor and what its kernels may use
    assert tags["psreval.cpu_bf16_native"] in ("True", "False") and "psreval.cpu_flags" in tags
    assert list(store.glob("mlartifacts/*/artifacts/x.json"))
    assert list(cwd.iterdir()) == []  # no mlruns/ (or anything else) in the working directory

    # `psreval ui` prints the runs table of the latest sweep's runs before it starts the UI
    started = []
    monkeypatch.setattr(os, "execve", lambda *a: started.append(a))
    assert ui.main(["--tracking-uri", spec.tracking_uri, "--port", "5123"]) == 0
    assert started and "--backend-store-uri" in started[0][1]
    view = f"viewStateShareKey={tracking.sweep_view_key('s')}"
    url = ui.runs_view_url("127.0.0.1", 5123, tracker.experiment_id, view)
    assert (
        url == f"http://127.0.0.1:5123/#/experiments/{tracker.experiment_id}/runs?{view}&workflowType=machine_learning"
    )
    assert f"MLflow UI: {url}  (Ctrl-C to stop)" in capsys.readouterr().out


def test_runs_view_url():
    assert (
        ui.runs_view_url("0.0.0.0", 5000, "3")
        == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    )
    assert ui.runs_view_url("::1", 80, None) == "http://[::1]:80/#/experiments?workflowType=machine_learning"
    assert (
        ui.results_hint("http://u:pw@mlflow:5000/", "2")
        == "http://u:***@mlflow:5000/#/experiments/2/runs?workflowType=machine_learning"
    )
    assert ui.results_hint("sqlite:////s/mlflow.db", "1").endswith("`psreval ui --tracking-uri sqlite:////s/mlflow.db`")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_trial_logging_path_model_loads_back_with_the_trial_accuracy(small_cfg, tmp_path, monkeypatch):
    """The trial's own logging calls on a tiny cycle: the MLflow model loads back through runs:/ and
    scores exactly the cycle's acc_clean_float on the test split; the splits are dataset inputs."""
    from psreval_tune.cycle import run_cycle
    from psreval_tune.trainable import log_float_model, log_splits

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cfg = small_cfg.replace(rounds=1, eval_attacks=("FGSM",), attack_repeats=1)
    seen = {}
    result = run_cycle(cfg, on_round=lambda r, fed: seen.setdefault("data", fed.data))
    data = seen["data"]
    tracker = Tracker(TrackingSpec(f"sqlite:///{tmp_path}/mlflow.db", "psreval", "unit"))
    run_id, _ = tracker.trial_run(tracker.sweep_run(), "t1", "trial")
    for _ in range(2):  # a retried trial logs nothing twice
        log_splits(tracker, run_id, cfg, data)
        assert log_float_model(tracker, run_id, result, "t1") is not None
    tracker.finish(run_id)

    import mlflow

    with tracking._fluent_tracking_uri(tracker.spec.tracking_uri):
        model = mlflow.pytorch.load_model(f"runs:/{run_id}/{MODEL_NAME}")
    assert _accuracy(model, data.test.x, data.test.y) == result.metrics["acc_clean_float"]
    models = tracker.client.search_logged_models([tracker.experiment_id])
    assert [(m.name, m.source_run_id, m.status.name) for m in models] == [(MODEL_NAME, run_id, "READY")]
    files = {p.name for p in Path(tmp_path).glob(f"mlartifacts/models/{models[0].model_id}/artifacts/**/*")}
    assert "model.pt2" in files and not any(f.endswith((".pth", ".pkl")) for f in files)  # no pickle

    inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
    by_context = {next(t.value for t in i.tags if t.key == "mlflow.data.context"): i for i in inputs}
    assert sorted(by_context) == ["test", "train", "val"] and len(inputs) == 3
    for context, split in (("train", data.train), ("val", data.val), ("test", data.test)):
        ds = by_context[context].dataset
        assert ds.name == "digits" and json.loads(ds.profile)["features_shape"][0] == len(split)
        assert ds.digest == tracking.split_digest(split.x.numpy(), split.y.numpy())
    assert len({i.dataset.digest for i in inputs}) == 3


def test_system_metrics_flag_without_psutil_is_one_line(tmp_path, monkeypatch, capsys):
    import importlib.util

    from psreval_tune.sweeps.engine import parser

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "psutil" else real(name, *a))
    with pytest.raises(SystemExit) as exc:
        parser("x").parse_args(["--system-metrics", "--run-dir", str(tmp_path)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: --system-metrics needs psutil")
    assert "pip install psutil" in err
    monkeypatch.undo()
    assert tracking.system_metrics_missing() is None  # here: Ray ships psutil


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sweep_records_code_model_datasets_system_metrics_beside_its_store(tmp_path, empty_store):
    """One tiny sweep run as a user runs it, from an empty working directory, into
    --tracking-uri sqlite:///<tmp>/store/mlflow.db with --system-metrics."""
    from mlflow import MlflowClient

    cwd, store = tmp_path / "cwd", tmp_path / "store"
    cwd.mkdir()
    uri = seed_store(store, empty_store)  # its tables made already (the experiment and its runs are the sweep's)
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "sweeps" / "search.py"),
            "--smoke",
            "--space",
            "recipe",
            "--archs",
            "cnn",
            "--epsilons",
            "7.0",
            "--num-samples",
            "1",
            "--rounds",
            "2",
            "--name",
            "native",
            "--run-dir",
            str(tmp_path / "run"),
            "--tracking-uri",
            uri,
            "--system-metrics",
            "--no-report",  # what is checked here is the trial's and the parent's records, not the report
        ],
        cwd=cwd,
        env=env(MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="1", MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR="false"),
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "mlruns" not in os.listdir(cwd), os.listdir(cwd)
    assert not (tmp_path / "run" / "reports").exists()  # --no-report

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("psreval")
    assert exp.artifact_location == (store / "mlartifacts").as_uri()
    # the runs table of this sweep (tests/test_mlflow_ui_trials.py opens one)
    view = f"viewStateShareKey={tracking.sweep_view_key('native')}"
    url = ui.runs_view_url("127.0.0.1", 5000, exp.experiment_id, view)
    assert f"results: {url} after `psreval ui --tracking-uri {uri}`" in proc.stdout

    parents, trials = sweep_runs(uri)
    assert len(parents) == 1 and len(trials) == 1
    parent, run = parents[0], trials[0]
    head = _git("rev-parse", "HEAD", cwd=ROOT)
    for r in (parent, run):
        assert r.data.tags[TAG_COMMIT] == head and r.data.tags[TAG_DIRTY] in ("true", "false")
        assert r.data.tags[TAG_VERSION] == tracking.package_version()
        assert r.info.artifact_uri.startswith(exp.artifact_location)
    assert list(store.glob(f"mlartifacts/{run.info.run_id}/artifacts/model_int8.pt2"))

    # the float model, loaded back through MLflow, scores the trial's metric on the cycle's test split
    import mlflow

    from psreval_tune.config import CycleConfig
    from psreval_tune.data import load_data

    local = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="metrics.json", dst_path=str(tmp_path), tracking_uri=uri
    )
    summary = json.loads(Path(local).read_text())
    cfg = CycleConfig.from_dict(summary["config"])
    test = load_data(cfg).test
    with tracking._fluent_tracking_uri(uri):
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/{MODEL_NAME}")
    metrics = run.data.metrics
    assert _accuracy(model, test.x, test.y) == metrics["acc_clean_float"]
    assert "psreval.model_error" not in run.data.tags
    assert list(store.glob("mlartifacts/models/*/artifacts/data/model.pt2"))
    print(f"time_log_model_s={metrics['time_log_model_s']} of time_total_s={metrics['time_total_s']}")

    contexts = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset for i in run.inputs.dataset_inputs
    }
    assert sorted(contexts) == ["test", "train", "val"]
    assert json.loads(contexts["test"].profile)["features_shape"][0] == metrics["n_test"] == len(test)
    assert all(d.name == "digits" for d in contexts.values())

    assert any(k.startswith("system/cpu_utilization_percentage") for k in metrics), sorted(metrics)
    assert not any(k.startswith("system/") for k in parent.data.metrics)  # trial runs only
    shutil.rmtree(tmp_path / "run", ignore_errors=True)


def _two_runs_and_splits(tmp_path):
    gen = torch.Generator().manual_seed(0)
    splits = {c: (torch.rand(n, 1, 8, 8, generator=gen), torch.arange(n) % 10) for c, n in (("train", 20), ("test", 8))}
    tracker = Tracker(TrackingSpec(f"sqlite:///{tmp_path}/mlflow.db", "psreval", "unit"))
    parent = tracker.sweep_run()
    return tracker, splits, tracker.trial_run(parent, "t1", "a")[0], tracker.trial_run(parent, "t2", "b")[0]


def test_two_trials_logging_the_same_new_dataset_at_once_both_get_it(tmp_path, monkeypatch):
    """The race a tracking server showed in CI: trial B checks for the dataset, trial A inserts it, B's insert
    fails on the unique key and B's call is rolled back. B logs again and links to A's rows."""
    from mlflow.exceptions import MlflowException

    tracker, splits, run_a, run_b = _two_runs_and_splits(tmp_path)
    real = tracker.client.log_inputs
    calls = []

    def racing(run_id, datasets=None, **kw):
        calls.append(run_id)
        if len(calls) == 1:  # A wins between B's check and B's insert
            tracker.log_datasets(run_a, splits, "digits")
            raise MlflowException(
                "BAD_REQUEST: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest"
            )
        return real(run_id, datasets=datasets, **kw)

    monkeypatch.setattr(tracker.client, "log_inputs", racing)
    tracker.log_datasets(run_b, splits, "digits")
    assert calls == [run_b, run_a, run_b]
    for run_id in (run_a, run_b):
        inputs = tracker.client.get_run(run_id).inputs.dataset_inputs
        assert sorted(next(t.value for t in i.tags if t.key == "mlflow.data.context") for i in inputs) == [
            "test",
            "train",
        ]
    digests = {i.dataset.digest for r in (run_a, run_b) for i in tracker.client.get_run(r).inputs.dataset_inputs}
    assert len(digests) == 2  # one dataset row per split, shared by both runs


def test_other_dataset_logging_errors_are_not_retried(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException

    tracker, splits, _, run_b = _two_runs_and_splits(tmp_path)
    calls = []

    def broken(run_id, datasets=None, **kw):
        calls.append(run_id)
        raise MlflowException("INVALID_PARAMETER_VALUE: dataset too large")

    monkeypatch.setattr(tracker.client, "log_inputs", broken)
    with pytest.raises(MlflowException, match="too large"):
        tracker.log_datasets(run_b, splits, "digits")
    assert calls == [run_b]
