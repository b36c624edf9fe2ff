"""``psreval xseed``: cross-seed transfer metrics of a finished sweep, logged onto its trials' MLflow runs.

    psreval xseed --run-dir runs --sweep reproduce-20250101-120000      # the default local store
    psreval xseed --tracking-uri http://head:5000 --sweep NAME --device cuda

After the trials: the sweep's private trials with threat none are grouped by setting (their config but
the seed: same dataset, arch, recipe, epsilon, ...). For each trial of a setting with at least one other
seed, the models of the other seeds (their float DP models and non-private twins, read back from their
runs' artifacts: model_float.pt, model_float_nonprivate.pt) serve as separately trained generators, and
the examples are evaluated on the trial's own four models, on the images it attacked
(psreval_tune/xseed.py says how). The metrics (acc_xseed_*, xseed_generators) go onto the trial's run,
where the report and the claims (analysis/claims.py: c, d, e) read them.

Idempotent: a trial whose run already has them, over as many generator seeds as there are now, is
skipped, so a rerun (or a resumed sweep) computes only what is missing. ``psreval reproduce`` runs this
step between its sweep and its report. Bad input is one line and exit 2.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ..baselines import NO_THREAT
from ..cli_parser import Parser
from ..config import ConfigError

TWIN_FILES = ("model_float.pt", "model_float_nonprivate.pt", "model_int8.pt2", "model_int8_nonprivate.pt2")
COUNT = "xseed_generators"  # xseed.COUNT, without importing torch for --help


class XseedError(ConfigError):
    """The sweep cannot be read as asked. One line."""


@dataclass
class Outcome:
    """What one run of the step did, per target trial (run names)."""

    logged: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # already measured over as many generator seeds
    without: list[str] = field(default_factory=list)  # no other seed, or no twin files: nothing to compute
    parent_run_id: str | None = None

    def line(self) -> str:
        return (
            f"xseed: {len(self.logged)} trial(s) measured, {len(self.skipped)} already measured, "
            f"{len(self.without)} without another seed or twin weights"
        )


@dataclass
class _Trial:
    run_id: str
    name: str
    cfg: Any  # CycleConfig
    folder: Path  # its downloaded artifacts
    logged_generators: float  # xseed_generators already on its run (NaN: none)


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _has_twin(client, run_id: str) -> bool:
    """Whether a private trial's run holds metrics.json and the four weight files (False: a trial written
    before twins were kept, or a failed upload)."""
    have = {a.path for a in client.list_artifacts(run_id)}
    return "metrics.json" in have and set(TWIN_FILES) <= have


def _download(client, run_id: str, names: Sequence[str], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        client.download_artifacts(run_id, name, str(folder))


def _config(folder: Path):
    import json

    from ..config import CycleConfig

    summary = json.loads((folder / "metrics.json").read_text())
    return CycleConfig.from_dict(summary["config"])


def _setting(cfg) -> str:
    """The setting of a trial: its training key with the seed left out."""
    return cfg.replace(seed=0).training_key()


def _load_models(trial: _Trial, data, device: str):
    import torch

    from ..models import build_model
    from ..quantize import load_int8
    from ..xseed import TrialModels

    def float_model(name: str):
        model = build_model(trial.cfg.arch, data.in_channels, data.num_classes, data.mean, data.std)
        model.load_state_dict(torch.load(trial.folder / name, map_location="cpu", weights_only=True))
        return model.to(device).eval()

    return TrialModels(
        key=trial.run_id,
        seed=trial.cfg.seed,
        float_dp=float_model("model_float.pt"),
        float_nonprivate=float_model("model_float_nonprivate.pt"),
        int8_dp=load_int8(trial.folder / "model_int8.pt2"),
        int8_nonprivate=load_int8(trial.folder / "model_int8_nonprivate.pt2"),
    )


def run_xseed(
    tracking_uri: str,
    experiment: str,
    sweep: str,
    *,
    device: str = "cpu",
    progress: Callable[[str], None] = print,
) -> Outcome:
    """Compute and log the cross-seed transfer metrics of sweep ``sweep`` (see the module docstring)."""
    from ..analysis.load import AnalysisError, find_sweep_run, load_mlflow

    try:
        frame = load_mlflow(experiment, tracking_uri, sweep)
    except AnalysisError as exc:
        raise XseedError(str(exc)) from None
    from ..tracking import Tracker, TrackingSpec

    tracker = Tracker(TrackingSpec(tracking_uri, experiment, sweep))
    outcome = Outcome(parent_run_id=find_sweep_run(tracker.client, tracker.experiment_id, sweep).info.run_id)
    threat = frame["threat"] if "threat" in frame.columns else NO_THREAT
    rows = frame[frame["private"].astype(bool) & (threat == NO_THREAT)]
    if rows.empty:
        progress(f"xseed: sweep {sweep!r} has no finished private trials with threat none; nothing to do")
        return outcome
    with tempfile.TemporaryDirectory(prefix="psreval-xseed-") as tmp:
        groups: dict[str, list[_Trial]] = {}
        for i, row in enumerate(rows.itertuples(index=False)):
            run_id, name = row.run_id, row.run_name
            if not _has_twin(tracker.client, run_id):
                progress(f"xseed: {name}: no twin weights on its run (a trial from before they were kept): skipped")
                outcome.without.append(name)
                continue
            folder = Path(tmp) / f"t{i}"
            _download(tracker.client, run_id, ["metrics.json"], folder)
            try:
                cfg = _config(folder)
            except (ValueError, KeyError, TypeError) as exc:
                progress(f"xseed: {name}: its metrics.json config does not load ({exc}): skipped")
                outcome.without.append(name)
                continue
            logged = _number(getattr(row, COUNT)) if COUNT in rows.columns else math.nan
            groups.setdefault(_setting(cfg), []).append(_Trial(run_id, name, cfg, folder, logged))
        for trials in groups.values():
            _one_setting(trials, tracker, device, progress, outcome)
            for t in trials:  # one setting's weights on disk at a time
                shutil.rmtree(t.folder, ignore_errors=True)
    progress(outcome.line())
    return outcome


def _one_setting(trials: list[_Trial], tracker, device: str, progress, outcome: Outcome) -> None:
    from ..attacks import AttackSpec
    from ..cycle import eval_images
    from ..data import load_data
    from ..xseed import transfer_specs, xseed_group

    seeds = sorted({t.cfg.seed for t in trials})
    first = trials[0].cfg
    where = f"{first.dataset}/{first.arch}/eps {first.epsilon:g}"
    todo = _to_measure(trials, seeds, where, progress, outcome)
    if not todo:
        return
    for t in trials:
        _download(tracker.client, t.run_id, TWIN_FILES, t.folder)
    data = {}  # per trial: its data, as its cycle loaded it (the seed picks the splits and the attacked images)
    images, specs = {}, {}
    for t in trials:
        data[t.run_id] = load_data(t.cfg)
    models = [_load_models(t, data[t.run_id], device) for t in trials]
    for t in todo:
        images[t.run_id] = eval_images(t.cfg, data[t.run_id])
        specs[t.run_id] = [AttackSpec.from_config(t.cfg, name) for name in t.cfg.eval_attacks]
    # targets that attack differently (repeats) are computed apart; a setting's trials normally share them
    by_repeats: dict[int, list[_Trial]] = {}
    for t in todo:
        by_repeats.setdefault(t.cfg.attack_repeats, []).append(t)
    for repeats, targets in by_repeats.items():
        start = time.perf_counter()
        names = ", ".join(sorted({s.name for t in targets for s in transfer_specs(specs[t.run_id])})) or "none"
        progress(
            f"xseed: {where}: {len(targets)} target trial(s), generators from seeds {', '.join(map(str, seeds))}, "
            f"attacks {names} x {repeats} run(s) where randomized"
        )
        results = xseed_group(
            models,
            images,
            specs,
            repeats=repeats,
            num_classes=data[targets[0].run_id].num_classes,
            device=device,
            targets=[t.run_id for t in targets],
            progress=lambda msg: progress(f"xseed:   {msg}"),
        )
        _log_results(targets, results, tracker, progress, outcome)
        progress(f"xseed: {where}: {time.perf_counter() - start:.1f} s")


def _to_measure(trials: list[_Trial], seeds: list[int], where: str, progress, outcome: Outcome) -> list[_Trial]:
    """The trials of one setting still to measure; the others go to ``outcome`` (no other seed: without;
    already measured over as many generator seeds as there are now: skipped)."""
    todo = []
    for t in trials:
        others = len([s for s in seeds if s != t.cfg.seed])
        if others == 0:
            progress(f"xseed: {t.name}: no other seed of its setting ({where}): nothing to measure")
            outcome.without.append(t.name)
        elif t.logged_generators == others:
            progress(f"xseed: {t.name}: already measured over {others} generator seed(s): skipped")
            outcome.skipped.append(t.name)
        else:
            todo.append(t)
    return todo


def _log_results(targets: list[_Trial], results: dict, tracker, progress, outcome: Outcome) -> None:
    """Each target's metrics onto its run (step: its rounds), or the target to ``outcome.without``."""
    for t in targets:
        metrics = results.get(t.run_id, {})
        if not metrics:
            outcome.without.append(t.name)
            continue
        tracker.log_metrics(t.run_id, metrics, step=t.cfg.rounds)
        outcome.logged.append(t.name)
        pgd = metrics.get("acc_xseed_pgd_dp_to_dp_mean")
        shown = f"; PGD dp->dp {pgd:.3f} (clean-on-same-images beside it in the report)" if pgd is not None else ""
        progress(
            f"xseed: {t.name} (seed {t.cfg.seed}): {len(metrics)} metrics logged over "
            f"{int(metrics[COUNT])} generator seed(s){shown}"
        )


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="psreval xseed",
        description="Cross-seed transfer (partial white-box) metrics of a finished sweep: examples crafted on "
        "the models of OTHER seeds of the same setting, evaluated on each private trial's models; logged onto "
        "its MLflow run (acc_xseed_*), where the report and claims c, d, e read them. Reruns skip trials "
        "already measured.",
    )
    p.add_argument("--sweep", required=True, help="the sweep: its name (MLflow parent run) or run id")
    p.add_argument(
        "--run-dir",
        default=os.environ.get("PSREVAL_RUN_DIR", "runs"),
        help="folder of the sweep's default MLflow store, RUN_DIR/mlflow.db (default: runs)",
    )
    p.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking URI instead of --run-dir's store (e.g. http://127.0.0.1:5000)",
    )
    p.add_argument("--experiment", default="psreval", help="MLflow experiment (default: psreval)")
    p.add_argument(
        "--device",
        default="cpu",
        choices=("cpu", "cuda", "auto"),
        help="cpu | cuda | auto: where the attacks run (default: cpu)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .._warnings import quiet_known_warnings

    quiet_known_warnings()
    try:
        if args.tracking_uri:
            uri = args.tracking_uri
        else:
            db = Path(args.run_dir).expanduser().resolve() / "mlflow.db"
            if not db.is_file():
                raise XseedError(f"--run-dir={args.run_dir!r}: no MLflow store there (expected {db})")
            uri = f"sqlite:///{db}"
        from ..config import resolve_device

        device = resolve_device(args.device)
        run_xseed(uri, args.experiment, args.sweep, device=device, progress=lambda m: print(m, flush=True))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
