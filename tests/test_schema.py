"""psreval_tune/schema.py: every metric a cycle emits is declared once (name, direction, unit, when), and
the analysis tells a trial's metrics from its params by their source, never by a metric's name."""

from __future__ import annotations

import json
import sys

import pytest

from psreval_tune import schema
from psreval_tune.analysis.build import describe
from psreval_tune.analysis.frames import setting_columns
from psreval_tune.analysis.load import config_columns, load_tune, metric_columns


@pytest.mark.parametrize(
    "name, template, statistic, direction, unit, when",
    [
        ("acc_wb_pgd_mean", "acc_wb_{attack}_mean", "value", "higher", "fraction", "final"),
        ("acc_wb_fgsm_ci_low", "acc_wb_{attack}_ci_low", "ci_low", "higher", "fraction", "final"),
        ("acc_wb_pgd_std", "acc_wb_{attack}_std", "std", "none", "fraction", "final"),
        ("acc_wb_pgd_int8_bpda_mean", "acc_wb_{attack}_int8_bpda_mean", "value", "higher", "fraction", "final"),
        (
            "acc_transfer_fab_nonprivate_to_int8_dp_ci_high",
            "acc_transfer_{attack}_{generator}_to_{target}_ci_high",
            "ci_high",
            "higher",
            "fraction",
            "final",
        ),
        ("acc_clean_float_nonprivate", "acc_clean_float_{model}", "value", "higher", "fraction", "final"),
        ("acc_loss_wb_pgd_int8", "acc_loss_wb_{attack}_int8", "value", "lower", "fraction", "final"),
        ("time_train_twin_s", "time_{phase}_s", "value", "lower", "seconds", "final"),
        ("size_bytes_int8", "size_bytes_int8", "value", "lower", "bytes", "final"),
        ("epsilon", "epsilon", "value", "lower", "epsilon", "per_round"),
        ("train_loss", "train_loss", "value", "lower", "loss", "per_round"),
        ("asr_int8_ci_low", "asr_int8_ci_low", "ci_low", "lower", "fraction", "final"),
        ("client_epsilon_spent", "client_epsilon_spent", "value", "lower", "epsilon", "final"),
        ("system/cpu_utilization_percentage", "system/{name}", "value", "none", "various", "sampled"),
    ],
)
def test_lookup_gives_template_direction_unit_and_when(name, template, statistic, direction, unit, when):
    m = schema.lookup(name)
    assert m is not None, name
    assert (m.template, m.statistic, m.direction, m.unit, m.when) == (template, statistic, direction, unit, when)
    assert schema.is_metric(name)


@pytest.mark.parametrize("name", ["seed", "dataset", "acc_wb_pgd", "acc_transfer_pgd_dp_to_cpu_mean", "mystery", ""])
def test_names_not_declared_are_not_metrics(name):
    assert schema.lookup(name) is None and not schema.is_metric(name)


def test_new_attacks_match_the_templates():
    """Attack names come from the registry, so templates take any attack; a new one needs no schema edit."""
    assert schema.is_metric("acc_wb_cw_mean") and schema.is_metric("acc_transfer_cw_dp_to_int8_dp_mean")


def test_schema_imports_nothing_heavy():
    code = "import sys, psreval_tune.schema; print(sorted({'torch', 'pandas', 'numpy'} & set(sys.modules)))"
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _tune_trial(folder, seed: int, final: dict) -> None:
    folder.mkdir(parents=True)
    space = {"dataset": "digits", "arch": "cnn", "epsilon": 3.4, "seed": seed, "eval_attacks": ["PGD"]}
    (folder / "params.json").write_text(json.dumps(space))
    lines = [{"round": 1, "train_loss": 1.0, "acc_val": 0.5, "epsilon": 1.0, "training_iteration": 1}]
    lines.append({**lines[0], **final, "cycle_complete": 1, "trial_id": folder.name})
    (folder / "result.json").write_text("\n".join(json.dumps(x) for x in lines) + "\n")


def test_a_metric_not_in_the_schema_is_reported_not_grouped_by(tmp_path, caplog):
    """A metric the schema does not know (here mystery_score, different in every seed) stays a metric: it is
    named in the frame and the report's summary, and never becomes a setting column that would split seeds."""
    root = tmp_path / "sweep"
    for seed in (0, 1, 2):
        final = {"acc_clean_float": 0.8 + seed / 100, "n_test": 100, "mystery_score": 10.0 + seed}
        _tune_trial(root / f"trial_{seed}", seed, final)
    trials = load_tune(root)
    assert len(trials) == 3
    assert "mystery_score" in metric_columns(trials) and "mystery_score" not in config_columns(trials)
    assert "mystery_score" not in setting_columns(trials)
    assert list(trials.attrs["unknown_metrics"]) == ["mystery_score"]
    assert "mystery_score" in caplog.text
    assert ("metrics not in psreval_tune/schema.py (not grouped by)", "mystery_score") in describe(trials, "test")
    # per-round values and Tune's bookkeeping are neither metrics nor config
    assert not {"round", "train_loss", "acc_val", "training_iteration"} & set(trials.columns)
    assert trials["epsilon"].tolist() == [3.4] * 3  # the config's, not the last round's


SMALL = dict(dataset="digits", arch="cnn", rounds=1, eval_samples=32, attack_repeats=1, train_samples=200)


@pytest.mark.slow
@pytest.mark.parametrize(
    "setting",
    [
        dict(epsilon=3.0),  # private: the twin, every attack, transfer cells, DP book-keeping
        dict(threat="backdoor", adv_fraction=0.2, eval_attacks=("FGSM",)),  # asr_*, n_asr
    ],
    ids=["private", "backdoor"],
)
def test_every_metric_a_real_cycle_emits_is_declared(setting):
    """One short cycle: each final and per-round key it emits is in the schema."""
    from psreval_tune.config import CycleConfig
    from psreval_tune.cycle import run_cycle

    result = run_cycle(CycleConfig(**SMALL, test_samples=100, batch_size=32, **setting))
    assert schema.unknown(result.metrics) == []
    assert all(schema.is_final(k) for k in result.metrics), [k for k in result.metrics if not schema.is_final(k)]
    rounds = {k for r in result.history for k in r}
    assert schema.unknown(rounds) == []
    assert all(schema.lookup(k).when == schema.PER_ROUND for k in rounds)
    if "threat" in setting:
        assert {"asr_float", "asr_int8_ci_high", "n_asr"} <= set(result.metrics)


def test_a_declared_template_looks_itself_up():
    assert schema.direction("acc_wb_{attack}_mean") == schema.HIGHER
    assert schema.unit("time_{phase}_s") == "seconds"
