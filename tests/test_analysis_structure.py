"""The shape of psreval_tune/analysis: small functions, one module per report with its tables computed
apart from its figures, and no registry's names listed by hand (attacks come from config.ATTACKS)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from psreval_tune import config

ANALYSIS = Path(__file__).resolve().parents[1] / "psreval_tune" / "analysis"
MAX_LINES = 60
REPORT_KEYS = (
    "overview",
    "transfer",
    "adv_training",
    "train_time",
    "robustness",
    "pareto",
    "curves",
    "masking",
    "claims",
)


def _trees() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in sorted(ANALYSIS.rglob("*.py"))]


def _functions(tree: ast.Module):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def test_no_function_in_analysis_is_over_60_lines():
    long = [
        f"{path.relative_to(ANALYSIS)}:{fn.lineno} {fn.name} ({fn.end_lineno - fn.lineno + 1} lines)"
        for path, tree in _trees()
        for fn in _functions(tree)
        if fn.end_lineno - fn.lineno + 1 > MAX_LINES
    ]
    assert long == []


def test_reports_is_a_package_with_one_module_per_report():
    assert not (ANALYSIS / "reports.py").exists()
    for key in REPORT_KEYS:
        assert (ANALYSIS / "reports" / f"{key}.py").is_file(), key
    from psreval_tune.analysis.reports import REPORTS

    assert tuple(REPORTS) == REPORT_KEYS


def _draws(fn: ast.AST) -> list[str]:
    """What in ``fn`` draws: the plots module, matplotlib, or a draw_* function."""
    out = []
    for node in ast.walk(fn):
        if isinstance(node, ast.Name) and (node.id == "plots" or node.id.startswith("draw_")):
            out.append(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [getattr(node, "module", None) or "", *(a.name for a in node.names)]
            out += [n for n in names if n.startswith("matplotlib")]
    return out


def test_table_functions_do_not_draw():
    """A report's numbers (``*_tables``, ``*_table``, ``*_data``) are computed without matplotlib."""
    drawing = [
        f"{path.name}:{fn.name} uses {', '.join(sorted(set(_draws(fn))))}"
        for path, tree in _trees()
        if path.parent.name == "reports"
        for fn in _functions(tree)
        if fn.name.endswith(("_tables", "_table", "_data")) and _draws(fn)
    ]
    assert drawing == []


def test_no_attack_names_listed_in_analysis():
    """No tuple, list, set or dict literal in analysis/ names two or more attacks: they come from config.ATTACKS."""
    attacks = {a for a in config.ATTACKS} | {a.lower() for a in config.ATTACKS}
    listed = []
    for path, tree in _trees():
        for node in ast.walk(tree):
            items = node.keys if isinstance(node, ast.Dict) else getattr(node, "elts", None)
            if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) and items:
                names = {i.value for i in items if isinstance(i, ast.Constant) and i.value in attacks}
                if len(names) >= 2:
                    listed.append(f"{path.relative_to(ANALYSIS)}:{node.lineno} {sorted(names)}")
    assert listed == []


# --- a new attack in config.ATTACKS appears in the reports -----------------------------------------------------


def _trial(seed: int, attacks: tuple[str, ...]) -> dict:
    row = {
        "sweep": "s",
        "trial_id": f"t{seed}",
        "run_id": None,
        "run_name": "r",
        "source": "test",
        "dataset": "digits",
        "arch": "cnn",
        "epsilon": 3.4,
        "threat": "none",
        "adv_fraction": 0.0,
        "attack": "PGD",
        "seed": seed,
        "acc_clean_float": 0.8,
        "acc_clean_int8": 0.79,
        "acc_clean_float_nonprivate": 0.9,
        "acc_clean_int8_nonprivate": 0.89,
        "n_test": 100,
        "n_eval": 50,
    }
    for k, a in enumerate(attacks):
        row[f"acc_wb_{a.lower()}_mean"] = 0.2 + k / 100 + seed / 100
        for g in ("nonprivate", "dp"):
            for t in ("nonprivate", "dp", "int8_nonprivate", "int8_dp"):
                row[f"acc_transfer_{a.lower()}_{g}_to_{t}_mean"] = 0.3 + k / 100
    return row


@pytest.fixture
def new_attack(monkeypatch):
    names = (*config.ATTACKS, "NEWATK")
    monkeypatch.setattr(config, "ATTACKS", names, raising=False)
    return names


def test_a_new_attack_appears_in_the_reports_without_an_analysis_edit(new_attack):
    from psreval_tune.analysis import plots
    from psreval_tune.analysis.build import coverage
    from psreval_tune.analysis.cli import build_parser
    from psreval_tune.analysis.load import tidy
    from psreval_tune.analysis.reports import pareto, present_attacks, transfer

    trials = tidy([_trial(seed, ("PGD", "NEWATK")) for seed in (0, 1)])
    assert present_attacks(trials, "acc_wb_{a}_mean") == ["PGD", "NEWATK"]
    rep = transfer(trials)
    assert set(rep.data["attack"]) == {"PGD", "NEWATK"}
    assert not any("NEWATK" in m for m in rep.messages)
    assert "NEWATK" in set(rep.tables[0].frame["attack"])
    assert pareto(trials, attack="NEWATK").params["attack"] == "NEWATK"
    assert not any("NEWATK" in c for c in coverage(trials))
    colors = plots.attack_colors()
    assert set(colors) == set(new_attack) and len(set(colors.values())) == len(new_attack)
    assert build_parser().parse_args(["pareto", "--attack", "NEWATK"]).attack == "NEWATK"
