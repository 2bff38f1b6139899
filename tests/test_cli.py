"""The ``influence-study`` command: it checks configs, and without the study extras it says how to install them."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from influence_study import cli

ROOT = Path(__file__).resolve().parents[1]

# Runs the command with ``module`` made unimportable (``sys.modules[name] = None`` makes ``import name`` raise
# ImportError), as on a machine where only `pip install .` (the engine) was run.
WITHOUT = """
import sys
sys.modules[{module!r}] = None
from influence_study.cli import main
sys.exit(main(["check-config", {config!r}]))
"""


def test_check_config_accepts_the_default_config(capsys):
    assert cli.main(["check-config", str(ROOT / "config.yaml")]) == 0
    assert "valid" in capsys.readouterr().out


def test_check_config_names_the_bad_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / "config.yaml").read_text() + "\nnot_a_key: 1\n")
    assert cli.main(["check-config", str(bad)]) == 2
    assert "not_a_key" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["jsonschema", "yaml", "pandas"])
def test_missing_study_extras_are_named_with_the_install_command(module):
    result = subprocess.run([sys.executable, "-c", WITHOUT.format(module=module, config=str(ROOT / "config.yaml"))],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == cli.MISSING_EXTRAS_STATUS, result.stderr
    assert f"cannot import '{module}'" in result.stderr
    assert 'pip install "influence_study[study]"' in result.stderr
    assert "Traceback" not in result.stderr


def test_the_message_says_what_is_missing():
    message = cli.missing_extras_message(ModuleNotFoundError("No module named 'jsonschema'", name="jsonschema"))
    assert "'jsonschema'" in message and cli.INSTALL_HINT in message


@pytest.mark.parametrize("tiny", [True, False])
def test_summary_says_when_the_run_is_the_tiny_configuration(tmp_path, capsys, tiny):
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    assert config["tiny"] is True  # the CI study is marked as such
    config.update(output_dir=str(tmp_path / "results"), tiny=tiny)
    (tmp_path / "results" / "tables").mkdir(parents=True)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli.main(["summary", str(path)]) == 0
    out = capsys.readouterr().out
    assert ("verdicts mean nothing" in out) is tiny
    assert ("tiny configuration" in out) is tiny
