"""The two test tiers: `make test-fast` (-m "not slow") and `make test` (everything).

A test is slow by the marker beside it only (tests/conftest.py says where each goes); no list of module or
test names assigns a tier. The one name-based rule left, conftest's SLOW_FIXTURES, does not assign a tier
either: collection stops when a test using one of those fixtures is not marked slow. These checks fail when a
tier rule names nothing: a SLOW_FIXTURES name that is no fixture under tests/ or that nothing uses, a slow
marker on something that is not a test, a slow module without a test. They parse the files (ast), about
a second in all on 2 busy cores, and belong to the fast tier.
"""

from __future__ import annotations

import ast
import functools
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import conftest
import pytest
from conftest import (
    RAY_TMPDIR,
    SLOW_FIXTURES,
    pytest_collection_modifyitems,
    ray_lock,
    unmarked_ray_start,
    unmarked_slow_fixture_users,
)
from xdist_units import RAY_GROUP, unit

TESTS = Path(__file__).resolve().parent
SLOW = "pytest.mark.slow"


@functools.cache
def _modules() -> dict[str, ast.Module]:
    return {str(p.relative_to(TESTS)): ast.parse(p.read_text(), str(p)) for p in sorted(TESTS.rglob("*.py"))}


def _functions(tree: ast.AST):
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _fixture_name(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    """The name a @pytest.fixture function is requested by (its name= if it sets one); None if no fixture."""
    for deco in fn.decorator_list:
        if ast.unparse(deco) == "pytest.fixture":
            return fn.name
        if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.fixture":
            named = [k.value for k in deco.keywords if k.arg == "name"]
            return named[0].value if named and isinstance(named[0], ast.Constant) else fn.name
    return None


def _requested(tree: ast.AST) -> set[str]:
    """Every fixture name that a test or fixture in the file asks for: its parameters and usefixtures(...)."""
    names = set()
    for fn in _functions(tree):
        names |= {a.arg for a in fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs}
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func) == "pytest.mark.usefixtures":
            names |= {a.value for a in call.args if isinstance(a, ast.Constant)}
    return names


def test_each_slow_fixture_is_a_fixture_under_tests_and_something_uses_it():
    defined = {name for tree in _modules().values() for fn in _functions(tree) if (name := _fixture_name(fn))}
    requested = set().union(*(_requested(tree) for tree in _modules().values()))
    assert SLOW_FIXTURES, "conftest.SLOW_FIXTURES is empty: drop it and its collection guard instead"
    assert not SLOW_FIXTURES - defined, f"conftest.SLOW_FIXTURES names no fixture: {sorted(SLOW_FIXTURES - defined)}"
    assert not SLOW_FIXTURES - requested, f"no test uses these SLOW_FIXTURES: {sorted(SLOW_FIXTURES - requested)}"


def _is_test(node: ast.AST) -> bool:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name.startswith("test")
    return isinstance(node, ast.ClassDef) and node.name.startswith("Test")


def _slow_marks(tree: ast.AST) -> list[ast.Attribute]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr == "slow" and ast.unparse(n) == SLOW]


def test_every_slow_marker_marks_tests():
    """A slow marker sits on a test function or class, in the `pytestmark` of a test module with tests, or in
    a pytest.param(..., marks=...) case; nowhere else."""
    misplaced, counted = [], 0
    for path, tree in _modules().items():
        placed = set()
        for node in ast.walk(tree):
            for deco in getattr(node, "decorator_list", ()):
                if ast.unparse(deco) == SLOW:
                    placed.add(id(deco))
                    if not _is_test(node):
                        misplaced.append(f"{path}:{deco.lineno} marks {node.name}, which is not a test")
        for stmt in tree.body:
            if isinstance(stmt, ast.Assign) and [ast.unparse(t) for t in stmt.targets] == ["pytestmark"]:
                marks = _slow_marks(stmt.value)
                placed |= {id(n) for n in marks}
                if marks and not (Path(path).name.startswith("test_") and any(_is_test(n) for n in tree.body)):
                    misplaced.append(f"{path}:{stmt.lineno} pytestmark is slow but the file holds no test")
        for call in ast.walk(tree):
            if isinstance(call, ast.Call) and ast.unparse(call.func) == "pytest.param":
                placed |= {id(n) for k in call.keywords if k.arg == "marks" for n in _slow_marks(k.value)}
        for mark in _slow_marks(tree):
            counted += 1
            if id(mark) not in placed:
                misplaced.append(f"{path}:{mark.lineno} {SLOW} outside a test's decorators, pytestmark or marks=")
    assert counted, "no slow marker found: the slow tier would be empty"
    assert not misplaced, "\n".join(misplaced)


def _item(nodeid: str, fixtures: list[str], slow: bool, ray: bool = False) -> SimpleNamespace:
    marks = {name for name, on in (("slow", slow), ("ray", ray)) if on}
    item = SimpleNamespace(nodeid=nodeid, fixturenames=fixtures, added=[])
    item.get_closest_marker = lambda name: SimpleNamespace(name=name) if name in marks else None
    item.add_marker = item.added.append
    return item


def test_collection_stops_on_a_test_that_uses_a_slow_fixture_unmarked():
    fixture = sorted(SLOW_FIXTURES)[0]
    items = [
        _item("tests/test_x.py::test_unmarked", ["_seed", fixture, "tmp_path"], slow=False),
        _item("tests/test_x.py::test_marked", [fixture], slow=True),
        _item("tests/test_x.py::test_plain", ["_seed", "tmp_path"], slow=False),
    ]
    assert unmarked_slow_fixture_users(items) == [f"tests/test_x.py::test_unmarked ({fixture})"]
    with pytest.raises(pytest.UsageError, match=r"tests/test_x\.py::test_unmarked"):
        pytest_collection_modifyitems(items)
    pytest_collection_modifyitems(items[1:])  # marked or not using one: nothing to say


def test_units_the_ray_tests_together_a_module_fixtures_module_whole_and_others_alone():
    """xdist_units reads the files: the scheduler's units for real node ids of this suite."""
    assert unit("tests/test_sweeps.py::test_bad_sweep_flags[flags0--1]") == RAY_GROUP  # module pytestmark
    assert unit(
        "tests/test_ray_procs.py::test_a_real_local_rays_processes_are_all_ended_after_its_driver_is_killed"
    ) == (
        RAY_GROUP  # a decorated test
    )
    assert unit("tests/test_ray_procs.py::test_record_lists_this_process_and_its_children") == (
        "tests/test_ray_procs.py::test_record_lists_this_process_and_its_children"  # the same module's others: alone
    )
    assert unit("tests/test_install.py::test_installed_tool_runs_a_cycle_a_grid_and_a_report_from_anywhere") == (
        "tests/test_install.py"  # its module-scoped venv: the module is one unit, Ray or not
    )
    assert (
        unit("tests/test_tiers.py::test_every_slow_marker_marks_tests")
        == "tests/test_tiers.py::test_every_slow_marker_marks_tests"
    )


def test_the_ray_tests_run_first_and_a_marker_the_scheduler_cannot_read_stops_collection(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")  # one process keeps the files' order; a worker sorts
    items = [
        _item("tests/test_tiers.py::test_plain", [], slow=False),
        _item("tests/test_sweeps.py::test_bad_sweep_flags[x]", [], slow=True, ray=True),
        _item("tests/test_tiers.py::test_slow", [], slow=True),
    ]
    pytest_collection_modifyitems(items)
    assert [item.nodeid.rsplit("::", 1)[1] for item in items] == ["test_bad_sweep_flags[x]", "test_slow", "test_plain"]
    # a ray marker given another way (pytest.param(..., marks=...), a hook): the scheduler would not group it
    with pytest.raises(pytest.UsageError, match=r"cannot read .*tests/test_tiers\.py::test_param\[1\]$"):
        pytest_collection_modifyitems([_item("tests/test_tiers.py::test_param[1]", [], slow=True, ray=True)])
    with pytest.raises(pytest.UsageError, match=r"starts Ray \(RAY_FIXTURES\): tests/test_sweeps\.py::test_s$"):
        pytest_collection_modifyitems([_item("tests/test_sweeps.py::test_s", ["smoke_sweep"], slow=True)])


def test_collection_stops_on_a_ray_test_not_marked_slow():
    with pytest.raises(pytest.UsageError, match=r"marked ray but not slow.*tests/test_x\.py::test_ray$"):
        pytest_collection_modifyitems([_item("tests/test_x.py::test_ray", [], slow=False, ray=True)])


def test_a_ray_session_started_by_a_test_not_marked_ray_fails_it():
    plain, marked = _item("t::plain", [], slow=True), _item("t::ray", [], slow=True, ray=True)
    before, after = {"session_2026-01-01_00-00-00_1_1"}, {"session_2026-01-01_00-00-00_1_1", "session_2026-12-07_x"}
    why = unmarked_ray_start(plain, before, after)
    assert why.startswith("started Ray (new session session_2026-12-07_x in ") and "@pytest.mark.ray" in why
    assert unmarked_ray_start(marked, before, after) is None  # marked: allowed
    assert unmarked_ray_start(plain, after, after) is None  # nothing new
    assert os.environ["RAY_TMPDIR"] == str(RAY_TMPDIR)  # this worker's own Ray temp dir, inherited by Ray


def test_a_ray_alone_test_waits_for_the_shared_holders(tmp_path, monkeypatch):
    """ray_lock across processes: a shared holder here keeps an exclusive taker out until it lets go. On a lock
    file of its own: the suite's RAY_LOCK may be held by the other worker's Ray test."""
    lock = tmp_path / "ray.lock"
    monkeypatch.setattr(conftest, "RAY_LOCK", lock)
    probe = [sys.executable, "-c", f"import fcntl; f = open({str(lock)!r}, 'a'); fcntl.flock(f, {{}})"]
    with ray_lock():
        shared = subprocess.run([*probe[:2], probe[2].format("fcntl.LOCK_SH | fcntl.LOCK_NB")], timeout=30)
        exclusive = subprocess.run([*probe[:2], probe[2].format("fcntl.LOCK_EX | fcntl.LOCK_NB")], timeout=30)
    assert (shared.returncode, exclusive.returncode) == (0, 1)  # BlockingIOError: exit 1
    assert subprocess.run([*probe[:2], probe[2].format("fcntl.LOCK_EX | fcntl.LOCK_NB")], timeout=30).returncode == 0
