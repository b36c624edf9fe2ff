"""Clean accuracy, and robust accuracy of generator x target attack matrices.

White-box (WB) is the diagonal of the matrix: a model attacked with examples
generated on itself. Partial WB / transfer is every other cell: examples
generated on one model evaluated on another of the same architecture
(including its int8 version, which cannot be attacked directly).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from torch import nn

from .attacks import ATTACKS, AttackSpec, generate
from .intervals import wilson  # also evaluate.wilson: what the cycle, xseed and the recipe check import


def model_device(model: nn.Module) -> torch.device:
    """int8 eager models have packed params only, and run on CPU."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    was_training = model.training
    model.eval()
    device = model_device(model)
    preds = []
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            preds.append(model(x[start : start + batch_size].to(device)).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def runs_of(spec: AttackSpec, repeats: int) -> int:
    """Randomized attacks (the registry's ``randomized``: a random start) run ``repeats`` times; others once."""
    return repeats if ATTACKS.get(spec.name).randomized else 1


@dataclass
class Cell:
    """One (attack, generator, target) cell of an attack matrix, per image.

    ``runs``: per run (restart), whether the target still classified each image correctly on that run's
    examples. ``chosen``: whether it did on the generator's *chosen* examples: per image, those of the first
    run that fooled the generator (run 0's where no run did). For a white-box cell (the target is the
    generator) both give the same worst case; for a transfer cell only ``chosen`` is the attacker's best
    guess, since the attacker sees the generator and not the target.
    """

    runs: list[torch.Tensor] = field(default_factory=list)
    chosen: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return len(self.runs[0])

    def run_accuracies(self) -> list[float]:
        return [float(r.float().mean()) for r in self.runs]

    def mean(self) -> float:
        """Mean over runs of the accuracy: the weaker, secondary figure (``_mean`` metrics)."""
        return statistics.fmean(self.run_accuracies())

    def survivors(self) -> torch.Tensor:
        """Per image: robust in every run (the worst case over restarts)."""
        return torch.stack(self.runs).all(0)

    def worst(self, white_box: bool = True) -> float:
        """The headline: white-box, an image counts as robust only if it survives every restart; transfer,
        the accuracy on the examples of the restart that fooled the generator."""
        correct = self.survivors() if white_box else self.chosen
        return float(correct.float().mean())


def worst_case_accuracy(correct_per_run: list[torch.Tensor]) -> float:
    """Accuracy when an image counts as robust only if it is classified correctly after every restart."""
    return float(torch.stack(correct_per_run).all(0).float().mean())


def attack_matrix(
    generators: Mapping[str, nn.Module],
    targets: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    specs: list[AttackSpec],
    *,
    repeats: int,
    seed: int,
    num_classes: int,
    device: str,
    keep_examples: Callable[[str, str, torch.Tensor], None] | None = None,
    progress: Callable[[str], None] | None = None,
    evaluated: Callable[[str, str, str], bool] | None = None,
) -> dict[tuple[str, str, str], Cell]:
    """Per (attack, generator, target): which images stay correctly classified, per run (a :class:`Cell`).

    Each (attack, run, generator) generates its examples once and every target is evaluated on them, so
    targets are compared on identical inputs. Run r of every generator uses seed ``seed + r``.
    Deterministic attacks (``randomized=False``: FGSM, FAB-T) run once: repeating them gives the same
    examples. ``evaluated(attack, generator, target)`` leaves cells out (a minimum-norm attack's transfer
    cells); default every cell.
    """
    results: dict[tuple[str, str, str], Cell] = {}
    for spec in specs:
        repeats_here = runs_of(spec, repeats)
        chosen: dict[str, torch.Tensor] = {}
        fooled: dict[str, torch.Tensor] = {}
        pairs = {g: [t for t in targets if evaluated is None or evaluated(spec.name, g, t)] for g in generators}
        for r in range(repeats_here):
            for gname, gmodel in generators.items():
                started = time.perf_counter()
                adv = generate(gmodel, x, y, spec, num_classes=num_classes, seed=seed + r, device=device)
                if progress is not None:  # what runs, on which model, how fast: attacks are most of a cycle
                    took = time.perf_counter() - started
                    progress(
                        f"attack {spec.name} run {r + 1}/{repeats_here}: crafted on {gname}, {len(x)} images in "
                        f"{took:.1f} s ({len(x) / max(took, 1e-9):.0f}/s); evaluated on {', '.join(pairs[gname])}"
                    )
                if keep_examples is not None and r == 0:
                    keep_examples(spec.name, gname, adv)
                if repeats_here > 1:  # the examples of the first restart that fooled the generator, per image
                    fooled_now = predict(gmodel, adv) != y.cpu()
                    if gname not in chosen:
                        chosen[gname], fooled[gname] = adv.clone(), fooled_now
                    else:
                        new = fooled_now & ~fooled[gname]
                        chosen[gname][new] = adv[new]
                        fooled[gname] |= new
                for tname in pairs[gname]:
                    correct = predict(targets[tname], adv) == y.cpu()
                    results.setdefault((spec.name, gname, tname), Cell()).runs.append(correct)
            if progress is not None:
                progress(f"attack {spec.name} run {r + 1}/{repeats_here} done")
        for gname in generators:
            for tname in pairs[gname]:
                cell = results[(spec.name, gname, tname)]
                cell.chosen = predict(targets[tname], chosen[gname]) == y.cpu() if gname in chosen else cell.runs[0]
    return results


def robust_correct(
    generator: nn.Module,
    target: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    repeats: int,
    seed: int,
    num_classes: int,
    device: str,
) -> torch.Tensor:
    """Per image: ``target`` classifies it correctly after every restart of ``spec`` run on ``generator``
    (the target itself for a white-box attack, a straight-through twin for an int8 target)."""
    runs = [
        predict(target, generate(generator, x, y, spec, num_classes=num_classes, seed=seed + r, device=device))
        == y.cpu()
        for r in range(runs_of(spec, repeats))
    ]
    return torch.stack(runs).all(0)


def seeded_subset(n: int, k: int | None, seed: int) -> torch.Tensor:
    """The first ``min(k, n)`` of a seeded permutation of ``range(n)`` (all of it, in order, when k is None
    or >= n): the fixed subsets that AutoAttack and the gradient-masking checks attack."""
    if k is None or k >= n:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:k].sort().values


# --- gradient-masking checks (Athalye et al. 2018; Carlini et al. 2019, "On evaluating adversarial robustness") ---
MASKING_IMAGES = 200  # the fixed, seeded subset of the attacked images the checks run on
LARGE_EPS = 0.3  # [0, 1] pixels: every image can be pushed to any class; robust accuracy must be about 0
LARGE_EPS_MAX_ACC = 0.10  # above this at LARGE_EPS: suspect
MORE_STEPS_FACTOR = 5  # PGD with 5x the steps ...
MORE_STEPS_MAX_GAIN = 0.02  # ... more than 2 points stronger than the configured PGD: suspect
MASKING_CHECKS = ("large_eps", "more_steps", "square")
MASKING_DOC = {
    "large_eps": f"PGD at eps {LARGE_EPS} leaves more than {LARGE_EPS_MAX_ACC:.0%} accuracy",
    "more_steps": f"PGD with {MORE_STEPS_FACTOR}x the steps is over {MORE_STEPS_MAX_GAIN * 100:.0f} points "
    "stronger, and by more than its 95% interval",
    "square": "gradient-free Square is stronger than PGD by more than its 95% interval",
}


@dataclass
class Attacked:
    """A model the checks and curves attack: ``generator`` gives the gradients (the model itself, or an int8
    model's straight-through twin), ``target`` is scored, ``device`` runs the gradient attacks."""

    generator: nn.Module
    target: nn.Module
    device: str


def _pgd_like(spec: AttackSpec, eps: float, steps: int | None = None) -> AttackSpec:
    """PGD at ``eps`` with the configured step size scaled with eps (alpha / eps kept)."""
    return AttackSpec("PGD", eps, spec.alpha * eps / spec.eps, steps or spec.steps)


def masking_checks(
    models: Mapping[str, Attacked],
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    repeats: int,
    seed: int,
    num_classes: int,
) -> tuple[dict[str, float], list[str]]:
    """The three gradient-masking checks on each model, on the images ``x`` (a small fixed subset).

    Per model (``acc_masking_<what>_<model>``, Wilson intervals over the ``n_masking`` images): the configured
    PGD (``pgd``), PGD at LARGE_EPS (``large_eps``), PGD with MORE_STEPS_FACTOR x the steps (``more_steps``)
    and Square run on the target itself, gradient-free (``square``; on an int8 model directly). A failed check
    sets ``masking_suspect_<check>`` to 1 (0 when every model passes) and adds a message naming the model and
    the numbers; it changes no other number. Returns (metrics, messages).
    """
    metrics: dict[str, float] = {"n_masking": len(y)}
    messages: list[str] = []
    flags = dict.fromkeys(MASKING_CHECKS, 0.0)
    n = len(y)
    large = min(1.0, max(LARGE_EPS, 2 * spec.eps))
    common = dict(repeats=repeats, seed=seed, num_classes=num_classes)
    for name, m in models.items():
        acc: dict[str, float] = {}
        runs = [
            ("pgd", m.generator, spec, m.device),
            ("large_eps", m.generator, _pgd_like(spec, large), m.device),
            ("more_steps", m.generator, _pgd_like(spec, spec.eps, spec.steps * MORE_STEPS_FACTOR), m.device),
            ("square", m.target, AttackSpec("Square", spec.eps, spec.alpha, spec.steps), model_device(m.target).type),
        ]
        for what, gen, s, device in runs:
            correct = robust_correct(gen, m.target, x, y, s, device=device, **common)
            acc[what] = float(correct.float().mean())
            metrics[f"acc_masking_{what}_{name}"] = acc[what]
            metrics[f"acc_masking_{what}_{name}_ci_low"], metrics[f"acc_masking_{what}_{name}_ci_high"] = wilson(
                acc[what], n
            )
        failed = {
            "large_eps": acc["large_eps"] > LARGE_EPS_MAX_ACC,
            # both beyond 2 points and beyond the 95% interval: on a small subset one image is several points
            "more_steps": acc["pgd"] - acc["more_steps"] > MORE_STEPS_MAX_GAIN
            and wilson(acc["more_steps"], n)[1] < acc["pgd"],
            "square": acc["square"] < acc["pgd"] and wilson(acc["square"], n)[1] < acc["pgd"],
        }
        for check, bad in failed.items():
            if bad:
                flags[check] = 1.0
                messages.append(
                    f"masking suspect ({check}) on {name}: {MASKING_DOC[check]} "
                    f"(PGD {acc['pgd']:.3f}, eps {large:g}: {acc['large_eps']:.3f}, "
                    f"{MORE_STEPS_FACTOR}x steps {acc['more_steps']:.3f}, Square {acc['square']:.3f}; {n} images)"
                )
    for check, flag in flags.items():
        metrics[f"masking_suspect_{check}"] = flag
    metrics["masking_suspect_any"] = float(any(flags.values()))
    return metrics, messages


# --- robustness curves ------------------------------------------------------------------------------------------
def eps_curve(
    models: Mapping[str, Attacked],
    x: torch.Tensor,
    y: torch.Tensor,
    grid: tuple[float, ...],
    spec: AttackSpec,
    *,
    repeats: int,
    seed: int,
    num_classes: int,
) -> dict[str, float]:
    """PGD robust accuracy (worst case over restarts) at every eps of ``grid`` for every model, the configured
    step size scaled with eps; eps 0 is the clean accuracy. Metrics: ``curve_eps_<i>`` (the eps),
    ``acc_curve_<i>_<model>`` with Wilson intervals, ``auc_curve_<model>`` (the area under accuracy vs eps,
    trapezoids, divided by the eps range: a mean accuracy over the grid) and ``n_curve``."""
    n = len(y)
    metrics: dict[str, float] = {"n_curve": n}
    grid = tuple(sorted(grid))
    for i, eps in enumerate(grid):
        metrics[f"curve_eps_{i}"] = eps
    for name, m in models.items():
        values = []
        for i, eps in enumerate(grid):
            if eps == 0:
                acc = float((predict(m.target, x) == y.cpu()).float().mean())
            else:
                correct = robust_correct(
                    m.generator, m.target, x, y, _pgd_like(spec, eps), repeats=repeats, seed=seed,
                    num_classes=num_classes, device=m.device,
                )  # fmt: skip
                acc = float(correct.float().mean())
            values.append(acc)
            metrics[f"acc_curve_{i}_{name}"] = acc
            metrics[f"acc_curve_{i}_{name}_ci_low"], metrics[f"acc_curve_{i}_{name}_ci_high"] = wilson(acc, n)
        metrics[f"auc_curve_{name}"] = curve_area(grid, values)
    return metrics


def curve_area(grid: tuple[float, ...] | list[float], values: list[float]) -> float:
    """Trapezoidal area under ``values`` over ``grid`` divided by the grid's range (its value alone for one point)."""
    if len(grid) < 2:
        return values[0] if values else math.nan
    area = sum((grid[i + 1] - grid[i]) * (values[i] + values[i + 1]) / 2 for i in range(len(grid) - 1))
    return area / (grid[-1] - grid[0])
