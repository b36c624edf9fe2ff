"""Sweep files (psreval_tune/sweeps/files/*.yaml, psreval_tune/sweeps/spec.py) and the search space.

Everything here runs in this process without Ray, except one `psreval grid BAD.yaml` subprocess and
the check on the session's smoke sweep (tests/conftest.py runs it once for several tests).
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from psreval_tune import recipes
from psreval_tune.config import CycleConfig
from psreval_tune.sweeps import paper_grid, search, spec
from psreval_tune.sweeps.engine import SWEEP_FLAGS_FILE, _storage, _stored_flags

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {
    "paper_grid": "grid",
    "paper_smoke": "grid",
    "demo": "grid",
    "demo_search": "search",
    "paper_search": "search",
    "robust_fl": "grid",
    "robust_fl_core": "grid",
    "robust_search": "search",
}


def grid(tmp_path, *argv: str):
    """(param space, sweep file, resolved) of `psreval grid ARGV`, as main builds them."""
    p = paper_grid.parser("t")
    spec.add_file_argument(p, paper_grid.DEFAULT_FILE, paper_grid.SMOKE_FILE)
    argv = [*argv, "--run-dir", str(tmp_path / "runs")]
    args = p.parse_args(argv)
    return (*paper_grid.grid(args, spec.given_flags(p, argv)), args)


def trials(space: dict) -> list[dict]:
    """Tune's expansion of a grid param space (the last axis varies fastest), flattened to config fields."""
    axes = {k: v["grid_search"] for k, v in space.items() if isinstance(v, dict) and "grid_search" in v}
    fixed = {k: v for k, v in space.items() if k not in axes}
    return [spec.flatten({**fixed, **dict(zip(axes, combo))}) for combo in itertools.product(*axes.values())]


def write(tmp_path: Path, text: str, name: str = "sweep.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def smoke_text(**changes: str) -> str:
    text = (spec.FILES_DIR / "paper_smoke.yaml").read_text()
    for old, new in changes.items():
        assert old in text
        text = text.replace(old, new)
    return text


# --- the shipped files ------------------------------------------------------------------------------


def test_shipped_files_load_and_validate():
    assert set(spec.shipped()) == set(SHIPPED)
    for name, kind in SHIPPED.items():
        sweep = spec.load(name, kind)
        assert sweep.kind == kind and sweep.source == f"{name}.yaml"
        assert sweep.doc["description"]
    # the smoke setting is written out in the smoke files: the same as recipes.SMOKE
    for name in ("paper_smoke", "demo_search"):
        fixed = spec.load(name).doc["fixed"]
        assert {k: fixed[k] for k in recipes.SMOKE} == recipes.SMOKE
    # the search objectives the code allows are the trainable's validation metrics
    from psreval_tune.trainable import SELECTION_METRICS

    assert search.SELECTION_METRICS == SELECTION_METRICS


# The smoke grid as paper_grid.py built it from Python constants before the sweep files (git 4031040).
SMOKE_FIXED = {
    "dataset": "digits",
    "arch": "cnn",
    "eval_samples": 64,
    "rounds": 3,
    "local_epochs": 1,
    "batch_size": 128,
    "lr": 0.2,
    "lr_schedule": "constant",
    "warmup_rounds": 0,
    "eval_attacks": ["PGD", "FGSM"],
    "attack_repeats": 1,
}
SMOKE_SETTINGS = [
    {"threat": "none", "adv_fraction": 0.0, "attack": "PGD"},
    {"threat": "adv_training", "adv_fraction": 0.2, "attack": "FGSM"},
    {"threat": "train_time_attack", "adv_fraction": 0.2, "attack": "FGSM"},
]


def test_smoke_file_is_the_smoke_grid(tmp_path):
    space, sweep, _, _ = grid(tmp_path, "--smoke")
    assert sweep.source == "paper_smoke.yaml"
    assert space == {
        **SMOKE_FIXED,
        "epsilon": {"grid_search": [3.4, 7.0]},
        "setting": {"grid_search": SMOKE_SETTINGS},
        "seed": {"grid_search": [0]},
    }
    assert list(space) == [*SMOKE_FIXED, "epsilon", "setting", "seed"]  # Tune's trial order
    assert len(trials(space)) == 6
    assert grid(tmp_path, "paper_smoke")[0] == space  # by name: the same


def test_paper_grid_file_is_the_papers_grid(tmp_path):
    # 3 epsilons x (no threat + 2 threats x 4 fractions x 3 attacks) x 2 archs = 150 trials per seed
    settings = [("none", 0.0, "PGD")] + list(
        itertools.product(("adv_training", "train_time_attack"), (0.1, 0.2, 0.3, 0.4), ("PGD", "FGSM", "FAB"))
    )
    expected = {
        (eps, *s, arch, seed)
        for eps, s, arch, seed in itertools.product((1.7, 3.4, 7.0), settings, ("resnet9", "resnet18"), (0,))
    }
    space, sweep, _, _ = grid(tmp_path)
    assert sweep.source == "paper_grid.yaml" and list(space)[-4:] == ["epsilon", "setting", "arch", "seed"]
    got = trials(space)
    assert len(got) == len(expected) == 150
    assert {(t["epsilon"], t["threat"], t["adv_fraction"], t["attack"], t["arch"], t["seed"]) for t in got} == expected
    assert all(
        t["dataset"] == "digits" and t["delta"] == 1e-5 and t["attack_repeats"] == 10 and t["eval_samples"] is None
        for t in got
    )
    # the per-dataset values, and --seeds as the seed axis
    cifar = trials(grid(tmp_path, "--dataset", "cifar10", "--data-root", str(tmp_path))[0])
    assert {(t["delta"], t["eval_samples"], t["data_root"]) for t in cifar} == {(1e-5, 2000, str(tmp_path))}
    pneumonia = trials(grid(tmp_path, "--dataset", "pneumonia", "--data-root", str(tmp_path), "--seeds", "0,1")[0])
    assert len(pneumonia) == 300 and {(t["delta"], t["eval_samples"]) for t in pneumonia} == {(1e-4, None)}
    assert (paper_grid.DELTA, paper_grid.EVAL_SAMPLES) == ({"cifar10": 1e-5, "pneumonia": 1e-4}, {"cifar10": 2000})


# --- a file's values, flags over them, the resolved file ---------------------------------------------


def test_mapping_fields_stay_whole_and_pseudo_axes_merge(tmp_path):
    """threat_params in fixed is a field whose value is a mapping (kept whole); a pseudo-axis value is
    a mapping of fields (merged in)."""
    text = (
        "kind: grid\nfixed: {dataset: digits, num_clients: 10, threat_params: {z: 5.0}}\n"
        "axes: {privacy: [{epsilon: null}, {epsilon: 8.0}], setting: [{threat: alie, num_malicious: 3}]}\n"
    )
    path = tmp_path / "g.yaml"
    path.write_text(text)
    sweep = spec.load(str(path), "grid")
    trials = [spec.check_config(sweep, t) for t in spec.grid_trials(spec.resolve(sweep))]
    assert [(c.epsilon, c.threat, c.num_malicious, c.threat_params) for c in trials] == [
        (None, "alie", 3, {"z": 5.0}),
        (8.0, "alie", 3, {"z": 5.0}),
    ]


def test_changed_file_value_changes_the_trials(tmp_path):
    path = write(tmp_path, smoke_text(**{"epsilon: [3.4, 7.0]": "epsilon: [3.4]"}))
    space, sweep, _, _ = grid(tmp_path, path)
    assert sweep.source == path and len(trials(space)) == 3
    assert {t["epsilon"] for t in trials(space)} == {3.4}


def test_flags_override_the_file_and_defaults_do_not(tmp_path):
    path = write(
        tmp_path,
        smoke_text(**{"attack_repeats: 1": "attack_repeats: 5"}) + "resources: {max_concurrent: 3, max_failures: 0}\n",
    )
    space, sweep, resolved, _ = grid(tmp_path, path)  # no flags: argparse's defaults change nothing
    assert space["attack_repeats"] == 5 and space["seed"] == {"grid_search": [0]} and sweep.flags == []
    assert resolved["resources"] == {
        "cpus_per_trial": 1.0,
        "gpus_per_trial": 0.0,
        "max_concurrent": 3,
        "max_failures": 0,
    }
    space, sweep, resolved, args = grid(
        tmp_path, path, "--attack-repeats", "2", "--seeds", "1,2", "--max-concurrent", "1"
    )
    assert space["attack_repeats"] == 2 and space["seed"] == {"grid_search": [1, 2]} and len(trials(space)) == 12
    assert resolved["resources"]["max_concurrent"] == 1 and resolved["resources"]["max_failures"] == 0
    assert sweep.flags == ["--attack-repeats", "--max-concurrent", "--seeds"]
    spec.use_resources(args, resolved)
    assert (args.max_concurrent, args.max_failures) == (1, 0)  # what run_sweep reads
    # a search: the file's num_samples and asha unless given
    text = (spec.FILES_DIR / "demo_search.yaml").read_text().replace("num_samples: 6", "num_samples: 3")
    argv = [write(tmp_path, text, "s.yaml"), "--run-dir", str(tmp_path / "runs")]
    assert search.load(argv)[2]["num_samples"] == 3
    _, sweep, resolved = search.load([*argv, "--num-samples", "4", "--asha-grace", "1"])
    assert resolved["num_samples"] == 4 and resolved["asha"] == {"metric": "acc_val", "grace": 1}


def test_resolved_file_reproduces_the_sweep(tmp_path):
    space, sweep, resolved, _ = grid(tmp_path, "--smoke", "--seeds", "0,3", "--attack-repeats", "2")
    text = spec.dump(resolved, sweep.source, sweep.flags)
    assert text.startswith("# The resolved sweep: paper_smoke.yaml with --attack-repeats --seeds.")
    again, _, resolved_again, _ = grid(tmp_path, write(tmp_path, text))
    assert again == space and resolved_again == resolved
    # a search (a flag-made param and conditions survive the round trip)
    _, sweep, resolved = search.load(["--smoke", "--lr", "0.2,0.0001", "--run-dir", str(tmp_path / "runs")])
    text = spec.dump(resolved, sweep.source, sweep.flags)
    assert yaml.safe_load(text)["params"]["lr"] == [0.2, 0.0001]
    assert search.load([write(tmp_path, text, "s.yaml"), "--run-dir", str(tmp_path / "runs")])[2] == resolved


def test_search_flags_over_the_shipped_files(tmp_path):
    runs = ["--run-dir", str(tmp_path / "runs")]
    _, sweep, resolved = search.load([*runs])
    assert sweep.source == "paper_search.yaml" and resolved["num_samples"] == 8 and resolved["space"] == "paper"
    assert list(resolved["objectives"]) == ["acc_val_float", "acc_val_wb_pgd"]
    # --smoke --lr: the smoke setting's fixed lr gives way to the searched one
    _, _, resolved = search.load(["--smoke", "--lr", "0.2,0.0001", *runs])
    assert "lr" not in resolved["fixed"] and resolved["params"]["lr"] == {"choices": [0.2, 0.0001]}
    # --space recipe: one setting (fixed), the paper params gone, the recipe's objective
    _, _, resolved = search.load(["--smoke", "--space", "recipe", "--archs", "cnn", "--epsilons", "none", *runs])
    assert resolved["space"] == "recipe" and resolved["params"] == {}
    assert resolved["objectives"] == {"acc_val_float": "max"}
    assert {k: resolved["fixed"][k] for k in ("arch", "epsilon", "threat", "eval_attacks", "train_twin")} == {
        "arch": "cnn",
        "epsilon": None,
        "threat": "none",
        "eval_attacks": ["FGSM"],
        "train_twin": False,
    }


# --- bad files: one line, exit 2, nothing started -------------------------------------------------


BAD = [
    (
        "unknown-top-key",
        "kind: grid\naxis: {epsilon: [1.0]}\n",
        ["unknown key 'axis'", "allowed: kind, description, fixed, by_dataset, axes, resources"],
    ),
    ("unknown-field", "kind: grid\nfixed: {epsilonn: 3.4}\n", ["fixed.epsilonn is not allowed", "CycleConfig field"]),
    ("unknown-axis", "kind: grid\naxes: {threats: [none]}\n", ["axes.threats is not allowed", "pseudo-axis setting"]),
    ("wrong-type", "kind: grid\nfixed: {rounds: '3'}\n", ["fixed.rounds='3' is not allowed", "an integer"]),
    ("exponent-as-text", "kind: grid\nfixed: {delta: 1e-5}\n", ["fixed.delta='1e-5'", "write the mantissa"]),
    ("axis-not-list", "kind: grid\naxes: {epsilon: 3.4}\n", ["axes.epsilon is a number", "non-empty list"]),
    ("setting-not-mapping", "kind: grid\naxes: {setting: [none]}\n", ["axes.setting[0] is a text", "mapping"]),
    (
        "set-by-two-pseudo-axes",
        "kind: grid\naxes: {setting: [{epsilon: 1.0}], privacy: [{epsilon: 2.0}]}\n",
        ["axes.setting[0].epsilon is also set by axes.privacy"],
    ),
    (
        "set-twice",
        "kind: grid\nfixed: {threat: none}\naxes: {setting: [{threat: none}]}\n",
        ["axes.setting[0].threat is also set by fixed"],
    ),
    ("duplicate-key", "kind: grid\nfixed: {rounds: 3}\nfixed: {rounds: 4}\n", ["key 'fixed' appears twice"]),
    ("bad-yaml", "kind: grid\nfixed: {rounds: 3\n", ["not valid YAML", "line"]),
    ("empty", "", ["a null is not allowed at the top", "kind: grid|search"]),
    ("no-kind", "fixed: {}\n", ["no 'kind' key"]),
    ("bad-kind", "kind: random\n", ["kind='random' is not allowed", "grid or search"]),
    ("search-file", (spec.FILES_DIR / "demo_search.yaml").read_text(), ["is a search file", "psreval search"]),
    ("config-value", "kind: grid\naxes: {epsilon: [-1.0]}\n", ["epsilon=-1.0 is not allowed", "> 0"]),
    ("bad-resources", "kind: grid\nresources: {cpus: 2}\n", ["unknown key resources.'cpus'", "cpus_per_trial"]),
    (
        "cuda-without-gpus",  # Ray hides every GPU from a trial without a GPU share: each trial could only fail
        "kind: grid\nfixed: {device: cuda}\n",
        ["device='cuda' is not allowed with gpus_per_trial=0", "--gpus-per-trial"],
    ),
    ("missing-file", None, ["does not exist", "paper_smoke"]),
]


@pytest.fixture(autouse=True)
def _no_sweep(monkeypatch):
    """No test in this file may start a sweep here (a file wrongly accepted fails, not runs)."""

    def refuse(*args, **kwargs):
        raise AssertionError("a sweep started")

    monkeypatch.setattr(paper_grid, "run_sweep", refuse)
    monkeypatch.setattr(search, "run_sweep", refuse)


def _run_main(main, argv: list[str], capsys) -> tuple[int, list[str], float]:
    start = time.monotonic()
    try:
        rc = main(argv)
    except SystemExit as exc:  # argparse
        rc = exc.code
    lines = capsys.readouterr().err.strip().splitlines()
    return rc, lines, time.monotonic() - start


@pytest.mark.parametrize("case, text, expect", BAD, ids=[c[0] for c in BAD])
def test_bad_grid_file_is_one_line_before_anything_starts(tmp_path, capsys, case, text, expect):
    import ray

    path = str(tmp_path / "missing.yaml") if text is None else write(tmp_path, text)
    rc, lines, seconds = _run_main(paper_grid.main, [path, "--run-dir", str(tmp_path / "runs")], capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(e in lines[0] for e in expect), lines[0]
    assert seconds < 10 and not ray.is_initialized()
    assert not (tmp_path / "runs").exists()  # nothing created: no store, no Tune folder


BAD_SEARCH = [
    (
        "condition-below",
        "params:\n  adv_fraction: {choices: [0.2], when: {threat: [adv_training]}}\n  threat: [none, adv_training]\n",
        ["params.adv_fraction.when.threat is not allowed", "names a param above"],
    ),
    ("range-and-int", "params:\n  rounds: {low: 1.5, high: 4}\n", ["params.rounds.low=1.5", "an integer"]),
    ("list-field", "params:\n  eval_attacks: [[PGD], [FGSM]]\n", ["params.eval_attacks is not allowed", "in fixed"]),
    (
        "objective-test-metric",
        "params: {epsilon: [3.4]}\nobjectives: {acc_clean_float: max}\n",
        ["objectives.acc_clean_float is not allowed", "validation metrics only"],
    ),
    ("asha-metric", "params: {epsilon: [3.4]}\nasha: {metric: acc_clean}\n", ["asha.metric='acc_clean'", "acc_val"]),
    ("mode", "params: {epsilon: [3.4]}\nobjectives: {acc_val_float: up}\n", ["objectives.acc_val_float='up'"]),
    ("recipe-with-params", "space: recipe\nparams: {lr: [0.1]}\n", ["params.lr is not allowed with space: recipe"]),
    ("empty-params", "params: {}\n", ["params is empty"]),
    ("seed-in-fixed", "fixed: {seed: 1}\nparams: {epsilon: [3.4, 7.0]}\n", ["fixed.seed is not allowed"]),
]


@pytest.mark.parametrize("case, text, expect", BAD_SEARCH, ids=[c[0] for c in BAD_SEARCH])
def test_bad_search_file_is_one_line_before_anything_starts(tmp_path, capsys, case, text, expect):
    import ray

    path = write(
        tmp_path, "kind: search\nfixed: {dataset: digits}\n" + text if "fixed:" not in text else "kind: search\n" + text
    )
    rc, lines, seconds = _run_main(search.main, [path, "--run-dir", str(tmp_path / "runs")], capsys)
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("error: "), lines
    assert all(e in lines[0] for e in expect), lines[0]
    assert seconds < 10 and not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_smoke_with_a_file_and_a_flag_over_a_file_are_one_line(tmp_path, capsys):
    rc, lines, _ = _run_main(paper_grid.main, ["paper_grid", "--smoke", "--run-dir", str(tmp_path)], capsys)
    assert rc == 2 and lines == [
        "error: --smoke runs the shipped paper_smoke file; give a sweep file (paper_grid) or --smoke, not both"
    ]
    rc, lines, _ = _run_main(paper_grid.main, ["--smoke", "--dataset", "imagenet", "--run-dir", str(tmp_path)], capsys)
    assert rc == 2 and len(lines) == 1
    assert lines[0].startswith("error: paper_smoke.yaml + --dataset: dataset='imagenet' is not allowed")


def test_psreval_grid_bad_file_subprocess(tmp_path):
    """The real command: one line, exit 2, in seconds (the file is read before torch or Ray Tune load)."""
    path = write(tmp_path, "kind: grid\nfixed: {rounds: 3}\naxes: {epsilon: [3.4], threats: [none]}\n")
    start = time.monotonic()
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "psreval"), "grid", path, "--run-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    seconds = time.monotonic() - start
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {path}: axes.threats is not allowed; expected a CycleConfig field "
        f"(or the pseudo-axis setting, privacy): {', '.join(spec.FIELDS)}"
    ]
    assert seconds < 30, seconds  # a hang guard only (9.7 s idle, 18.5 s at load 5): what keeps it quick is below
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]
    # the file is refused before torch or Ray Tune is imported (what makes the refusal take seconds, not tens)
    probe = (
        "import sys\nfrom psreval_tune.console import main\n"
        f"try:\n    main(['grid', {path!r}, '--run-dir', {str(tmp_path / 'runs')!r}])\n"
        "except SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'ray.tune') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.stdout.strip() == "[]", (proc.stdout, proc.stderr)


def test_resume_refuses_a_changed_file(tmp_path, capsys, monkeypatch):
    """The resolved sweep is recorded with the flags; --resume with a changed file is refused in one line."""
    from psreval_tune.sweeps.engine import SweepError, preflight

    def checks_only(args, sweep_spec):  # run_sweep's checks before Ray starts, then stop
        preflight(args, _storage(args), args.name, f"{_storage(args)}/{args.name}")
        raise SweepError("the resume checks passed")

    monkeypatch.setattr(paper_grid, "run_sweep", checks_only)
    runs = tmp_path / "runs"
    path = write(tmp_path, smoke_text())
    p = paper_grid.parser("t")
    spec.add_file_argument(p, paper_grid.DEFAULT_FILE, paper_grid.SMOKE_FILE)
    args = p.parse_args([path, "--name", "rs", "--run-dir", str(runs)])
    _, _, resolved = paper_grid.grid(args)
    args.sweep = spec.identity(resolved)  # as main records it when the sweep starts
    folder = Path(_storage(args)) / "rs"
    folder.mkdir(parents=True)
    (folder / SWEEP_FLAGS_FILE).write_text(json.dumps(_stored_flags(args)))
    resume = ["--resume", "--name", "rs", "--run-dir", str(runs)]
    write(tmp_path, smoke_text(**{"epsilon: [3.4, 7.0]": "epsilon: [3.4]"}))
    rc, lines, _ = _run_main(paper_grid.main, [path, *resume], capsys)
    assert rc == 2 and lines == [
        "error: --resume: the sweep file's axes.epsilon=[3.4] differs from the sweep's "
        "axes.epsilon=[3.4, 7.0]; resume with the sweep file and flags it was started with "
        "(its sweep.yaml in MLflow), or start a new sweep (another --name)"
    ]
    # the same content (at another path, resources changed) passes
    other = write(tmp_path, smoke_text() + "resources: {max_concurrent: 1}\n", "moved.yaml")
    rc, lines, _ = _run_main(paper_grid.main, [other, *resume], capsys)
    assert rc == 2 and lines == ["error: the resume checks passed"]


# --- the search space ---------------------------------------------------------------------------


def _sample(params: dict, fixed: dict, n: int, seed: int = 0) -> list[tuple[dict, dict]]:
    """(Optuna's params, the whole config) of n trials of the define-by-run space, told a random value."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=10))
    out = []
    for i in range(n):
        trial = study.ask()
        config = search.conditional_space(trial, params=params, fixed=fixed)
        study.tell(trial, float(i % 7))
        out.append((dict(trial.params), config))
    return out


def test_conditional_space_samples_only_what_matters():
    resolved = search.load(["--run-dir", "/nonexistent-not-created"])[2]  # paper_search.yaml
    samples = _sample(resolved["params"], search.trial_fixed(resolved), 200)
    threats = {config["threat"] for _, config in samples}
    attacks = {config.get("attack") for _, config in samples}
    assert threats == {"none", "adv_training", "train_time_attack"} and attacks == {None, "PGD", "FGSM"}
    for params, config in samples:
        cfg = CycleConfig.from_dict(config)  # every proposal is a valid cycle
        if config["threat"] == "none":  # no fraction, no training attack, no step size without a threat
            assert not {"adv_fraction", "attack", "attack_alpha"} & set(params) and cfg.adv_fraction == 0
        else:
            assert cfg.adv_fraction in (0.1, 0.2, 0.3, 0.4) and "attack" in params
        if config.get("attack") == "FGSM":  # one step of attack_eps: no step size sampled
            assert "attack_alpha" not in params
        if config.get("attack") == "PGD":
            assert 0.5 / 255 <= params["attack_alpha"] <= 8 / 255
    assert any("attack_alpha" in p for p, _ in samples)


def test_enumerated_space_counts_each_config_once():
    params = spec.check_params(
        {
            "epsilon": [3.4, 7.0],
            "threat": ["none", "adv_training"],
            "adv_fraction": {"choices": [0.2, 0.4], "when": {"threat": ["adv_training"]}},
            "attack": {"choices": ["PGD", "FGSM"], "when": {"threat": ["adv_training"]}},
        },
        {},
        spec.SweepFile("t", Path("t"), "", {}).fail,
    )
    configs = list(search.enumerate_space(params, {"dataset": "digits"}))
    assert len(configs) == 2 * (1 + 2 * 2) == len({json.dumps(c, sort_keys=True) for c in configs})


def _searcher(params: dict, fixed: dict, metric, mode, distinct=None):
    import functools

    space = functools.partial(search.conditional_space, params=params, fixed=fixed)
    return search.searcher_class()(space=space, metric=metric, mode=mode, seed=0, distinct=distinct)


def test_searcher_never_proposes_a_config_twice():
    params = spec.check_params(
        {
            "epsilon": [3.4, 7.0],
            "threat": ["none", "adv_training"],
            "adv_fraction": {"choices": [0.2], "when": {"threat": ["adv_training"]}},
        },
        {},
        spec.SweepFile("t", Path("t"), "", {}).fail,
    )
    fixed = {"dataset": "digits", "seed": 0}
    distinct = len(list(search.enumerate_space(params, fixed)))
    assert distinct == 4
    searcher = _searcher(params, fixed, "acc_val_float", "max", distinct=distinct)
    proposed = []
    for i in range(10):
        config = searcher.suggest(f"t{i}")
        if not isinstance(config, dict):
            break
        proposed.append(json.dumps(config, sort_keys=True))
        searcher.on_trial_complete(f"t{i}", {"acc_val_float": 0.5})
    assert len(proposed) == len(set(proposed)) == 4 and config == "FINISHED"
    # an infinite space (a range) proposes without end, never a repeat
    rng = spec.check_params(
        {"threat": ["none", "adv_training"], "lr": {"low": 0.01, "high": 0.1}},
        {},
        spec.SweepFile("t", Path("t"), "", {}).fail,
    )
    searcher = _searcher(rng, fixed, "acc_val_float", "max")
    seen = set()
    for i in range(12):
        seen.add(json.dumps(searcher.suggest(f"r{i}"), sort_keys=True))
        searcher.on_trial_complete(f"r{i}", {"acc_val_float": i / 12})
    assert len(seen) == 12


@pytest.mark.parametrize("multi", [False, True])
def test_stopped_trial_reaches_optuna_as_pruned(multi, caplog):
    """ASHA stops a trial before its final result: its objectives are the NaN placeholders of the
    per-round results. Optuna must record it PRUNED, with no 'value nan is not acceptable'."""
    from optuna.trial import TrialState

    params = spec.check_params(
        {"epsilon": [3.4, 7.0], "lr": {"low": 0.01, "high": 0.1}}, {}, spec.SweepFile("t", Path("t"), "", {}).fail
    )
    metric = ["acc_val_float", "acc_val_wb_pgd"] if multi else "acc_val_float"
    mode = ["max", "max"] if multi else "max"
    searcher = _searcher(params, {"dataset": "digits", "seed": 0}, metric, mode)
    nan = {"acc_val_float": math.nan, "acc_val_wb_pgd": math.nan}
    with caplog.at_level(logging.WARNING):
        for tid in ("stopped", "done", "error"):
            searcher.suggest(tid)
            searcher.on_trial_result(tid, {**nan, "acc_val": 0.5, "training_iteration": 1})
        searcher.on_trial_complete("stopped", {**nan, "acc_val": 0.5, "training_iteration": 1})
        searcher.on_trial_complete("done", {"acc_val_float": 0.9, "acc_val_wb_pgd": 0.4, "training_iteration": 4})
        searcher.on_trial_complete("error", None, error=True)
    states = [(t.state, t.values) for t in searcher._ot_study.trials]
    done = [0.9, 0.4] if multi else [0.9]
    assert states == [(TrialState.PRUNED, None), (TrialState.COMPLETE, done), (TrialState.FAIL, None)]
    assert not any("nan" in r.getMessage().lower() for r in caplog.records), caplog.text
    # Ray's own OptunaSearch, for comparison: the same stopped trial is a NaN result Optuna refuses
    # (its warning may be filtered by the sweep console's exact-message filter), left RUNNING for good
    from ray.tune.search.optuna import OptunaSearch

    plain = OptunaSearch(space=searcher._space, metric=metric, mode=mode, seed=0)
    plain.suggest("stopped")
    plain.on_trial_complete("stopped", {**nan, "training_iteration": 1})
    assert plain._ot_study.trials[0].state == TrialState.RUNNING  # never closed


@pytest.mark.slow
def test_searcher_pickles_by_reference():
    """Tune pickles the searcher into its checkpoints; a fresh process restores it (--resume)."""
    import pickle

    resolved = search.load(["--smoke", "--run-dir", "/nonexistent-not-created"])[2]
    searcher, scheduler = search.build(resolved)
    blob = pickle.dumps(searcher)
    code = (
        "import pickle, sys; s = pickle.loads(sys.stdin.buffer.read()); "
        "print(type(s).__name__, s.suggest('x')['dataset'])"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=blob, capture_output=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().split() == ["PsrevalOptunaSearch", "digits"]
    assert scheduler._metric == "acc_val" and scheduler._max_t == 4  # 3 smoke rounds + the final report


# --- end to end: the session's smoke sweep (tests/conftest.py) ---------------------------------------


@pytest.mark.ray
@pytest.mark.slow  # the session's smoke sweep (conftest.smoke_sweep)
@pytest.mark.timeout(700)
def test_smoke_sweep_logs_its_resolved_file(smoke_sweep, tmp_path):
    from mlflow import MlflowClient
    from sweep_helpers import sweep_runs

    run_dir = smoke_sweep.run_dir
    uri = f"sqlite:///{run_dir}/mlflow.db"
    parent = next(p for p in sweep_runs(uri)[0] if p.data.tags["psreval.sweep"] == "smoke")
    client = MlflowClient(uri)
    assert "sweep.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    local = client.download_artifacts(parent.info.run_id, "sweep.yaml", str(tmp_path))
    assert parent.data.params["sweep_file"] == "paper_smoke.yaml"
    # run again as a file, it is the same grid
    assert grid(tmp_path, local)[0] == grid(tmp_path, "--smoke")[0]


def test_a_sweep_with_failed_trials_exits_1_with_one_line(capsys):
    from types import SimpleNamespace

    from psreval_tune.sweeps.engine import exit_status

    class Results(list):
        errors: list = []

    done = Results([SimpleNamespace()] * 3)
    assert exit_status(done) == 0 and capsys.readouterr().err == ""
    failed = Results([SimpleNamespace()] * 3)
    failed.errors = [RuntimeError("a"), RuntimeError("b")]
    assert exit_status(failed) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: 2 of 3 trials failed")
