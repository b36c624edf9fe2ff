"""Adversarial example generation with torchattacks: one file per attack, each registered in ATTACKS.

Inputs and outputs are [0, 1] images; models normalise internally, so
torchattacks' clamping to [0, 1] and ``eps`` are both in pixel space.
Attacks know nothing of federation: they take a plain float model.

Adding an attack is adding one file here (config validation, CLI help, the
cost model, the search space and the evaluation's repeats read its entry)::

    @ATTACKS.register("MyAttack", randomized=False, cost_passes=lambda steps: steps, uses_alpha=True)
    def build(spec, model, num_classes, seed):
        return torchattacks.Something(model, eps=spec.eps, ...)

Metadata every attack declares:
- ``randomized``: its repeats differ (a random start), so evaluation runs it
  ``attack_repeats`` times; a deterministic attack runs once.
- ``cost_passes(steps)``: forward+backward passes per image of one run (the
  --dry-run cost model, psreval_tune/sweeps/cost.py).
- ``uses_alpha``: it takes a step size (``attack_alpha``); the search space
  samples the step size only for such attacks (psreval_tune/sweeps/spec.py).

Optional metadata (read with :func:`transfers` and :func:`default_eval`):
- ``transfers`` (default True): its examples may be evaluated on other models
  (the transfer rows). A minimum-norm attack (FAB) stops at the decision
  boundary of the model it was run on, so its examples say nothing about
  another model: it is reported white-box only.
- ``default_eval`` (default True): part of the default ``eval_attacks`` (PGD,
  FGSM). FAB-T and the reviewer-grade attacks (AutoAttack and its parts) are
  opt-in: they cost tens to hundreds of times PGD's passes (``--eval-attacks``,
  ``--autoattack``, ``--masking-checks``; the reproduction profile runs them).
- ``paper`` (default False): one of the PSREval paper's attacks (PGD, FGSM,
  FAB): ``config.PAPER_ATTACKS``, what ``psreval reproduce`` evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from ..registry import Registry, discover

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..registry import ConfigView

ATTACKS = Registry("attack")


@dataclass(frozen=True)
class AttackSpec:
    name: str  # a name in ATTACKS (PGD | FGSM | FAB | ...)
    eps: float
    alpha: float
    steps: int

    @classmethod
    def from_config(cls, cfg: ConfigView, name: str | None = None) -> AttackSpec:
        return cls(name or cfg.attack, cfg.attack_eps, cfg.attack_alpha, cfg.attack_steps)


def transfers(name: str) -> bool:
    """Whether the examples of attack ``name`` feed the transfer rows (False: a minimum-norm attack)."""
    return bool(ATTACKS.get(name).meta.get("transfers", True))


def default_eval(name: str) -> bool:
    """Whether attack ``name`` is in the default ``eval_attacks``."""
    return bool(ATTACKS.get(name).meta.get("default_eval", True))


def build_attack(spec: AttackSpec, model: nn.Module, num_classes: int, seed: int) -> Any:
    """The torchattacks object (or any callable ``(x, y) -> x_adv``) of the registered attack ``spec.name``."""
    return ATTACKS.get(spec.name).obj(spec, model, num_classes, seed)


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
    import torch  # here, not at the top: the registry's names and metadata load without torch

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


discover(__name__, __path__)
