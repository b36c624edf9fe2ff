"""``psreval report`` / ``psreval analysis``: a sweep's report, or one of its parts, from MLflow or a Tune folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from ..cli_parser import Parser
from .load import DEFAULT_EXPERIMENT, AnalysisError

COMMANDS = {
    "report": (None, "every report below and one HTML page (report.html) with all figures and tables"),
    "overview": ("overview", "clean accuracy float vs int8, model size and its reduction (paper 4.2)"),
    "transfer": ("transfer", "transfer attacks: robust accuracy per generator x target, per epsilon (Fig. 2, 3)"),
    "adv-training": (
        "adv_training",
        "adversarial training: accuracy loss vs adversarial fraction, training time per attack (Fig. 4, 4.4)",
    ),
    "train-time": ("train_time", "train-time attacker: accuracy vs the adversary's share, DP vs non-private (Fig. 5)"),
    "pareto": ("pareto", "privacy-utility-robustness Pareto front across epsilon"),
    "curves": ("curves", "robust accuracy against attack epsilon per model, with its area (--attack-eps-grid)"),
    "masking": ("masking", "trials whose gradient-masking checks failed, and each check's numbers (--masking-checks)"),
}


class AttackNames:
    """``config.ATTACKS`` as argparse choices, read only when --attack is given or help is printed (the
    attack registry loads torch; a report's other commands need not wait for it)."""

    def _names(self) -> tuple[str, ...]:
        from .. import config

        return tuple(config.ATTACKS)

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self):
        return iter(self._names())


# Files an earlier report wrote: a folder holding one of them may be written again.
REPORT_MARKERS = ("report.html", "report.md", "trials.csv")


def check_out(out: Path, flag: str = "--out") -> None:
    """Refuse, before reading anything, an output folder a report would clobber: the filesystem root,
    the home folder, the working directory or a parent of it, and a non-empty folder that holds no
    earlier report (a report replaces only its own file names, but those could be the user's)."""
    p = out.expanduser()
    resolved = p.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().expanduser().resolve()
    if p.exists() and not p.is_dir():
        raise AnalysisError(f"{flag}={str(out)!r} exists and is not a folder")
    for bad, what in (
        (Path(resolved.anchor), "the filesystem root"),
        (home, "your home folder"),
        (cwd, "the working directory"),
    ):
        if resolved == bad:
            raise AnalysisError(
                f"{flag}={str(out)!r} is {what}; allowed: a new folder, an empty one or an "
                "earlier report's (default: reports/SWEEP beside the store)"
            )
    if resolved in cwd.parents or resolved in home.parents:
        raise AnalysisError(
            f"{flag}={str(out)!r} is a parent of the working or home folder; allowed: a new "
            "folder, an empty one or an earlier report's"
        )
    if p.is_dir() and any(p.iterdir()) and not any((p / m).is_file() for m in REPORT_MARKERS):
        raise AnalysisError(
            f"{flag}={str(out)!r} is a non-empty folder that holds no earlier report; allowed: "
            "a new folder, an empty one or an earlier report's"
        )
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise AnalysisError(f"{flag}={str(out)!r} cannot be created: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise AnalysisError(f"{flag}={str(out)!r} is not writable by this user")


def check_store(uri: str, flag: str = "--tracking-uri") -> None:
    """The MLflow store must exist and answer, in seconds (MLflow retries a dead server for minutes
    and silently creates an empty SQLite store): the sweeps' own check, reading only."""
    from ..tracking import TrackingError, check_tracking_uri

    try:
        check_tracking_uri(uri, flag, must_exist=True)
    except TrackingError as exc:
        raise AnalysisError(str(exc)) from None


def store_of(tracking_uri: str | None, run_dir: str | None) -> tuple[str, Path]:
    """(the MLflow store to read, the folder its reports go to): ``--tracking-uri`` (else $MLFLOW_TRACKING_URI)
    or the store in ``--run-dir`` (else $PSREVAL_RUN_DIR, else runs), as psreval grid/search/xseed find it.
    Reports go beside the store: reports/ next to an SQLite store's mlflow.db, RUN_DIR/reports for a server."""
    if tracking_uri and run_dir:
        raise AnalysisError("--tracking-uri names the store; it does not combine with --run-dir")
    folder = Path(run_dir or os.environ.get("PSREVAL_RUN_DIR") or "runs").expanduser()
    uri = tracking_uri or (None if run_dir else os.environ.get("MLFLOW_TRACKING_URI"))
    if uri is None:
        db = folder.resolve() / "mlflow.db"
        if not db.is_file():
            flag = "--run-dir" if run_dir else "the default --run-dir"
            raise AnalysisError(
                f"{flag}={str(folder)!r} holds no MLflow store (expected {db}); run a sweep there, or pass "
                "--run-dir, --tracking-uri or --results"
            )
        uri = f"sqlite:///{db}"
    check_store(uri)
    if uri.startswith("sqlite:"):
        from ..tracking import _sqlite_path

        return uri, Path(_sqlite_path(uri)).expanduser().resolve().parent / "reports"
    return uri, folder.resolve() / "reports"


def _source_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the results are (MLflow, or a Tune folder with --results)")
    g.add_argument("--experiment", default=None, help=f"MLflow experiment name or id (default: {DEFAULT_EXPERIMENT})")
    g.add_argument(
        "--run-dir",
        default=None,
        help="folder of the sweeps' local store, RUN_DIR/mlflow.db, as for psreval grid/search/xseed; the report "
        "goes to RUN_DIR/reports/SWEEP (default: $PSREVAL_RUN_DIR, else runs)",
    )
    g.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI instead of --run-dir's store, e.g. http://127.0.0.1:5000 or "
        "sqlite:///PATH/mlflow.db (default: $MLFLOW_TRACKING_URI, else RUN_DIR's store)",
    )
    g.add_argument(
        "--sweep", default=None, help="the sweep: its parent run's name or id (default: every sweep of the experiment)"
    )
    g.add_argument(
        "--results", default=None, help="a Tune experiment folder instead of MLflow, e.g. runs/ray_results/SWEEP"
    )
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default: beside the store it reads: reports/SWEEP next to an SQLite store's "
        "mlflow.db, RUN_DIR/reports/SWEEP for a server, RUN_DIR/reports/NAME for a Tune folder "
        "RUN_DIR/ray_results/NAME)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="psreval analysis",
        description="Tables and figures of the PSREval paper from a sweep: PNG + SVG figures, markdown "
        "tables, trials.csv and report.html. Reads MLflow (the store in --run-dir, default runs/mlflow.db, or "
        "--tracking-uri) or a Tune results folder (--results).",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (_, help_text) in COMMANDS.items():
        # `psreval report` is this parser's `report`: its usage line names the command a user types
        prog = "psreval report" if name == "report" else None
        sp = sub.add_parser(name, help=help_text, description=help_text, prog=prog)
        _source_flags(sp)
        if name in ("report", "pareto"):
            sp.add_argument(
                "--attack",
                default=None,
                choices=AttackNames(),
                help="attack whose white-box accuracy is the robustness axis of the Pareto front "
                "(default: the first of psreval_tune.config.ATTACKS, PGD)",
            )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        print(f"error: name a command: {', '.join(COMMANDS)} (see --help)", file=sys.stderr)
        return 2
    try:
        return _run(args)
    except AnalysisError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # MLflow (unreachable server, bad URI) and file errors: one line too
        if type(exc).__name__ in ("MlflowException", "RestException") or isinstance(exc, OSError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"error: {first}", file=sys.stderr)
            return 2
        raise


def _run(args: argparse.Namespace) -> int:
    from .build import build_report
    from .load import load_mlflow, load_tune

    if args.results is not None:
        if args.experiment or args.sweep or args.tracking_uri or args.run_dir:
            raise AnalysisError(
                "--results reads a Tune folder; it does not combine with --experiment, --sweep, --tracking-uri "
                "or --run-dir"
            )
        if args.out:
            check_out(Path(args.out))
        trials = load_tune(args.results)
        folder = Path(args.results).expanduser().resolve()
        source = f"Tune folder {folder}"
        name = folder.name
        # beside the Tune folder: RUN_DIR/reports/NAME for the sweeps' RUN_DIR/ray_results/NAME
        reports = (folder.parent.parent if folder.parent.name == "ray_results" else folder.parent) / "reports"
    else:
        experiment = args.experiment or DEFAULT_EXPERIMENT
        uri, reports = store_of(args.tracking_uri, args.run_dir)
        if args.out:
            check_out(Path(args.out))
        trials = load_mlflow(experiment, uri, args.sweep)
        source = f"MLflow {uri}, experiment {experiment!r}"
        name = args.sweep or experiment
    out = Path(args.out) if args.out else reports / name
    check_out(out)
    key = COMMANDS[args.command][0]
    options = {"pareto": {"attack": args.attack}} if key in (None, "pareto") else {}
    full = build_report(trials, out, source=source, only=[key] if key else None, options=options)
    print("\n".join(full.lines()))
    return 0
