"""The cost model of a sweep: seconds per phase of one trial from its config, calibrated from a store's finished
trials, and the estimate of a whole sweep. ``cost.py`` reads the store and prints the dry run's report.

Nothing here starts Ray, opens a tracking store for writing or creates a file. The model, per trial:

- DP training  = rounds x train images x (local epochs + adv_fraction x k) x s/pass(arch, image) x DP factor;
- twin training = the same for the non-private twin (its own recipe), once per distinct twin: a twin is
  keyed by its config's ``training_key`` (cycle.TwinCache), so the epsilons of one setting share it and
  a twin already in the sweep's twin cache (STORAGE/twin-cache) costs nothing;
- attacks/eval = (eval images x sum over eval attacks of (k x repeats) x generators + reviewer passes)
  x s/pass x ATTACK_PASS, generators = the trained models (DP + twin) + each one's int8 model's BPDA;
  reviewer passes = AutoAttack, gradient-masking checks, eps grid when asked (``reviewer_passes``);
- overhead     = TRIAL_OVERHEAD_S per trial (data, quantize, MLflow logging) + WORKER_WARMUP_S per worker
  (defaults only: a store's trial overheads hold it) + SWEEP_OVERHEAD_S once (Ray start-up, report)
  + INT8_COMPILE_S per compile of a lowered int8 model where the trial lowers (``int8_compiles``).
Training phases add STEP_S per optimizer step and ROUND_S (TWIN_ROUND_S) per round, attacks/eval EVAL_FIXED_S
per trial: fixed costs that dominate small cycles (the smoke grid, digits).

k is the attack's forward+backward passes per image, its registry entry's ``cost_passes(steps)``
(psreval_tune/attacks/: PGD its steps, FGSM 1, FAB-T 100 x 9 targets x 2, APGD 100, Square 5000 queries / 3,
AutoAttack the sum of its parts); repeats only for ``randomized`` attacks.
s/pass(arch, image) = s_per_pass(arch) x max(H x W / 32^2, MIN_AREA), DP factor(arch) = the arch entry's
``dp_factor`` (models/); train pool, test images and image side are the dataset entry's ``pool``, ``test``
and ``image_size`` (psreval_tune/datasets/). The defaults are 2-core CPU measurements (benchmarks/results);
``calibrate`` scales every phase by measured / modelled
seconds of finished trials in an MLflow store, per arch where the store has that arch.
Wall time = SWEEP_OVERHEAD_S + the trials' seconds / min(--max-concurrent, slots, trials): trials are
assumed not to slow each other (a store's trial times already include the slow-down of its own sweep).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from ..baselines import NO_THREAT
from ..config import CycleConfig

PHASES = ("dp_train", "twin_train", "attack_eval", "overhead")
LABELS = {
    "dp_train": "DP training",
    "twin_train": "twin training",
    "attack_eval": "attacks/eval",
    "overhead": "overhead",
}
# Small images get no cheaper than this share of a 32x32 one (per-step fixed costs): cycle_phases.json's
# digits (8x8) twin trains at 4.7e-5 s/pass = 0.1 x the cnn's 32x32 SGD pass.
MIN_AREA = 0.1
ATTACK_PASS = 0.7  # attack fwd+bwd / training pass: cycle_phases.json digits, 2.44 s for 74,496 passes
# Fixed costs, fitted on three runs on an otherwise idle 2-core machine, 2026-12-03 (benchmarks/README.md,
# "Cost estimate"): the smoke grid (6 DP cnn trials, 3 rounds, 2 clients, 32 s wall), robust_fl_core
# (252 non-private cnn trials, 10 rounds, 10 clients, batch 16 x 3 epochs, 862 s) and its DP half (231
# trials, Poisson batch 128 x 1 epoch, 423 s). Small images cost per optimizer step more than per image:
# the non-private digits trials take 13x the DP ones' steps and 2.6x their time. The first fit
# (2026-11-25) came from a smoke run with a pip install beside it and was ~5x too high.
STEP_S = 0.001  # per optimizer step of a client (DP: per expected Poisson batch): loader, zero_grad, update
ROUND_S = 0.065  # per FL round of the trial's model: clients' set-up, validation, accountant, report + checkpoint
TWIN_ROUND_S = 0.02  # per FL round of a twin (no per-round validation, report or checkpoint)
EVAL_FIXED_S = 0.2  # per trial: clean and validation metrics, attack set-up
TRIAL_OVERHEAD_S = 1.0  # per trial outside the phases: data, quantize, MLflow params/metrics/model/artifacts
WORKER_WARMUP_S = 3.0  # per worker (slot), its first trial: first DP step, first quantization, first MLflow model
SWEEP_OVERHEAD_S = 20.0  # once: imports, Ray start-up, MLflow store, worker start, summary, report
# Per inductor compile of a lowered int8 model (cycle.lower_models): measured 2.6-14 s for the cnn and 32 s for
# resnet9 on 2 busy cores, cheaper for a second model of the same architecture in one process.
INT8_COMPILE_S = 10.0


def attack_passes(attack: str, steps: int) -> float:
    """Forward+backward passes per image of one run of an attack (its registry entry's ``cost_passes``)."""
    from ..attacks import ATTACKS

    return ATTACKS.get(attack).cost_passes(steps)


def attack_runs(attack: str, repeats: int) -> int:
    """Runs of an attack at evaluation: ``repeats`` for a randomized one, else 1 (evaluate.runs_of)."""
    from ..attacks import ATTACKS

    return repeats if ATTACKS.get(attack).randomized else 1


def _dataset(cfg: CycleConfig):
    from ..datasets import DATASETS

    return DATASETS.get(cfg.dataset)


def _arch(cfg: CycleConfig):
    from ..models import ARCHS

    return ARCHS.get(cfg.arch)


def train_images(cfg: CycleConfig) -> int:
    """Training images the clients share: the pool less the validation split."""
    data = _dataset(cfg)
    pool = data.pool
    if cfg.train_samples is not None:  # a generated dataset draws that many; the others subsample
        pool = cfg.train_samples if data.meta.get("draws_samples") else min(cfg.train_samples, pool)
    return pool if data.meta.get("own_val_split") else round(pool * (1 - cfg.val_fraction))


def eval_images(cfg: CycleConfig) -> int:
    data = _dataset(cfg)
    test = data.test
    if cfg.test_samples is not None:  # a generated dataset draws that many; the others subsample
        test = cfg.test_samples if data.meta.get("draws_samples") else min(cfg.test_samples, test)
    return min(cfg.eval_samples or test, test)


def pass_seconds(cfg: CycleConfig) -> float:
    """Seconds of one SGD forward+backward pass of one image (default table)."""
    from ..datasets import image_size_of

    side = image_size_of(cfg)
    return _arch(cfg).s_per_pass * max(side * side / 1024, MIN_AREA)


def local_steps(cfg: CycleConfig) -> float:
    """Optimizer steps of one FL round, over the clients sampled in it: epochs x batches of each client."""
    per_client = train_images(cfg) / cfg.num_clients
    return cfg.num_clients * cfg.client_fraction * cfg.local_epochs * math.ceil(per_client / cfg.batch_size)


def train_seconds(cfg: CycleConfig, round_s: float = ROUND_S) -> float:
    """Training of cfg's own model (DP when private), adversarial data generation, per-step and per-round
    costs included."""
    k = attack_passes(cfg.attack, cfg.attack_steps) * ATTACK_PASS if cfg.threat != NO_THREAT else 0.0
    passes = cfg.rounds * train_images(cfg) * (cfg.local_epochs + cfg.adv_fraction * k)
    fixed = cfg.rounds * (round_s + local_steps(cfg) * STEP_S)
    return passes * pass_seconds(cfg) * (_arch(cfg).dp_factor if cfg.private else 1.0) + fixed


def has_twin(cfg: CycleConfig) -> bool:
    return cfg.private and cfg.train_twin


def twin_config(cfg: CycleConfig) -> CycleConfig:
    return cfg.replace(epsilon=None)  # as cycle._twin builds it


def reviewer_passes(cfg: CycleConfig) -> float:
    """Forward+backward passes (all images together) of the opt-in reviewer evaluation (cycle.py): AutoAttack on
    its subset, the gradient-masking checks on theirs (configured PGD, PGD at a large eps, PGD with 5x the
    steps, Square; every model) and PGD at every nonzero eps of the grid (every model)."""
    from ..attacks import ATTACKS
    from ..evaluate import MASKING_IMAGES, MORE_STEPS_FACTOR

    n = eval_images(cfg)
    models = 2 * (2 if has_twin(cfg) else 1)  # float and int8 (through BPDA), own and twin
    pgd = cfg.attack_steps * attack_runs("PGD", cfg.attack_repeats)
    passes = 0.0
    if cfg.autoattack:
        passes += min(cfg.autoattack_samples, n) * attack_passes("AutoAttack", cfg.attack_steps)
    if cfg.masking_checks:
        square = ATTACKS.get("Square").cost_passes(cfg.attack_steps) * attack_runs("Square", cfg.attack_repeats)
        passes += models * min(MASKING_IMAGES, n) * (pgd * (2 + MORE_STEPS_FACTOR) + square)
    if cfg.attack_eps_grid:
        passes += models * n * pgd * sum(1 for e in cfg.attack_eps_grid if e > 0)
    return passes


def int8_compiles(cfg: CycleConfig) -> int:
    """Inductor compiles of a trial's int8 models (cycle.lower_models): one per int8 model (own, twin) where the
    trial lowers (int8_lowering inductor, or auto on a test split of >= LOWER_MIN_PIXELS), plus batch 1 of its
    own for the latency metrics (int8_latency)."""
    from ..config import LOWER_MIN_PIXELS
    from ..datasets import image_size_of

    data = _dataset(cfg)
    test = data.test
    if cfg.test_samples is not None:  # as eval_images
        test = cfg.test_samples if data.meta.get("draws_samples") else min(cfg.test_samples, test)
    lowers = cfg.int8_lowering == "inductor" or (
        cfg.int8_lowering == "auto" and test * image_size_of(cfg) ** 2 >= LOWER_MIN_PIXELS
    )
    return (2 if has_twin(cfg) else 1) + int(cfg.int8_latency) if lowers else 0


def trial_phases(cfg: CycleConfig) -> dict[str, float]:
    """Default seconds per phase of one trial; twin_train as if the twin were not cached."""
    runs = sum(attack_passes(a, cfg.attack_steps) * attack_runs(a, cfg.attack_repeats) for a in cfg.eval_attacks)
    generators = (2 if has_twin(cfg) else 1) * 2  # the float models and their int8 models' BPDA generators
    passes = eval_images(cfg) * runs * generators + reviewer_passes(cfg)
    return {
        "dp_train": train_seconds(cfg),
        "twin_train": train_seconds(twin_config(cfg), TWIN_ROUND_S) if has_twin(cfg) else 0.0,
        "attack_eval": passes * pass_seconds(cfg) * ATTACK_PASS + EVAL_FIXED_S,
        "overhead": TRIAL_OVERHEAD_S + int8_compiles(cfg) * INT8_COMPILE_S,
    }


@dataclass
class Calibration:
    """Measured / modelled seconds per phase: by (arch, phase), else by phase, else 1."""

    source: str = "built-in defaults (2-core CPU, benchmarks/results)"
    by_arch: dict[tuple[str, str], float] = field(default_factory=dict)
    by_phase: dict[str, float] = field(default_factory=dict)
    runs: int = 0

    def factor(self, arch: str, phase: str) -> float:
        return self.by_arch.get((arch, phase), self.by_phase.get(phase, 1.0))


@dataclass
class StoredTrial:
    """A finished trial run: its config, its time_* metrics, and its wall seconds (MLflow start to end)."""

    config: CycleConfig
    metrics: dict[str, float]
    wall_s: float | None = None


def measured_phases(trial: StoredTrial) -> dict[str, float | None]:
    """The trial's seconds per phase (None where not measured: a cached twin, no run end time)."""
    m = trial.metrics
    twin = m.get("time_train_twin_s")
    inside = m.get("time_train_s", 0.0) + (twin or 0.0) + m.get("time_attack_s", 0.0) + m.get("time_eval_s", 0.0)
    return {
        "dp_train": m.get("time_train_s"),
        "twin_train": twin if twin else None,
        "attack_eval": m.get("time_attack_s", 0.0) + m.get("time_eval_s", 0.0) if "time_attack_s" in m else None,
        "overhead": trial.wall_s - inside if trial.wall_s is not None else None,
    }


def calibrate(trials: Sequence[StoredTrial], source: str) -> Calibration:
    """Factors from finished trials: sum of measured / sum of modelled seconds, per (arch, phase) and per phase."""
    sums: dict[tuple[str, str], list[float]] = {}
    for trial in trials:
        model = trial_phases(trial.config)
        for phase, seconds in measured_phases(trial).items():
            if seconds is None or model[phase] <= 0:
                continue
            for key in ((trial.config.arch, phase), ("*", phase)):
                pair = sums.setdefault(key, [0.0, 0.0])
                pair[0] += max(seconds, 0.0)
                pair[1] += model[phase]
    factors = {key: measured / modelled for key, (measured, modelled) in sums.items() if modelled > 0}
    return Calibration(
        source=f"{source} ({len(trials)} finished trials)",
        by_arch={k: v for k, v in factors.items() if k[0] != "*"},
        by_phase={k[1]: v for k, v in factors.items() if k[0] == "*"},
        runs=len(trials),
    )


@dataclass
class Estimate:
    trials: int
    twins: int  # distinct non-private twins the trials need
    twins_cached: int  # of those, already in the sweep's twin cache
    phase_s: dict[str, float]  # summed over the trials (+ the sweep's overhead)
    source: str
    sweep_s: float = SWEEP_OVERHEAD_S  # of phase_s["overhead"]: once per sweep, not shared out over slots

    @property
    def total_s(self) -> float:
        return sum(self.phase_s.values())

    def wall_s(self, at_once: int) -> float:
        """The sweep's own overhead, then the trials' seconds shared by ``at_once`` slots."""
        return self.sweep_s + (self.total_s - self.sweep_s) / at_once


def estimate(
    configs: Sequence[CycleConfig], n_trials: int, calib: Calibration, cached: Iterable[str] = (), workers: int = 1
) -> Estimate:
    """``n_trials`` trials drawn from ``configs`` (a grid: the same list; a search: its proposals, averaged).
    Twins: one per distinct training key not in ``cached``, at most one per trial. ``workers``: trials at
    once, each worker's first trial paying WORKER_WARMUP_S."""
    if not configs:
        raise ValueError("no trial configs to estimate")
    scale = n_trials / len(configs)
    totals = dict.fromkeys(PHASES, 0.0)
    twins: dict[str, CycleConfig] = {}
    for cfg in configs:
        for phase, seconds in trial_phases(cfg).items():
            if phase != "twin_train":
                totals[phase] += seconds * calib.factor(cfg.arch, phase) * scale
        if has_twin(cfg):
            twins.setdefault(twin_config(cfg).training_key(), cfg)
    cached = set(cached)
    todo = [cfg for key, cfg in twins.items() if key not in cached]
    if todo:
        mean = sum(trial_phases(c)["twin_train"] * calib.factor(c.arch, "twin_train") for c in todo) / len(todo)
        totals["twin_train"] = mean * min(len(todo), n_trials)
    # a store's per-trial overheads already hold its workers' warm-up
    warmup = WORKER_WARMUP_S * min(workers, n_trials) if calib.runs == 0 else 0.0
    totals["overhead"] += SWEEP_OVERHEAD_S + warmup
    return Estimate(n_trials, min(len(twins), n_trials), len(twins) - len(todo), totals, calib.source)


def concurrency(n_trials: int, max_concurrent: int | None, slots: int | None) -> int:
    """Trials at once: the least of --max-concurrent, the slots and the trials. Slots None (a cluster not
    asked): --max-concurrent, or 1 without it."""
    if slots is None and max_concurrent is None:
        slots = 1
    return max(1, min(n for n in (max_concurrent, slots, n_trials) if n is not None))


def _num(x: float) -> str:
    return f"{x:,.2f}" if abs(x) >= 1 else f"{x:.3g}"


def _seconds(x: float) -> str:
    return f"{x:>12,.0f}" if x >= 100 else f"{x:>12.1f}"


def _duration(seconds: float) -> str:
    """Hours or minutes, and always the seconds: a smoke grid's estimate is compared with `time`'s."""
    coarse = f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"
    return f"{coarse} ({seconds:,.0f} s)"


def local_slots(cpus: float, cpus_per_trial: float) -> int:
    return max(1, math.floor(cpus / cpus_per_trial + 1e-9))
