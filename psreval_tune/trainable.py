"""The Ray Tune trainable: one PSREval cycle per trial.

It checkpoints the whole federation (global weights, every client's
optimizer, accountant and sampler/noise RNG state, and the round) after its
last FL round and after any round that ends TrialInfra.checkpoint_every_s
after the previous checkpoint (0: every round). A trial restarted from its
checkpoint continues at the same round with the same accounted epsilon and
ends with the same numbers as an uninterrupted trial. It reports each round
to Tune when a scheduler acts on rounds (ASHA), else with each checkpoint;
every round's numbers go to its MLflow run, nested under the sweep's.
"""

from __future__ import annotations

import math
import posixpath
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from ray import tune

from . import trial_warnings
from ._warnings import quiet_known_warnings
from .artifacts import write_outputs
from .baselines import NO_THREAT, PLAIN_MEAN
from .config import CycleConfig
from .cycle import run_cycle
from .federated import Federation, RoundResult
from .tracking import INTERRUPTED_TRIAL, TAG_MODEL_ERROR, TAG_TRIAL, Tracker, TrackingSpec, one_line
from .twin_cache import TwinCache

CHECKPOINT_FILE = "federation.pt"
# Which per-sample clipping trained a private trial's model (CycleResult.dp): "bookkeeping" | "opacus",
# and on Opacus why not book-keeping (the layer without a rule, or grad_sampler=opacus).
TAG_DP_CLIPPING = "psreval.dp_clipping"
TAG_DP_FALLBACK = "psreval.dp_fallback"
_INTEROP_THREADS_SET: list[int] = []  # torch accepts set_num_interop_threads once per process


def assigned_resources() -> dict[str, float]:
    """What Ray reserved for this trial ({"CPU": 2.0, "GPU": 0.25}); {} outside a Ray worker."""
    try:
        import ray

        if not ray.is_initialized():
            return {}
        return dict(ray.get_runtime_context().get_assigned_resources())
    except Exception:  # noqa: BLE001 - the driver, a test's fake session, an older Ray: leave torch as it is
        return {}


def fit_to_allotment(resources: Mapping[str, float] | None = None) -> dict[str, float]:
    """Torch threads (and, on CUDA, the memory share) of this trial process follow what Ray gave the trial.

    Threads: torch defaults to one intra-op thread per core of the machine in every process, so two trials
    of 1 CPU each on a 2-core machine run 2 x 2 OpenMP threads that spin-wait for each other and thrash (the
    DP step gets several times slower: benchmarks/dp_contention.py). Each trial gets max(1, floor(its CPUs)),
    intra- and inter-op; inter-op only once per process (torch refuses a second call, and Ray reuses
    trial processes), and not at all if parallel work already started in it.

    GPU memory: with a fractional --gpus-per-trial (0.25: four trials share a GPU) each trial may allocate
    at most that fraction of the GPU (torch.cuda.set_per_process_memory_fraction), so one trial that grows
    fails itself with an out-of-memory error instead of the trials packed beside it.

    The single-cycle CLI never calls this: it keeps torch's defaults. Returns what was set.
    """
    resources = assigned_resources() if resources is None else resources
    done: dict[str, float] = {}
    cpus = resources.get("CPU")
    if cpus:
        threads = max(1, math.floor(cpus))
        torch.set_num_threads(threads)
        done["torch_threads"] = threads
        if not _INTEROP_THREADS_SET:
            try:
                torch.set_num_interop_threads(threads)
                _INTEROP_THREADS_SET.append(threads)
                done["torch_interop_threads"] = threads
            except RuntimeError:  # already set, or inter-op work already ran in this process
                _INTEROP_THREADS_SET.append(torch.get_num_interop_threads())
    gpus = resources.get("GPU")
    if gpus and 0 < gpus < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(float(gpus))
        done["gpu_memory_fraction"] = float(gpus)
    return done


@dataclass(frozen=True)
class TrialInfra:
    """What a trial needs besides its config; bound with tune.with_parameters."""

    tracking: TrackingSpec | None = None
    parent_run_id: str | None = None
    # The twin cache every node of the cluster reaches: the sweep storage's twin-cache folder (a path or a URI,
    # twin_cache.cache_location); a twin is trained there once, by whichever trial needs it first.
    cache_dir: str | None = None
    # Metrics a searcher optimises that exist only at the end of a cycle. Ray
    # requires them in every result, so per-round results carry them as NaN
    # (Optuna records an early-stopped trial as failed, not as a 0 score).
    final_objectives: tuple[str, ...] = ()
    # Seconds between checkpoints (engine.CHECKPOINT_EVERY_S in a sweep); 0: after every round.
    checkpoint_every_s: float = 0.0
    # A result for Tune after every round (schedulers such as ASHA decide on them), not only with checkpoints.
    report_every_round: bool = True
    # Makes the trial's progress callback from (cfg, Tune's trial context): a sweep passes
    # sweeps.progress.trial_progress (printed, and the trial's phase to the sweep's console);
    # None: each message is printed (the trial's log). The trial layer does not import the sweep's console.
    progress: Callable[[CycleConfig, Any], Callable[[str], None]] | None = None


class RoundReporter:
    """run_trial's on_round: the round's numbers to Tune and MLflow, and a checkpoint when one is due.

    A checkpoint is due after the last round and after a round that ends ``every_s`` seconds or more after
    the previous checkpoint (or the trial's start). Tune's function runner holds the trial at each report
    until the driver has taken it, so rounds without a checkpoint are reported only if ``every_round``."""

    def __init__(self, cfg: CycleConfig, infra: TrialInfra, log: Callable[[RoundResult], None]):
        self.rounds, self.every_s, self.every_round = cfg.rounds, infra.checkpoint_every_s, infra.report_every_round
        self.pending = {k: math.nan for k in infra.final_objectives}
        self.log = log
        self.last = time.monotonic()
        self.checkpoints: list[int] = []  # the rounds checkpointed, in order

    def due(self, r: RoundResult) -> bool:
        return r.round >= self.rounds or time.monotonic() - self.last >= self.every_s

    def __call__(self, r: RoundResult, fed: Federation) -> None:
        metrics = {**self.pending, **round_metrics(r)}
        # MLflow first: Tune may stop the trial inside tune.report (Ctrl-C, an ASHA stop), and a round logged
        # after it would never reach MLflow (its resume starts after the checkpointed round)
        self.log(r)
        if self.due(r):
            with tempfile.TemporaryDirectory() as folder:
                torch.save(fed.state_dict(), Path(folder) / CHECKPOINT_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
            self.last = time.monotonic()
            self.checkpoints.append(r.round)
        elif self.every_round:
            tune.report(metrics)


def cycle_config(params: Mapping[str, Any]) -> CycleConfig:
    """Tune's param space -> CycleConfig (a pseudo-axis value's fields merged in: CycleConfig.from_params)."""
    return CycleConfig.from_params(dict(params))


def trial_label(cfg: CycleConfig) -> str:
    eps = "nonprivate" if cfg.epsilon is None else f"eps{cfg.epsilon:g}"
    if cfg.private and cfg.dp_mode == "client":
        eps += "client"
    threat = cfg.threat if cfg.threat == NO_THREAT else f"{cfg.threat}{cfg.adv_fraction or cfg.num_malicious:g}"
    agg = "" if cfg.aggregation == PLAIN_MEAN else f"-{cfg.aggregation}"
    return f"{cfg.dataset}-{cfg.arch}-{eps}-{threat}-{cfg.attack}{agg}-s{cfg.seed}"


# What Tune's schedulers and searchers may see while trials run: validation and
# training numbers only. Test metrics arrive once, in the final result.
ROUND_METRICS = ("round", "train_loss", "acc_val", "epsilon")
SELECTION_METRICS = ("acc_val_float", "acc_val_wb_pgd")  # final, validation split


def round_metrics(r: RoundResult) -> dict[str, float]:
    out = {"round": r.round, "train_loss": r.train_loss, "acc_val": r.acc_val}
    if r.epsilon is not None:
        out["epsilon"] = r.epsilon
    return out


CHECKPOINT_DIR = re.compile(r"checkpoint_(\d+)")  # Tune's checkpoint folders in a trial's folder
STATE_KEYS = ("round", "history", "model", "clients", "torch_rng")


def check_state(state: Any, rounds: int | None = None) -> dict:
    """A Federation.state_dict() as torch.load read it back, or ValueError saying what is wrong."""
    if not isinstance(state, dict):
        raise ValueError(f"holds a {type(state).__name__}, not a federation state")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in the federation state")
    rnd, history = state["round"], state["history"]
    if not isinstance(rnd, int) or isinstance(rnd, bool) or rnd < 1 or (rounds is not None and rnd > rounds):
        raise ValueError(f"round {rnd!r} is not a finished round of this trial (1..{rounds or '?'})")
    if not isinstance(history, list) or len(history) != rnd:
        raise ValueError(f"history of {len(history) if isinstance(history, list) else '?'} rounds at round {rnd}")
    if (
        not isinstance(state["model"], dict)
        or not state["model"]
        or not all(isinstance(v, torch.Tensor) for v in state["model"].values())
    ):
        raise ValueError("the model weights are not a dict of tensors")
    if not isinstance(state["clients"], list) or not state["clients"]:
        raise ValueError("no client states")
    if not isinstance(state["torch_rng"], torch.Tensor):
        raise ValueError("the RNG state is not a tensor")
    return state


def read_checkpoint(checkpoint: tune.Checkpoint, rounds: int | None = None) -> dict:
    """The federation state in one Tune checkpoint; raises if it is missing, unreadable or not one."""
    with checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    return check_state(state, rounds)


def earlier_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The checkpoint_N folders beside ``checkpoint`` (in its trial's folder) with a lower N, newest first."""
    import pyarrow.fs

    path = str(checkpoint.path).rstrip("/")
    parent, name = posixpath.split(path)
    latest = CHECKPOINT_DIR.fullmatch(name)
    if latest is None or not parent:
        return []
    fs = checkpoint.filesystem
    try:
        infos = fs.get_file_info(pyarrow.fs.FileSelector(parent, allow_not_found=True))
    except OSError:
        return []
    found = []
    for info in infos:
        match = CHECKPOINT_DIR.fullmatch(info.base_name)
        if match and info.type == pyarrow.fs.FileType.Directory and int(match.group(1)) < int(latest.group(1)):
            found.append((int(match.group(1)), info.path))
    return [tune.Checkpoint(p, filesystem=fs) for _, p in sorted(found, reverse=True)]


def load_checkpoint(
    checkpoint: tune.Checkpoint | None,
    rounds: int | None = None,
    log: Callable[[str], None] = print,
    fell_back: list[str] | None = None,
) -> dict | None:
    """The state of the newest checkpoint of a trial that loads: ``checkpoint`` (Tune's latest), else the
    newest earlier one in the same trial folder. None (start at round 1) if there is none or none loads;
    never raises. ``fell_back`` gets the warning line of a fallback (trial_warnings), for the console
    and the MLflow run."""
    if checkpoint is None:
        return None
    try:
        candidates = [checkpoint, *earlier_checkpoints(checkpoint)]
    except Exception as exc:  # noqa: BLE001 - listing the trial folder failed: the latest only
        log(f"warning: cannot list earlier checkpoints of {checkpoint.path} ({type(exc).__name__}: {exc})")
        candidates = [checkpoint]
    for candidate in candidates:
        try:
            state = read_checkpoint(candidate, rounds)
        except Exception as exc:  # noqa: BLE001 - corrupt, truncated, missing, not ours: try the next one
            log(f"warning: checkpoint {candidate.path} does not load ({type(exc).__name__}: {one_line(str(exc), 300)})")
            continue
        if candidate is not checkpoint:
            log(f"resuming from the earlier checkpoint {candidate.path} (after round {state['round']})")
            if fell_back is not None:
                fell_back.append(trial_warnings.resumed_from(candidate.path, state["round"]))
        return state
    log("warning: no checkpoint of this trial loads; it starts again from round 1")
    if fell_back is not None:
        fell_back.append(trial_warnings.restarted(checkpoint.path))
    return None


def _load_checkpoint(rounds: int | None = None, fell_back: list[str] | None = None) -> dict | None:
    return load_checkpoint(tune.get_checkpoint(), rounds, log=lambda msg: print(msg, flush=True), fell_back=fell_back)


def dataset_name(cfg: CycleConfig) -> str:
    """The data's name on MLflow dataset inputs: the dataset, with the values of the fields only it reads (its
    entry's ``own_fields``: MedMNIST's subset, as in medmnist-pneumoniamnist)."""
    from .datasets import DATASETS

    own = DATASETS.get(cfg.dataset).meta.get("own_fields", ())
    return "-".join([cfg.dataset, *(str(getattr(cfg, name)) for name in own)])


def log_splits(tracker: Tracker, run_id: str, cfg: CycleConfig, data) -> None:
    """The cycle's train / val / test splits as the run's MLflow dataset inputs."""
    splits = {
        name: (split.x, split.y) for name, split in (("train", data.train), ("val", data.val), ("test", data.test))
    }
    tracker.log_datasets(run_id, splits, dataset_name(cfg), cfg.data_root)


def log_float_model(tracker: Tracker, run_id: str, result, trial_id: str) -> float | None:
    """The cycle's own float model as the run's MLflow model (tracking.MODEL_NAME), input example and
    signature from two of its test images; returns the seconds it took. A failure costs the MLflow model only:
    one warning line, tag psreval.model_error, and the trial goes on (its weights are in model_float.pt)."""
    own = "dp" if result.config.private else "nonprivate"
    start = time.perf_counter()
    try:
        tracker.log_model(
            run_id, result.models[own].float_model, result.examples["clean"][:2], tags={TAG_TRIAL: trial_id}
        )
    except Exception as exc:  # noqa: BLE001 - an extra view of weights that are logged anyway
        reason = f"{type(exc).__name__}: {exc}"
        print(f"warning: the float model was not logged as an MLflow model ({one_line(reason, 300)})", flush=True)
        try:
            tracker.client.set_tag(run_id, TAG_MODEL_ERROR, one_line(reason))
        except Exception:  # noqa: BLE001
            pass
        return None
    return round(time.perf_counter() - start, 4)


def _report_recorded(tracker: Tracker, run_id: str, infra: TrialInfra) -> None:
    """A trial Tune runs again whose MLflow run is already FINISHED (it completed, but the driver did
    not record that before it stopped): the run is the record and is never changed; Tune gets its
    final numbers from it instead of a second cycle."""
    print(
        f"MLflow run {run_id} of this trial is already FINISHED: reporting its numbers, not running it again",
        flush=True,
    )
    metrics = dict(tracker.client.get_run(run_id).data.metrics)
    pending = {k: math.nan for k in infra.final_objectives}
    tune.report({**pending, **metrics, "cycle_complete": 1})


def _print(message: str) -> None:
    print(message, flush=True)


class TrialRecord:
    """The trial's MLflow run as run_trial writes it; without tracking every call does nothing. A retried or
    resumed trial (``existed``) does not log again the rounds and final metrics an earlier attempt logged."""

    def __init__(self, tracker: Tracker | None = None, run_id: str | None = None, existed: bool = False):
        self.tracker, self.run_id, self.monitor = tracker, run_id, None
        self.rounds: set[int] = set()
        self.final: set[str] = set()
        if tracker is not None and existed:
            self.rounds = tracker.logged_steps(run_id, "acc_val")
            self.final = set(tracker.client.get_run(run_id).data.metrics) - set(ROUND_METRICS)
        if tracker is not None and tracker.spec.system_metrics:
            self.monitor = tracker.system_metrics(run_id, resume=existed)

    def tag(self, key: str, value: str) -> None:
        if self.tracker is not None:
            self.tracker.client.set_tag(self.run_id, key, one_line(value))

    def log_round(self, r: RoundResult) -> None:
        if self.tracker is not None and r.round not in self.rounds:
            self.tracker.log_metrics(self.run_id, round_metrics(r), step=r.round)
            self.rounds.add(r.round)

    def log_splits(self, cfg: CycleConfig, data) -> None:
        if self.tracker is not None:
            log_splits(self.tracker, self.run_id, cfg, data)

    def finish(self, cfg: CycleConfig, result, final: dict[str, float], out: Path, trial_id: str) -> None:
        """The final metrics, the artifacts in ``out``, the DP path's tags and the float model; then FINISHED."""
        tracker, run_id = self.tracker, self.run_id
        if tracker is None:
            return
        tracker.log_metrics(run_id, {k: v for k, v in final.items() if k not in self.final}, step=cfg.rounds)
        tracker.log_artifacts(run_id, out)
        dp = getattr(result, "dp", None)
        if dp is not None:
            self.tag(TAG_DP_CLIPPING, dp["clipping"])
            if dp["fallback"]:
                self.tag(TAG_DP_FALLBACK, dp["fallback"])
        seconds = log_float_model(tracker, run_id, result, trial_id)
        if seconds is not None and "time_log_model_s" not in self.final:
            tracker.log_metrics(run_id, {"time_log_model_s": seconds}, step=cfg.rounds)
        self.stop_monitor()  # its last samples, while the run is RUNNING
        tracker.finish(run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        if self.tracker is not None:
            try:
                self.tracker.fail(self.run_id, f"{type(exc).__name__}: {exc}")
            except Exception:  # noqa: BLE001 - the store itself failed (disk full): the driver closes the run
                pass

    def stop_monitor(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()  # no-op if stopped; its thread also stops once the run is no longer RUNNING


def _open_record(infra: TrialInfra, ctx, cfg: CycleConfig) -> TrialRecord | None:
    """The trial's run, opened (or reopened) with its params; None when it is already FINISHED (reported to
    Tune from the run instead: _report_recorded) or its sweep has ended (_sweep_ended)."""
    if infra.tracking is None:
        return TrialRecord()
    tracker = Tracker(infra.tracking)
    found = tracker.trial_run_id(infra.parent_run_id, ctx.get_trial_id())
    if found is not None and tracker.status(found) == "FINISHED":  # never reopened, never FAILED
        _report_recorded(tracker, found, infra)
        return None
    run_id, existed = tracker.trial_run(infra.parent_run_id, ctx.get_trial_id(), trial_label(cfg))
    if _sweep_ended(tracker, infra.parent_run_id, run_id):
        return None
    tracker.log_params(run_id, cfg.record())
    return TrialRecord(tracker, run_id, existed)


def _sweep_ended(tracker: Tracker, parent_run_id: str | None, run_id: str) -> bool:
    """Whether the sweep's run has ended (an interrupted sweep: KILLED), so this trial's worker outlived its
    sweep (Tune's kill of it still on its way) and opened its run after the driver's last look for RUNNING
    trial runs (sweeps.failures.close_late): it closes that run itself, KILLED, and does not train. The driver
    ends the sweep's run before that last look, so every trial run is closed by one side or the other."""
    if parent_run_id is None:
        return False
    sweep_status = tracker.status(parent_run_id)
    if sweep_status == "RUNNING":
        return False
    tracker.interrupt(run_id, f"{INTERRUPTED_TRIAL} (its run was already {sweep_status} when this trial opened it)")
    print(f"the sweep's MLflow run {parent_run_id} is {sweep_status}: trial run {run_id} closed as KILLED", flush=True)
    return True


Warn = Callable[[str | None, str], None]


def _warner(progress: Callable[[str], None], record: TrialRecord) -> Warn:
    """warn(line, tag): a trial_warnings line to the trial's progress (the sweep's console) and its run's tag."""

    def warn(line: str | None, tag: str) -> None:
        if line is not None:
            progress(line)
            record.tag(tag, line)

    return warn


def _resume(cfg: CycleConfig, warn: Warn, record: TrialRecord) -> dict | None:
    """The checkpoint's state to resume from (None: round 1); a fallback is a warning, and every resume
    says where it continued (tag psreval.resumed_from)."""
    fell_back: list[str] = []
    state = _load_checkpoint(cfg.rounds, fell_back)
    for line in fell_back:
        warn(line, trial_warnings.TAG_RESUME)
    where = trial_warnings.resumed_from_tag(state, fell_back)
    if where is not None:
        record.tag(trial_warnings.TAG_RESUMED_FROM, where)
    return state


def _round_hook(cfg: CycleConfig, infra: TrialInfra, record: TrialRecord, warn: Warn) -> Callable:
    """run_cycle's on_round: RoundReporter, and once per attempt, after its first round, the data as the
    cycle loaded it (MLflow dataset inputs, and the small-data warning)."""
    reporter = RoundReporter(cfg, infra, record.log_round)
    seen: list[bool] = []

    def on_round(r: RoundResult, fed: Federation) -> None:
        if not seen:
            record.log_splits(cfg, fed.data)
            warn(trial_warnings.of_federation(cfg, fed), trial_warnings.TAG_SMALL_DATA)
            seen.append(True)
        reporter(r, fed)

    return on_round


def _twin_cache(infra: TrialInfra) -> TwinCache | None:
    if not infra.cache_dir:
        return None
    try:
        return TwinCache(infra.cache_dir)
    except Exception as exc:  # noqa: BLE001 - a storage this process cannot open: train the twin here
        print(f"warning: no twin cache at {infra.cache_dir} ({one_line(f'{type(exc).__name__}: {exc}', 300)})")
        return None


def final_metrics(cfg: CycleConfig, result) -> dict[str, float]:
    """The cycle's numbers for Tune and MLflow: no None or NaN; twin_from_cache (1: the twin came from the
    cache, 0: trained here) for a private trial with a twin."""
    final = {k: v for k, v in result.metrics.items() if v is not None and not (isinstance(v, float) and math.isnan(v))}
    if "nonprivate" in result.models and cfg.private:
        final["twin_from_cache"] = float(result.models["nonprivate"].cached)
    return final


def run_trial(params: dict, infra: TrialInfra) -> None:
    quiet_known_warnings()
    fit_to_allotment()  # torch threads = the trial's CPUs, not the machine's cores
    cfg = cycle_config(params)
    ctx = tune.get_context()
    record = _open_record(infra, ctx, cfg)
    if record is None:
        return
    progress = infra.progress(cfg, ctx) if infra.progress is not None else _print
    warn = _warner(progress, record)
    try:
        resume = _resume(cfg, warn, record)
        on_round = _round_hook(cfg, infra, record, warn)
        result = run_cycle(cfg, cache=_twin_cache(infra), on_round=on_round, resume=resume, progress=progress)
        out = write_outputs(result, Path(ctx.get_trial_dir()) / "artifacts")
        final = final_metrics(cfg, result)
        record.finish(cfg, result, final, out, ctx.get_trial_id())
    except Exception as exc:
        # Only errors of the cycle itself. Ray stops a trial (ASHA, end of sweep) with a BaseException from
        # tune.report: the driver closes those runs (ASHA: TrackingCallback; an interrupted sweep:
        # sweeps.failures.interrupted_fit); a killed process never gets here and its run is reopened when the
        # trial is retried or resumed.
        record.fail(exc)
        raise
    finally:
        record.stop_monitor()
    # The last round's numbers too: schedulers read the per-round metric in every result.
    tune.report({**round_metrics(RoundResult(**result.history[-1])), **final, "cycle_complete": 1})


class TrackingCallback(tune.Callback):
    """Driver side: no trial's MLflow run may stay RUNNING.

    A trial whose process died, or that exhausted its retries, is marked
    FAILED; one a scheduler stopped early (its function never returned) is
    marked KILLED and tagged ``psreval.early_stopped``.

    Trials Tune stops because the sweep itself ends (a Ctrl-C, which Tune
    catches) reach no callback at all: run_sweep closes their runs after
    tuner.fit() returns (KILLED, tag ``psreval.interrupted``:
    sweeps.failures.interrupted_fit).
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
            else:
                self._tracker.fail(
                    run_id,
                    f"trial {trial.trial_id} ended with an error and no retries left "
                    f"(its process died, or see {getattr(trial, 'error_file', None) or 'Tune'})",
                )

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "KILLED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        self._close(trial, "FAILED")
