"""The dependencies: three layers in pyproject.toml (the engine, the study, the test tools), each exactly what its
code imports, environment.yml listing the same packages with the same bounds in the same order, and the install
that `make setup` (and CI) runs: the dev extras under the CPU torch pin."""

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "influence_study"
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name
SELF = "influence-study"


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(\[[^\]]*\])?\s*(.*)$", requirement)
    return _name(match.group(1)), (match.group(2) or "") + match.group(3).replace(" ", "")


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def layers() -> dict[str, list[tuple[str, str]]]:
    """``engine`` (the dependencies), ``study`` and ``dev`` (the extras), each as ``(name, bound)`` in order."""
    extras = project()["optional-dependencies"]
    return {"engine": [_split(r) for r in project()["dependencies"]],
            "study": [_split(r) for r in extras["study"]],
            "dev": [_split(r) for r in extras["dev"]]}


def pyproject_requirements() -> list[tuple[str, str]]:
    """Every third-party requirement of the three layers, in order (the dev extras' reference to the study
    extras left out)."""
    return [r for layer in layers().values() for r in layer if r[0] != SELF]


def conda_requirements() -> list[tuple[str, str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pairs = [_split(d) for d in env["dependencies"] if isinstance(d, str)]
    return [(CONDA_NAMES.get(name, name), spec) for name, spec in pairs if name not in ("python", "pip")]


def test_environment_matches_pyproject():
    assert dict(conda_requirements()) == dict(pyproject_requirements())
    assert conda_requirements() == pyproject_requirements(), "same packages, but not in the same order"


def test_every_requirement_is_listed_once_with_a_lower_bound():
    requirements = pyproject_requirements()
    names = [name for name, _ in requirements]
    assert len(names) == len(set(names)), f"listed twice: {sorted({n for n in names if names.count(n) > 1})}"
    assert all(spec.startswith(">=") for _, spec in requirements), requirements


def test_the_dev_extras_install_the_study():
    assert (SELF, "[study]") in layers()["dev"]
    assert "study" in project()["optional-dependencies"]


# --- what the code imports --------------------------------------------------------------------------------------


def _guarded(handlers: list[ast.ExceptHandler]) -> bool:
    names = set()
    for handler in handlers:
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        names |= {k.id for k in kinds if isinstance(k, ast.Name)}
    return bool(names & {"ImportError", "ModuleNotFoundError"})


def top_level_imports(path: Path, module_level_only: bool) -> tuple[set[str], set[str]]:
    """Third-party and ``influence_study`` modules that ``path`` imports, leaving out the optional ones (inside
    ``try: ... except ImportError``) and, with ``module_level_only``, the ones inside functions."""
    external, internal = set(), set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Try) and _guarded(child.handlers):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)) and not (module_level_only and in_function):
                if isinstance(child, ast.ImportFrom) and child.level:
                    continue
                names = [a.name for a in child.names] if isinstance(child, ast.Import) else [child.module]
                for name in names:
                    if name.split(".")[0] == "influence_study":
                        internal.add(name)
                        if isinstance(child, ast.ImportFrom):
                            internal.update(f"{name}.{a.name}" for a in child.names)
                    elif name.split(".")[0] not in sys.stdlib_module_names:
                        external.add(name.split(".")[0])
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return external, internal


def module_file(name: str) -> Path | None:
    base = ROOT / "src" / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def distributions(modules: set[str]) -> set[str]:
    """The installed distributions that provide the top-level ``modules``."""
    provided = importlib.metadata.packages_distributions()
    missing = sorted(m for m in modules if m not in provided)
    assert not missing, f"not installed, so not checkable: {missing}"
    return {_name(d) for m in modules for d in provided[m]}


def engine_imports() -> dict[str, set[str]]:
    """Third-party modules that importing the engine runs, each with the files that import it: the engine's
    files, the package ``__init__`` (imported with any subpackage) and every package module they import at module
    level, transitively."""
    seen, queue, external = set(), [PACKAGE / "__init__.py", *sorted((PACKAGE / "engine").glob("*.py"))], {}
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        outside, inside = top_level_imports(path, module_level_only=True)
        for name in outside:
            external.setdefault(name, set()).add(str(path.relative_to(ROOT)))
        inside |= {name.rsplit(".", n)[0] for name in inside for n in range(1, name.count(".") + 1)}  # parents
        queue += [p for p in map(module_file, inside) if p is not None]
    return external


def test_the_engine_needs_only_its_dependencies():
    """`pip install .` gives a working engine: it imports nothing beyond the [project] dependencies."""
    engine = {name for name, _ in layers()["engine"]}
    extra = {module: sorted(files) for module, files in engine_imports().items()
             if not distributions({module}) <= engine}
    assert not extra, f"the engine imports more than its dependencies: {extra}"
    assert engine == {"torch", "safetensors", "numpy", "tqdm"}, "keep the engine's dependencies minimal"


def test_the_study_extras_cover_what_the_package_imports():
    declared = {name for name, _ in pyproject_requirements()} - {"pytest"}
    imported = set()
    for path in PACKAGE.rglob("*.py"):
        imported |= top_level_imports(path, module_level_only=False)[0]
    missing = distributions(imported) - declared
    assert not missing, f"the package imports distributions that pyproject.toml does not name: {sorted(missing)}"


def test_the_dev_extras_cover_what_the_tests_import():
    declared = {name for name, _ in pyproject_requirements()}
    local = {p.stem for p in (ROOT / "tests").glob("*.py")}
    imported = set()
    for path in (ROOT / "tests").glob("*.py"):
        imported |= top_level_imports(path, module_level_only=False)[0] - local
    missing = distributions(imported) - declared
    assert not missing, f"the tests import distributions that pyproject.toml does not name: {sorted(missing)}"


# --- the install ------------------------------------------------------------------------------------------------


def test_cpu_constraint_pins_torch():
    pins = (ROOT / "constraints" / "cpu.txt").read_text().split()
    assert "torch==2.13.0" in pins
    bound = dict(layers()["engine"])["torch"]
    pinned = tuple(int(x) for x in "2.13.0".split("."))
    assert pinned >= tuple(int(x) for x in bound.removeprefix(">=").split(".")), "the pin must satisfy the bound"


def test_make_setup_installs_the_dev_extras_under_the_pin():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^CONSTRAINTS \?= constraints/cpu\.txt$", makefile, re.M)
    install = [line for line in makefile.splitlines() if "pip install" in line and "-e" in line]
    assert len(install) == 1, install
    assert "$(if $(CONSTRAINTS),-c $(CONSTRAINTS))" in install[0] and '-e ".[dev]"' in install[0]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
