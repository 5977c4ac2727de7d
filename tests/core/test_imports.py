"""The core's own imports form no circles: every module can be read top to bottom."""

from __future__ import annotations

import ast
from pathlib import Path

import rollingdepth_core

PACKAGE = Path(rollingdepth_core.__file__).parent


def module_names() -> dict[str, Path]:
    """Every module of the package and of its subpackages (``alignment/``...), by dotted name
    (a package by its ``__init__``)."""
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _targets(module: str, is_package: bool, node: ast.AST, names) -> set[str]:
    """The package modules ``node`` (an import in ``module``) imports."""
    if isinstance(node, ast.Import):
        found = {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = module.split(".")
            base = base if is_package else base[:-1]
            base = base[: len(base) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
        else:
            target = node.module or ""
        # `from .alignment import robust` imports the submodule robust, `... import coalign`
        # the package alignment itself
        found = {
            f"{target}.{alias.name}" if f"{target}.{alias.name}" in names else target
            for alias in node.names
        }
    else:
        return set()
    out = set()
    for name in found:
        while name and name not in names:  # `import a.b.c` of a function-level name: a.b
            name = name.rpartition(".")[0]
        if name:
            out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at top level or inside functions), over
    every subpackage; a submodule's implicit import of its own package's ``__init__`` is not
    an edge (every package that imports its submodules would be a circle)."""
    names = module_names()
    graph: dict[str, set[str]] = {}
    for module, path in names.items():
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            edges |= _targets(module, is_package, node, names)
        graph[module] = {e for e in edges if e != module}
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
    core = {f"rollingdepth_core.{m}" for m in ("method", "plan", "executors", "config", "runner")}
    assert core <= set(graph)
    # the subpackages too (the test once read only the top-level modules)
    alignment = {f"rollingdepth_core.alignment.{m}" for m in ("robust", "adam", "merge", "api")}
    assert alignment | {"rollingdepth_core.alignment"} <= set(graph)
    assert "rollingdepth_core.errors" in graph["rollingdepth_core.alignment.checks"]
    assert "rollingdepth_core.alignment" in graph["rollingdepth_core.method"]
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_circle_inside_a_subpackage_is_found(tmp_path, monkeypatch):
    """A package laid out like the core's, with a circle only between two modules of its
    subpackage (``from .b import`` / ``from . import a``) and one through ``..``."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "top.py").write_text("from .sub.a import f\n")
    (package / "sub" / "__init__.py").write_text("from .a import f\n")
    (package / "sub" / "a.py").write_text("from .b import g\n")
    (package / "sub" / "b.py").write_text("def g():\n    from . import a\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["x"]), "PACKAGE", package)
    graph = import_graph()
    assert graph["pkg.top"] == {"pkg.sub.a"}
    assert find_cycle(graph) == ["pkg.sub.a", "pkg.sub.b", "pkg.sub.a"]
    (package / "sub" / "b.py").write_text("def g():\n    from ..top import f\n")
    assert find_cycle(import_graph()) == ["pkg.sub.a", "pkg.sub.b", "pkg.top", "pkg.sub.a"]


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
