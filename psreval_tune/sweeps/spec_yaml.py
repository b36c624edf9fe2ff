"""A sweep file's YAML read safely (``parse``): PyYAML's safe loader only (``SafeLoader``, or its libyaml twin
``CSafeLoader``: plain data, never an object), after checks that bound the work before anything walks the
document: nodes and nesting counted on the parser's events, aliases expanded by counting (an alias bomb),
then duplicate keys. Every problem is one line naming the file (SweepFileError)."""

from __future__ import annotations

from typing import Any

from .spec_schema import MAX_DEPTH, MAX_NODES, SweepFileError


def parse(text: str, source: str) -> Any:
    """The document of a sweep file's text, or SweepFileError naming ``source``."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where installed: ~6x faster
    try:
        _check_events(text, source, loader)
        root = yaml.compose(text, Loader=loader)
        _check_size(root, source)
        _no_duplicate_keys(root, source)
        data = yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader (SafeConstructor: plain data only)
    except yaml.YAMLError as exc:
        if "nesting depth" in str(getattr(exc, "problem", "")):  # libyaml stops at 1000 levels by itself
            raise SweepFileError(f"{source}: nested too deeply ({_yaml_error(exc)}); {NESTING}") from None
        raise SweepFileError(f"{source}: not valid YAML ({_yaml_error(exc)})") from None
    except RecursionError:  # counting aliases recurses once per level of a chain of aliases
        raise SweepFileError(f"{source}: nested too deeply; {NESTING}") from None
    return data


NESTING = f"expected a sweep file (a few levels of mappings and lists, at most {MAX_DEPTH})"


def _yaml_error(exc: Exception) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"


def _children(node: Any) -> list:
    import yaml

    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_events(text: str, source: str, loader: Any) -> None:
    """Refuse, on the parser's events and before any node is built, a file of more than MAX_NODES nodes
    (aliases not yet expanded: _check_size counts those) or nested deeper than MAX_DEPTH. Composing a
    1 MB list of 500,000 numbers took 27 s (4 s with libyaml); 10^5 nested brackets exhaust the stack."""
    import yaml

    nodes = depth = 0
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            depth -= 1
            continue
        if not isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            continue
        nodes += 1
        if nodes > MAX_NODES:
            raise SweepFileError(
                f"{source}: more than {MAX_NODES} YAML nodes is not allowed; expected at most {MAX_NODES} "
                "(a sweep file holds a few hundred)"
            )
        if not isinstance(event, yaml.ScalarEvent):
            depth += 1
            if depth > MAX_DEPTH:
                where = f"more than {MAX_DEPTH} levels at line {event.start_mark.line + 1}"
                raise SweepFileError(f"{source}: nested too deeply ({where}); {NESTING}")


def _check_size(root: Any, source: str) -> None:
    """Refuse a document whose nodes, every alias expanded, exceed MAX_NODES, or that contains itself.

    An alias is the very node object its anchor names, so sizes are memoised per object: the count costs
    one visit per distinct node, however many times aliases repeat it."""
    sizes: dict[int, int] = {}
    busy = -1  # being counted: met again below itself means an alias to an enclosing node

    def size(node: Any) -> int:
        known = sizes.get(id(node))
        if known == busy:
            raise SweepFileError(
                f"{source}: an alias refers to a node that contains it (line {node.start_mark.line + 1}); "
                "expected a finite document"
            )
        if known is None:
            sizes[id(node)] = busy
            sizes[id(node)] = 1 + sum(size(child) for child in _children(node))
        return sizes[id(node)]

    total = 0 if root is None else size(root)
    if total > MAX_NODES:
        raise SweepFileError(
            f"{source}: {total} YAML nodes with its aliases (*name) expanded is not allowed; expected at most "
            f"{MAX_NODES} (write the values out, or use fewer aliases)"
        )


def _no_duplicate_keys(root: Any, source: str) -> None:
    """safe_load keeps the last of two equal keys silently; a sweep file must not have any.
    Each node once (an alias repeats a node already checked)."""
    import yaml

    seen_nodes: set[int] = set()
    todo = [] if root is None else [root]
    while todo:
        node = todo.pop()
        if id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            keys: set[str] = set()
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in keys:
                        raise SweepFileError(
                            f"{source}: key {key.value!r} appears twice (line {key.start_mark.line + 1})"
                            "; expected each key once"
                        )
                    keys.add(key.value)
        todo.extend(reversed(_children(node)))  # document order: the first duplicate is the one named
