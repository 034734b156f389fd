"""The project's modules import each other without a cycle (lazy imports inside functions count; imports
under ``if TYPE_CHECKING`` do not, as they never run), and none grows past 400 lines."""

import ast
import importlib.util
import pkgutil
from pathlib import Path

import mrfbench
import mrfbench.datasets
import mrfbench.models

MAX_LINES = 400


def project_modules() -> dict[str, Path]:
    """Every module of the installed package, by name, with its source file (``mrfbench.models`` and
    ``mrfbench.datasets`` live in folders of their own)."""
    modules = {}
    for package in (mrfbench, mrfbench.models, mrfbench.datasets):
        modules[package.__name__] = Path(package.__file__)
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            modules[info.name] = Path(importlib.util.find_spec(info.name).origin)
    return modules


def runtime_imports(tree: ast.AST) -> list[ast.AST]:
    """The import statements of a module, those under ``if TYPE_CHECKING:`` left out."""
    found = []

    def visit(node):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            return
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                deps.add(node.module)
                deps.update(f"{node.module}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
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
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle():
    modules = project_modules()
    assert len(modules) > 40 and "mrfbench.sweeps.plan" in modules and "mrfbench.models.latent.noise" in modules
    assert cycles(import_graph(modules)) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_400_lines():
    long = {name: n for name, path in project_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
