"""Dependencies point one way: no import cycle in the package, ``TYPE_CHECKING`` imports
and imports inside functions included; the optional integrations stay out of the core."""

from __future__ import annotations

import ast
import pathlib

import workflow_trigger

PACKAGE = pathlib.Path(workflow_trigger.__file__).parent
OPTIONAL = {"fastapi", "otel", "ray", "_ray_driver", "_ray_pool", "_ray_worker"}
#: the command line, behind its own extra, may load the Ray integration when asked to
FRONT_ENDS = {"cli", "_cli_commands", "_cli_platforms"}


def _module(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                stem = (
                    (f"{base}.{node.module}" if node.module else base)
                    if node.level
                    else (node.module or "")
                )
                targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = _graph()
    # the package's own __init__ imports everything; it is the root, not part of a cycle
    graph.pop("workflow_trigger", None)
    for targets in graph.values():
        targets.discard("workflow_trigger")
    assert _cycles(graph) == []


def test_the_walker_sees_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_core_never_imports_an_optional_integration() -> None:
    graph = _graph()
    for name, targets in graph.items():
        if name.rpartition(".")[2] in OPTIONAL | FRONT_ENDS or name == "workflow_trigger":
            continue
        leaked = {t for t in targets if t.rpartition(".")[2] in OPTIONAL}
        assert not leaked, f"{name} imports {leaked}"
