"""The Ray Tune trainable: one PSREval cycle per trial.

It reports after every FL round (so schedulers such as ASHA can stop bad
trials) with a checkpoint of the whole federation: global weights, every
client's optimizer, accountant and sampler/noise RNG state, and the round.
A trial restarted from its checkpoint continues at the same round with the
same accounted epsilon and ends with the same numbers as an uninterrupted
trial. Each trial logs into its own MLflow run, nested under the sweep's.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from ray import tune

from ._warnings import quiet_known_warnings
from .artifacts import write_outputs
from .config import CycleConfig
from .cycle import TwinCache, run_cycle
from .federated import Federation, RoundResult
from .tracking import Tracker, TrackingSpec

CHECKPOINT_FILE = "federation.pt"


@dataclass(frozen=True)
class TrialInfra:
    """What a trial needs besides its config; bound with tune.with_parameters."""

    tracking: TrackingSpec | None = None
    parent_run_id: str | None = None
    cache_dir: str | None = None
    # Metrics a searcher optimises that exist only at the end of a cycle. Ray
    # requires them in every result, so per-round results carry them as NaN
    # (Optuna records an early-stopped trial as failed, not as a 0 score).
    final_objectives: tuple[str, ...] = ()


def cycle_config(params: Mapping[str, Any]) -> CycleConfig:
    """Tune's param space -> CycleConfig.

    A grid value may be a dict of several fields that only make sense
    together (e.g. {"threat": "none", "adv_fraction": 0.0}); it is merged in.
    """
    flat: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, Mapping):
            flat.update(value)
        else:
            flat[key] = value
    return CycleConfig.from_dict(flat)


def trial_label(cfg: CycleConfig) -> str:
    eps = "nonprivate" if cfg.epsilon is None else f"eps{cfg.epsilon:g}"
    threat = cfg.threat if cfg.threat == "none" else f"{cfg.threat}{cfg.adv_fraction:g}"
    return f"{cfg.dataset}-{cfg.arch}-{eps}-{threat}-{cfg.attack}-s{cfg.seed}"


# What Tune's schedulers and searchers may see while trials run: validation and
# training numbers only. Test metrics arrive once, in the final result.
ROUND_METRICS = ("round", "train_loss", "acc_val", "epsilon")
SELECTION_METRICS = ("acc_val_float", "acc_val_wb_pgd")  # final, validation split


def round_metrics(r: RoundResult) -> dict[str, float]:
    out = {"round": r.round, "train_loss": r.train_loss, "acc_val": r.acc_val}
    if r.epsilon is not None:
        out["epsilon"] = r.epsilon
    return out


def _load_checkpoint() -> dict | None:
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def run_trial(params: dict, infra: TrialInfra) -> None:
    quiet_known_warnings()
    cfg = cycle_config(params)
    ctx = tune.get_context()
    tracker = Tracker(infra.tracking) if infra.tracking is not None else None
    run_id = None
    if tracker is not None:
        run_id, _ = tracker.trial_run(infra.parent_run_id, ctx.get_trial_id(), trial_label(cfg))
        tracker.log_params(run_id, cfg.to_dict())
    try:
        resume = _load_checkpoint()

        def on_round(r: RoundResult, fed: Federation) -> None:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(fed.state_dict(), Path(folder) / CHECKPOINT_FILE)
                pending = {k: math.nan for k in infra.final_objectives}
                tune.report({**pending, **round_metrics(r)}, checkpoint=tune.Checkpoint.from_directory(folder))
            if tracker is not None:
                tracker.log_metrics(run_id, round_metrics(r), step=r.round)

        cache = TwinCache(infra.cache_dir) if infra.cache_dir else None
        result = run_cycle(cfg, cache=cache, on_round=on_round, resume=resume,
                           progress=lambda msg: print(msg, flush=True))
        out = write_outputs(result, Path(ctx.get_trial_dir()) / "artifacts")
        final = {k: v for k, v in result.metrics.items() if v is not None and not
                 (isinstance(v, float) and math.isnan(v))}
        if tracker is not None:
            tracker.log_metrics(run_id, final, step=cfg.rounds)
            tracker.log_artifacts(run_id, out)
            tracker.finish(run_id, "FINISHED")
    except Exception:
        # Only errors of the cycle itself. Ray stops a trial (ASHA, end of
        # sweep) with a BaseException from tune.report: the driver's
        # TrackingCallback closes those runs; a killed process never gets here
        # and its run is reopened when the trial is retried.
        if tracker is not None:
            tracker.finish(run_id, "FAILED")
        raise
    # The last round's numbers too: schedulers read the per-round metric in every result.
    tune.report({**round_metrics(RoundResult(**result.history[-1])), **final, "cycle_complete": 1})


class TrackingCallback(tune.Callback):
    """Driver side: no trial's MLflow run may stay RUNNING.

    A trial whose process died, or that exhausted its retries, is marked
    FAILED; one a scheduler stopped early (its function never returned) is
    marked KILLED and tagged ``psreval.early_stopped``.
    """

    def __init__(self, tracking: TrackingSpec, parent_run_id: str):
        self.tracking, self.parent_run_id = tracking, parent_run_id
        self._tracker: Tracker | None = None

    def _close(self, trial, status: str) -> None:
        if self._tracker is None:
            self._tracker = Tracker(self.tracking)
        run_id = self._tracker.trial_run_id(self.parent_run_id, trial.trial_id)
        if run_id is None:
            return
        run = self._tracker.client.get_run(run_id)
        if run.info.status == "RUNNING":
            if status == "KILLED":
                self._tracker.client.set_tag(run_id, "psreval.early_stopped", "true")
            self._tracker.finish(run_id, status)

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FAILED")
