"""Clean accuracy, and robust accuracy of generator x target attack matrices.

White-box (WB) is the diagonal of the matrix: a model attacked with examples
generated on itself. Partial WB / transfer is every other cell: examples
generated on one model evaluated on another of the same architecture
(including its int8 version, which cannot be attacked directly).
"""

from __future__ import annotations

import math
import statistics
from typing import Callable, Mapping

import torch
from torch import nn

from .attacks import ATTACKS, AttackSpec, generate


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


def wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of an accuracy ``p`` measured on ``n`` images.

    Better than p +- z*sqrt(p(1-p)/n) near 0 and 1, where robust accuracies
    live. For a mean over attack runs on the same images, n is still the
    number of images: the runs are not independent samples.
    """
    if n <= 0:
        return math.nan, math.nan
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def runs_of(spec: AttackSpec, repeats: int) -> int:
    """Randomized attacks (the registry's ``randomized``: a random start) run ``repeats`` times; others once."""
    return repeats if ATTACKS.get(spec.name).randomized else 1


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
) -> dict[tuple[str, str, str], list[float]]:
    """Robust accuracy per (attack, generator, target), one value per run.

    Each (attack, run, generator) generates its examples once and every
    target is evaluated on them, so targets are compared on identical inputs.
    Run r of every generator uses seed ``seed + r``. Deterministic attacks
    (``randomized=False``: FGSM, FAB with one restart) run once: repeating them gives the same
    examples and a std of 0 by construction.
    """
    results: dict[tuple[str, str, str], list[float]] = {}
    for spec in specs:
        repeats_here = runs_of(spec, repeats)
        for r in range(repeats_here):
            for gname, gmodel in generators.items():
                adv = generate(gmodel, x, y, spec, num_classes=num_classes, seed=seed + r, device=device)
                if keep_examples is not None and r == 0:
                    keep_examples(spec.name, gname, adv)
                for tname, tmodel in targets.items():
                    results.setdefault((spec.name, gname, tname), []).append(accuracy(tmodel, adv, y))
            if progress is not None:
                progress(f"attack {spec.name} run {r + 1}/{repeats_here} done")
    return results
