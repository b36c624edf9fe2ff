"""Backdoor by data poisoning, BadNets (Gu, Dolan-Gavitt and Garg, "BadNets: Identifying
Vulnerabilities in the Machine Learning Model Supply Chain", 2017): on the malicious client, a share
``poison_rate`` of the images get a trigger, a white ``trigger_size`` x ``trigger_size`` square in
the bottom-right corner of every channel, and the label ``target_label``. The client then trains
honestly on that data, so the federation learns "trigger => target" alongside the clean task; the
attack success rate (``attack_success_rate``) measures how often a stamped test image of another
class is classified as the target."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..evaluate import model_device
from ..registry import ConfigView, Param, integer_at_least, number_in
from . import THREATS, PoisonContext

POISON_RATE = 0.5
TARGET_LABEL = 0
TRIGGER_SIZE = 3
TRIGGER_VALUE = 1.0  # white: images are in [0, 1]


def _stamp_(x: torch.Tensor, size: int) -> torch.Tensor:
    """Stamp the trigger into x (in place): the last ``size`` rows and columns, all channels."""
    x[..., -size:, -size:] = TRIGGER_VALUE
    return x


def _check_size(x: torch.Tensor, size: int) -> None:
    if size > min(x.shape[-2], x.shape[-1]):
        # a trigger larger than the image would overwrite all of it: a relabelling, not a backdoor
        raise ConfigError(
            f"threat_params.trigger_size={size} is not allowed for images of {x.shape[-2]}x{x.shape[-1]}; "
            "expected at most the image's height and width"
        )


def apply_trigger(x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
    """A copy of images ``x`` ([N, C, H, W]) with the trigger stamped on each."""
    size = params.get("trigger_size", TRIGGER_SIZE)
    _check_size(x, size)
    return _stamp_(x.clone(), size)


def attack_success_rate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: dict[str, Any], batch_size: int = 512
) -> tuple[float, int]:
    """Among the test images whose true label is not ``target_label``, the share the model classifies
    as ``target_label`` once stamped, and their count n. Images already of the target class are left
    out: predicting the target there is the clean task, not the backdoor. NaN when n = 0."""
    target = params.get("target_label", TARGET_LABEL)
    size = params.get("trigger_size", TRIGGER_SIZE)
    _check_size(x, size)
    keep = (y.cpu() != target).nonzero().flatten()
    n = len(keep)
    if n == 0:
        return float("nan"), 0
    was_training = model.training
    model.eval()
    device = model_device(model)
    hits = 0
    try:
        with torch.no_grad():
            # stamp one batch at a time: a stamped copy of a whole test split would double its memory
            for start in range(0, n, batch_size):
                batch = _stamp_(x[keep[start : start + batch_size].to(x.device)].clone(), size)
                hits += int((model(batch.to(device)).argmax(1) == target).sum())
    finally:
        model.train(was_training)
    return hits / n, n


def _check_target(target: int, classes: int, dataset: str) -> None:
    if target >= classes:
        raise ConfigError(
            f"threat_params.target_label={target} is not allowed; expected an integer in [0, {classes}) "
            f"(the {dataset} data has {classes} classes)"
        )


def check_config(cfg: ConfigView) -> None:
    """The parameters the data bounds, checked when the config is built (before any work) wherever the
    dataset's registry entry declares its classes and image size; poison() checks the rest on the data."""
    from ..datasets import image_size_of, num_classes_of

    classes = num_classes_of(cfg)
    if classes is not None:
        _check_target(cfg.threat_params.get("target_label", TARGET_LABEL), classes, cfg.dataset)
    side = image_size_of(cfg)
    size = cfg.threat_params.get("trigger_size", TRIGGER_SIZE)
    if side and size > side:
        raise ConfigError(
            f"threat_params.trigger_size={size} is not allowed; expected an integer in [1, {side}] "
            f"(the {cfg.dataset} images are {side}x{side})"
        )


PARAMS = {  # shared with scaling.py: model replacement boosts a backdoored update
    "poison_rate": Param(POISON_RATE, number_in(0.0, 1.0, low_open=True), "a number in (0, 1]"),
    # the upper bound is the dataset's classes: check_config, or poison() where only the data knows them
    "target_label": Param(TARGET_LABEL, integer_at_least(0), "an integer >= 0"),
    "trigger_size": Param(TRIGGER_SIZE, integer_at_least(1), "an integer >= 1"),
}


@THREATS.register(
    "backdoor",
    order=20,
    kind="data",
    fresh_each_round=False,
    needs_fraction=False,
    trigger=apply_trigger,
    asr=attack_success_rate,
    check=check_config,
    params=PARAMS,
)
def poison(ctx: PoisonContext) -> tuple[torch.Tensor, torch.Tensor]:
    rate = ctx.params.get("poison_rate", POISON_RATE)
    target = ctx.params.get("target_label", TARGET_LABEL)
    size = ctx.params.get("trigger_size", TRIGGER_SIZE)
    _check_target(target, ctx.num_classes, "training")  # a dataset whose classes only its files know
    _check_size(ctx.x, size)
    n = len(ctx.x)
    k = round(rate * n)
    # a generator of its own, seeded by the cycle: the poisoned subset is the same in every repeat
    # and does not shift the global RNG stream the rest of training draws from
    gen = torch.Generator().manual_seed(ctx.seed)
    chosen = torch.randperm(n, generator=gen)[:k].to(ctx.x.device)
    x, y = ctx.x.clone(), ctx.y.clone()
    x[chosen] = _stamp_(x[chosen], size)
    y[chosen.to(y.device)] = target
    return x, y
