"""Federated training over clients, with optional DP and a training-time adversary.

One global model; each client keeps its own optimizer (and, under sample-level
DP, its own Opacus engine and accountant) for the whole federation. Each round
the sampled clients (all, or ``client_fraction`` of them) start from the global
weights and train ``local_epochs`` on their data. The server then sees their
*updates* (weights minus the previous global weights, one flat float64 row per
client, like Flower's Strategy): an update threat may replace the malicious
rows, and the configured aggregation rule (psreval_tune/aggregators/) or, under
``dp_mode=client``, DP-FedAvg's clip-and-noise (client_dp.py) turns them into
the next global model. The learning rate follows the recipe's schedule over
rounds; with ``reset_optimizer`` each client's momentum starts afresh every
round. Per-round accuracy is measured on the validation split: the test split
is for the final report.

Threats (psreval_tune/threats/) act on the ``num_malicious`` clients from
``adversary_client`` on: data threats rewrite their training data (every round
against the current global model: adversarial training, the paper's train-time
attack; or once: a backdoor), update threats their updates (sign flip, scaling,
ALIE, IPM). Adversarial examples are generated on the plain global model, never
through the Opacus wrapper, so per-sample gradients and the accountant are
untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from .aggregators import AGGREGATORS, RoundContext, aggregate
from .baselines import NO_THREAT
from .config import CycleConfig
from .data import DataBundle, partition
from .evaluate import accuracy
from .privacy import PrivacyReport, PrivateClient, make_private, worst_case
from .threats import THREATS, PoisonContext, UpdateContext, data_poisoner, malicious_clients
from .timing import PhaseTimer

StateDict = dict[str, torch.Tensor]


# --- the server's view of a round: flat update vectors ---------------------------


@dataclass(frozen=True)
class Layout:
    """Which state-dict entries are flattened into update vectors (the floating-point ones), and their shapes."""

    keys: tuple[str, ...]
    shapes: tuple[torch.Size, ...]

    @classmethod
    def of(cls, state: StateDict) -> Layout:
        keys = tuple(k for k, v in state.items() if v.is_floating_point())
        return cls(keys, tuple(state[k].shape for k in keys))


def flatten(state: StateDict, layout: Layout) -> torch.Tensor:
    return torch.cat([state[k].detach().reshape(-1).double().cpu() for k in layout.keys])


def client_updates(states: list[StateDict], global_state: StateDict, layout: Layout) -> torch.Tensor:
    """[clients, d] float64: each client's weights minus the previous global weights."""
    base = flatten(global_state, layout)
    if not states:
        return base.new_zeros((0, len(base)))
    return torch.stack([flatten(s, layout) - base for s in states])


def apply_update(
    global_state: StateDict, update: torch.Tensor, layout: Layout, states: list[StateDict], weights: torch.Tensor
) -> StateDict:
    """The new global state: previous + update for the float entries; integer buffers (BatchNorm's
    num_batches_tracked) are the clients' weighted mean, as FedAvg always did."""
    out, offset = {}, 0
    for key, value in global_state.items():
        if value.is_floating_point():
            n = value.numel()
            out[key] = (value.double().cpu() + update[offset : offset + n].view(value.shape)).to(value.dtype)
            offset += n
        elif states:
            out[key] = sum(w * s[key].double() for w, s in zip(weights, states)).to(value.dtype)
        else:
            out[key] = value.clone()
    return out


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
    autocast: torch.dtype | None = None  # forward and loss under torch.autocast (cfg.precision; never under DP)

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
    if cfg.private and cfg.dp_mode == "sample":
        private = make_private(cfg, module, optimizer, loader, seed)
        module, optimizer, loader = private.module, private.optimizer, private.loader
    return Client(cid, x, y, dataset, module, optimizer, loader, private, autocast_dtype(cfg))


def autocast_dtype(cfg: CycleConfig) -> torch.dtype | None:
    """The dtype local training autocasts to: bf16 for ``precision=bf16`` unless the cycle is private."""
    return torch.bfloat16 if cfg.precision == "bf16" and not cfg.private else None


def _train_locally(client: Client, epochs: int) -> tuple[float, int]:
    client.module.train()
    loss_sum, seen = 0.0, 0
    for _ in range(epochs):
        for xb, yb in client.loader:
            client.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(xb.device.type, dtype=client.autocast, enabled=client.autocast is not None):
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
        self.threat = THREATS.get(cfg.threat)
        self.malicious = set(malicious_clients(cfg))
        parts = partition(cfg, data.train.y)
        self.clients = [
            _make_client(cfg, cid, self.model, data.train.x[idx], data.train.y[idx], device)
            for cid, idx in enumerate(parts)
        ]
        # DP-FedAvg: the server clips and noises the clients' updates and samples the clients
        self.client_dp = None
        if cfg.private and cfg.dp_mode == "client":
            from .client_dp import ClientDP

            self.client_dp = ClientDP(cfg, len(self.clients))
        self.history: list[RoundResult] = []
        # the server's last aggregated update (None before the first round), kept (and checkpointed: d
        # float64 numbers) only for a rule whose entry has uses_history: centered clipping's centre
        self.previous_update: torch.Tensor | None = None
        self.keeps_history = AGGREGATORS.get(cfg.aggregation).meta.get("uses_history", False)
        self.poisoner = data_poisoner(self.threat)
        self.fresh_poison = self.poisoner is not None and self.threat.meta.get("fresh_each_round", False)
        if self.poisoner is not None and not self.fresh_poison:
            for client in self._malicious(self.clients):
                self._poison(client, 0)  # static poisoning (a backdoor): once, before training

    def privacy(self) -> PrivacyReport | None:
        if not self.cfg.private:
            return None
        if self.client_dp is not None:
            return self.client_dp.report()
        return worst_case([c.private.report(self.cfg) for c in self.clients])

    def _malicious(self, clients: list[Client]) -> list[Client]:
        return [c for c in clients if c.cid in self.malicious]

    def _poison(self, client: Client, rnd: int) -> None:
        """Overwrite a malicious client's training data with what the threat makes of its clean data."""
        ctx = PoisonContext(
            cfg=self.cfg,
            model=self.model,
            x=client.x_clean,
            y=client.y_clean,
            round=rnd,
            num_classes=self.data.num_classes,
            device=self.device,
            seed=self.cfg.seed * 1000 + client.cid,
            params=self.cfg.threat_params,
        )
        with self.timer.phase("adv_gen"):
            x_new, y_new = self.poisoner(ctx)
            x, y = client.dataset.tensors
            x.copy_(x_new)
            y.copy_(y_new)

    def _sample(self, rnd: int) -> list[Client]:
        """This round's clients: all, a seeded fixed-size share, or DP-FedAvg's Poisson sample."""
        if self.client_dp is not None:
            return [self.clients[i] for i in self.client_dp.sample(rnd)]
        if self.cfg.client_fraction >= 1:
            return self.clients
        m = max(1, round(self.cfg.client_fraction * len(self.clients)))
        gen = torch.Generator().manual_seed(self.cfg.seed * 7919 + rnd)
        chosen = sorted(torch.randperm(len(self.clients), generator=gen)[:m].tolist())
        return [self.clients[i] for i in chosen]

    def _aggregate(self, rnd: int, chosen: list[Client], states: list[StateDict], global_state: StateDict) -> None:
        layout = Layout.of(global_state)
        updates = client_updates(states, global_state, layout)
        sizes = torch.tensor([len(c) for c in chosen], dtype=torch.float64)
        weights = sizes / sizes.sum() if len(chosen) else sizes
        rows = [i for i, c in enumerate(chosen) if c.cid in self.malicious]
        if self.threat.kind == "update" and rows:
            gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + rnd)
            ctx = UpdateContext(rnd, flatten(global_state, layout), gen, self.cfg.threat_params)
            updates = self.threat.obj(updates, rows, ctx)
        if self.client_dp is not None:
            update = self.client_dp.aggregate(updates)
        else:
            assumed = min(self.cfg.num_malicious, len(chosen)) if self.cfg.threat != NO_THREAT else 0
            ctx = RoundContext(
                rnd,
                flatten(global_state, layout),
                weights,
                assumed,
                self.cfg.aggregation_params,
                previous_update=self.previous_update,
                bucket_size=self.cfg.bucketing,
                seed=self.cfg.seed * 1_000_003 + rnd,  # bucketing's shuffle, apart from the other seeded streams
            )
            update = aggregate(self.cfg.aggregation, updates, ctx)
        if self.keeps_history:
            self.previous_update = update.detach().clone()
        self.model.load_state_dict(apply_update(global_state, update, layout, states, weights))

    def run_round(self, rnd: int) -> RoundResult:
        global_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        chosen = self._sample(rnd)
        states, loss_sum, seen = [], 0.0, 0
        for client in chosen:
            if self.fresh_poison and client.cid in self.malicious:
                self._poison(client, rnd)
            client.model.load_state_dict(global_state)
            start_round(client, self.cfg, rnd)
            c_loss, c_seen = _train_locally(client, self.cfg.local_epochs)
            loss_sum, seen = loss_sum + c_loss, seen + c_seen
            states.append(client.model.state_dict())  # each client owns its module: no copy needed
        self._aggregate(rnd, chosen, states, global_state)
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
            "client_dp": self.client_dp.state_dict() if self.client_dp is not None else None,
            "torch_rng": torch.get_rng_state(),
            "previous_update": self.previous_update,
        }

    def load_state_dict(self, state: dict) -> None:
        if len(state["clients"]) != len(self.clients):
            raise ValueError(f"checkpoint has {len(state['clients'])} clients, this federation {len(self.clients)}")
        self.model.load_state_dict(state["model"])
        for client, client_state in zip(self.clients, state["clients"]):
            client.load_state_dict(client_state)
        if self.client_dp is not None:
            # the server's accountant never restarts on resume: that would under-report the privacy loss
            self.client_dp.load_state_dict(state["client_dp"])
        self.history = [RoundResult(**r) for r in state["history"]]
        torch.set_rng_state(state["torch_rng"])
        # checkpoints from before the key resume with no history: centered clipping re-centres on zero once
        self.previous_update = state.get("previous_update")

    def train(self, on_round: Callable[[RoundResult], None] | None = None) -> nn.Module:
        for rnd in range(len(self.history) + 1, self.cfg.rounds + 1):
            result = self.run_round(rnd)
            if on_round is not None:
                on_round(result)
        return self.model
