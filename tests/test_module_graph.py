"""The package's import graph: no cycles, small modules, no imports of the lazy facade from inside.

The graph is read from the source (``ast``), not by importing: every ``import`` statement counts,
at module level and inside functions, except those under ``if TYPE_CHECKING:`` (they never run).
``import a.b`` is an edge to ``a.b``; ``from a import b`` is an edge to ``a.b`` when that is a
module, else to ``a``; relative imports are resolved against the importing module's package.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = "unpact"
ROOT = Path(__file__).resolve().parents[1] / PACKAGE
MAX_LINES = 500


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``unpact/`` (a package is its ``__init__``)."""
    out: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run (all nesting levels; ``if TYPE_CHECKING:`` bodies skipped)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, ast.If) and _is_type_checking(node):
            children = list(node.orelse)
        stack.extend(children)


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, known: set[str]
) -> Iterator[tuple[str, str | None]]:
    """``(target module, imported name or None)`` for one import statement, targets inside the package only."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            name = alias.name
            while name and name not in known:  # `import a.b.c` of a non-module attribute path
                name = name.rpartition(".")[0]
            if name:
                yield name, None
        return
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        source = ".".join([*base, node.module] if node.module else base)
    else:
        source = node.module or ""
    if source.split(".")[0] != PACKAGE:
        return
    for alias in node.names:
        sub = f"{source}.{alias.name}"
        if sub in known:
            yield sub, None
        elif source in known:
            yield source, alias.name


def _graph() -> tuple[dict[str, set[str]], dict[str, list[str]]]:
    """The edges (facade and package-to-own-submodule edges dropped) and each module's facade imports."""
    mods = _modules()
    known = set(mods)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    facade: dict[str, list[str]] = {}
    for mod, path in mods.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            for target, name in _targets(mod, is_package, node, known):
                if target == PACKAGE and mod != PACKAGE:
                    facade.setdefault(mod, []).append(f"line {node.lineno}: {name or 'import ' + PACKAGE}")
                if mod == PACKAGE or target == mod:
                    continue  # the lazy facade's own (importlib / TYPE_CHECKING) imports; self-references
                if is_package and target.startswith(mod + "."):
                    continue  # a package re-exporting its own submodules
                edges[mod].add(target)
    return edges, facade


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a closed path) per strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    comps: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm; the graph has < 100 nodes, recursion is fine
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    cycles = []
    for comp in comps:
        members = set(comp)
        start = comp[0]
        path, seen = [start], {start}
        while True:  # walk inside the component until a module repeats
            nxt = min(w for w in edges[path[-1]] if w in members)
            if nxt in seen:
                cycles.append(path[path.index(nxt) :] + [nxt])
                break
            path.append(nxt)
            seen.add(nxt)
    return cycles


def test_graph_reader_resolves_every_import_form() -> None:
    src = """
import unpact.models
import unpact.hooks.hooked
from unpact import provenance
from unpact.data import Example
from . import eap
from ._inputs import prepare
from .. import lens
import numpy

def f():
    from unpact.keytokens import key_words

if TYPE_CHECKING:
    from unpact.metrics import normalize_text
"""
    known = set(_modules())
    found = {t for node in _imports(ast.parse(src)) for t, _ in _targets("unpact.circuits._graph", False, node, known)}
    assert found == {
        "unpact.models",
        "unpact.hooks",
        "unpact.provenance",
        "unpact.data",
        "unpact.circuits.eap",
        "unpact.circuits._inputs",
        "unpact.lens",
        "unpact.keytokens",
    }
    edges, _ = _graph()
    assert all(not t.startswith("unpact.circuits.") for t in edges["unpact.circuits"]), "own submodules dropped"
    assert "unpact.circuits._graph" in edges["unpact.circuits.eap"]


def test_import_graph_has_no_cycle() -> None:
    edges, _ = _graph()
    cycles = _cycles(edges)
    assert not cycles, "import cycles in unpact/:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_module_imports_the_lazy_facade() -> None:
    _, facade = _graph()
    assert not facade, "import from the defining module, not from the `unpact` facade:\n" + "\n".join(
        f"{m} {hit}" for m, hits in sorted(facade.items()) for hit in hits
    )


def test_modules_are_small() -> None:
    big = {
        str(path.relative_to(ROOT.parent)): n
        for path in _modules().values()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not big, f"modules over {MAX_LINES} lines (split them by what they do): {big}"
