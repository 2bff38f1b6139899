"""The workflow end to end on configs/ci.yaml (plus an imported checkpoint), lint, and bad configs at start."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args, cwd=ROOT, check=True):
    result = subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny GPT-NeoX checkpoint with its own tokenizer, saved locally (as a user's model would be)."""
    from influence_study.models import build_model, build_model_config
    from influence_study.tokenizer import train_tokenizer

    path = tmp_path_factory.mktemp("checkpoint") / "tiny-neox"
    tokenizer = train_tokenizer(["The capital of Astrobia is Vell.", "Human: hello Assistant: hi"] * 10,
                                vocab_size=280, progress=False)
    entry = {"architecture": "gpt_neox", "n_layer": 1, "d_model": 16, "n_head": 2}
    build_model(build_model_config(entry, len(tokenizer), 256, tokenizer.eos_token_id), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, checkpoint):
    """Run the CI study once (with one imported checkpoint added to its family)."""
    work = tmp_path_factory.mktemp("study")
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["output_dir"] = str(work / "results")
    config["models"].append({"name": "imported", "checkpoint": str(checkpoint)})
    config_path = work / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run = snakemake("--cores", "2", "--configfile", str(config_path))
    return {"root": work / "results", "config": config, "config_path": config_path, "run": run}


@pytest.mark.slow
def test_study_produces_every_output(study):
    root, config = study["root"], study["config"]
    corpus = config["corpus"]["name"]
    docs = pd.read_parquet(root / "corpus" / f"{corpus}.parquet")
    assert set(docs["split"]) == {"train", "valid"}
    assert {"facts", "math", "code", "roleplay", "quotes", "translation", "distractors"} <= set(docs["family"])
    for name in ("", "-relations", "-probes"):
        assert len(pd.read_parquet(root / "queries" / f"{corpus}{name}.parquet")) > 0
    assert (root / "tokenizer" / corpus / "tokenizer.json").is_file()
    names = [m["name"] for m in config["models"]]
    for name in names:
        model_dir = root / "models" / name
        assert (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file()
        assert (model_dir / "provenance.json").is_file()
        assert (root / "logs" / "train_model" / f"{name}.log").stat().st_size > 0
    table = pd.read_csv(root / "tables" / "learning.csv")
    assert list(table["model"]) == names
    assert table.loc[table.model == "imported", "source"].item() == "checkpoint"
    assert table["heldout_loss"].notna().all() and (table["heldout_loss"] > 0).all()
    scratch = table[table["source"] == "scratch"]
    assert scratch["parameters"].max() >= 10 * scratch["parameters"].min()
    assert (root / "figures" / "loss_curves.png").stat().st_size > 10_000
    assert (root / "figures" / "loss_curves.pdf").is_file()
    provenance = json.loads((root / "tables" / "learning.parquet.provenance.json").read_text())
    assert provenance["package"] == "influence_study" and len(provenance["config_hash"]) == 16
    for log in ("corpus.log", "tokenizer.log", "learning_table.log", "fig_loss_curves.log"):
        assert (root / "logs" / log).is_file(), log
    assert not list(root.rglob(".*.tmp")), "temporary files left behind"


@pytest.mark.slow
def test_rerun_has_nothing_to_do_and_outputs_are_deterministic(study, tmp_path):
    dry = snakemake("--cores", "1", "-n", "--configfile", str(study["config_path"]))
    assert "Nothing to be done" in dry.stdout + dry.stderr
    # the same config in another output directory gives the same corpus and the same trained weights
    config = dict(study["config"], output_dir=str(tmp_path / "again"))
    config["models"] = config["models"][:1]
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(config))
    target = tmp_path / "again" / "models" / config["models"][0]["name"]
    snakemake(str(target), "--cores", "2", "--configfile", str(path))  # --configfile takes every later word
    corpus = config["corpus"]["name"]
    pd.testing.assert_frame_equal(pd.read_parquet(study["root"] / "corpus" / f"{corpus}.parquet"),
                                  pd.read_parquet(tmp_path / "again" / "corpus" / f"{corpus}.parquet"))
    from safetensors.torch import load_file

    name = config["models"][0]["name"]
    first = load_file(study["root"] / "models" / name / "model.safetensors")
    second = load_file(tmp_path / "again" / "models" / name / "model.safetensors")
    assert all((first[k] == second[k]).all() for k in first)


@pytest.mark.slow
def test_summary_command(study):
    result = subprocess.run([sys.executable, "-m", "influence_study.cli", "summary", str(study["config_path"])],
                            capture_output=True, text=True, check=True)
    assert "Learning table" in result.stdout and "held-out loss falls with size" in result.stdout


def test_lint_is_clean():
    result = snakemake("--lint", "--configfile", str(ROOT / "configs" / "ci.yaml"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_bad_config_stops_the_workflow_with_one_clear_message(tmp_path):
    config = yaml.safe_load((ROOT / "configs" / "ci.yaml").read_text())
    config["models"][1]["n_layer"] = "two"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake("-n", "--cores", "1", "--configfile", str(path), check=False)
    assert result.returncode != 0
    assert "models[1].n_layer: expected an integer, got 'two'" in result.stderr
    assert str(path) in result.stderr


def test_check_config_command(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "influence_study.cli", "check-config", str(ROOT / "config.yaml")],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [{name: a, architecture: gpt5}]\n")
    result = subprocess.run([sys.executable, "-m", "influence_study.cli", "check-config", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "models[0].architecture" in result.stderr
