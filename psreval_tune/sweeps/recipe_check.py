"""Check that the shipped recipes train (every arch, non-private and DP at each of the paper's budgets).

Test accuracy on the test split, with 95% intervals.

    python sweeps/recipe_check.py                      # digits: 3 archs x {non-private, 7.0, 3.4, 1.7}
    python sweeps/recipe_check.py --archs cnn --seeds 0,1,2 --doc /tmp/check.md

Each trial trains one model with its recipe (no twin, one cheap FGSM attack)
and reports clean test accuracy; the table goes to stdout and to --doc.
Recipes are chosen on the validation split (sweeps/search.py --space recipe);
this is the one place their test accuracy is read, after the fact.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Sequence

from ray import tune

from .. import config
from ..evaluate import wilson
from ..trainable import cycle_config
from .engine import SweepSpec, _csv, exit_status, main_guard, parser, run_sweep

EPSILONS = (None, 7.0, 3.4, 1.7)


def grid(args) -> dict:
    fixed = {
        "dataset": args.dataset,
        "data_root": args.data_root,
        "download": args.download,
        "eval_attacks": ["FGSM"],
        "train_twin": False,
        "attack_repeats": 1,
    }
    axes = {"arch": list(args.archs), "epsilon": list(EPSILONS), "seed": list(args.seeds)}
    for combo in itertools.product(*axes.values()):
        cycle_config({**fixed, **dict(zip(axes, combo))})
    return {**fixed, **{k: tune.grid_search(v) for k, v in axes.items()}}


def frame(results):
    import pandas as pd

    rows = []
    for res in results:
        cfg, metrics = cycle_config(res.config), res.metrics or {}
        rows.append(
            {
                "arch": cfg.arch,
                "epsilon": cfg.epsilon,
                "recipe": cfg.recipe,
                **{k: metrics.get(k) for k in ("acc_clean_float", "n_test", "time_total_s")},
            }
        )
    return pd.DataFrame(rows).astype({"epsilon": float, "acc_clean_float": float})


def table(summary) -> str:
    """Markdown: one row per arch, one column per privacy setting: mean test accuracy
    [95% Wilson interval over the pooled test images], the recipe, seconds per trial."""
    lines = [
        "| arch | recipe (non-private / DP) | " + " | ".join(_label(e) for e in EPSILONS) + " |",
        "|---|---|" + "---|" * len(EPSILONS),
    ]
    for arch, rows in summary.groupby("arch", sort=False):
        cells = []
        for eps in EPSILONS:
            sel = rows[rows["epsilon"].isna()] if eps is None else rows[rows["epsilon"] == eps]
            done = sel.dropna(subset=["acc_clean_float"])
            if done.empty:
                cells.append("-")
                continue
            n = int(done["n_test"].sum())
            p = float((done["acc_clean_float"] * done["n_test"]).sum() / n)
            low, high = wilson(p, n)
            cells.append(
                f"{100 * p:.1f} [{100 * low:.1f}, {100 * high:.1f}] ({len(done)} seed, "
                f"{done['time_total_s'].mean():.0f} s)"
            )
        private = rows["epsilon"].notna()
        recipes = " / ".join(sorted(set(rows.loc[~private, "recipe"])) + sorted(set(rows.loc[private, "recipe"])))
        lines.append(f"| {arch} | {recipes} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _label(eps) -> str:
    return "non-private" if eps is None else f"DP ε={eps:g}"


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--archs", type=_csv(str), default=list(config.ARCHS), help="architectures (default: all)")
    p.add_argument("--doc", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    results, _, _ = run_sweep(
        args, SweepSpec(kind="recipe_check", param_space=grid(args), sweep_params={"archs": ",".join(args.archs)})
    )
    text = table(frame(results))
    print("\nclean test accuracy with the shipped recipes (%):\n" + text)
    if args.doc:
        Path(args.doc).write_text(text + "\n")
    return exit_status(results)


if __name__ == "__main__":
    sys.exit(main())
