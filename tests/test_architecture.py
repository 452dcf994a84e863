"""The import graph, read from the source with ``ast``: no cycles (an import inside a
function counts as much as one at the top), packages that depend one way, and the
executor's layers pointing one way (results -> engine -> transport -> record -> compute).

``from . import x`` inside a package counts as importing the package itself too: Python
runs the package's ``__init__`` first, so a package that imports one of its modules that
imports it back this way is a cycle, hidden or not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("cliguard", "schedules", "timeline", "simulator", "executor", "planner")
DEPENDS_ON = {  # package -> the project's packages it may import
    "cliguard": set(),
    "schedules": {"cliguard"},
    "timeline": {"schedules"},
    "simulator": {"cliguard", "schedules", "timeline"},
    "executor": {"cliguard", "schedules", "timeline", "simulator"},
    "planner": {"cliguard", "schedules", "timeline", "simulator", "executor"},
}
LAYERS = ("compute", "record", "transport", "engine", "results")  # executor, bottom first
OPTIONS = ("config",)  # read by every layer, imports none
ENTRY_POINTS = ("__main__", "demo", "launch")  # may import any layer; no layer imports them


def modules(root: Path, packages=PACKAGES) -> dict[str, tuple[Path, bool]]:
    """Dotted name -> (file, is a package's __init__)."""
    found = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    """Module -> the project's modules it imports, anywhere in its body."""
    known = modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in known.items():
        here = name if is_package else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = here.split(".")[:len(here.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in names:
                while target and target not in known:  # an attribute of a module: the module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in graph[node]:
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_no_import_cycles(graph) -> None:
    assert cycles(graph) == []


def test_the_graph_sees_imports_hidden_in_functions(tmp_path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import f\nfrom .c import d\n")
    (package / "a.py").write_text("def f():\n    from .b import g\n    return g()\n")
    (package / "b.py").write_text("from pkg.a import f as h\n\ndef g():\n    return 1\n")
    (package / "c.py").write_text("from . import b\nd = 1\n")  # runs pkg/__init__.py, which imports c
    found = import_graph(tmp_path, ("pkg",))
    assert found["pkg.a"] == {"pkg.b"} and found["pkg.c"] == {"pkg", "pkg.b"}
    assert sorted(cycles(found)) == [["pkg", "pkg.c"], ["pkg.a", "pkg.b"]]


def test_the_ir_is_the_leaf_of_schedules(graph) -> None:
    assert graph["schedules.ir"] == set()


def test_packages_depend_one_way(graph) -> None:
    wrong = sorted((module, target) for module, targets in graph.items() for target in targets
                   if target.split(".")[0] != module.split(".")[0]
                   and target.split(".")[0] not in DEPENDS_ON[module.split(".")[0]])
    assert wrong == []


def _part(module: str) -> str:
    """The executor's part a module belongs to: a layer, the options, an entry point."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_executor_layers_point_one_way(graph) -> None:
    edges = [(_part(a), _part(b)) for a, targets in graph.items() if a.startswith("executor.")
             for b in targets if b.startswith("executor.") and _part(a) != _part(b)]
    assert {a for a, _ in edges} | {b for _, b in edges} <= {*LAYERS, *OPTIONS, *ENTRY_POINTS, "__init__"}
    upward = [(a, b) for a, b in edges if a in LAYERS and b in LAYERS and LAYERS.index(a) < LAYERS.index(b)]
    assert upward == []
    assert [(a, b) for a, b in edges if b in ENTRY_POINTS and a not in ENTRY_POINTS] == []
    assert [(a, b) for a, b in edges if a in OPTIONS] == []
    # every layer is used from the one above it (the order above is the one the code has)
    assert all((upper, lower) in edges for upper, lower in zip(LAYERS[1:], LAYERS))
