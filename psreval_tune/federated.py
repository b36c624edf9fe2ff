"""FedAvg over clients, with optional DP-SGD and a train-time adversary.

One global model; each client keeps its own optimizer (and, under DP, its
own Opacus engine and accountant) for the whole federation. Each round every
client starts from the global weights, trains ``local_epochs`` on its data,
and a pluggable Strategy aggregates the results. The learning rate follows
the recipe's schedule over rounds; with ``reset_optimizer`` each client's
momentum starts afresh every round (a buffer from the previous round points
along the client's old, pre-averaging trajectory). Per-round accuracy is
measured on the validation split: the test split is for the final report.

Threat during training (the adversary client's data, regenerated every round
against the current global model, which the adversary receives as a client):
- adv_training: adversarial examples with their true labels (a defence);
- train_time_attack: adversarial examples labelled with the global model's
  own predictions on them (poisoning).
Examples are generated on the plain global model, never through the Opacus
wrapper, so per-sample gradients and the accountant are untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .attacks import AttackSpec, generate
from .config import CycleConfig
from .data import DataBundle, partition
from .evaluate import accuracy, predict
from .privacy import PrivacyReport, PrivateClient, make_private, worst_case
from .timing import PhaseTimer

StateDict = dict[str, torch.Tensor]


# --- aggregation strategies ---------------------------------------------------


class Strategy(Protocol):
    def aggregate(self, states: list[StateDict], num_examples: list[int]) -> StateDict: ...


class FedAvg:
    """Average of client weights, weighted by client data size (McMahan et al.)."""

    def aggregate(self, states: list[StateDict], num_examples: list[int]) -> StateDict:
        weights = torch.tensor(num_examples, dtype=torch.float64)
        weights = weights / weights.sum()
        return {k: sum(w * s[k].double() for w, s in zip(weights, states)).to(states[0][k].dtype) for k in states[0]}


class FedMedian:
    """Coordinate-wise median: a robust aggregator against a minority adversary."""

    def aggregate(self, states: list[StateDict], num_examples: list[int]) -> StateDict:
        return {k: torch.stack([s[k] for s in states]).median(dim=0).values for k in states[0]}


STRATEGIES: dict[str, Callable[[], Strategy]] = {"fedavg": FedAvg, "median": FedMedian}


# --- clients --------------------------------------------------------------------


@dataclass
class Client:
    cid: int
    x_clean: torch.Tensor
    y_clean: torch.Tensor
    dataset: TensorDataset  # its tensors are overwritten in place under a threat
    module: nn.Module
    optimizer: torch.optim.Optimizer
    loader: DataLoader
    private: PrivateClient | None

    @property
    def model(self) -> nn.Module:
        """The plain module underneath the DP wrapper (Opacus' GradSampleModule or BookKeepingModule)."""
        return self.module._module if self.private is not None else self.module

    def __len__(self) -> int:
        return len(self.y_clean)

    def state_dict(self) -> dict:
        """Everything that makes the next round identical after a restart."""
        # deepcopy: optimizer.state_dict() hands out the live momentum buffers
        state = {
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "sampler_rng": self.loader.generator.get_state(),
        }
        if self.private is not None:
            # The accountant must never restart: that would under-report privacy loss.
            state["accountant"] = dict(self.private.engine.accountant.state_dict())
            state["noise_rng"] = self.optimizer.generator.get_state()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.loader.generator.set_state(state["sampler_rng"])
        if self.private is not None:
            self.private.engine.accountant.load_state_dict(state["accountant"])
            self.optimizer.generator.set_state(state["noise_rng"])


@dataclass(frozen=True)
class RoundResult:
    round: int
    train_loss: float
    acc_val: float  # the global model on the validation split (model selection, early stopping)
    epsilon: float | None


def lr_factor(cfg: CycleConfig, rnd: int) -> float:
    """Learning-rate multiplier for round ``rnd`` (1-based): linear warm-up over
    ``warmup_rounds``, then constant, cosine to zero or a 10x step at 50% and 75%."""
    if rnd <= cfg.warmup_rounds:
        return rnd / (cfg.warmup_rounds + 1)
    progress = (rnd - 1 - cfg.warmup_rounds) / max(cfg.rounds - cfg.warmup_rounds, 1)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    return 1.0


def _innermost(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The plain SGD under Opacus' (and book-keeping's) optimizer wrappers."""
    while hasattr(optimizer, "original_optimizer"):
        optimizer = optimizer.original_optimizer
    return optimizer


def start_round(client: Client, cfg: CycleConfig, rnd: int) -> None:
    sgd = _innermost(client.optimizer)
    for group in sgd.param_groups:
        group["lr"] = cfg.lr * lr_factor(cfg, rnd)
    if cfg.reset_optimizer:
        sgd.state.clear()


def _make_client(
    cfg: CycleConfig, cid: int, global_model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: str
) -> Client:
    dataset = TensorDataset(x.clone().to(device), y.clone().to(device))
    seed = cfg.seed * 1000 + cid
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    module = copy.deepcopy(global_model)
    optimizer = torch.optim.SGD(module.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    private = None
    if cfg.private:
        private = make_private(cfg, module, optimizer, loader, seed)
        module, optimizer, loader = private.module, private.optimizer, private.loader
    return Client(cid, x, y, dataset, module, optimizer, loader, private)


def _train_locally(client: Client, epochs: int) -> tuple[float, int]:
    client.module.train()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        for xb, yb in client.loader:
            client.optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(client.module(xb), yb)
            loss.backward()
            client.optimizer.step()
            loss_sum += float(loss.detach()) * len(yb)
            seen += len(yb)
    return loss_sum, seen


class Federation:
    """The global model, its clients and the round loop."""

    def __init__(
        self, cfg: CycleConfig, model: nn.Module, data: DataBundle, device: str, timer: PhaseTimer | None = None
    ):
        self.cfg, self.data, self.device = cfg, data, device
        self.timer = timer or PhaseTimer()
        self.model = model.to(device)
        self.strategy = STRATEGIES[cfg.aggregation]()
        self.adversary = cfg.adversary_client if cfg.threat != "none" else None
        parts = partition(cfg, data.train.y)
        self.clients = [
            _make_client(cfg, cid, self.model, data.train.x[idx], data.train.y[idx], device)
            for cid, idx in enumerate(parts)
        ]
        self.history: list[RoundResult] = []

    def privacy(self) -> PrivacyReport | None:
        if not self.cfg.private:
            return None
        return worst_case([c.private.report(self.cfg) for c in self.clients])

    def _poison(self, client: Client, rnd: int) -> None:
        """Replace the adversary's training data with fresh adversarial examples."""
        cfg = self.cfg
        with self.timer.phase("adv_gen"):
            adv = generate(
                self.model,
                client.x_clean,
                client.y_clean,
                AttackSpec.from_config(cfg),
                num_classes=self.data.num_classes,
                seed=cfg.seed * 1000 + rnd,
                device=self.device,
            )
            labels = client.y_clean if cfg.threat == "adv_training" else predict(self.model, adv)
            x, y = client.dataset.tensors
            x.copy_(adv)
            y.copy_(labels)

    def run_round(self, rnd: int) -> RoundResult:
        global_state = copy.deepcopy(self.model.state_dict())
        states, sizes, loss_sum, seen = [], [], 0.0, 0
        for client in self.clients:
            if client.cid == self.adversary:
                self._poison(client, rnd)
            client.model.load_state_dict(global_state)
            start_round(client, self.cfg, rnd)
            c_loss, c_seen = _train_locally(client, self.cfg.local_epochs)
            loss_sum, seen = loss_sum + c_loss, seen + c_seen
            states.append(client.model.state_dict())
            sizes.append(len(client))
        self.model.load_state_dict(self.strategy.aggregate(states, sizes))
        report = self.privacy()
        result = RoundResult(
            round=rnd,
            train_loss=loss_sum / max(seen, 1),
            acc_val=accuracy(self.model, self.data.val.x, self.data.val.y),
            epsilon=report.epsilon_spent if report else None,
        )
        self.history.append(result)
        return result

    def state_dict(self) -> dict:
        """A checkpoint after the last finished round (tensors, numbers, lists, dicts:
        loadable with torch.load(weights_only=True))."""
        return {
            "round": len(self.history),
            "history": [dataclasses.asdict(r) for r in self.history],
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "clients": [c.state_dict() for c in self.clients],
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["clients"]) != len(self.clients):
            raise ValueError(f"checkpoint has {len(state['clients'])} clients, this federation {len(self.clients)}")
        self.model.load_state_dict(state["model"])
        for client, client_state in zip(self.clients, state["clients"]):
            client.load_state_dict(client_state)
        self.history = [RoundResult(**r) for r in state["history"]]
        torch.set_rng_state(state["torch_rng"])

    def train(self, on_round: Callable[[RoundResult], None] | None = None) -> nn.Module:
        for rnd in range(len(self.history) + 1, self.cfg.rounds + 1):
            result = self.run_round(rnd)
            if on_round is not None:
                on_round(result)
        return self.model
