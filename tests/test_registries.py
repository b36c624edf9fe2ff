"""One registry per axis: every registered name is accepted by the config and listed by the CLI,
every entry declares the metadata the rest of the code reads, and an attack, a dataset or an
architecture is added by one file (one decorated function for an architecture) and nothing else."""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from psreval_tune import config
from psreval_tune.aggregators import AGGREGATORS
from psreval_tune.attacks import ATTACKS, AttackSpec, generate
from psreval_tune.config import ConfigError, CycleConfig
from psreval_tune.datasets import DATASETS, channels_of, num_classes_of
from psreval_tune.models import ARCHS, build_model
from psreval_tune.sweeps import cost
from psreval_tune.threats import THREATS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_help() -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "psreval_tune", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "COLUMNS": "400"},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _flag_help(text: str, flag: str) -> str:
    """The help text of one flag: its line up to the next flag's, whitespace collapsed."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(flag + " "))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("-")), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


# --- every name: accepted by CycleConfig, listed by --help -----------------------------------


def _config_for(axis: str, name: str, tmp_path: Path) -> CycleConfig:
    if axis == "attack":
        return CycleConfig(attack=name, eval_attacks=(name,))
    if axis == "arch":
        return CycleConfig(arch=name)
    if axis == "dataset":
        root = str(tmp_path) if DATASETS.get(name).needs_data_root else None
        return CycleConfig(dataset=name, data_root=root)
    if axis == "threat":
        return CycleConfig(threat=name, adv_fraction=0.2 if THREATS.get(name).needs_fraction else 0.0)
    return CycleConfig(aggregation=name)


CASES = (
    [("attack", "--attack", n) for n in ATTACKS.names()]
    + [("arch", "--arch", n) for n in ARCHS.names()]
    + [("dataset", "--dataset", n) for n in DATASETS.names()]
    + [("threat", "--threat", n) for n in config.THREATS]
    + [("aggregation", "--aggregation", n) for n in config.AGGREGATIONS]
)


@pytest.mark.parametrize("axis, flag, name", CASES, ids=[f"{a}-{n}" for a, _, n in CASES])
def test_every_registered_name_is_accepted_and_listed(axis, flag, name, tmp_path, run_help):
    cfg = _config_for(axis, name, tmp_path)
    assert getattr(cfg, axis) == name
    assert CycleConfig.from_dict(cfg.to_dict()) == cfg
    assert name in _flag_help(run_help, flag)
    if axis == "attack":
        assert name in _flag_help(run_help, "--eval-attacks")


def test_config_names_come_from_the_registries():
    # the paper's order, then the reviewer-grade attacks (opt-in: not in the default eval_attacks)
    assert config.ATTACKS == ATTACKS.names() == ("PGD", "FGSM", "FAB", "APGDCE", "APGDDLR", "Square", "AutoAttack")
    assert config.DEFAULT_EVAL_ATTACKS == ("PGD", "FGSM") == CycleConfig().eval_attacks
    assert config.ARCHS == ARCHS.names() == ("cnn", "resnet9", "resnet18")
    datasets = ("digits", "cifar10", "pneumonia", "medmnist", "fashion_mnist", "mnist", "kmnist", "synthetic")
    assert config.DATASETS == DATASETS.names() == datasets
    assert config.RANDOMIZED_ATTACKS == ("PGD", "APGDCE", "APGDDLR", "Square")
    assert config.THREATS == THREATS.names() and config.AGGREGATIONS == AGGREGATORS.names()
    with pytest.raises(AttributeError):
        config.NO_SUCH_AXIS  # noqa: B018


def test_eval_attacks_default_is_the_default_attacks_and_round_trips():
    cfg = CycleConfig()
    assert cfg.eval_attacks == ("PGD", "FGSM")  # FAB-T and the reviewer-grade attacks are opt-in
    assert CycleConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["eval_attacks"] == ["PGD", "FGSM"]
    assert CycleConfig(eval_attacks=None).eval_attacks == ("PGD", "FGSM")
    assert CycleConfig(eval_attacks=["FAB", "PGD"]).eval_attacks == ("FAB", "PGD")
    assert config.PAPER_ATTACKS == ("PGD", "FGSM", "FAB")
    names = "PGD, FGSM, FAB, APGDCE, APGDDLR, Square, AutoAttack"
    with pytest.raises(ConfigError, match=rf"^eval_attacks='CW' is not allowed; expected one of {names}$"):
        CycleConfig(eval_attacks=("PGD", "CW"))
    with pytest.raises(ConfigError, match=rf"^attack='CW' is not allowed; expected one of {names}$"):
        CycleConfig(attack="CW")


@pytest.mark.parametrize(
    "kw, text",
    [
        ({"dataset": "emnist"}, "dataset='emnist' is not allowed; expected one of digits, cifar10, pneumonia, "),
        ({"arch": "vgg"}, "arch='vgg' is not allowed; expected one of cnn, resnet9, resnet18"),
    ],
)
def test_unknown_names_name_the_registry(kw, text):
    with pytest.raises(ConfigError, match="^" + text):
        CycleConfig(**kw)


@pytest.mark.parametrize("name", [e.name for e in DATASETS if e.needs_data_root])
def test_data_root_requirement_is_the_entrys(name):
    with pytest.raises(ConfigError, match=rf"^data_root=None is not allowed; expected a folder holding the {name}"):
        CycleConfig(dataset=name)


# --- the metadata the rest of the code reads ----------------------------------------------


def test_attack_metadata():
    for entry in ATTACKS:
        assert isinstance(entry.randomized, bool) and isinstance(entry.uses_alpha, bool), entry.name
        for steps in (1, 10):
            passes = entry.cost_passes(steps)
            assert isinstance(passes, (int, float)) and passes >= 1, entry.name
    assert [e.name for e in ATTACKS if e.randomized] == ["PGD", "APGDCE", "APGDDLR", "Square"]
    assert [e.name for e in ATTACKS if e.uses_alpha] == ["PGD"]
    # FAB-T: 100 iterations x 9 targets x ~2 passes, whatever attack_steps says
    assert [ATTACKS.get(a).cost_passes(10) for a in ("PGD", "FGSM", "FAB")] == [10, 1, pytest.approx(1800.0)]


def test_arch_metadata_and_builders():
    for entry in ARCHS:
        assert entry.dp_compatible is True and entry.s_per_pass > 0 and entry.dp_factor >= 1, entry.name
        model = build_model(entry.name, 1, 3, (0.5,), (0.25,))
        assert model(torch.rand(2, 1, 8, 8)).shape == (2, 3)


def test_dataset_metadata(tmp_path):
    for entry in DATASETS:
        assert isinstance(entry.help, str) and entry.help, entry.name
        assert isinstance(entry.needs_data_root, bool), entry.name
        assert isinstance(entry.image_size, int) and isinstance(entry.resizable, bool), entry.name
        assert entry.pool > 0 and entry.test > 0, entry.name
        cfg = _config_for("dataset", entry.name, tmp_path)
        for value in (channels_of(cfg), num_classes_of(cfg)):
            assert value is None or (isinstance(value, int) and value >= 1), entry.name
    med = CycleConfig(dataset="medmnist", data_root=str(tmp_path), medmnist_subset="dermamnist")
    assert (channels_of(med), num_classes_of(med)) == (3, 7)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_dataset_metadata_matches_the_loaded_data(name):
    from psreval_tune.data import load_data

    cfg = CycleConfig(dataset=name, train_samples=200, test_samples=50)
    bundle = load_data(cfg)
    entry = DATASETS.get(name)
    assert bundle.in_channels == channels_of(cfg) and bundle.num_classes == num_classes_of(cfg)
    assert bundle.train.x.shape[-1] == entry.image_size
    if name == "digits":  # the cost model's sizes are the real ones
        full = load_data(CycleConfig(dataset=name))
        assert len(full.train) + len(full.val) == entry.pool and len(full.test) == entry.test


def test_cost_model_covers_every_entry(tmp_path):
    for dataset in DATASETS.names():
        for arch in ARCHS.names():
            root = str(tmp_path) if DATASETS.get(dataset).needs_data_root else None
            cfg = CycleConfig(dataset=dataset, data_root=root, arch=arch, epsilon=3.4)
            phases = cost.trial_phases(cfg)
            assert all(math.isfinite(v) and v > 0 for k, v in phases.items()), (dataset, arch, phases)


def test_search_samples_the_step_size_only_for_attacks_that_take_one():
    from psreval_tune.sweeps import spec

    def fail(msg):
        return ValueError(msg)

    params = {
        "threat": {"choices": ["none", "adv_training"]},
        "attack": {"choices": ["PGD", "FGSM", "FAB"], "when": {"threat": ["adv_training"]}},
        "attack_alpha": {"low": 0.002, "high": 0.03},
    }
    checked = spec.check_params(params, {}, fail)
    assert checked["attack_alpha"]["when"] == {"attack": ["PGD"]}
    assert "when" not in spec.check_params({"attack_alpha": {"low": 0.002, "high": 0.03}}, {}, fail)["attack_alpha"]
    own = {"attack": ["FGSM"], "attack_alpha": {"low": 0.002, "high": 0.03, "when": {"attack": ["FGSM"]}}}
    assert spec.check_params(own, {}, fail)["attack_alpha"]["when"] == {"attack": ["FGSM"]}  # the file's own wins


# --- adding an entry ---------------------------------------------------------------------


def _identity_builder(spec, model, num_classes, seed):
    return lambda x, y: x.clone()


def test_an_attack_registered_at_runtime_is_accepted_and_runs():
    ATTACKS.register("TEST_NOOP", order=99, randomized=False, cost_passes=lambda steps: 1, uses_alpha=False)(
        _identity_builder
    )
    try:
        assert config.ATTACKS == (*("PGD", "FGSM", "FAB", "APGDCE", "APGDDLR", "Square", "AutoAttack"), "TEST_NOOP")
        cfg = CycleConfig(eval_attacks=("PGD", "TEST_NOOP"), attack="TEST_NOOP")
        assert CycleConfig.from_dict(cfg.to_dict()) == cfg
        model = build_model("cnn", 1, 10, (0.5,), (0.25,))
        x, y = torch.rand(5, 1, 8, 8), torch.arange(5)
        adv = generate(model, x, y, AttackSpec.from_config(cfg), num_classes=10, seed=0, device="cpu")
        assert torch.equal(adv, x)
        from psreval_tune.evaluate import runs_of

        assert runs_of(AttackSpec.from_config(cfg), repeats=3) == 1
        assert cost.attack_passes("TEST_NOOP", 10) == 1 and cost.trial_phases(cfg)["attack_eval"] > 0
    finally:
        ATTACKS.unregister("TEST_NOOP")
    assert config.ATTACKS == ("PGD", "FGSM", "FAB", "APGDCE", "APGDDLR", "Square", "AutoAttack")
    with pytest.raises(ConfigError, match="eval_attacks='TEST_NOOP' is not allowed"):
        CycleConfig(eval_attacks=("TEST_NOOP",))
    with pytest.raises(ValueError, match="attack='TEST_NOOP' is not allowed"):
        ATTACKS.unregister("TEST_NOOP")


def test_an_arch_dp_sgd_cannot_train_is_refused_under_dp_only():
    ARCHS.register("TEST_BATCHNORM", dp_compatible=False, s_per_pass=1e-3, dp_factor=1.0)(lambda c: None)
    try:
        assert CycleConfig(arch="TEST_BATCHNORM").arch == "TEST_BATCHNORM"
        with pytest.raises(ConfigError, match=r"^arch='TEST_BATCHNORM' is not allowed; expected an architecture DP"):
            CycleConfig(arch="TEST_BATCHNORM", epsilon=3.4)
    finally:
        ARCHS.unregister("TEST_BATCHNORM")
    assert config.ARCHS == ("cnn", "resnet9", "resnet18")


NEW_ATTACK = '''
"""A test attack: added by this one file."""
from . import ATTACKS


@ATTACKS.register("NOISE", randomized=True, cost_passes=lambda steps: 0.5, uses_alpha=False)
def build(spec, model, num_classes, seed):
    import torch

    return lambda x, y: (x + spec.eps * torch.sign(torch.randn_like(x))).clamp(0, 1)
'''

NEW_DATASET = '''
"""A test dataset: added by this one file."""
from . import DATASETS
from ._common import Split


@DATASETS.register("stripes", help="horizontal or vertical stripes", needs_data_root=False, image_size=12,
                   resizable=False, channels=1, num_classes=2, pool=300, test=100)
def load(cfg, gen):
    import torch

    def draw(n):
        y = torch.randint(0, 2, (n,), generator=gen)
        line = (torch.arange(12) % 2).float().view(1, 12).expand(12, 12)
        x = torch.stack([line if int(c) else line.t() for c in y]).unsqueeze(1)
        return Split((0.8 * x + 0.2 * torch.rand(n, 1, 12, 12, generator=gen)).clamp(0, 1), y)

    return draw(300), None, draw(100), 2
'''

NEW_ARCH = '''
"""A test architecture: added by this one file."""
from torch import nn

from . import ARCHS
from ._layers import conv_gn_relu


@ARCHS.register("tiny", dp_compatible=True, s_per_pass=1 / 5000, dp_factor=2.0)
def tiny(in_channels: int) -> tuple[nn.Module, nn.Module, int]:
    return conv_gn_relu(in_channels, 8), nn.AdaptiveAvgPool2d(1), 8
'''

CHECK = """
import sys

import psreval_tune
from psreval_tune import config
from psreval_tune.attacks import AttackSpec, generate
from psreval_tune.cli import build_parser
from psreval_tune.config import CycleConfig
from psreval_tune.data import load_data
from psreval_tune.models import build_model
from psreval_tune.sweeps import cost

assert psreval_tune.__file__.startswith(sys.argv[1]), psreval_tune.__file__  # the copy, not the tree
assert config.ATTACKS[-1] == "NOISE" and "NOISE" in config.RANDOMIZED_ATTACKS, config.ATTACKS
assert "stripes" in config.DATASETS and "tiny" in config.ARCHS
cfg = CycleConfig(dataset="stripes", arch="tiny", attack="NOISE", epsilon=3.4)
assert "NOISE" in cfg.eval_attacks
data = load_data(cfg)
model = build_model(cfg.arch, data.in_channels, data.num_classes, data.mean, data.std)
adv = generate(model, data.test.x, data.test.y, AttackSpec.from_config(cfg), num_classes=2, seed=0, device="cpu")
assert adv.shape == data.test.x.shape and float((adv - data.test.x).abs().max()) <= cfg.attack_eps + 1e-6
assert all(v > 0 for v in cost.trial_phases(cfg).values())
text = " ".join(build_parser()._subparsers._group_actions[0].choices["run"].format_help().split())
assert "NOISE" in text and "stripes (horizontal or vertical stripes)" in text and "tiny" in text, text
print("ok")
"""


def test_one_file_adds_an_attack_a_dataset_and_an_arch(tmp_path):
    """A copy of the package plus attacks/noise.py, datasets/stripes.py and models/tiny.py, one file each:
    config, CLI help, data loading, the model, attack generation and the cost model all take them."""
    pkg = tmp_path / "psreval_tune"
    shutil.copytree(ROOT / "psreval_tune", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    (pkg / "attacks" / "noise.py").write_text(NEW_ATTACK)
    (pkg / "datasets" / "stripes.py").write_text(NEW_DATASET)
    (pkg / "models" / "tiny.py").write_text(NEW_ARCH)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHECK), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_one_finite_number_check():
    """checks.finite_number, what config, the registries' number_in, sweep files, the searcher and tracking use:
    NaN, +-inf, an int past a float's range, bools, strings and None are not finite numbers."""
    import math

    from psreval_tune.checks import finite_number
    from psreval_tune.config import ConfigError, CycleConfig
    from psreval_tune.registry import number_in

    assert all(finite_number(v) for v in (0, -3, 2.5, 1e308, 10**300))
    assert not any(finite_number(v) for v in (math.nan, math.inf, -math.inf, 10**400, True, "1", None, [1.0]))
    assert not number_in(0.0, math.inf)(math.nan) and not number_in(0.0, 1.0)(10**400)
    for bad in (math.nan, math.inf, 10**400):  # 10**400 was an OverflowError traceback, not a ConfigError
        with pytest.raises(ConfigError, match="lr="):
            CycleConfig(lr=bad)
