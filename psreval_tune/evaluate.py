"""Clean accuracy, and robust accuracy of generator x target attack matrices.

White-box (WB) is the diagonal of the matrix: a model attacked with examples
generated on itself. Partial WB / transfer is every other cell: examples
generated on one model evaluated on another of the same architecture
(including its int8 version, which cannot be attacked directly).
"""

from __future__ import annotations

import statistics
from typing import Callable, Mapping

import torch
from torch import nn

from .attacks import AttackSpec, generate


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
            preds.append(model(x[start:start + batch_size].to(device)).argmax(1).cpu())
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.int64)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    return float((predict(model, x, batch_size) == y.cpu()).float().mean())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


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
    """Robust accuracy per (attack, generator, target), one value per repeat.

    Each (attack, repeat, generator) generates its examples once and every
    target is evaluated on them, so targets are compared on identical inputs.
    Repeat r of every generator uses seed ``seed + r``.
    """
    results: dict[tuple[str, str, str], list[float]] = {}
    for spec in specs:
        for r in range(repeats):
            for gname, gmodel in generators.items():
                adv = generate(gmodel, x, y, spec, num_classes=num_classes, seed=seed + r, device=device)
                if keep_examples is not None and r == 0:
                    keep_examples(spec.name, gname, adv)
                for tname, tmodel in targets.items():
                    results.setdefault((spec.name, gname, tname), []).append(accuracy(tmodel, adv, y))
            if progress is not None:
                progress(f"attack {spec.name} repeat {r + 1}/{repeats} done")
    return results
