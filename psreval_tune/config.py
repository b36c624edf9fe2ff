"""The one typed config that flows down through a PSREval cycle.

Every field is validated when the object is built, so a bad value fails
before any data is loaded or anything is written. Errors name the field,
the bad value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from . import recipes
from .baselines import NO_THREAT, PLAIN_MEAN
from .checks import finite_number
from .errors import ConfigError
from .hardware import bf16_note, warn_once

PARTITIONS = ("iid", "dirichlet")
DP_MODES = ("sample", "client")  # sample: DP-SGD in every client (Opacus); client: DP-FedAvg at the server
ACCOUNTANTS = ("rdp", "prv", "gdp")
GRAD_SAMPLERS = ("auto", "opacus")  # auto: book-keeping clipping where supported (privacy.py)
DEVICES = ("auto", "cpu", "cuda")
# Non-private local training (a non-private trial, the twin): fp32, or bf16 under torch.autocast (weights,
# optimizer and gradients stay fp32). DP training and the attacks are fp32 whatever this says: bf16's
# 8-bit mantissa would make the per-sample norms that clipping bounds approximate.
PRECISIONS = ("fp32", "bf16")
INT8_LOWERINGS = ("auto", "inductor", "reference")  # cycle.lower_models
# int8_lowering=auto lowers the int8 models only when the test split has at least this many pixels (images x H x W).
# Compiling costs seconds per model (2.6-14 s measured for the cnn on 2 busy cores; the first compile of a process
# is the dearest), while the reference graph's int8 work in a cycle is ~9-13 passes over the attacked images per
# int8 model (clean accuracy, every transfer cell, the BPDA cells): the lowered model saves ~1.2 ms an image at
# 28x28 (cnn, batch 256: reference 1.8 ms, lowered 0.65 ms), so ~1,300 such images (1M pixels) repay ~15 s of
# compile. Digits' 359 test images of 8x8 (23k pixels) would spend seconds compiling to save milliseconds.
LOWER_MIN_PIXELS = 1_000_000
LR_SCHEDULES = ("constant", "cosine", "step")  # per FL round, after warmup_rounds of linear warm-up


class _Names(Sequence):
    """A registry's names (a tuple's worth of str), read from the registry on every use, so entries
    registered later count. The registries import nothing from this module; they are imported only
    when a name is read, because some load torch (threats/, aggregators/, models/), which importing
    config, and so ``psreval --help``, must not."""

    def __init__(self, read: Any, doc: str):
        self._read = read
        self.__doc__ = doc

    def __call__(self) -> tuple[str, ...]:
        return tuple(self._read())

    def __getitem__(self, index: Any) -> Any:
        return self()[index]

    def __len__(self) -> int:
        return len(self())

    def __iter__(self) -> Any:
        return iter(self())

    def __contains__(self, name: object) -> bool:
        return name in self()

    def __eq__(self, other: object) -> bool:
        return self() == (other() if isinstance(other, _Names) else other)

    __hash__ = None  # type: ignore[assignment]  # mutable as its registry

    def __repr__(self) -> str:
        return repr(self())


def _attacks() -> tuple[str, ...]:
    from .attacks import ATTACKS

    return ATTACKS.names()


def _default_eval_attacks() -> tuple[str, ...]:
    from .attacks import ATTACKS, default_eval

    return tuple(n for n in ATTACKS.names() if default_eval(n))


def _paper_attacks() -> tuple[str, ...]:
    from .attacks import ATTACKS

    return tuple(e.name for e in ATTACKS if e.meta.get("paper"))


def _randomized_attacks() -> tuple[str, ...]:
    from .attacks import ATTACKS

    return tuple(e.name for e in ATTACKS if e.randomized)


def _datasets() -> tuple[str, ...]:
    from .datasets import DATASETS

    return DATASETS.names()


def _archs() -> tuple[str, ...]:
    from .models import ARCHS

    return ARCHS.names()


def _threats() -> tuple[str, ...]:
    from .threats import THREATS

    return THREATS.names()


def _aggregations() -> tuple[str, ...]:
    from .aggregators import AGGREGATORS

    return AGGREGATORS.names()


# The names of attacks, datasets, architectures, threats and aggregation rules, from their registries
# (psreval_tune/attacks/, datasets/, models/, threats/, aggregators/).
ATTACKS = _Names(_attacks, "the attack registry's names")
DEFAULT_EVAL_ATTACKS = _Names(_default_eval_attacks, "eval_attacks' default: the attacks whose entry has default_eval")
PAPER_ATTACKS = _Names(_paper_attacks, "the PSREval paper's attacks (entries with paper=True): the reproduction's")
RANDOMIZED_ATTACKS = _Names(_randomized_attacks, "attacks with a random start: the only ones whose repeats differ")
DATASETS = _Names(_datasets, "the dataset registry's names")
ARCHS = _Names(_archs, "the architecture registry's names")
THREATS = _Names(_threats, "the threat registry's names")
AGGREGATIONS = _Names(_aggregations, "the aggregation registry's names")


# record()'s two keys beside the fields: the recipe fields the caller set (comma-separated) and the recipe asked
RECIPE_SET, RECIPE_ASKED = "recipe_set", "recipe_asked"


@dataclass(frozen=True)
class CycleConfig:
    # data
    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    image_size: int | None = None  # pneumonia / synthetic / medmnist only; None = dataset default
    medmnist_subset: str = "pneumoniamnist"  # which MedMNIST .npz in data_root (dataset=medmnist only)
    train_samples: int | None = None  # subsample the training split (None = all)
    test_samples: int | None = None  # subsample the test split (None = all)
    # public validation split: int8 calibration (no labels used) and model
    # selection (searches, early stopping); never the test split. Carved out
    # of the training split, except for medmnist, which ships its own.
    val_fraction: float = 0.1
    # model
    arch: str = "cnn"
    # federation
    num_clients: int = 2
    partition: str = "iid"
    dirichlet_alpha: float = 0.5
    aggregation: str = "fedavg"  # a name in the aggregators registry (psreval_tune/aggregators/)
    aggregation_params: dict = field(default_factory=dict)  # the rule's own parameters; defaults filled on build
    # bucketing (Karimireddy et al. 2022) around the rule: shuffle, average buckets of this many updates,
    # aggregate the bucket means; None: off (1 is the rule itself)
    bucketing: int | None = None
    client_fraction: float = 1.0  # share of clients sampled each round (Poisson under dp_mode=client)
    adversary_client: int = 0  # the first malicious client
    num_malicious: int = 1  # malicious clients under a threat: adversary_client, adversary_client+1, ...
    adv_fraction: float = 0.0  # share of the training data the malicious clients hold together (0: an equal share)
    # training: None = from the recipe for (dataset, arch, private) in recipes.toml
    recipe: str = "auto"  # "auto" or a recipe name such as "digits/resnet9/dp"; resolved on build
    rounds: int | None = None
    local_epochs: int | None = None
    batch_size: int | None = None  # DP: the expected batch of Poisson sampling
    lr: float | None = None
    momentum: float | None = None
    lr_schedule: str | None = None
    warmup_rounds: int | None = None
    reset_optimizer: bool | None = None  # fresh client optimizer state (momentum) every round
    precision: str = "fp32"  # non-private training only: fp32 | bf16 (autocast); see PRECISIONS
    # threat during training and the attack it uses
    threat: str = "none"  # a name in the threats registry (psreval_tune/threats/)
    threat_params: dict = field(default_factory=dict)  # the threat's own parameters; defaults filled on build
    attack: str = "PGD"
    attack_eps: float = 8 / 255
    attack_alpha: float = 2 / 255
    attack_steps: int = 10
    # privacy (epsilon None = non-private)
    epsilon: float | None = None
    delta: float = 1e-5
    max_grad_norm: float | None = None
    accountant: str = "rdp"
    grad_sampler: str = "auto"
    dp_mode: str = "sample"  # sample: per-client DP-SGD (sample-level epsilon); client: DP-FedAvg (client-level)
    client_clip: float = 1.0  # dp_mode=client: L2 bound on each client's update
    # evaluation
    train_twin: bool = True  # private cycles: also train the non-private twin (transfer matrix)
    # default: the attacks whose entry has default_eval (PGD, FGSM); FAB-T, APGD, Square, AutoAttack by name
    eval_attacks: tuple[str, ...] = field(default_factory=DEFAULT_EVAL_ATTACKS)
    eval_samples: int | None = None  # test images attacked at inference (None = the whole test split)
    attack_repeats: int = 3  # runs of randomized attacks (PGD); deterministic ones run once
    # reviewer-grade evaluation (cycle.py; off by default, on in the reproduction profile)
    autoattack: bool = False  # AutoAttack (standard) on the own float model -> acc_wb_autoattack
    autoattack_samples: int = 1000  # its fixed, seeded subset of the attacked images (capped by them)
    masking_checks: bool = False  # gradient-masking checks per model -> masking_suspect_<check>
    attack_eps_grid: tuple[float, ...] | None = None  # PGD at each eps for every model -> acc_curve_*
    # the int8 model that is evaluated: inductor-lowered oneDNN int8 code ("inductor"), the PT2E reference graph
    # ("reference"), or "auto": lowered where the test split is large enough to repay the compile (cycle.py)
    int8_lowering: str = "auto"
    int8_latency: bool = True  # time float vs int8 at batch 1 and 256 -> latency_ms_*, throughput_int8_over_float
    # run
    seed: int = 0
    device: str = "auto"
    # the recipe fields the caller set, and the recipe asked for (replace() re-resolves the rest)
    _given: frozenset = field(default=frozenset(), init=False, repr=False, compare=False)
    _asked_recipe: str = field(default="auto", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # tuples arrive as lists from JSON/CLI; normalise before validating
        if self.eval_attacks is None:  # the default attacks
            object.__setattr__(self, "eval_attacks", DEFAULT_EVAL_ATTACKS())
        elif not isinstance(self.eval_attacks, tuple):
            object.__setattr__(self, "eval_attacks", tuple(self.eval_attacks))
        if self.attack_eps_grid is not None and not isinstance(self.attack_eps_grid, tuple):
            object.__setattr__(self, "attack_eps_grid", tuple(self.attack_eps_grid))
        for name in ("aggregation_params", "threat_params"):
            value = getattr(self, name)
            if value is None:
                object.__setattr__(self, name, {})
            elif not isinstance(value, dict):
                _fail(name, value, "a mapping of parameter names to values")
        _choice(self, "dataset", DATASETS())
        _choice(self, "arch", ARCHS())
        _resolve_recipe(self)
        _validate(self)

    # --- derived views -------------------------------------------------
    @property
    def private(self) -> bool:
        return self.epsilon is not None

    def replace(self, **changes: Any) -> CycleConfig:
        """A copy with ``changes``; recipe fields the caller never set are looked up
        again, so ``cfg.replace(epsilon=None)`` gets the non-private recipe."""
        return CycleConfig(**{**self.asked(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """Every field, resolved: what a run records. Rebuilt with from_dict() it trains the same model,
        but every recipe field then counts as set, so its twin would keep them: rebuild from asked()
        or record() where the twin matters."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init}
        d["eval_attacks"] = list(self.eval_attacks)
        if self.attack_eps_grid is not None:
            d["attack_eps_grid"] = list(self.attack_eps_grid)
        return d

    def asked(self) -> dict[str, Any]:
        """The fields as the caller gave them: recipe fields left to the recipe are None and ``recipe`` is
        the one asked for, so ``CycleConfig(**cfg.asked())`` is ``cfg`` with the same twin."""
        return _left_to_recipe(self.to_dict(), self._given, self._asked_recipe)

    def record(self) -> dict[str, Any]:
        """to_dict() and what from_record() needs to tell the recipe's fields from the caller's."""
        return {**self.to_dict(), RECIPE_SET: ",".join(sorted(self._given)), RECIPE_ASKED: self._asked_recipe}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> CycleConfig:
        """The config a record() came from (a dict without the two keys: every recipe field as set)."""
        d = dict(d)
        given, asked = d.pop(RECIPE_SET, None), d.pop(RECIPE_ASKED, None)
        if given is not None and asked is not None:
            d = _left_to_recipe(d, str(given).split(","), asked)
        return cls.from_dict(d)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CycleConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config key {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        return cls(**d)

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> CycleConfig:
        """A sweep trial's params -> config. A value under a key that is not a field (a pseudo-axis such
        as a grid's ``setting``) is a mapping of fields that go together and is merged in; a field whose
        value is a mapping (``threat_params``) stays as it is."""
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        flat: dict[str, Any] = {}
        for key, value in params.items():
            if key not in known and isinstance(value, dict):
                flat.update(value)
            else:
                flat[key] = value
        return cls.from_dict(flat)

    def training_key(self) -> str:
        """Hash of everything that determines the trained float model.

        Evaluation-only fields (eval attacks, repeats, eval size) and the
        device are left out, so two cycles that would train the same model
        share a key; the non-private twin cache is keyed by this.
        """
        eval_only = {"eval_attacks", "eval_samples", "attack_repeats", "device", "download", "recipe", "train_twin"}
        eval_only |= {"autoattack", "autoattack_samples", "masking_checks", "attack_eps_grid"}
        eval_only |= {"int8_lowering", "int8_latency"}
        payload = {k: v for k, v in self.to_dict().items() if k not in eval_only}
        # Fields only another dataset reads (its entry's own_fields: medmnist_subset) train nothing here;
        # leaving them out keeps the keys from before they existed valid.
        from .datasets import DATASETS

        own = set(DATASETS.get(self.dataset).meta.get("own_fields", ()))
        for entry in DATASETS:
            for name in set(entry.meta.get("own_fields", ())) - own:
                payload.pop(name, None)
        if self.precision == "fp32" or self.private:  # the same model as before the field (DP is fp32 always)
            payload.pop("precision")
        if self.bucketing is None:  # the same model as before the field
            payload.pop("bucketing")
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _left_to_recipe(d: dict[str, Any], given, asked: str) -> dict[str, Any]:
    """``d`` with the recipe fields not in ``given`` back to None and ``recipe`` the one asked for."""
    return {**d, **{name: None for name in recipes.FIELDS if name not in given}, "recipe": asked}


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{name}={value!r} is not allowed; expected {allowed}")


def _choice(cfg: CycleConfig, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(choices))


def _positive_int(cfg: CycleConfig, name: str, optional: bool = False) -> None:
    value = getattr(cfg, name)
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        _fail(name, value, "an integer >= 1")


def _resolve_recipe(cfg: CycleConfig) -> None:
    """Fill the training fields left as None from the recipe (frozen: object.__setattr__)."""
    asked = cfg.recipe
    if asked == "auto":
        name = recipes.lookup(cfg.dataset, cfg.arch, cfg.epsilon is not None)
    elif asked in recipes.load():
        name = asked
    else:
        _fail("recipe", asked, "auto or one of " + ", ".join(recipes.names()))
    given = frozenset(f for f in recipes.FIELDS if getattr(cfg, f) is not None)
    for key, value in recipes.fields_of(name).items():
        if key not in given:
            object.__setattr__(cfg, key, value)
    if "warmup_rounds" not in given and isinstance(cfg.rounds, int) and cfg.rounds >= 1:
        # a recipe's warm-up never exceeds the rounds the user asked for (--rounds 1 just works)
        object.__setattr__(cfg, "warmup_rounds", min(cfg.warmup_rounds, cfg.rounds - 1))
    object.__setattr__(cfg, "recipe", name)
    object.__setattr__(cfg, "_given", given)
    object.__setattr__(cfg, "_asked_recipe", asked)


def _registry_choice(cfg: CycleConfig, name: str, registry: Any) -> Any:
    """The registry entry named by field ``name``, its parameters resolved into ``<name>_params``."""
    from .registry import resolve_params

    try:
        entry = registry.get(getattr(cfg, name))
        object.__setattr__(cfg, f"{name}_params", resolve_params(name, entry, getattr(cfg, f"{name}_params")))
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return entry


def _validate_federation(cfg: CycleConfig) -> None:
    from .aggregators import AGGREGATORS
    from .threats import THREATS

    _registry_choice(cfg, "aggregation", AGGREGATORS)
    threat = _registry_choice(cfg, "threat", THREATS)
    _choice(cfg, "dp_mode", DP_MODES)
    _positive_int(cfg, "num_malicious")
    if cfg.threat != NO_THREAT and cfg.num_malicious >= cfg.num_clients:
        _fail("num_malicious", cfg.num_malicious, f"an integer in [1, num_clients={cfg.num_clients}) under a threat")
    if not finite_number(cfg.client_fraction) or not 0 < cfg.client_fraction <= 1:
        _fail("client_fraction", cfg.client_fraction, "a number in (0, 1]")
    if not finite_number(cfg.client_clip) or cfg.client_clip <= 0:
        _fail("client_clip", cfg.client_clip, "a number > 0")
    if threat.needs_fraction and cfg.adv_fraction == 0:
        _fail("adv_fraction", cfg.adv_fraction, f"a number in (0, 1) when threat={cfg.threat}")
    if cfg.bucketing is not None and (
        isinstance(cfg.bucketing, bool) or not isinstance(cfg.bucketing, int) or cfg.bucketing < 1
    ):
        _fail(
            "bucketing", cfg.bucketing, "an integer >= 1 (the bucket size s, 2 in the paper), or none for no bucketing"
        )
    if cfg.bucketing is not None and cfg.dp_mode == "client":
        _fail("bucketing", cfg.bucketing, "none when dp_mode=client (DP-FedAvg clips and noises the plain mean)")
    if cfg.dp_mode == "client" and cfg.aggregation != PLAIN_MEAN:
        _fail("aggregation", cfg.aggregation, "fedavg when dp_mode=client (DP-FedAvg clips and noises the mean)")


def _validate(cfg: CycleConfig) -> None:
    attacks = ATTACKS()
    _validate_names(cfg, attacks)
    _validate_counts(cfg)
    _validate_numbers(cfg)
    if not cfg.eval_attacks:
        _fail("eval_attacks", list(cfg.eval_attacks), "a non-empty subset of " + ", ".join(attacks))
    for name in cfg.eval_attacks:
        if name not in attacks:
            _fail("eval_attacks", name, "one of " + ", ".join(attacks))
    _validate_reviewer(cfg)
    if isinstance(cfg.seed, bool) or not isinstance(cfg.seed, int) or cfg.seed < 0:
        _fail("seed", cfg.seed, "an integer >= 0")
    _validate_dataset_and_arch(cfg)


def _validate_names(cfg: CycleConfig, attacks: tuple[str, ...]) -> None:
    """Fields naming one of a fixed set (the federation's registries included) and the switches."""
    _choice(cfg, "partition", PARTITIONS)
    _validate_federation(cfg)
    _choice(cfg, "attack", attacks)
    _choice(cfg, "accountant", ACCOUNTANTS)
    _choice(cfg, "grad_sampler", GRAD_SAMPLERS)
    _choice(cfg, "device", DEVICES)
    _choice(cfg, "lr_schedule", LR_SCHEDULES)
    _choice(cfg, "precision", PRECISIONS)
    _choice(cfg, "int8_lowering", INT8_LOWERINGS)
    if not isinstance(cfg.int8_latency, bool):
        _fail("int8_latency", cfg.int8_latency, "true or false")


def _validate_counts(cfg: CycleConfig) -> None:
    """Integer fields: sizes, rounds, steps, the warmup and the adversary's client index."""
    for name in ("num_clients", "rounds", "local_epochs", "batch_size", "attack_steps", "attack_repeats"):
        _positive_int(cfg, name)
    for name in ("image_size", "train_samples", "test_samples", "eval_samples"):
        _positive_int(cfg, name, optional=True)
    if (
        isinstance(cfg.warmup_rounds, bool)
        or not isinstance(cfg.warmup_rounds, int)
        or not 0 <= cfg.warmup_rounds < cfg.rounds
    ):
        _fail("warmup_rounds", cfg.warmup_rounds, f"an integer in [0, rounds={cfg.rounds})")
    if not isinstance(cfg.reset_optimizer, bool):
        _fail("reset_optimizer", cfg.reset_optimizer, "true or false")
    if cfg.image_size is not None and cfg.image_size < 8:
        _fail("image_size", cfg.image_size, "an integer >= 8")
    if cfg.num_clients < 2:
        _fail("num_clients", cfg.num_clients, "an integer >= 2 (federated learning needs two clients)")
    if (
        isinstance(cfg.adversary_client, bool)
        or not isinstance(cfg.adversary_client, int)
        or not 0 <= cfg.adversary_client < cfg.num_clients
    ):
        _fail("adversary_client", cfg.adversary_client, f"an integer in [0, {cfg.num_clients - 1}]")


def _validate_numbers(cfg: CycleConfig) -> None:
    """Fractions, rates and budgets: the data split, the optimizer, the attack and the privacy budget."""
    if not finite_number(cfg.adv_fraction) or not 0 <= cfg.adv_fraction < 1:
        _fail("adv_fraction", cfg.adv_fraction, "a number in [0, 1)")
    if not finite_number(cfg.val_fraction) or not 0 < cfg.val_fraction < 0.5:
        _fail("val_fraction", cfg.val_fraction, "a number in (0, 0.5)")
    if not finite_number(cfg.dirichlet_alpha) or cfg.dirichlet_alpha <= 0:
        _fail("dirichlet_alpha", cfg.dirichlet_alpha, "a number > 0")
    for name in ("lr", "max_grad_norm"):
        value = getattr(cfg, name)
        if not finite_number(value) or value <= 0:
            _fail(name, value, "a number > 0")
    if not finite_number(cfg.momentum) or not 0 <= cfg.momentum < 1:
        _fail("momentum", cfg.momentum, "a number in [0, 1)")
    if not finite_number(cfg.attack_eps) or not 0 < cfg.attack_eps <= 1:
        _fail("attack_eps", cfg.attack_eps, "a number in (0, 1] (pixel units, images are in [0, 1])")
    if not finite_number(cfg.attack_alpha) or not 0 < cfg.attack_alpha <= cfg.attack_eps:
        _fail("attack_alpha", cfg.attack_alpha, f"a number in (0, attack_eps={cfg.attack_eps:.4g}]")
    if cfg.epsilon is not None and (not finite_number(cfg.epsilon) or cfg.epsilon <= 0):
        _fail("epsilon", cfg.epsilon, "a number > 0, or none for non-private training")
    if not finite_number(cfg.delta) or not 0 < cfg.delta < 1:
        _fail("delta", cfg.delta, "a number in (0, 1)")


def _validate_reviewer(cfg: CycleConfig) -> None:
    """AutoAttack, the gradient-masking checks and the eps grid (cycle.py)."""
    for name in ("autoattack", "masking_checks"):
        if not isinstance(getattr(cfg, name), bool):
            _fail(name, getattr(cfg, name), "true or false")
    _positive_int(cfg, "autoattack_samples")
    grid = cfg.attack_eps_grid
    if grid is not None and (
        not grid or not all(finite_number(e) and 0 <= e <= 1 for e in grid) or len(set(grid)) != len(grid)
    ):
        _fail("attack_eps_grid", list(grid), "distinct numbers in [0, 1] (pixel units), e.g. 0,2/255,8/255")


def _validate_dataset_and_arch(cfg: CycleConfig) -> None:
    """What the dataset's and the architecture's registry entries require."""
    from .datasets import DATASETS
    from .models import ARCHS

    dataset = DATASETS.get(cfg.dataset)
    if dataset.needs_data_root and not cfg.data_root:
        _fail("data_root", cfg.data_root, f"a folder holding the {cfg.dataset} data (--data-root)")
    check = dataset.meta.get("check")
    if check is not None:
        check(cfg)  # the dataset's own fields (medmnist: subset, published sizes, no --download)
    if cfg.private and not ARCHS.get(cfg.arch).dp_compatible:
        _fail("arch", cfg.arch, "an architecture DP-SGD can train when epsilon is set (models/: dp_compatible)")
    from .threats import THREATS

    threat_check = THREATS.get(cfg.threat).meta.get("check")
    if threat_check is not None:
        threat_check(cfg)  # the threat's parameters the data bounds (backdoor: target label, trigger size)


def resolve_device(name: str, precision: str = "fp32") -> str:
    """'auto' picks CUDA when a GPU is visible (Ray sets CUDA_VISIBLE_DEVICES), else CPU."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is not allowed here; no CUDA device is visible (use auto or cpu)")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision='bf16' is not allowed on this GPU (no bfloat16 support); use fp32")
    if precision == "bf16":
        warn_once(bf16_note(device))
    return device
