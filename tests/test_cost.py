"""psreval grid|search --dry-run: trial and twin counts, the cost model, nothing started or written.

No Ray, no training: the dry run reads sweep files and (here, a small sqlite) MLflow store only.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path

import pytest

from psreval_tune import recipes
from psreval_tune.config import CycleConfig
from psreval_tune.sweeps import cost, paper_grid, search, spec
from psreval_tune.tracking import flatten
from psreval_tune.twin_cache import TwinCache

ENV = ("PSREVAL_RUN_DIR", "MLFLOW_TRACKING_URI", "PSREVAL_RAY_ADDRESS", "PSREVAL_DATA_ROOT", "PSREVAL_STORAGE")


@pytest.fixture
def empty_cwd(tmp_path, monkeypatch):
    """An empty working directory (the default --run-dir runs is relative to it) and no sweep env vars."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def dry(main, argv, capsys) -> str:
    assert main([*argv, "--dry-run"]) == 0
    return capsys.readouterr().out


def counts(out: str) -> tuple[int, int]:
    found = re.search(r": (\d+) trials, (\d+) distinct non-private twins", out)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def total_seconds(out: str) -> float:
    return float(re.search(r"total\s+([\d,.]+) s", out).group(1).replace(",", ""))


def test_paper_grid_cifar10_one_seed(empty_cwd, capsys):
    out = dry(paper_grid.main, ["--dataset", "cifar10", "--data-root", "X"], capsys)
    # 3 epsilons x 25 settings x 2 archs; twins keyed by setting and arch, not epsilon: 25 x 2
    assert counts(out) == (150, 50)
    assert "estimate from: built-in defaults" in out and "CPU-hours" in out
    assert os.listdir(empty_cwd) == []  # no run folder, no store, no Ray session files


def test_smoke_grid_and_seeds(empty_cwd, capsys):
    assert counts(dry(paper_grid.main, ["--smoke"], capsys)) == (6, 3)  # 2 epsilons x 3 settings; 3 settings
    assert counts(dry(paper_grid.main, ["--smoke", "--seeds", "0,1"], capsys)) == (12, 6)  # a twin per seed
    assert os.listdir(empty_cwd) == []


def test_twins_are_settings_times_archs_by_hand():
    """Counted from the grid without the cost model: the key is cycle._twin's, cfg.replace(epsilon=None)."""
    resolved = spec.resolve(spec.load("paper_grid", "grid"))
    trials = [CycleConfig.from_dict(spec.flatten(t)) for t in spec.grid_trials(resolved)]
    keys = {t.replace(epsilon=None).training_key() for t in trials}
    settings = resolved["axes"]["setting"]
    assert len(trials) == 3 * len(settings) * 2 == 150 and len(settings) == 25
    assert len(keys) == len(settings) * len(resolved["axes"]["arch"]) == 50
    by_setting = {}
    for t in trials:
        by_setting.setdefault((t.threat, t.adv_fraction, t.attack, t.arch), set()).add(
            t.replace(epsilon=None).training_key()
        )
    assert all(len(k) == 1 for k in by_setting.values())  # the three epsilons of a setting share one twin


def test_the_dry_run_plans_the_twin_the_trial_trains():
    # The dry run's configs (spec.check_config) once came back through to_dict(), every recipe field set, so
    # their twins kept the DP recipe: other keys than the trials' cached twins, other twin costs.
    from psreval_tune.trainable import cycle_config

    sweep = spec.load("paper_grid", "grid")
    for params in itertools.islice(spec.grid_trials(spec.resolve(sweep)), 0, 150, 7):
        planned, trial = spec.check_config(sweep, params), cycle_config(params)
        assert cost.twin_config(planned) == cost.twin_config(trial)
        assert cost.twin_config(planned).recipe == recipes.lookup(trial.dataset, trial.arch, private=False)


def test_cached_twins_cost_nothing(empty_cwd, capsys):
    out = dry(paper_grid.main, ["--smoke"], capsys)
    trials = [
        CycleConfig.from_dict(spec.flatten(t))
        for t in spec.grid_trials(spec.resolve(spec.load(paper_grid.SMOKE_FILE, "grid")))
    ]
    cache = TwinCache(empty_cwd / "runs" / "ray_results" / "twin-cache")  # the sweep's storage: STORAGE/twin-cache
    for t in trials:
        Path(cache.path(t.replace(epsilon=None))).parent.mkdir(parents=True, exist_ok=True)
        Path(cache.path(t.replace(epsilon=None))).write_bytes(b"")
    again = dry(paper_grid.main, ["--smoke"], capsys)
    where = f"already in {empty_cwd.resolve()}/runs/ray_results/twin-cache)"
    assert float(re.search(r"twin training\s+([\d.]+) s", out).group(1)) > 0 and f"(0 {where}" in out
    assert f"(3 {where}" in again and re.search(r"twin training\s+0.0 s", again)


def test_price_per_hour(empty_cwd, capsys):
    out = dry(paper_grid.main, ["--dataset", "cifar10", "--data-root", "X", "--price-per-hour", "2.5"], capsys)
    hours = float(re.search(r"= ([\d,.]+) CPU-hours", out).group(1).replace(",", ""))
    cost_line = re.search(r"cost: ([\d,.]+) CPU-hours x 2.5 per hour = ([\d,.]+)", out)
    assert float(cost_line.group(1).replace(",", "")) == hours
    assert float(cost_line.group(2).replace(",", "")) == pytest.approx(hours * 2.5, abs=0.03)
    assert hours == pytest.approx(total_seconds(out) / 3600, rel=1e-3)  # 1 CPU per trial
    gpu = dry(paper_grid.main, ["--smoke", "--gpus-per-trial", "0.5", "--price-per-hour", "4"], capsys)
    gpu_hours = float(re.search(r"= ([\d.e-]+) GPU-hours", gpu).group(1))
    assert gpu_hours == pytest.approx(total_seconds(gpu) * 0.5 / 3600, rel=0.01)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--dry-run", "--price-per-hour", "-1"], "--price-per-hour=-1.0 is not allowed"),
        (["--dry-run", "--price-per-hour", "nan"], "--price-per-hour=nan is not allowed"),
        (["--smoke", "--price-per-hour", "1"], "not allowed without --dry-run"),
    ],
)
def test_bad_flags_one_error_line(empty_cwd, capsys, argv, words):
    for main in (paper_grid.main, search.main):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert os.listdir(empty_cwd) == []


def test_search_dry_run(empty_cwd, capsys):
    out = dry(search.main, ["--smoke"], capsys)
    assert counts(out)[0] == 6 and "ASHA may stop trials early" in out
    recipe = dry(
        search.main, ["--space", "recipe", "--archs", "cnn", "--epsilons", "3.4", "--num-samples", "5"], capsys
    )
    assert counts(recipe) == (5, 0)  # a recipe search trains no twin
    assert os.listdir(empty_cwd) == []


def test_concurrency_assumption():
    assert cost.concurrency(150, None, 2) == 2
    assert cost.concurrency(150, 8, None) == 8  # a cluster not asked: --max-concurrent
    assert cost.concurrency(150, None, None) == 1
    assert cost.concurrency(3, 8, 16) == 3
    assert cost.local_slots(2, 0.5) == 4


def smoke_trials() -> list[tuple[CycleConfig, dict, float]]:
    """The smoke grid's 6 trials as a sweep would have stored them: each dp 10 s, attack 3 s + eval 1 s,
    20 s from run start to end; the first trial of each twin trained it in 4 s, the second found it cached."""
    resolved = spec.resolve(spec.load(paper_grid.SMOKE_FILE, "grid"))
    trials, seen = [], set()
    for params in spec.grid_trials(resolved):
        cfg = CycleConfig.from_dict(spec.flatten(params))
        key = cfg.replace(epsilon=None).training_key()
        twin = {} if key in seen else {"time_train_twin_s": 4.0}
        seen.add(key)
        metrics = {"time_train_s": 10.0, "time_attack_s": 3.0, "time_eval_s": 1.0, "time_total_s": 18.0, **twin}
        trials.append((cfg, metrics, 20.0))
    return trials


# Calibrated on the same configs, the estimate is the measured sum: 6 x 10 (DP) + 3 x 4 (twins) + 6 x (3 + 1)
# (attacks/eval) + per trial wall minus its measured phases (3 x 2 + 3 x 6) + the sweep's 20 s.
HAND_COMPUTED = 6 * 10 + 3 * 4 + 6 * 4 + (3 * (20 - 18) + 3 * (20 - 14)) + 20


def run(cfg, metrics, wall, status="FINISHED"):
    from types import SimpleNamespace as NS

    info = NS(run_id=f"r{id(metrics)}", status=status, start_time=1_000_000, end_time=1_000_000 + int(wall * 1000))
    return NS(info=info, data=NS(params=flatten(cfg.record()), metrics=dict(metrics), tags={"psreval.kind": "trial"}))


class FakeClient:
    """What cost.stored_trials asks of an MlflowClient: one experiment, its runs (status filter honoured)."""

    def __init__(self, runs):
        self.runs = runs

    def get_experiment_by_name(self, name):
        from types import SimpleNamespace as NS

        return NS(experiment_id="1", name=name) if name == "psreval" else None

    def search_runs(self, ids, filter_string="", **kwargs):
        class Page(list):
            token = None

        finished = "status = 'FINISHED'" in filter_string
        return Page(r for r in self.runs if not finished or r.info.status == "FINISHED")


def test_estimate_from_fake_store_is_hand_computed(empty_cwd, capsys, monkeypatch):
    from psreval_tune import tracking
    from psreval_tune.analysis import load

    runs = [run(*trial) for trial in smoke_trials()]
    runs.append(run(*smoke_trials()[0][:2], 1e6, status="RUNNING"))  # unfinished: never read
    monkeypatch.setattr(load, "_client", lambda uri: (FakeClient(runs), uri))
    monkeypatch.setattr(tracking, "check_tracking_uri", lambda uri, **kw: None)  # no server to probe
    uri = "http://store.invalid:5000"
    out = dry(paper_grid.main, ["--smoke", "--tracking-uri", uri], capsys)
    assert f"estimate from: MLflow store {uri}, experiment 'psreval' (6 finished trials)" in out
    assert total_seconds(out) == HAND_COMPUTED == 140
    assert cost.SWEEP_OVERHEAD_S == 20  # the hand computation's
    assert re.search(r"DP training\s+60.0 s", out) and re.search(r"twin training\s+12.0 s", out)
    assert re.search(r"attacks/eval\s+24.0 s", out) and re.search(r"overhead\s+44.0 s", out)
    assert os.listdir(empty_cwd) == []


def test_unreachable_store_is_one_error_line(empty_cwd, capsys):
    assert paper_grid.main(["--smoke", "--dry-run", "--tracking-uri", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --tracking-uri=http://127.0.0.1:9: no MLflow server") and err.count("\n") == 1


def test_calibration_scales_per_arch_then_per_phase():
    cfg = smoke_trials()[0][0]
    other = cfg.replace(arch="resnet9")
    calib = cost.calibrate([cost.StoredTrial(cfg, {"time_train_s": 2 * cost.trial_phases(cfg)["dp_train"]})], "x")
    assert calib.factor("cnn", "dp_train") == pytest.approx(2)
    assert calib.factor("resnet9", "dp_train") == pytest.approx(2)  # no resnet9 trial: the phase's factor
    assert calib.factor("resnet9", "attack_eval") == 1.0  # not measured: the default
    est = cost.estimate([other], 1, calib)
    assert est.phase_s["dp_train"] == pytest.approx(2 * cost.trial_phases(other)["dp_train"])


@pytest.mark.slow
def test_estimate_from_sqlite_store(empty_cwd, tmp_path, capsys):
    """The same through a real MLflow sqlite store, found as --tracking-uri and as RUN_DIR/mlflow.db."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("psreval", artifact_location=str(tmp_path / "artifacts"))
    for cfg, metrics, wall in smoke_trials():
        r = client.create_run(exp, start_time=1_000_000, tags={"psreval.kind": "trial"})
        params = [Param(k, v) for k, v in flatten(cfg.record()).items()]
        client.log_batch(r.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()], params=params)
        client.set_terminated(r.info.run_id, "FINISHED", end_time=1_000_000 + int(wall * 1000))
    out = dry(paper_grid.main, ["--smoke", "--tracking-uri", uri], capsys)
    assert "(6 finished trials)" in out and total_seconds(out) == HAND_COMPUTED
    out = dry(paper_grid.main, ["--smoke", "--run-dir", str(tmp_path)], capsys)
    assert f"MLflow store sqlite:///{tmp_path / 'mlflow.db'}" in out and total_seconds(out) == HAND_COMPUTED


@pytest.mark.parametrize("given", [{}, {"lr": 0.05, "recipe": "digits/cnn/dp"}])
def test_a_stored_trial_rebuilds_with_its_own_twin(tmp_path, given):
    # A run's params hold every resolved field; rebuilt from them alone, a DP trial's twin kept the DP
    # recipe. record()'s recipe_set/recipe_asked say which fields the recipe filled, through a real store.
    from mlflow import MlflowClient
    from mlflow.entities import Param

    cfg = CycleConfig(dataset="digits", arch="resnet9", epsilon=3.4, **given)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.create_run(client.create_experiment("x", artifact_location=str(tmp_path / "a")))
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(cfg.record()).items()])
    stored = cost.config_from_params(client.get_run(run.info.run_id).data.params)
    assert stored == cfg
    assert cost.twin_config(stored) == cost.twin_config(cfg)
    own = recipes.fields_of(recipes.lookup("digits", "resnet9", private=False))["lr"]
    assert cost.twin_config(stored).lr == given.get("lr", own)  # own: 0.00327, the DP recipe 0.7174
    assert cost.twin_config(stored).training_key() == cost.twin_config(cfg).training_key()
