"""The package's layers: imports flow one way (engine <- study <- corpus <- models <- finetune <- stages/analyses
...; the engine depends on nothing of the study), there is no import cycle, and the modules import at module level
(no import hidden in a function).

Read from the source with ``ast`` (nothing is imported), so a violation names the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "influence_study"
SOURCE = Path(__file__).resolve().parents[1] / "src" / PACKAGE

# subpackage -> subpackages of influence_study it must never import (at module level or inside a function).
FORBIDDEN = {
    "engine": ("study", "corpus", "models", "finetune", "stages", "analyses", "plots", "explorer", "findings",
               "notebooks", "cli"),
    "study": ("corpus", "models", "finetune", "stages", "analyses", "plots", "explorer", "findings", "notebooks",
              "cli"),
    "corpus": ("models", "finetune", "engine", "stages", "analyses", "plots"),
    "models": ("finetune", "stages", "analyses", "plots"),
    "finetune": ("stages", "analyses", "plots"),
}
MAX_LINES = 400  # no module longer (issue #16)


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(SOURCE.rglob("*.py"))}


def imported_modules(node: ast.Import | ast.ImportFrom, here: str) -> list[str]:
    """The package modules an import statement loads (``from a import b`` loads ``a.b`` when that is a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative import
        package = here if MODULES[here].name == "__init__.py" else here.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    found = [f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in MODULES]
    return found or [base]


def imports(name: str) -> list[tuple[ast.stmt, bool]]:
    """Every import statement of module ``name`` with whether it runs at import time (not inside a function or
    a class)."""
    return import_statements(MODULES[name].read_text(), str(MODULES[name]))


def import_statements(source: str, filename: str = "<source>") -> list[tuple[ast.stmt, bool]]:
    """The import statements of ``source``, each with whether it sits at module level."""
    tree = ast.parse(source, filename)
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append((child, top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef))
            visit(child, inner)

    visit(tree, True)
    return found


def internal_edges(name: str, module_level: bool) -> list[tuple[str, int]]:
    """``(imported package module, line)`` of every import of ``name`` (only those at module level when
    ``module_level``)."""
    edges = []
    for node, top in imports(name):
        if module_level and not top:
            continue
        for target in imported_modules(node, name):
            if target == PACKAGE or target.startswith(PACKAGE + "."):
                while target not in MODULES and "." in target:  # `from pkg.mod import attribute`
                    target = target.rpartition(".")[0]
                edges.append((target, node.lineno))
    return edges


def where(name: str, line: int) -> str:
    return f"{MODULES[name].relative_to(SOURCE.parents[1])}:{line}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_a_layer_never_imports_the_layers_above_it(layer):
    bad = []
    for name in MODULES:
        if not name.startswith(f"{PACKAGE}.{layer}.") and name != f"{PACKAGE}.{layer}":
            continue
        for target, line in internal_edges(name, module_level=False):
            above = target.split(".")[1] if target.count(".") else ""
            if above in FORBIDDEN[layer]:
                bad.append(f"{where(name, line)} imports {target}")
    assert not bad, f"{layer} must not import {', '.join(FORBIDDEN[layer])}:\n" + "\n".join(bad)


def test_there_is_no_import_cycle():
    graph = {name: sorted({t for t, _ in internal_edges(name, module_level=True) if t != name}) for name in MODULES}
    cycles, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, []):
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for name in graph:
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_imports_sit_at_module_level():
    """Every module of the package, with no exception (the docstring example in ``__init__`` is text)."""
    bad = []
    for name in MODULES:
        bad += [f"{where(name, node.lineno)}: {ast.unparse(node)}" for node, top in imports(name) if not top]
    assert not bad, "imports inside functions:\n" + "\n".join(bad)


def test_no_module_is_longer_than_the_limit():
    long = {where(name, 1): n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_checks_see_what_they_check():
    """Guards the test itself: it reads the package, tells inner imports from module-level ones, and resolves
    ``from package import module`` to the module."""
    assert {f"{PACKAGE}.study.seeds", f"{PACKAGE}.models.toy", f"{PACKAGE}.corpus.loaders"} <= set(MODULES)
    source = "import a\ntry:\n    import b\nexcept ImportError:\n    pass\ndef f():\n    import c\n" \
             "class K:\n    import d\n"
    assert [(ast.unparse(node), top) for node, top in import_statements(source)] == [
        ("import a", True), ("import b", True), ("import c", False), ("import d", False)]
    targets = {t for t, _ in internal_edges(f"{PACKAGE}.models.training", module_level=True)}
    assert {f"{PACKAGE}.models.evaluation", f"{PACKAGE}.study.seeds"} <= targets
