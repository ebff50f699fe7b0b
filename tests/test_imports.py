"""nfbench's import graph flows one way: no module imports, directly or through others, a module
that imports it back (lazy imports inside functions and TYPE_CHECKING blocks count too)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nfbench"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Each nfbench module and the nfbench modules any of its import statements names."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}

    def ours(name: str) -> str | None:  # the module a dotted name resolves to, if it is nfbench's
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        named: list[str] = []
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                named += [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                named += [base, *(f"{base}.{a.name}" for a in node.names)]
        graph[name] = {t for t in map(ours, named) if t is not None and t != name}
    return graph


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (found := visit(n)):
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_cycle():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_nfbench_has_no_import_cycle():
    graph = import_graph()
    assert {"nfbench.config", "nfbench.engine.loop", "nfbench.models.resnet"} <= set(graph)
    assert "nfbench.errors" in graph["nfbench.config"]  # the graph sees nfbench's own imports
    found = cycle(graph)
    assert found is None, " -> ".join(found)
