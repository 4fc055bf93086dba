"""The layout stays readable: in search/ no import cycle (function-level imports included), and
each adapter the only importer of its library; in search/ and children/ no module over 400 lines
and no function over 60.

Read from the source with `ast`, so an import hidden inside a function counts like any other.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

PACKAGE = ROOT / "search"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
# library -> the only package (or module) of search/ allowed to import it
ADAPTERS = {"ray.tune": "search.tune", "mlflow": "search.tracking.store"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
SHORT = {module_name(p): p for root in (PACKAGE, ROOT / "children")
         for p in sorted(root.rglob("*.py"))}  # the modules held to the length limits
TREES = {name: ast.parse(path.read_text(encoding="utf-8"), str(path))
         for name, path in MODULES.items()}


def imported(tree: ast.Module, name: str) -> list[str]:
    """Every module `name` imports anywhere in its source (absolute names, relative resolved)."""
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            found.append(base)
            found += [f"{base}.{alias.name}" for alias in node.names]
    return found


def own_module(target: str) -> str | None:
    """The search module an imported name lives in (a submodule, else its package)."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, tree in TREES.items():
        for target in imported(tree, name):
            if target.split(".")[0] != "search":
                continue
            found = own_module(target)
            if found and found != name:
                edges[name].add(found)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_checker_sees_a_cycle_and_function_level_imports() -> None:
    """The checks below could not fail if the graph missed what they look for."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    tree = ast.parse("def f():\n    from search.tune import run_search\n")
    assert "search.tune.run_search" in imported(tree, "search.api")
    assert own_module("search.tune.run_search") == "search.tune"
    assert own_module("search.tune.plan.TunePlan") == "search.tune.plan"


def test_search_has_no_import_cycle() -> None:
    edges = graph()
    assert sum(map(len, edges.values())) > len(MODULES)  # the graph was read
    assert cycles(edges) == []


def test_the_length_limits_cover_children_and_search() -> None:
    assert "children.train" in SHORT and "children.cohort.members" in SHORT
    assert "search.tune.experiment" in SHORT


@pytest.mark.parametrize("name", sorted(SHORT))
def test_modules_and_functions_stay_short(name: str) -> None:
    text = SHORT[name].read_text(encoding="utf-8")
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text, str(SHORT[name])))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == [], f"{name}: {', '.join(long)}"


@pytest.mark.parametrize("library", sorted(ADAPTERS))
def test_each_library_has_one_adapter(library: str) -> None:
    owner = ADAPTERS[library]
    importers = {name for name, tree in TREES.items()
                 if any(t == library or t.startswith(f"{library}.") for t in imported(tree, name))}
    assert importers
    assert {n for n in importers if n != owner and not n.startswith(f"{owner}.")} == set()
