"""The core's own imports form no circles: every module can be read top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

import rollingdepth_core

PACKAGE = Path(rollingdepth_core.__file__).parent


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at top level or inside functions)."""
    names = {p.stem for p in PACKAGE.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    edges.add(node.module.split(".")[0])
                else:  # from . import a, b
                    edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[0] == "rollingdepth_core" and len(parts) > 1:
                    edges.add(parts[1])
        graph[path.stem] = {e for e in edges if e in names and e != path.stem}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_core_imports_form_no_circles():
    graph = import_graph()
    assert {"method", "plan", "executors", "config", "runner"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_engine_starts_without_diffusers():
    """diffusers (and transformers) load with the model: `finalize`, `check` and `jobs` need
    none, and importing them costs each farm task over a second."""
    import subprocess
    import sys

    code = (
        "import sys, rollingdepth_core.cli, rollingdepth_core.runner, rollingdepth_core.session\n"
        "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
