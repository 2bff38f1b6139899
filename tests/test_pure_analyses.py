"""The analyses are pure functions of tables: they import only the scientific Python stack, each other, the findings
and the study's table checks and seeds (never torch, the engine, the stages, the models or the config), and they
read and write no file; the figures import no code of the stages, models or engine; and stages, analyses and
figures import at module level only. Read from the source with ``ast`` (nothing is imported)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "influence_study"
ANALYSES = sorted((SOURCE / "analyses").glob("*.py"))
PLOTS = sorted((SOURCE / "plots").glob("*.py"))
STAGES = sorted((SOURCE / "stages").glob("*.py"))

ANALYSIS_IMPORTS = ("__future__", "typing", "dataclasses", "re", "numpy", "pandas", "scipy", "sklearn",
                    "influence_study.analyses", "influence_study.findings", "influence_study.study.io",
                    "influence_study.study.seeds")
PLOT_IMPORTS = ("__future__", "typing", "sys", "numpy", "pandas", "matplotlib", "seaborn", "influence_study.plots",
                "influence_study.analyses", "influence_study.study.io")
# what reads or writes a file, which an analysis leaves to its stage
FILE_ACCESS = re.compile(r"\b(read_parquet|to_parquet|read_csv|to_csv|read_json|write_json|write_parquet|"
                         r"read_parquet_metadata|open)\(")


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, at module level)`` of every import of a source file."""
    found = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, top) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                found.append((child.module or "", child.lineno, top))
            visit(child, top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                        ast.ClassDef)))

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def allowed(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("path", ANALYSES, ids=lambda p: p.name)
def test_an_analysis_imports_only_the_scientific_stack_and_the_analyses(path):
    bad = [f"{path.name}:{line} imports {module}" for module, line, _ in imports(path)
           if not allowed(module, ANALYSIS_IMPORTS)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", ANALYSES, ids=lambda p: p.name)
def test_an_analysis_reads_and_writes_no_file(path):
    bad = [f"{path.name}:{number}: {line.strip()}" for number, line in enumerate(path.read_text().splitlines(), 1)
           if FILE_ACCESS.search(line) and not line.lstrip().startswith("#")]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", PLOTS, ids=lambda p: p.name)
def test_a_figure_imports_no_stage_model_or_engine(path):
    bad = [f"{path.name}:{line} imports {module}" for module, line, _ in imports(path)
           if not allowed(module, PLOT_IMPORTS)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", [*ANALYSES, *PLOTS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_analyses_and_figures_take_no_config(path):
    functions = [node for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)]
    bad = [f"{path.name}:{f.lineno} {f.name}" for f in functions
           if "config" in [a.arg for a in (*f.args.posonlyargs, *f.args.args, *f.args.kwonlyargs)]]
    assert not bad, "these take the config, which only the stages read: " + ", ".join(bad)
