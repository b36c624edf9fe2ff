"""One PSREval cycle: data -> training -> quantize -> attack -> metrics.

``run_cycle(cfg)`` is the library's one call. It trains the configured model
(DP when ``cfg.epsilon`` is set) and, for a private cycle, its non-private
twin (same seed, data, arch and threat), quantizes both to int8, and attacks
them. It imports neither Ray nor MLflow; those wrap it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from .attacks import AttackSpec, generate, transfers
from .config import LOWER_MIN_PIXELS, CycleConfig, resolve_device
from .data import DataBundle, load_data
from .evaluate import (
    MASKING_IMAGES,
    Attacked,
    Cell,
    accuracy,
    attack_matrix,
    eps_curve,
    masking_checks,
    mean_std,
    predict,
    seeded_subset,
    wilson,
)
from .federated import Federation, RoundResult
from .hardware import cpu_info
from .models import build_model
from .quantize import LoweredInt8Model, bpda_model, latency_metrics, lower_int8, quantize_static, size_bytes
from .timing import PhaseTimer
from .twin_cache import TwinCache

Progress = Callable[[str], None]
# Called after every round of the cycle's own model with the round's numbers
# and the Federation, whose state_dict() is a resumable checkpoint.
RoundHook = Callable[[RoundResult, Federation], None]


@dataclass
class TrainedModel:
    name: str  # "nonprivate" | "dp"
    float_model: nn.Module
    int8_model: nn.Module | None = None  # the evaluated (deployed) int8 model: lowered where lower_models lowered it
    int8_reference: nn.Module | None = None  # the PT2E reference graph it was lowered from (None: not lowered)
    history: list[dict] = field(default_factory=list)
    privacy: dict | None = None
    cached: bool = False


@dataclass
class CycleResult:
    config: CycleConfig
    metrics: dict[str, float | None]
    history: list[dict]  # per FL round of the cycle's own model
    models: dict[str, TrainedModel]
    examples: dict[str, torch.Tensor]  # clean/adversarial/labels of eval_attacks[0]: the image grid
    # The DP path that trained the cycle's model (None when non-private): {"clipping": "bookkeeping" | "opacus",
    # "fallback": why not book-keeping (the layer without a rule, or grad_sampler=opacus) or None}. metrics.json
    # keeps it under "dp"; MLflow as the tags psreval.dp_clipping / psreval.dp_fallback; the number
    # metrics["dp_bookkeeping"] (1/0) says the same where only numbers go.
    dp: dict[str, str | None] | None = None


def dp_path(privacy: dict | None) -> dict[str, str | None] | None:
    """CycleResult.dp from a TrainedModel.privacy dict."""
    if not privacy:
        return None
    return {"clipping": privacy.get("clipping"), "fallback": privacy.get("clipping_fallback")}


def _fresh_model(cfg: CycleConfig, data: DataBundle) -> nn.Module:
    torch.manual_seed(cfg.seed)  # identical init for a model and its twin
    return build_model(cfg.arch, data.in_channels, data.num_classes, data.mean, data.std)


def _train(
    cfg: CycleConfig,
    name: str,
    data: DataBundle,
    device: str,
    timer: PhaseTimer,
    progress: Progress,
    on_round: RoundHook | None,
    resume: dict | None = None,
) -> TrainedModel:
    fed = Federation(cfg, _fresh_model(cfg, data), data, device, timer)
    if resume is not None:
        fed.load_state_dict(resume)
        progress(f"[{name}] resumed from a checkpoint after round {len(fed.history)}")

    def report(r: RoundResult) -> None:
        eps = f"  eps {r.epsilon:.3f}" if r.epsilon is not None else ""
        progress(f"[{name}] round {r.round}/{cfg.rounds}  loss {r.train_loss:.4f}  val acc {r.acc_val:.4f}{eps}")
        if on_round is not None:
            on_round(r, fed)

    model = fed.train(report)
    privacy = fed.privacy()
    return TrainedModel(name, model, history=[vars(r) for r in fed.history], privacy=vars(privacy) if privacy else None)


def _twin(
    cfg: CycleConfig, data: DataBundle, device: str, timer: PhaseTimer, progress: Progress, cache: TwinCache | None
) -> TrainedModel:
    """The non-private twin of ``cfg``: from the cache, or trained here (once across every process that
    shares the cache: the others wait for it, see twin_cache.TwinCache.get_or_train)."""
    twin_cfg = cfg.replace(epsilon=None)
    trained: list[TrainedModel] = []

    def train() -> dict:
        with timer.phase("train_twin"):
            twin = _train(twin_cfg, "nonprivate", data, device, timer, progress, None)
        trained.append(twin)
        return {"state_dict": {k: v.cpu() for k, v in twin.float_model.state_dict().items()}, "history": twin.history}

    if cache is None:
        train()
        return trained[0]
    payload, fresh = cache.get_or_train(twin_cfg, train, progress)
    if fresh:
        return trained[0]
    model = _fresh_model(twin_cfg, data)
    try:
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError) as exc:  # same key, other shapes: a foreign file; train without it
        progress(f"[nonprivate] twin {twin_cfg.training_key()}: the cached weights do not fit ({exc}); training")
        train()
        return trained[0]
    progress(f"[nonprivate] twin {twin_cfg.training_key()} loaded from cache")
    return TrainedModel("nonprivate", model.to(device), history=payload["history"], cached=True)


def lower_models(
    cfg: CycleConfig, data: DataBundle, models: dict[str, TrainedModel], timer: PhaseTimer, progress: Progress
) -> dict[str, float]:
    """Replace each model's reference int8 graph by its lowered form (quantize.lower_int8) as cfg.int8_lowering
    says; all or none (a model that cannot be lowered leaves every model on the reference graph, so the int8
    targets are the same kind). Returns ``int8_lowered`` (1/0) and says which ran in one progress line."""
    pixels = len(data.test) * data.test.x.shape[-2] * data.test.x.shape[-1]
    why = None
    if cfg.int8_lowering == "reference":
        why = "int8_lowering=reference"
    elif cfg.int8_lowering == "auto" and pixels < LOWER_MIN_PIXELS:
        why = (
            f"int8_lowering=auto: the test split has {pixels:,} pixels < {LOWER_MIN_PIXELS:,}, too few to repay "
            "the compile"
        )
    elif cfg.int8_lowering == "auto" and not cpu_info()["cpu_int8_vnni"]:
        # Without VNNI oneDNN's u8s8 kernels can saturate their 16-bit sums: under ONEDNN_MAX_CPU_ISA=AVX2 a
        # lowered resnet9 disagreed with its reference graph on 33 of 256 images (0-2 with VNNI).
        why = "int8_lowering=auto: no VNNI on this CPU (or ONEDNN_MAX_CPU_ISA caps it), where int8 kernels may saturate"
    lowered: dict[str, nn.Module] = {}
    if why is None:
        with timer.phase("int8_compile"):
            for name, m in models.items():
                model, why = lower_int8(m.int8_model)
                if why is not None:
                    break
                lowered[name] = model
    if why is not None:
        progress(f"int8: the PT2E reference graph (int8 weights, quantize/dequantize around fp32 kernels): {why}")
        return {"int8_lowered": 0.0}
    for name, model in lowered.items():
        models[name].int8_reference, models[name].int8_model = models[name].int8_model, model
    seconds = sum(model.compile_s for model in lowered.values())
    progress(f"int8: lowered by inductor to oneDNN int8 kernels ({len(lowered)} models compiled in {seconds:.1f} s)")
    return {"int8_lowered": 1.0}


def lowering_check(main: TrainedModel, x: torch.Tensor) -> dict[str, float]:
    """Predictions of the lowered int8 model against its reference graph on ``x`` (the attacked images):
    ``int8_lowered_disagree`` images of ``n_int8_lowered_check`` predicted differently. Nothing when not lowered."""
    if main.int8_reference is None:
        return {}
    disagree = int((predict(main.int8_model, x) != predict(main.int8_reference, x)).sum())
    return {"int8_lowered_disagree": disagree, "n_int8_lowered_check": len(x)}


def int8_latency(main: TrainedModel, timer: PhaseTimer) -> dict[str, float]:
    """quantize.latency_metrics of the trial's own float and (deployed) int8 model; batch 1 of a lowered model
    is compiled first, in the int8_compile phase, so no latency counts a compile."""
    if isinstance(main.int8_model, LoweredInt8Model):
        with timer.phase("int8_compile"):
            main.int8_model.compile_batch(1)
    with timer.phase("int8_latency"):
        return latency_metrics(main.float_model, main.int8_model)


BPDA = "bpda"  # generator name of the white-box attack through the int8 model's straight-through twin
VAL_ATTACK_IMAGES = 1000  # validation images attacked for acc_val_wb_pgd (model selection only)


def eval_images(cfg: CycleConfig, data: DataBundle) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images attacked at inference: the whole test split unless
    ``eval_samples`` asks for a seeded subset. Clean accuracies reported beside
    robust ones (acc_clean_eval_*) are measured on exactly these images."""
    if cfg.eval_samples is None or cfg.eval_samples >= len(data.test):
        return data.test.x, data.test.y
    gen = torch.Generator().manual_seed(cfg.seed)
    idx = torch.randperm(len(data.test), generator=gen)[: cfg.eval_samples]
    return data.test.x[idx], data.test.y[idx]


def with_ci(metrics: dict, key: str, p: float, n: int, suffix: str = "") -> None:
    """metrics[key+suffix] = p, and key_ci_low / key_ci_high: Wilson 95% over n images."""
    metrics[key + suffix] = p
    metrics[f"{key}_ci_low"], metrics[f"{key}_ci_high"] = wilson(p, n)


def clean_metrics(
    models: dict[str, TrainedModel], own: str, data: DataBundle, x_eval: torch.Tensor, y_eval: torch.Tensor
) -> dict[str, float]:
    metrics: dict[str, float] = {"n_test": len(data.test), "n_eval": len(y_eval)}
    for m in models.values():
        suffix = "" if m.name == own else f"_{m.name}"
        for kind, model in (("float", m.float_model), ("int8", m.int8_model)):
            full = accuracy(model, data.test.x, data.test.y)
            with_ci(metrics, f"acc_clean_{kind}{suffix}", full, len(data.test))
            target = m.name if kind == "float" else f"int8_{m.name}"
            # by default the attacked images are the test split itself: no second pass over it
            metrics[f"acc_clean_eval_{target}"] = full if x_eval is data.test.x else accuracy(model, x_eval, y_eval)
    return metrics


def validation_metrics(cfg: CycleConfig, model: nn.Module, data: DataBundle, device: str) -> dict[str, float]:
    """What searches and early stopping may look at: the validation split only."""
    x, y = data.val.x[:VAL_ATTACK_IMAGES], data.val.y[:VAL_ATTACK_IMAGES]
    spec = AttackSpec("PGD", cfg.attack_eps, cfg.attack_alpha, cfg.attack_steps)
    adv = generate(model, x, y, spec, num_classes=data.num_classes, seed=cfg.seed, device=device)
    return {"acc_val_float": accuracy(model, data.val.x, data.val.y), "acc_val_wb_pgd": accuracy(model, adv, y)}


def size_and_privacy_metrics(main: TrainedModel) -> dict[str, float | None]:
    metrics: dict[str, float | None] = {
        "size_bytes_float": size_bytes(main.float_model),
        "size_bytes_int8": size_bytes(main.int8_model),
    }
    metrics["size_reduction_pct"] = 100.0 * (1 - metrics["size_bytes_int8"] / metrics["size_bytes_float"])
    privacy = main.privacy or {}
    for key in ("epsilon_spent", "noise_multiplier", "sample_rate", "dp_steps", "delta"):
        metrics[key] = privacy.get(key)
    metrics["dp_bookkeeping"] = None if not privacy else float(privacy.get("clipping") == "bookkeeping")
    if privacy.get("clipping") == "client":  # DP-FedAvg: epsilon_spent is a client-level guarantee; say so by name
        metrics["client_epsilon_spent"] = privacy["epsilon_spent"]
    metrics["final_train_loss"] = main.history[-1]["train_loss"]
    return metrics


def backdoor_metrics(cfg: CycleConfig, main: TrainedModel, data: DataBundle) -> dict[str, float]:
    """A backdoor's attack success rate on the triggered test images outside its target class, beside
    the clean accuracies, for the float and int8 models (a Wilson 95% interval over those images)."""
    from .threats import THREATS

    asr = THREATS.get(cfg.threat).meta.get("asr")
    if asr is None:
        return {}
    metrics: dict[str, float] = {}
    for kind, model in (("float", main.float_model), ("int8", main.int8_model)):
        rate, n = asr(model, data.test.x, data.test.y, cfg.threat_params)
        if n == 0:  # every test image is of the target class: no success rate to report
            return {}
        with_ci(metrics, f"asr_{kind}", rate, n)
    metrics["n_asr"] = n
    return metrics


def cell_keys(attack: str, generator: str, target: str, own: str, private: bool) -> list[tuple[str, str, bool]]:
    """Metric stems of one (attack, generator, target) cell, each with the target whose clean accuracy on
    the same images defines its accuracy loss, and whether it is white-box (headline: worst case over
    restarts per image) or a transfer (headline: the examples of the restart that fooled the generator)."""
    a = attack.lower()
    keys = []
    if generator == BPDA:
        return [(f"acc_wb_{a}_int8_bpda", target, True)]
    if generator.startswith(BPDA + "_"):  # the twin's int8 model through its straight-through twin
        return [(f"acc_wb_{a}_int8_bpda_{generator[len(BPDA) + 1 :]}", target, True)]
    if generator == own and target == own:
        keys.append((f"acc_wb_{a}", target, True))
    if generator == own and target == f"int8_{own}":
        keys.append((f"acc_wb_{a}_int8", target, False))  # transfer from the float model to its int8 version
    if private:
        keys.append((f"acc_transfer_{a}_{generator}_to_{target}", target, generator == target))
    return keys


def robust_metrics(
    matrix: dict[tuple[str, str, str], Cell], own: str, private: bool, clean: dict[str, float], n: int
) -> dict[str, float]:
    """Per cell: the headline ``<stem>_worst`` (Cell.worst) and the secondary ``<stem>_mean`` (mean over
    runs, std where run more than once), each with a Wilson interval over the n attacked images; the
    accuracy loss (clean on the same images - headline)."""
    metrics: dict[str, float] = {}
    for (attack, generator, target), cell in matrix.items():
        metrics[f"attack_runs_{attack.lower()}"] = len(cell.runs)
        for key, loss_target, white_box in cell_keys(attack, generator, target, own, private):
            worst = cell.worst(white_box)
            with_ci(metrics, f"{key}_worst", worst, n)
            mean, std = mean_std(cell.run_accuracies())
            with_ci(metrics, key, mean, n, suffix="_mean")
            if len(cell.runs) > 1:
                metrics[f"{key}_std"] = std
            if key.startswith("acc_wb_") and f"acc_clean_eval_{loss_target}" in clean:
                metrics[key.replace("acc_", "acc_loss_", 1)] = clean[f"acc_clean_eval_{loss_target}"] - worst
    return metrics


def _drop_twin_bpda_loss(metrics: dict[str, float]) -> None:
    """acc_loss_* is declared for the trial's own models only."""
    for key in [k for k in metrics if k.startswith("acc_loss_wb_") and "_int8_bpda_" in k]:
        del metrics[key]


def autoattack_metrics(
    cfg: CycleConfig,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    pgd: Cell | None,
    num_classes: int,
    device: str,
    progress: Progress,
) -> dict[str, float]:
    """AutoAttack (standard) on the trial's float model, on a fixed subset of the attacked images: the first
    ``autoattack_samples`` of a permutation seeded by ``cfg.seed`` (all of them when there are fewer), with
    the headline PGD on exactly those images beside it (``acc_wb_autoattack_pgd``) when PGD was evaluated."""
    idx = seeded_subset(len(y), cfg.autoattack_samples, cfg.seed)
    spec = AttackSpec("AutoAttack", cfg.attack_eps, cfg.attack_alpha, cfg.attack_steps)
    adv = generate(model, x[idx], y[idx], spec, num_classes=num_classes, seed=cfg.seed, device=device)
    metrics: dict[str, float] = {"n_autoattack": len(idx)}
    with_ci(metrics, "acc_wb_autoattack", accuracy(model, adv, y[idx]), len(idx))
    if pgd is not None:
        with_ci(metrics, "acc_wb_autoattack_pgd", float(pgd.survivors()[idx].float().mean()), len(idx))
    progress(
        f"autoattack: {metrics['acc_wb_autoattack']:.4f} on {len(idx)} images"
        + (f" (PGD on the same images {metrics['acc_wb_autoattack_pgd']:.4f})" if pgd is not None else "")
    )
    return metrics


def _attack_matrix(
    cfg: CycleConfig,
    models: dict[str, TrainedModel],
    own: str,
    bpda: dict[str, nn.Module],
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    num_classes: int,
    device: str,
    progress: Progress,
) -> tuple[dict[tuple[str, str, str], Cell], dict[str, torch.Tensor]]:
    """Every configured attack from each float model to each target (evaluate.attack_matrix), and white-box on
    each quantized model itself through its straight-through twin (``bpda``, by model): the trial's own int8
    model (generator "bpda") and the twin's ("bpda_nonprivate"). Returns the matrix and the image grid's
    examples."""
    examples: dict[str, torch.Tensor] = {}

    def keep(attack: str, generator: str, adv: torch.Tensor) -> None:
        if attack == cfg.eval_attacks[0] and generator == own:
            examples.update(clean=x_eval[:8], adversarial=adv[:8], labels=y_eval[:8])

    specs = [AttackSpec.from_config(cfg, name) for name in cfg.eval_attacks]
    targets = {name: m.float_model for name, m in models.items()}
    targets.update({f"int8_{name}": m.int8_model for name, m in models.items()})
    common = dict(repeats=cfg.attack_repeats, seed=cfg.seed, num_classes=num_classes, progress=progress)
    matrix = attack_matrix(
        {name: m.float_model for name, m in models.items()},
        targets,
        x_eval,
        y_eval,
        specs,
        device=device,
        keep_examples=keep,
        # a minimum-norm attack's examples sit on one model's boundary: white-box cells only
        evaluated=lambda attack, g, t: transfers(attack) or g == t,
        **common,
    )
    for name in models:
        generator = {BPDA if name == own else f"{BPDA}_{name}": bpda[name]}
        target = {f"int8_{name}": models[name].int8_model}
        matrix.update(attack_matrix(generator, target, x_eval, y_eval, specs, device="cpu", **common))
    return matrix, examples


def _review_metrics(
    cfg: CycleConfig,
    models: dict[str, TrainedModel],
    own: str,
    matrix: dict[tuple[str, str, str], Cell],
    bpda: dict[str, nn.Module],
    x_eval: torch.Tensor,
    y_eval: torch.Tensor,
    num_classes: int,
    device: str,
    timer: PhaseTimer,
    progress: Progress,
) -> dict[str, float]:
    """What a reviewer asks for, each when configured: AutoAttack, the gradient-masking checks, and
    robustness curves over attack_eps_grid."""
    metrics: dict[str, float] = {}
    attacked = {name: Attacked(m.float_model, m.float_model, device) for name, m in models.items()}
    attacked.update({f"int8_{name}": Attacked(bpda[name], m.int8_model, "cpu") for name, m in models.items()})
    spec = AttackSpec("PGD", cfg.attack_eps, cfg.attack_alpha, cfg.attack_steps)
    reviewer = dict(repeats=cfg.attack_repeats, seed=cfg.seed, num_classes=num_classes)
    if cfg.autoattack:
        with timer.phase("autoattack"):
            pgd = matrix.get(("PGD", own, own))
            metrics.update(
                autoattack_metrics(cfg, models[own].float_model, x_eval, y_eval, pgd, num_classes, device, progress)
            )
    if cfg.masking_checks:
        with timer.phase("masking_checks"):
            idx = seeded_subset(len(y_eval), MASKING_IMAGES, cfg.seed)
            checks, messages = masking_checks(attacked, x_eval[idx], y_eval[idx], spec, **reviewer)
            metrics.update(checks)
            for line in messages:
                progress("WARNING " + line)
            if not messages:
                progress(f"masking checks: no model flagged ({len(idx)} images, {len(attacked)} models)")
    if cfg.attack_eps_grid:
        with timer.phase("eps_curve"):
            metrics.update(eps_curve(attacked, x_eval, y_eval, cfg.attack_eps_grid, spec, **reviewer))
            progress(f"robustness curves: {len(cfg.attack_eps_grid)} eps x {len(attacked)} models")
    return metrics


def _trained_models(
    cfg: CycleConfig,
    own: str,
    data: DataBundle,
    device: str,
    timer: PhaseTimer,
    progress: Progress,
    on_round: RoundHook | None,
    resume: dict | None,
    cache: TwinCache | None,
) -> dict[str, TrainedModel]:
    """The cycle's own model (resumed, if asked) and, for a private cycle with a twin, the non-private twin."""
    with timer.phase("train"):
        main = _train(cfg, own, data, device, timer, progress, on_round, resume)
    models = {own: main}
    dp = dp_path(main.privacy)
    if dp is not None:
        why = f" ({dp['fallback']})" if dp["fallback"] else ""
        progress(f"[dp] per-sample clipping: {dp['clipping']}{why}")
    if cfg.private and cfg.train_twin:
        models["nonprivate"] = _twin(cfg, data, device, timer, progress, cache)
    return models


def run_cycle(
    cfg: CycleConfig,
    *,
    cache: TwinCache | None = None,
    progress: Progress | None = None,
    on_round: RoundHook | None = None,
    resume: dict | None = None,
) -> CycleResult:
    """Run one cycle. ``resume`` is a Federation.state_dict() from ``on_round``:
    training continues after that round with the same accountant and RNG state."""
    progress = progress or (lambda msg: None)
    device = resolve_device(cfg.device, cfg.precision)
    timer = PhaseTimer()
    start = time.perf_counter()

    with timer.phase("data"):
        data = load_data(cfg)
    progress(
        f"data: {cfg.dataset} train {len(data.train)} / val {len(data.val)} / test {len(data.test)}, "
        f"{data.num_classes} classes, images {tuple(data.train.x.shape[1:])}; device {device}"
    )
    own = "dp" if cfg.private else "nonprivate"
    models = _trained_models(cfg, own, data, device, timer, progress, on_round, resume, cache)
    main = models[own]

    with timer.phase("quantize"):
        for m in models.values():
            m.float_model.eval()
            m.int8_model = quantize_static(m.float_model, data.val.x)
        lowering = lower_models(cfg, data, models, timer, progress)

    with timer.phase("eval"):
        x_eval, y_eval = eval_images(cfg, data)
        metrics = clean_metrics(models, own, data, x_eval, y_eval)
        metrics.update(lowering)
        metrics.update(lowering_check(main, x_eval))
        metrics.update(validation_metrics(cfg, main.float_model, data, device))
    if cfg.int8_latency:
        metrics.update(int8_latency(main, timer))
    metrics.update(size_and_privacy_metrics(main))
    metrics.update(backdoor_metrics(cfg, main, data))

    bpda = {name: bpda_model(m.int8_model) for name, m in models.items()}  # white-box on each int8 model
    with timer.phase("attack"):
        matrix, examples = _attack_matrix(cfg, models, own, bpda, x_eval, y_eval, data.num_classes, device, progress)
    metrics.update(robust_metrics(matrix, own, len(models) > 1, metrics, len(y_eval)))
    _drop_twin_bpda_loss(metrics)
    metrics.update(
        _review_metrics(cfg, models, own, matrix, bpda, x_eval, y_eval, data.num_classes, device, timer, progress)
    )

    metrics.update(timer.as_metrics())
    metrics["time_total_s"] = round(time.perf_counter() - start, 4)
    return CycleResult(cfg, metrics, main.history, models, examples, dp_path(main.privacy))
