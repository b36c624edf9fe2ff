"""``psreval``: one command for the cycle, the sweeps, their report and the MLflow UI.

Each subcommand is the ``main`` of the module that owns it, imported only when
named, so ``psreval --help`` and flag errors answer before torch or Ray load.
``python -m psreval_tune run``, ``python sweeps/paper_grid.py`` and
``python -m analysis`` stay as thin forms of the same entry points.
"""

from __future__ import annotations

import gc
import importlib
import sys
from typing import Callable, Sequence

# name: (module, argv prefix handed to its main, one-line help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "run": ("psreval_tune.cli", ("run",), "one cycle without Ray: train, quantize, attack; results in --out"),
    "grid": ("psreval_tune.sweeps.paper_grid", (), "a grid sweep on Ray Tune (a sweep file, or the paper's grid)"),
    "search": ("psreval_tune.sweeps.search", (), "an Optuna search on Ray Tune (validation objectives)"),
    "reproduce": ("psreval_tune.sweeps.reproduce", (), "the paper's claims with verdicts (docs/reproduction.md)"),
    "recipe-check": ("psreval_tune.sweeps.recipe_check", (), "test accuracy of the shipped training recipes"),
    "xseed": (
        "psreval_tune.sweeps.xseed",
        (),
        "cross-seed transfer of a finished sweep (examples from other seeds' models) onto its trials' runs",
    ),
    "report": ("psreval_tune.analysis.cli", ("report",), "tables, figures and report.html of a sweep"),
    "analysis": ("psreval_tune.analysis.cli", (), "one part of the report (overview, transfer, pareto, ...)"),
    "ui": ("psreval_tune.ui", (), "the MLflow UI over the runs store, on 127.0.0.1"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: psreval COMMAND [flags]   (psreval COMMAND --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_text}" for name, (_, _, help_text) in COMMANDS.items()]
    return "\n".join(lines)


def entry(name: str) -> Callable[[Sequence[str]], int]:
    module, prefix, _ = COMMANDS[name]
    main = importlib.import_module(module).main
    sys.argv[0] = f"psreval {name}"  # argparse's prog: usage lines and errors name the subcommand
    return lambda argv: main([*prefix, *argv])


def ending_process() -> None:
    """Call when this process is the command and ends right after: its final garbage collection then has
    nothing to walk. Python collects every object at exit; after a sweep (torch, Ray, MLflow, pandas: ~700k
    objects) that took 3-8 s on 2 cores, after the results line. Not for a caller that goes on (tests)."""
    gc.freeze()


def main(argv: Sequence[str] | None = None) -> int:
    """``argv`` None: this process is ``psreval`` itself (it ends with the return value)."""
    code = _main(argv)
    if argv is None:
        ending_process()
    return code


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0 if args else 2
    if args[0] == "--version":
        from . import __version__

        print(f"psreval {__version__}")
        return 0
    if args[0] not in COMMANDS:
        print(
            f"error: unknown command {args[0]!r}; expected one of: {', '.join(COMMANDS)} (see psreval --help)",
            file=sys.stderr,
        )
        return 2
    return entry(args[0])(args[1:])


if __name__ == "__main__":
    sys.exit(main())
