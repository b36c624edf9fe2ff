"""psreval_tune's import graph has no circles.

The graph is read statically (``ast``, nothing imported), over every module of the package:

- an edge for every ``import`` / ``from ... import`` of a psreval_tune module, relative ones resolved;
  ``from pkg import name`` goes to the submodule ``pkg.name`` when there is one, else to ``pkg``
  (its ``__init__.py``, which runs and may re-export), and importing ``a.b.c`` also runs the
  ``__init__.py`` of ``a.b`` (an edge to it unless the importer lives inside ``a.b``: the package
  a module belongs to has started running before the module does);
- imports inside functions count too: a function-level import of the package is the usual way a
  circle gets hidden (it still runs, only later). No internal import is "lazy for an optional
  dependency", so none is exempt; imports of third-party packages are not edges at all;
- imports under ``if TYPE_CHECKING:`` count as well: they never run, but they are a dependency all the
  same (the type checker follows them), and a circle of them is a layering knot;
- ``registry.discover`` (importlib over a registry package's files) is not an edge: the plugin
  modules import their package, the package never names them.
"""

from __future__ import annotations

import ast
import re
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "psreval_tune"
PACKAGE = "psreval_tune"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


def _imports(tree: ast.AST):
    """Every Import / ImportFrom node, at any depth."""
    return (node for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom)))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph() -> dict[str, set[str]]:
    """module -> the psreval_tune modules importing it runs."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        own = set(_ancestors(mod)) | ({mod} if is_pkg else set())  # packages running before mod's body

        def add(target: str, mod=mod, own=own) -> None:
            while target not in mods and "." in target:  # an attribute of a module: the module
                target = target.rsplit(".", 1)[0]
            if target not in mods:
                return
            for pkg in _ancestors(target) + [target]:
                if pkg not in own and pkg != mod:
                    graph[mod].add(pkg)

        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        add(alias.name)
                continue
            if node.level:
                base = (mod if is_pkg else mod.rsplit(".", 1)[0]).split(".")
                base = base[: len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                add(sub if sub in mods else source)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One shortest circle per strongly connected component of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on, stack, comps = set(), [], []

    def strong(v: str) -> None:  # Tarjan; the graph is a few hundred nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(comp)

    for v in sorted(graph):
        if v not in index:
            strong(v)
    cycles = []
    for comp in comps:
        best = None
        for start in sorted(comp):  # BFS back to start inside the component
            prev = {start: None}
            queue = deque([start])
            found = None
            while queue and found is None:
                v = queue.popleft()
                for w in sorted(graph[v] & comp):
                    if w == start:
                        found = v
                        break
                    if w not in prev:
                        prev[w] = v
                        queue.append(w)
            path = [start]
            v = found
            while v is not None and v != start:
                path.insert(1, v)
                v = prev[v]
            if best is None or len(path) < len(best):
                best = path
        cycles.append(best + [best[0]])
    return sorted(cycles)


def test_the_graph_is_read():
    graph = import_graph()
    assert len(graph) > 50
    assert "psreval_tune.registry" in graph["psreval_tune.threats"]
    assert "psreval_tune.config" in graph["psreval_tune.cli"]
    # a relative import two levels up, to a submodule named in the import list
    assert "psreval_tune.config" in graph["psreval_tune.analysis.reports.base"]


def test_no_import_circles():
    cycles = _cycles(import_graph())
    assert not cycles, "import circles in psreval_tune:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_config_view_names_config_fields():
    """registry.ConfigView (what registry entries read of a config, named without importing config.py)
    lists CycleConfig fields only, with the same annotations."""
    import dataclasses

    from psreval_tune.config import CycleConfig
    from psreval_tune.registry import ConfigView

    fields = {f.name: f.type for f in dataclasses.fields(CycleConfig)}
    view = ConfigView.__annotations__
    assert view and {name: fields.get(name) for name in view} == view


def test_a_circle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


if __name__ == "__main__":  # python tests/test_imports.py: one circle per knot
    for cycle in _cycles(import_graph()):
        print(" -> ".join(cycle))


# --- the layers (docs/architecture.md): who may import Ray, MLflow, the sweep layer and analysis ---------
# Third-party packages that tie a module to a layer, and the modules allowed to import them (prefixes).
LAYER_LIBS = {
    "ray": ("psreval_tune.sweeps", "psreval_tune.trainable", "psreval_tune.tracking"),
    "mlflow": ("psreval_tune.tracking", "psreval_tune.ui", "psreval_tune.analysis"),
    "optuna": ("psreval_tune.sweeps",),
}
# psreval_tune subpackages and who may import them: the sweep layer is on top (nothing below imports it);
# analysis is read by the sweep entry points (their reports) and by itself, never by a trial or the cycle.
LAYER_PACKAGES = {
    "psreval_tune.sweeps": ("psreval_tune.sweeps",),
    "psreval_tune.analysis": ("psreval_tune.analysis", "psreval_tune.sweeps"),
}


def _third_party(tree: ast.AST) -> set[str]:
    out = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def _allowed(mod: str, prefixes: tuple[str, ...]) -> bool:
    return any(mod == p or mod.startswith(p + ".") for p in prefixes)


def test_the_cycle_layer_imports_neither_ray_nor_mlflow():
    """The cycle (data, models, training, quantization, attacks) runs without Ray or MLflow: only the
    trial adapter (trainable), tracking, the UI, the sweep layer and analysis import them."""
    wrong = []
    for mod, path in _modules().items():
        libs = _third_party(ast.parse(path.read_text()))
        wrong += [f"{mod} imports {lib}" for lib, ok in LAYER_LIBS.items() if lib in libs and not _allowed(mod, ok)]
    assert not wrong, wrong
    assert {"ray", "mlflow"} <= _third_party(ast.parse((ROOT / "tracking.py").read_text()))  # the scan sees them


def test_nothing_below_imports_the_sweep_layer_or_analysis():
    graph = import_graph()
    wrong = [
        f"{mod} imports {dep}"
        for mod, deps in graph.items()
        for dep in deps
        for package, ok in LAYER_PACKAGES.items()
        if _allowed(dep, (package,)) and not _allowed(mod, ok)
    ]
    assert not wrong, wrong
    assert any(_allowed(d, ("psreval_tune.analysis",)) for d in graph["psreval_tune.sweeps.reproduce"])


def test_baseline_names_are_compared_through_their_declaration():
    """The no-threat threat, the plain-mean rule, the paper's architecture and MedMNIST's subset handling:
    declared once (psreval_tune/baselines.py, the dataset entry's own_fields); no module compares a threat,
    aggregation, dataset or architecture with the literal name."""
    names = "none|fedavg|medmnist|cnn|resnet9|resnet18"
    literal = re.compile(rf"""(threat|aggregation|dataset|attack|arch)["'\]\)]*\s*[!=]=\s*["']({names})["']""")
    found = [
        f"{path.relative_to(ROOT.parent)}:{n}: {line.strip()}"
        for path in ROOT.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert not found, found
    assert literal.search('if cfg.threat == "none":') and literal.search("trials['threat'] != 'fedavg'")
    assert literal.search('if args.arch != "resnet9":') and literal.search("frame['arch'] == 'cnn'")
    # the paper's architectures are named once, in baselines.py (PAPER_ARCHS; their entries register under it)
    from psreval_tune.baselines import PAPER_ARCHS
    from psreval_tune.models import ARCHS

    spelled = [
        f"{path.relative_to(ROOT.parent)}:{node.lineno}"
        for path in ROOT.rglob("*.py")
        if path.name != "baselines.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Constant) and node.value in PAPER_ARCHS
    ]
    assert not spelled, spelled
    assert all(name in ARCHS for name in PAPER_ARCHS)
