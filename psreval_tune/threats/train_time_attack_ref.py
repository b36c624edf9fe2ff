"""The train-time attack with a second label rule (issue 21): as ``train_time_attack``, the client's data is
replaced every round by adversarial examples against the current global model, but they are labelled with
the predictions of a REFERENCE model, not the global model's own. The adversary trains that model itself,
once, before federated training: non-private, the trial's architecture, ``reference_epochs`` local epochs on
its own clean data (federated.py's client training). The paper notes that its adversarial labels "are
inferred from model predictions" and so depend on the trained model's accuracy (its discussion); comparing the two
rules shows how much claim h (DP reduces the damage of a train-time attacker) owes to that self-labelling.

The reference is deterministic given the seed (its initial weights from PoisonContext.seed, its batches from
the client's seeded sampler) and trained once per client per trial: cached for the trial's non-private
training key, which the DP model and its non-private twin share, so both face the same labeller. A restarted
process trains it again, to the same weights on the same device."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from ..evaluate import predict
from ..registry import Param, integer_at_least
from . import THREATS, PoisonContext
from ._adversarial import adversarial_examples

NAME = "train_time_attack_ref"  # the one place the name is spelled; reproduce.py and claims.py import it
REFERENCE_EPOCHS = 5

# the current trial's references, by (trial key, client key): another trial's entries are dropped
_references: dict[tuple[Any, Any], nn.Module] = {}


def _reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` (the trial's architecture and input normalisation) on the CPU, every layer freshly
    initialised from ``seed``; the global RNG stream training draws from is left where it was."""
    fresh = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for module in fresh.modules():
            if next(module.parameters(recurse=False), None) is not None:
                module.reset_parameters()
    return fresh


def train_reference(ctx: PoisonContext) -> nn.Module:
    """The adversary's reference model: non-private (the trial's non-private recipe), trained
    ``reference_epochs`` on the client's clean data from a fresh initialisation."""
    from ..federated import _make_client, _train_locally

    cfg = ctx.cfg.replace(epsilon=None)
    cid = ctx.seed - cfg.seed * 1000  # PoisonContext.seed is cfg.seed * 1000 + the client's id
    model = _reinitialised(ctx.model, ctx.seed).to(ctx.device)
    client = _make_client(cfg, cid, model, ctx.x, ctx.y, ctx.device)
    with torch.random.fork_rng(devices=[]):
        _train_locally(client, ctx.params.get("reference_epochs", REFERENCE_EPOCHS))
    return client.model.eval()


def _keys(ctx: PoisonContext) -> tuple[tuple, tuple]:
    """(trial, client): the non-private training key (seed, data, recipe, threat params) and the device; the
    client's seed and its data's shape and sums (a guard for a caller whose cfg does not determine its data)."""
    trial = (ctx.cfg.replace(epsilon=None).training_key(), str(ctx.device))
    return trial, (ctx.seed, tuple(ctx.x.shape), float(ctx.x.double().sum()), int(ctx.y.sum()))


def reference_model(ctx: PoisonContext) -> nn.Module:
    """This client's reference model: trained on its first use in a trial, then read from the cache."""
    key = _keys(ctx)
    for stale in [k for k in _references if k[0] != key[0]]:
        del _references[stale]
    if key not in _references:
        _references[key] = train_reference(ctx)
    return _references[key]


@THREATS.register(
    NAME,
    order=3,
    kind="data",
    fresh_each_round=True,
    needs_fraction=True,
    uses_attack=True,
    params={"reference_epochs": Param(REFERENCE_EPOCHS, integer_at_least(1), "an integer >= 1")},
)
def poison(ctx: PoisonContext) -> tuple[torch.Tensor, torch.Tensor]:
    adv = adversarial_examples(ctx)  # against the current global model, as train_time_attack
    return adv, predict(reference_model(ctx), adv)
