"""environment.yml lists the same dependencies, with the same bounds, as pyproject.toml."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"pytorch": "torch"}  # conda package name -> PyPI name


def _split(requirement: str) -> tuple[str, str]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement)
    return match.group(1).lower().replace("_", "-"), match.group(2).replace(" ", "")


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + project["optional-dependencies"]["dev"]
    return dict(_split(r) for r in requirements)


def conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pairs = [_split(d) for d in env["dependencies"] if isinstance(d, str)]
    return {CONDA_NAMES.get(name, name): spec for name, spec in pairs if name not in ("python", "pip")}


def test_environment_matches_pyproject():
    assert conda_requirements() == pyproject_requirements()


def test_cpu_constraint_pins_torch():
    pins = (ROOT / "constraints" / "cpu.txt").read_text().split()
    assert "torch==2.13.0" in pins
