"""`psreval report` finds its store as its siblings do (--run-dir, $PSREVAL_RUN_DIR, --tracking-uri), writes its
report beside the store it reads (never into ./runs/reports of whatever folder it runs in), and a report of a
trial as wide as a real one (hundreds of metric columns) raises no pandas PerformanceWarning."""

from __future__ import annotations

import shutil
import warnings

import pandas as pd
import pytest

from psreval_tune.analysis.cli import main as cli
from psreval_tune.analysis.load import tidy
from psreval_tune.analysis.reports.overview import overview_data
from psreval_tune.analysis.reports.transfer import transfer_data
from psreval_tune.config import CycleConfig
from psreval_tune.tracking import Tracker, TrackingSpec, local_store


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A sweeps' folder elsewhere: RUN_DIR/mlflow.db with one sweep 'mini' of two non-private trials."""
    folder = tmp_path_factory.mktemp("elsewhere") / "myruns"
    uri, artifacts = local_store(folder)
    tracker = Tracker(TrackingSpec(uri, "psreval", "mini", artifacts))
    parent = tracker.sweep_run({"kind": "grid"})
    for seed in (0, 1):
        cfg = CycleConfig(dataset="digits", arch="cnn", rounds=1, eval_attacks=("FGSM",), seed=seed)
        run_id, _ = tracker.trial_run(parent, f"t{seed}", f"trial-{seed}")
        tracker.log_params(run_id, cfg.to_dict())
        final = {"acc_clean_float": 0.9, "acc_clean_int8": 0.89, "acc_wb_fgsm_worst": 0.5, "size_bytes_float": 1e5}
        tracker.log_metrics(run_id, {**final, "size_bytes_int8": 3e4, "size_reduction_pct": 70.0}, step=1)
        tracker.finish(run_id)
    tracker.finish(parent)
    return folder


@pytest.fixture
def elsewhere_cwd(tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for var in ("PSREVAL_RUN_DIR", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    return cwd


@pytest.mark.parametrize("how", ["--run-dir", "--tracking-uri", "$PSREVAL_RUN_DIR"])
def test_report_goes_beside_the_store_it_reads(run_dir, elsewhere_cwd, monkeypatch, capsys, how):
    shutil.rmtree(run_dir / "reports", ignore_errors=True)  # the module's store: no report from another way
    argv = ["report", "--sweep", "mini"]
    if how == "--run-dir":
        argv += ["--run-dir", str(run_dir)]
    elif how == "--tracking-uri":
        argv += ["--tracking-uri", f"sqlite:///{run_dir / 'mlflow.db'}"]
    else:
        monkeypatch.setenv("PSREVAL_RUN_DIR", str(run_dir))
    assert cli(argv) == 0, capsys.readouterr().err
    assert (run_dir / "reports" / "mini" / "report.html").is_file()
    assert not (elsewhere_cwd / "runs").exists()  # nothing in the folder it ran in
    assert str(run_dir / "reports" / "mini") in capsys.readouterr().out


def test_run_dir_without_a_store_or_with_a_uri_is_one_line(elsewhere_cwd, run_dir, capsys):
    assert cli(["report", "--run-dir", str(elsewhere_cwd)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --run-dir='{elsewhere_cwd}' holds no MLflow store") and err.count("\n") == 1
    assert cli(["report", "--run-dir", str(run_dir), "--tracking-uri", f"sqlite:///{run_dir}/mlflow.db"]) == 2
    assert "does not combine with --run-dir" in capsys.readouterr().err
    assert not (elsewhere_cwd / "runs").exists()


def test_help_names_run_dir_like_its_siblings(capsys):
    with pytest.raises(SystemExit):
        cli(["report", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: psreval report ")
    assert "--run-dir RUN_DIR" in out and "beside the store" in out


def _wide_trials() -> pd.DataFrame:
    """Six private trials with the hundreds of metric columns a real private trial logs (transfer and cross-seed
    matrices with their intervals)."""
    names = [
        f"acc_{kind}_{a}_{g}_to_{t}_{stat}"
        for kind in ("transfer", "xseed")
        for a in ("pgd", "fgsm")
        for g in ("nonprivate", "dp")
        for t in ("nonprivate", "dp", "int8_nonprivate", "int8_dp")
        for stat in ("worst", "worst_ci_low", "worst_ci_high", "mean", "std")
    ]
    rows, keys = [], set()
    for i, (eps, seed) in enumerate([(e, s) for e in (3.4, 7.0) for s in (0, 1, 2)]):
        metrics = {n: 0.5 for n in names}
        metrics.update(acc_clean_float=0.8, acc_clean_int8=0.79, acc_clean_float_nonprivate=0.95)
        metrics.update(acc_clean_int8_nonprivate=0.94, size_bytes_float=1e5, size_bytes_int8=3e4)
        metrics.update(size_reduction_pct=70.0, acc_wb_pgd_worst=0.4, acc_wb_fgsm_worst=0.45)
        cfg = CycleConfig(dataset="digits", arch="cnn", epsilon=eps, seed=seed).to_dict()
        cfg = {k: ",".join(map(str, v)) if isinstance(v, (list, tuple)) else v for k, v in cfg.items()}
        cfg = {k: v for k, v in cfg.items() if not isinstance(v, dict)}
        rows.append({"sweep": "s", "trial_id": f"t{i}", "run_id": f"r{i}", **cfg, **metrics})
        keys |= set(metrics)
    return tidy(rows, metrics=keys)


def test_a_wide_store_reports_without_performance_warnings():
    trials = _wide_trials()
    assert len(trials.columns) > 200
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.PerformanceWarning)  # 115 of them before (transfer, overview)
        data = transfer_data(trials, ["PGD", "FGSM"])
        overview_data(trials)
    assert len(data) == 2 * 2 * 4 * 2  # epsilons x attacks x generators x targets
