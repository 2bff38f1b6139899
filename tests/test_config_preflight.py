"""The checks ``influence-study check-config`` (and the Snakefile) run before any job, for the failures that used to
come late: an output_dir that is a file, a corpus directory with nothing to read, NaN/Inf numbers, a query rank
that approximates nothing (a warning), and hub ids that are neither cached nor reachable. As in
``test_config_validation.py``, every message names the config file first, then the key.
"""

from __future__ import annotations

import copy
import json
import socket
from pathlib import Path

import pytest
import yaml

from influence_study import cli
from influence_study.study import config as config_module
from influence_study.study import config_checks
from influence_study.study.config import ConfigError, load_config, validate_config

ROOT = Path(__file__).resolve().parents[1]
SIZE_KEYS = ("architecture", "n_layer", "d_model", "n_head", "d_mlp")


@pytest.fixture(scope="module")
def default_raw() -> dict:
    with open(ROOT / "config.yaml") as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def raw(default_raw, tmp_path) -> dict:
    config = copy.deepcopy(default_raw)
    config["output_dir"] = str(tmp_path / "results")
    return config


@pytest.fixture
def offline(tmp_path, monkeypatch) -> Path:
    """No hub: HF_HUB_OFFLINE=1 and an empty hub cache of the test's own."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    return cache


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def refused(raw: dict, tmp_path: Path, *parts: str, check=None) -> str:
    """The message of the ConfigError that ``check`` (default: check_config_file) raises for ``raw`` written to a
    file; it starts with the file's name and holds every one of ``parts``."""
    path = write_yaml(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError) as info:
        (check or config_module.check_config_file)(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"
    return message


def user_corpus(raw: dict, tmp_path: Path, source: str, path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"prompt": "The capital is", "completion": " Paris"}\n')
    raw["corpus"].update(source=source, path=str(path))
    raw["queries"] = {"source": str(queries)}


def as_checkpoint(model: dict, checkpoint: str) -> None:
    for key in SIZE_KEYS:
        model.pop(key, None)
    model["checkpoint"] = checkpoint


# --- output_dir ----------------------------------------------------------------------------------------------------


def test_output_dir_that_is_a_file_is_refused(raw, tmp_path):
    (tmp_path / "results").write_text("not a directory\n")
    refused(raw, tmp_path, "output_dir: ", str(tmp_path / "results"), "is an existing file, not a directory",
            check=load_config)


def test_output_dir_under_a_file_is_refused(raw, tmp_path):
    (tmp_path / "file").write_text("x")
    raw["output_dir"] = str(tmp_path / "file" / "results")
    refused(raw, tmp_path, "output_dir: ", f"lies under {tmp_path / 'file'}", check=load_config)


def test_an_existing_or_new_output_directory_is_fine(raw, tmp_path):
    assert validate_config(raw)["output_dir"] == str(tmp_path / "results")  # not there yet
    (tmp_path / "results").mkdir()
    assert validate_config(raw)["output_dir"] == str(tmp_path / "results")


# --- a corpus with nothing to read ---------------------------------------------------------------------------------


@pytest.mark.parametrize("source, files, expected", [
    ("text", {}, "has no text files"),
    ("text", {"notes.md": "text, but not a .txt file"}, "has no text files"),
    ("text", {"a.txt": "", "b.txt": " \n\n\t\n"}, "every one of its 2 text file(s) is empty"),
    ("jsonl", {"a.jsonl": "\n\n"}, "every one of its 1 jsonl file(s) is empty"),
])
def test_an_empty_corpus_directory_is_refused(raw, tmp_path, source, files, expected):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in files.items():
        (folder / name).write_text(text)
    user_corpus(raw, tmp_path, source, folder)
    refused(raw, tmp_path, "corpus.path: ", str(folder), expected, check=load_config)


def test_an_empty_corpus_file_is_refused(raw, tmp_path):
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n \n")
    user_corpus(raw, tmp_path, "text", corpus)
    refused(raw, tmp_path, "corpus.path: ", f"{corpus}: the file is empty", check=load_config)


def test_a_corpus_directory_with_a_document_validates(raw, tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("\n\n")
    (folder / "b.txt").write_text("One document.\n\nAnother one.\n")
    user_corpus(raw, tmp_path, "text", folder)
    assert validate_config(raw)["corpus"]["path"] == str(folder)


# --- NaN and Inf ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, key", [
    ("training:\n  learning_rate: .nan\n", "training.learning_rate"),
    ("corpus:\n  valid_fraction: .NaN\n", "corpus.valid_fraction"),
    ("influence:\n  damping: .inf\n", "influence.damping"),
    ("training:\n  weight_decay: -.inf\n", "training.weight_decay"),
])
def test_nan_and_inf_are_refused_naming_the_key(tmp_path, text, key):
    path = tmp_path / "c.yaml"
    path.write_text("models: [{name: m}]\n" + text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: {key}: expected a finite number, got "), str(info.value)


def test_nan_in_a_model_override_names_the_model_entry(raw, tmp_path):
    raw["models"][1]["training"] = {"learning_rate": float("nan")}
    refused(raw, tmp_path, "models[1].training.learning_rate: expected a finite number, got nan", check=load_config)


# --- a query rank that approximates nothing (a warning) -------------------------------------------------------------


def test_query_rank_above_every_tracked_gradient_warns_with_the_bound(raw, tmp_path):
    # the largest model: d_model 160, d_mlp 4 x 160; c_fc's gradient is [640, 161] (bias column), c_proj's [160, 641]
    raw["influence"]["query_rank"] = 161
    config, warnings = config_module.check_config(raw, source="c.yaml")
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("c.yaml: influence.query_rank: 161 is at least the rank of every tracked gradient")
    assert "at most 161" in warnings[0] and "models[3] 'gpt2-l'" in warnings[0]
    raw["influence"]["query_rank"] = 160
    assert config_module.check_config(raw, source="c.yaml")[1] == []
    raw["influence"]["query_rank"] = None
    assert config_module.check_config(raw, source="c.yaml")[1] == []


def test_the_rank_bound_follows_the_architecture_and_the_modules():
    assert config_checks.gradient_rank({"architecture": "gpt2", "d_model": 32, "d_mlp": None}, None) == 33
    assert config_checks.gradient_rank({"architecture": "llama", "d_model": 32, "d_mlp": 48}, None) == 32  # no bias
    assert config_checks.gradient_rank({"architecture": "gpt2", "d_model": 32, "d_mlp": 16}, None) == 17
    assert config_checks.gradient_rank({"architecture": "gpt_neox", "d_model": 32, "d_mlp": 16}, ["*attn*"]) == 33


def test_checkpoints_give_the_bound_from_their_config_json(raw, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "hidden_size": 512,
                                                    "intermediate_size": 2048}))
    as_checkpoint(raw["models"][3], str(folder))
    raw["influence"]["query_rank"] = 400
    assert config_module.check_config(raw)[1] == []  # the checkpoint's gradients reach rank 513
    raw["influence"]["query_rank"] = 513
    assert "models[3] 'gpt2-l'" in config_module.check_config(raw)[1][0]
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 512}))
    assert config_module.check_config(raw)[1] == []  # unknown shapes: no warning


def test_check_config_command_prints_the_warning(raw, tmp_path, capsys):
    raw["influence"]["query_rank"] = 1000
    path = write_yaml(tmp_path / "c.yaml", raw)
    assert cli.main(["check-config", str(path)]) == 0
    captured = capsys.readouterr()
    assert "valid" in captured.out
    assert f"warning: {path}: influence.query_rank: 1000" in captured.err


# --- hub ids that cannot be reached --------------------------------------------------------------------------------


def _fake_cached_model(cache: Path, repo: str, kind: str = "models") -> None:
    folder = cache / f"{kind}--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / ("config.json" if kind == "models" else "README.md")).write_text("{}")


def test_a_hub_checkpoint_offline_and_not_cached_is_refused_naming_the_model(raw, tmp_path, offline):
    as_checkpoint(raw["models"][2], "EleutherAI/pythia-70m")
    validate_config(raw)  # the file itself is fine: only the machine lacks the model
    refused(raw, tmp_path, "models[2].checkpoint: ", "'EleutherAI/pythia-70m'", "model 'gpt2-m'",
            "not in the local Hugging Face cache", "HF_HUB_OFFLINE=1", "hf download EleutherAI/pythia-70m")
    with pytest.raises(ConfigError, match=r"models\[2\]\.checkpoint"):
        config_module.check_config(raw)
    path = write_yaml(tmp_path / "c.yaml", raw)
    assert cli.main(["check-config", str(path)]) == 2


def test_a_cached_hub_checkpoint_passes_offline(raw, tmp_path, offline):
    as_checkpoint(raw["models"][2], "EleutherAI/pythia-70m")
    _fake_cached_model(offline, "EleutherAI/pythia-70m")
    config, _ = config_module.check_config_file(write_yaml(tmp_path / "c.yaml", raw))
    assert config["models"][2]["checkpoint"] == "EleutherAI/pythia-70m"


def test_a_hub_checkpoint_without_network_is_refused(raw, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(config_checks.hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))

    def no_network(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", no_network)
    as_checkpoint(raw["models"][0], "EleutherAI/pythia-160m")
    refused(raw, tmp_path, "models[0].checkpoint: ", "model 'gpt2-xs'", "no connection to huggingface.co:443",
            "Network is unreachable")


def test_a_hub_dataset_offline_and_not_cached_is_refused(raw, tmp_path, offline):
    user_corpus(raw, tmp_path, "hf_dataset", Path("roneneldan/TinyStories"))
    refused(raw, tmp_path, "corpus.path: ", "'roneneldan/TinyStories'", "not in the local Hugging Face cache",
            "--repo-type dataset")
    _fake_cached_model(offline, "roneneldan/TinyStories", kind="datasets")
    assert config_module.check_config_file(write_yaml(tmp_path / "c.yaml", raw))[0]["corpus"]["source"] == \
        "hf_dataset"


def test_local_checkpoints_and_synthetic_corpora_need_no_hub(raw, tmp_path, offline, monkeypatch):
    def no_probe(*args, **kwargs):
        raise AssertionError("the network was probed although nothing comes from the hub")

    monkeypatch.setattr(socket, "create_connection", no_probe)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    as_checkpoint(raw["models"][0], str(folder))
    config, warnings = config_module.check_config(raw)
    assert config["models"][0]["checkpoint"] == str(folder) and warnings == []
