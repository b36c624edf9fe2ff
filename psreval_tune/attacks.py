"""Adversarial example generation with torchattacks (PGD, FGSM, FAB).

Inputs and outputs are [0, 1] images; models normalise internally, so
torchattacks' clamping to [0, 1] and ``eps`` are both in pixel space.
Attacks know nothing of federation: they take a plain float model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from .config import CycleConfig


@dataclass(frozen=True)
class AttackSpec:
    name: str  # PGD | FGSM | FAB
    eps: float
    alpha: float
    steps: int

    @classmethod
    def from_config(cls, cfg: CycleConfig, name: str | None = None) -> AttackSpec:
        return cls(name or cfg.attack, cfg.attack_eps, cfg.attack_alpha, cfg.attack_steps)


def build_attack(spec: AttackSpec, model: nn.Module, num_classes: int, seed: int):
    import torchattacks

    if spec.name == "PGD":
        return torchattacks.PGD(model, eps=spec.eps, alpha=spec.alpha, steps=spec.steps, random_start=True)
    if spec.name == "FGSM":
        return torchattacks.FGSM(model, eps=spec.eps)
    if spec.name == "FAB":
        return torchattacks.FAB(model, norm="Linf", eps=spec.eps, steps=spec.steps, n_classes=num_classes, seed=seed)
    raise ValueError(f"attack={spec.name!r} is not one of PGD, FGSM, FAB")


def generate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: AttackSpec,
    *,
    num_classes: int,
    seed: int,
    device: str,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> torch.Tensor:
    """Adversarial versions of ``x`` (on CPU), generated batch by batch on ``device``.

    ``seed`` fixes the attack's randomness (PGD's random start, FAB's
    restarts) so that repeats differ only by seed and runs are reproducible.
    The model's train/eval mode is restored afterwards, and its parameters
    get no gradients (only the input is differentiated).
    """
    was_training = model.training
    # Attacks need gradients w.r.t. the input only. FAB calls .backward(),
    # which would otherwise accumulate .grad on the model's parameters (and
    # pay for computing them); freeze them for the attack and restore after.
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        attack = build_attack(spec, model, num_classes, seed)
        out = torch.empty_like(x, device="cpu")
        fork_devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
        with torch.random.fork_rng(devices=fork_devices):
            torch.manual_seed(seed)
            for batch, start in enumerate(range(0, len(x), batch_size)):
                xb = x[start : start + batch_size].to(device)
                yb = y[start : start + batch_size].to(device)
                out[start : start + len(xb)] = attack(xb, yb).detach().cpu()
                if progress is not None:
                    progress(batch + 1, -(-len(x) // batch_size))
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)
    return out
