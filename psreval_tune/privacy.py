"""DP-SGD for one client with Opacus, and the numbers that determine epsilon.

Each client owns one PrivacyEngine whose accountant lives for the whole
federation (every round adds to it); its noise multiplier is calibrated once
so that all rounds together spend at most the target epsilon.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis
from opacus.accountants.utils import get_noise_multiplier
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.validators import ModuleValidator
from torch import nn
from torch.utils.data import DataLoader

from .bookkeeping import BookKeepingModule, BookKeepingOptimizer, unsupported
from .config import ConfigError, CycleConfig


@dataclass(frozen=True)
class PrivacyReport:
    epsilon_spent: float
    noise_multiplier: float
    sample_rate: float
    dp_steps: int
    delta: float
    accountant: str
    clipping: str = "opacus"  # the per-sample clipping that ran: "bookkeeping" | "opacus" (Opacus' hooks)
    clipping_fallback: str | None = None  # why not book-keeping, when grad_sampler=auto fell back


def check_model(model: nn.Module) -> None:
    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise ConfigError(f"model is not DP-compatible: {errors[0]}")


@functools.lru_cache(maxsize=256)
def _noise_multiplier(epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    # A binary search over the accountant (seconds for PRV); clients of equal
    # size, and the same setting in the next trial of a process, reuse it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(
            get_noise_multiplier(
                target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, steps=steps, accountant=accountant
            )
        )


def calibrate_noise(cfg: CycleConfig, sample_rate: float, steps: int) -> float:
    """Noise multiplier that spends at most cfg.epsilon after ``steps`` steps."""
    try:
        return _noise_multiplier(cfg.epsilon, cfg.delta, sample_rate, steps, cfg.accountant)
    except ValueError:
        raise ConfigError(
            f"epsilon={cfg.epsilon} is not reachable with delta={cfg.delta}, sample rate {sample_rate:.4g} "
            f"and {steps} steps; allowed: a larger epsilon or delta, or fewer rounds/epochs"
        ) from None


@functools.lru_cache(maxsize=256)
def _rdp_one_step(noise_multiplier: float, sample_rate: float):
    return rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=RDPAccountant.DEFAULT_ALPHAS
    )


def epsilon_spent(accountant, delta: float) -> float:
    """accountant.get_epsilon(delta), bit for bit, without recomputing RDP every round.

    RDPAccountant.get_epsilon evaluates the RDP of the subsampled Gaussian at
    ~60 orders from scratch (~0.1 s), and the cycle asks for every client
    after every round: half of a digits DP training. Opacus computes
    compute_rdp(q, sigma, steps) as the one-step array times ``steps``, so
    caching the one-step array per (sigma, q) gives the identical float.
    """
    if type(accountant) is not RDPAccountant:
        return float(accountant.get_epsilon(delta))
    rdp = sum([_rdp_one_step(noise, rate) * steps for noise, rate, steps in accountant.history])
    eps, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(eps)


@dataclass
class PrivateClient:
    """An Opacus-wrapped model, optimizer and Poisson loader for one client."""

    engine: PrivacyEngine
    module: nn.Module  # GradSampleModule
    optimizer: torch.optim.Optimizer  # DPOptimizer
    loader: DataLoader  # DPDataLoader (Poisson sampling)
    noise_multiplier: float
    sample_rate: float
    clipping: str = "opacus"  # see PrivacyReport.clipping
    clipping_fallback: str | None = None

    def report(self, cfg: CycleConfig) -> PrivacyReport:
        return PrivacyReport(
            epsilon_spent=epsilon_spent(self.engine.accountant, cfg.delta) if self.steps else 0.0,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            dp_steps=self.steps,
            delta=cfg.delta,
            accountant=cfg.accountant,
            clipping=self.clipping,
            clipping_fallback=self.clipping_fallback,
        )

    @property
    def steps(self) -> int:
        # The accountant's history is [(noise, sample_rate, num_steps), ...]
        return int(sum(entry[-1] for entry in self.engine.accountant.history))


# Per-sample multiply-adds from which the per-sample loop beats unfold+bmm on CPU
# (measured with 1 thread: 4.7e6 -> loop 24 ms vs 42 ms; 8.8e5 -> 12 ms vs 9 ms).
LOOP_MIN_MACS = 2_000_000


def conv2d_grad_sample(
    layer: nn.Conv2d, activations: list[torch.Tensor], backprops: torch.Tensor
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample Conv2d gradients as one weight-gradient convolution per sample.

    Opacus' sampler unfolds the input (im2col: a B x C*k*k x H*W copy) and
    runs a batched matmul; on CPU that costs ~1.7x the layer's own weight
    gradient. The per-sample loop reuses the oneDNN kernel that autograd
    uses for the batch, so it costs about one weight gradient in total
    (benchmarks/dp_sgd.py). Small layers (under LOOP_MIN_MACS multiply-adds
    per sample, e.g. the cnn on 8x8 digits) are dominated by the loop's
    per-call cost and keep Opacus' batched sampler. Same numbers up to float
    rounding. Same contract as Opacus' grad samplers (activations/backprops
    as its hooks pass them, backprops already scaled for the loss reduction).
    """
    x = activations[0].to(backprops.dtype)
    macs = backprops.shape[2] * backprops.shape[3] * layer.weight[0].numel() * layer.out_channels
    if x.shape[0] == 0 or macs < LOOP_MIN_MACS or isinstance(layer.padding, str) or layer.padding_mode != "zeros":
        return compute_conv_grad_sample(layer, activations, backprops)
    out: dict[nn.Parameter, torch.Tensor] = {}
    if layer.weight.requires_grad:
        out[layer.weight] = torch.stack(
            [
                torch.nn.grad.conv2d_weight(
                    x[i : i + 1],
                    layer.weight.shape,
                    backprops[i : i + 1],
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.groups,
                )
                for i in range(x.shape[0])
            ]
        )
    if layer.bias is not None and layer.bias.requires_grad:
        out[layer.bias] = backprops.sum(dim=(2, 3))
    return out


CLIPPING_BOOKKEEPING, CLIPPING_OPACUS = "bookkeeping", "opacus"  # PrivacyReport.clipping


def fast_clipping(
    module: nn.Module, dp_module: nn.Module, dp_opt: torch.optim.Optimizer, device: torch.device
) -> tuple[nn.Module, torch.optim.Optimizer]:
    """grad_sampler=auto: the fastest exact per-sample clipping for this model.

    Book-keeping (bookkeeping.py) when every layer has a rule; otherwise
    Opacus' hooks, with conv2d_grad_sample for Conv2d on CPU. Either way the
    sampler, noise and accountant are the ones make_private set up.
    Which one ran: isinstance(module, BookKeepingModule), or PrivateClient.clipping.
    """
    # On a GPU one batched matmul beats B small kernels launched from a Python loop.
    per_sample_conv = conv2d_grad_sample if device.type == "cpu" else compute_conv_grad_sample
    if unsupported(module) is None:
        dp_module._close()  # drop Opacus' hooks; the plain module is trained through the wrapper
        bk_module = BookKeepingModule(module, per_sample_conv)
        return bk_module, BookKeepingOptimizer(dp_opt, bk_module)
    dp_module.GRAD_SAMPLERS = {**dp_module.GRAD_SAMPLERS, nn.Conv2d: per_sample_conv}  # this instance only
    return dp_module, dp_opt


def make_private(
    cfg: CycleConfig, module: nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader, seed: int
) -> PrivateClient:
    sample_rate = 1.0 / len(loader)  # Opacus' Poisson rate for this loader
    steps = cfg.rounds * cfg.local_epochs * len(loader)
    noise = calibrate_noise(cfg, sample_rate, steps)
    engine = PrivacyEngine(accountant=cfg.accountant)
    device = next(module.parameters()).device
    with warnings.catch_warnings():
        # Opacus warns about secure_mode being off; deterministic noise is the
        # point here (same seed -> same numbers), and it is documented.
        warnings.simplefilter("ignore")
        dp_module, dp_opt, dp_loader = engine.make_private(
            module=module,
            optimizer=optimizer,
            data_loader=loader,
            noise_multiplier=noise,
            max_grad_norm=cfg.max_grad_norm,
            poisson_sampling=True,
            noise_generator=torch.Generator(device=device).manual_seed(seed),
        )
    fallback = f"grad_sampler={cfg.grad_sampler}"
    if cfg.grad_sampler == "auto":
        fallback = unsupported(module)  # None: book-keeping trains it
        dp_module, dp_opt = fast_clipping(module, dp_module, dp_opt, device)
    clipping = CLIPPING_BOOKKEEPING if isinstance(dp_module, BookKeepingModule) else CLIPPING_OPACUS
    return PrivateClient(engine, dp_module, dp_opt, dp_loader, noise, sample_rate, clipping, fallback)


def worst_case(reports: list[PrivacyReport]) -> PrivacyReport:
    """Clients hold disjoint data; the federation's guarantee is the weakest client's."""
    return max(reports, key=lambda r: r.epsilon_spent)
