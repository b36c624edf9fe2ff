"""Client-level DP at the server: DP-FedAvg (McMahan et al. 2018, "Learning
differentially private recurrent language models").

Sample-level DP-SGD (privacy.py) protects one training example of a client;
dp_mode=client protects a whole client, all of whose data may change. The
server bounds each client's influence by clipping its model update to L2 norm
C (cfg.client_clip), adds Gaussian noise N(0, (sigma*C)^2 I) to the sum of
the clipped updates, and divides by the *expected* number of sampled clients
q*N rather than the number that turned up: a fixed denominator keeps the
sensitivity of the mean at C/(qN) whatever the sampling drew, which is the
estimator the paper's accounting covers. Clients are sampled by Poisson
sampling at rate q = cfg.client_fraction (each independently), so one round
is the subsampled Gaussian mechanism and an Opacus accountant (rdp/prv/gdp)
steps once per round with (sigma, q).
"""

from __future__ import annotations

import torch

from . import accountants
from .config import ConfigError, CycleConfig
from .privacy import PrivacyReport, _noise_multiplier, epsilon_spent

CLIPPING_CLIENT = "client"  # PrivacyReport.clipping under dp_mode=client

_MIX = 6364136223846793005  # Knuth's 64-bit LCG multiplier: spreads (seed, round) over the seed space
_SAMPLE_OFFSET = 1442695040888963407


def _sample_seed(seed: int, rnd: int) -> int:
    """Seed of round ``rnd``'s sampling generator: a function of (seed, rnd) only, so the
    clients of a round do not depend on which rounds were sampled before (resume, replays)."""
    return ((seed * 1_000_003 + rnd) * _MIX + _SAMPLE_OFFSET) % (2**63)


class ClientDP:
    """Server-side DP-FedAvg: clip, sum, noise, divide by q*N; account once per round.

    Each round, every sampled client's update is clipped to L2 norm
    cfg.client_clip, the clipped updates are summed, Gaussian noise
    N(0, (sigma*C)^2 I) is added and the result is divided by the EXPECTED
    number of sampled clients q*N (fixed denominator, so the sensitivity of
    the mean is C/(qN)); clients are sampled by Poisson sampling with rate
    q = cfg.client_fraction (the federation does the sampling with
    ``sample(rnd)``). Accounted with an Opacus accountant (cfg.accountant,
    from accountants.ACCOUNTANTS) stepping once per round with (sigma, q):
    the epsilon reported is client-level (epsilon, delta).
    """

    def __init__(self, cfg: CycleConfig, num_clients: int):
        if cfg.epsilon is None:
            raise ConfigError("epsilon=None is not allowed with client-level DP; expected a number > 0")
        if isinstance(num_clients, bool) or not isinstance(num_clients, int) or num_clients < 1:
            raise ConfigError(f"num_clients={num_clients!r} is not allowed; expected an integer >= 1")
        self.cfg = cfg
        self.num_clients = num_clients
        self.sample_rate = float(cfg.client_fraction)
        self.clip_norm = float(cfg.client_clip)
        self.delta = float(cfg.delta)
        self.accountant_name = cfg.accountant
        try:
            # Calibrated for all cfg.rounds rounds at once: the budget is for the whole federation.
            sigma = _noise_multiplier(cfg.epsilon, cfg.delta, self.sample_rate, cfg.rounds, cfg.accountant)
        except ValueError:
            raise ConfigError(
                f"epsilon={cfg.epsilon} is not reachable at client level with delta={cfg.delta}, "
                f"client_fraction={self.sample_rate:.4g} and {cfg.rounds} rounds; "
                "allowed: a larger epsilon, delta or num_clients per round, or fewer rounds"
            ) from None
        self.noise_multiplier = float(sigma)
        self.accountant = accountants.create(cfg.accountant)
        # Seeded, so a seed reproduces the noise (and resume continues it); Opacus' secure_mode
        # trade-off applies: fine for evaluation, not for a deployment against a real adversary.
        self._noise = torch.Generator().manual_seed(cfg.seed * 7919 + 17)
        self.rounds_done = 0

    # --- the mechanism --------------------------------------------------
    @property
    def denominator(self) -> float:
        """q*N, the expected number of sampled clients: the fixed divisor of the noised sum."""
        return self.sample_rate * self.num_clients

    @property
    def noise_std(self) -> float:
        """Standard deviation of each coordinate of the noise in the returned mean: sigma*C/(qN)."""
        return self.noise_multiplier * self.clip_norm / self.denominator

    def sample(self, rnd: int) -> list[int]:
        """Client ids of round ``rnd``: each client in independently with probability q.

        Poisson sampling is what the subsampled-Gaussian accounting assumes
        (a fixed-size draw would need a different analysis); the draw depends
        only on (cfg.seed, rnd), and may be empty (the round is then noise only).
        """
        gen = torch.Generator().manual_seed(_sample_seed(self.cfg.seed, int(rnd)))
        mask = torch.rand(self.num_clients, generator=gen, dtype=torch.float64) < self.sample_rate
        return [int(i) for i in torch.nonzero(mask).flatten()]

    def clip(self, updates: torch.Tensor) -> torch.Tensor:
        """Each row scaled to L2 norm at most C; rows already within C are returned unchanged.

        A row with a non-finite value or norm contributes zero: passing a NaN
        through would make the released mean depend on one client by more
        than C (and a client's zero update is within the bound).
        """
        updates = updates.to(torch.float64)
        finite = torch.isfinite(updates).all(dim=1, keepdim=True)
        safe = torch.where(finite, updates, torch.zeros((), dtype=updates.dtype, device=updates.device))
        norms = torch.linalg.vector_norm(safe, dim=1, keepdim=True)
        factor = torch.where(norms > self.clip_norm, self.clip_norm / norms, torch.ones_like(norms))
        factor = torch.where(torch.isfinite(norms) & finite, factor, torch.zeros_like(factor))
        return safe * factor

    def aggregate(self, updates: torch.Tensor) -> torch.Tensor:
        """Noised mean update [d] (float64) of this round's sampled clients' updates [m, d].

        m may be 0 (an empty Poisson draw): the result is then noise only,
        which is exactly what the accounting assumes happens. Steps the
        accountant once, whatever m is.
        """
        if updates.dim() != 2:
            raise ValueError(f"updates must be [clients, parameters]; got shape {tuple(updates.shape)}")
        clipped = self.clip(updates)
        total = clipped.sum(dim=0)
        noise = torch.randn(total.shape[0], generator=self._noise, dtype=torch.float64)
        noised = total + noise.to(total.device) * (self.noise_multiplier * self.clip_norm)
        self.accountant.step(noise_multiplier=self.noise_multiplier, sample_rate=self.sample_rate)
        self.rounds_done += 1
        return noised / self.denominator

    # --- what was spent -------------------------------------------------
    def report(self) -> PrivacyReport:
        """Client-level epsilon so far; the logged (noise_multiplier, sample_rate, dp_steps)
        recompute it with a fresh accountant."""
        spent = epsilon_spent(self.accountant, self.delta) if self.rounds_done else 0.0
        return PrivacyReport(
            epsilon_spent=spent,
            noise_multiplier=self.noise_multiplier,
            sample_rate=self.sample_rate,
            dp_steps=self.rounds_done,
            delta=self.delta,
            accountant=self.accountant_name,
            clipping=CLIPPING_CLIENT,
        )

    # --- resume -----------------------------------------------------------
    def state_dict(self) -> dict:
        """Accountant history, noise generator state and rounds done; plain numbers, lists and
        tensors only, so a checkpoint loads with torch.load(weights_only=True)."""
        return {
            "mechanism": self.accountant.mechanism(),
            "history": [[float(s), float(q), int(n)] for s, q, n in self.accountant.history],
            "noise_generator": self._noise.get_state(),
            "rounds_done": self.rounds_done,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` stopped: the accountant keeps its history (restarting it
        would under-report the privacy loss) and the noise continues the same stream."""
        if state["mechanism"] != self.accountant.mechanism():
            raise ConfigError(
                f"accountant={self.accountant_name!r} is not allowed for this checkpoint; "
                f"expected the accountant it was written with ({state['mechanism']!r})"
            )
        self.accountant.history = [(float(s), float(q), int(n)) for s, q, n in state["history"]]
        self._noise.set_state(state["noise_generator"])
        self.rounds_done = int(state["rounds_done"])
