"""Units of work of the parallel suite (`make test`: pytest -n 2), for pytest-xdist's scheduler.

Two Ray sweeps at once on 2 cores thrash (measured: 24 tests in the first 18 minutes, against 17 minutes for
all the Ray tests one after another), so the tests marked ray form one unit, RAY_GROUP, that one worker runs
one at a time while the other worker takes everything else, test by test. The tests of a module that defines
a module-scoped fixture (a trained model, a fresh venv) form one unit per module, Ray or not, so the fixture
is built once.

xdist's own `--dist loadgroup` reads `xdist_group` markers by renaming `item._nodeid`, which pytest 9 no
longer reads (`Node.nodeid` is `str(item._id)`): the groups were silently ignored. So the scheduler here reads
the units from the test files themselves (ast): the controller process never collects, it only sees node ids.
`tests/conftest.py` checks at collection that this reading agrees with the markers pytest sees.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAY_GROUP = "ray"


def _is_ray_mark(node: ast.AST) -> bool:
    target = node.func if isinstance(node, ast.Call) else node
    return ast.unparse(target) == "pytest.mark.ray"


def _module_fixture(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Call)
        and ast.unparse(node.func) == "pytest.fixture"
        and any(k.arg == "scope" and ast.unparse(k.value) == "'module'" for k in node.keywords)
    )


@functools.cache
def module_units(path: str) -> tuple[bool, bool, frozenset[str]]:
    """(a module-scoped fixture is defined, the whole module is marked ray, its tests or classes marked ray)."""
    file = ROOT / path
    if not file.is_file():
        return False, False, frozenset()
    tree = ast.parse(file.read_text(), str(file))
    module_fixture = any(_module_fixture(n) for n in ast.walk(tree))
    whole = any(
        isinstance(n, ast.Assign)
        and any(ast.unparse(t) == "pytestmark" for t in n.targets)
        and any(_is_ray_mark(m) for m in ast.walk(n.value))
        for n in tree.body
    )
    marked = frozenset(
        n.name
        for n in tree.body
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        and any(_is_ray_mark(d) for d in n.decorator_list)
    )
    return module_fixture, whole, marked


def unit(nodeid: str) -> str:
    """The unit of work of a node id: its module, RAY_GROUP, or itself."""
    path, _, rest = nodeid.partition("::")
    name = rest.split("::", 1)[0].split("[", 1)[0]
    module_fixture, whole, marked = module_units(path)
    if module_fixture:
        return path
    return RAY_GROUP if whole or name in marked else nodeid


def scheduler(config, log):
    """pytest-xdist's LoadScopeScheduling, its scopes being these units."""
    from xdist.scheduler import LoadScopeScheduling

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit(nodeid)

    return UnitScheduling(config, log)
