"""The shape of psreval_tune's code (issue 26, "the house in order"), read statically with ``ast``:

- no function over 60 lines (from its ``def`` line to its last line; decorators not counted);
- no module of the sweep layer (``psreval_tune/sweeps/``) over 400 lines.

``python tests/test_code_shape.py`` lists every function over 60 lines, longest first.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "psreval_tune"
MAX_FUNCTION_LINES = 60
MAX_SWEEP_MODULE_LINES = 400


def function_lengths(root: Path = ROOT) -> dict[str, int]:
    """Every function and method under ``root`` (nested ones too): dotted name -> lines, def line to end."""
    out: dict[str, int] = {}

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                out[name] = max(out.get(name, 0), child.end_lineno - child.lineno + 1)
                walk(child, f"{name}.")
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.")
            else:
                walk(child, prefix)

    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        walk(ast.parse(path.read_text(), str(path)), "".join(f"{p}." for p in parts))
    return out


def too_long(root: Path = ROOT) -> dict[str, int]:
    return {name: n for name, n in function_lengths(root).items() if n > MAX_FUNCTION_LINES}


def test_no_function_over_60_lines():
    found = too_long()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines (split them): {found}"


def test_no_sweep_module_over_400_lines():
    found = {
        str(path.relative_to(ROOT.parent)): n
        for path in sorted((ROOT / "sweeps").rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > MAX_SWEEP_MODULE_LINES
    }
    assert not found, f"sweep modules over {MAX_SWEEP_MODULE_LINES} lines: {found}"


def test_the_lengths_are_read(tmp_path):
    """Counted from the def line (decorators left out) to the last line; methods and nested functions too."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    body = "\n".join(f"    x{i} = {i}" for i in range(60))
    (pkg / "sub" / "__init__.py").write_text(f"@decorator\ndef long():\n{body}\n")
    method = "\n".join(f"        x{i} = {i}" for i in range(58))
    (pkg / "mod.py").write_text(f"class A:\n    def m(self):\n        def inner():\n            pass\n{method}\n")
    lengths = function_lengths(pkg)
    assert lengths == {"sub.long": 61, "mod.A.m": 61, "mod.A.m.inner": 2}
    assert too_long(pkg) == {"sub.long": 61, "mod.A.m": 61}


if __name__ == "__main__":  # python tests/test_code_shape.py: every function over 60 lines, longest first
    for name, n in sorted(too_long().items(), key=lambda item: -item[1]):
        print(f"{n:4d}  {name}")
