"""Study configuration: schema validation, defaults, cross-checks and error messages that name the key."""

from __future__ import annotations

import copy
import importlib.resources
import re
import tomllib
from pathlib import Path


import influence_study.study.config as config_module
import pytest
import yaml

from influence_study.finetune.datasets import generate_tasks
from influence_study.study.config import (
    ConfigError,
    finetune_train_size,
    load_config,
    load_schema,
    model_entry,
    model_names,
    training_settings,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "config.yaml"
SIZE_KEYS = ("architecture", "n_layer", "d_model", "n_head", "d_mlp")


@pytest.fixture(scope="module")
def default_raw() -> dict:
    """The raw YAML of the embedded default study (never modified: tests deep-copy it)."""
    with open(DEFAULT_CONFIG) as handle:
        return yaml.safe_load(handle)


@pytest.fixture
def raw(default_raw) -> dict:
    return copy.deepcopy(default_raw)


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def as_checkpoint(model: dict, checkpoint: str) -> None:
    """Turn a from-scratch model entry into a checkpoint entry (sizes come from the checkpoint)."""
    for key in SIZE_KEYS:
        model.pop(key, None)
    model["checkpoint"] = checkpoint


# --- bad configs ------------------------------------------------------------------------------------------------
# Each case mutates the default config (raw YAML, tmp_path) and names substrings the error message must contain:
# the key path first, then any hint.

def _set(mapping: dict, key: str, value):
    mapping[key] = value


def _checkpoint_missing(raw, tmp):
    as_checkpoint(raw["models"][0], str(tmp / "no" / "such" / "checkpoint"))


def _checkpoint_without_config_json(raw, tmp):
    folder = tmp / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    as_checkpoint(raw["models"][0], str(folder))


def _text_corpus_missing_file(raw, tmp):
    raw["corpus"].update(source="text", path=str(tmp / "missing.txt"))


def _text_corpus(raw, tmp, queries="absent"):
    """A text corpus of the user's in ``tmp``; ``queries``: a queries file written there, "absent" (none given) or
    "missing" (a path that does not exist)."""
    (tmp / "docs.txt").write_text("one document\n\nanother one\n")
    raw["corpus"].update(source="text", path=str(tmp / "docs.txt"))
    if queries == "missing":
        raw["queries"] = {"source": str(tmp / "no-queries.jsonl")}
    elif queries != "absent":
        (tmp / "queries.jsonl").write_text(queries)
        raw["queries"] = {"source": str(tmp / "queries.jsonl")}


def _synthetic_with_queries(raw, tmp):
    (tmp / "queries.jsonl").write_text('{"prompt": "a", "completion": " b"}\n')
    raw["queries"] = {"source": str(tmp / "queries.jsonl")}


BAD_CONFIGS = [
    pytest.param(lambda r, t: _set(r, "seeds", 1), ["'seeds'", "did you mean 'seed'"], id="unknown-top-level-key"),
    pytest.param(lambda r, t: r["corpus"].update(sourc=r["corpus"].pop("source")),
                 ["corpus.sourc", "did you mean 'source'"], id="misspelled-nested-key"),
    pytest.param(lambda r, t: r["corpus"]["synthetic"]["facts"].update(n_fact=3),
                 ["corpus.synthetic.facts.n_fact", "did you mean 'n_facts'"], id="misspelled-deep-key"),
    pytest.param(lambda r, t: _set(r["training"], "steps", "many"), ["training.steps", "expected an integer"],
                 id="wrong-type"),
    pytest.param(lambda r, t: _set(r["training"], "learning_rate", True), ["training.learning_rate", "a number"],
                 id="bool-is-not-a-number"),
    pytest.param(lambda r, t: _set(r["models"][1], "n_layer", 0), ["models[1].n_layer", ">= 1", "got 0"],
                 id="out-of-range-minimum"),
    pytest.param(lambda r, t: _set(r["corpus"], "valid_fraction", 0.5), ["corpus.valid_fraction", "< 0.5"],
                 id="out-of-range-exclusive-maximum"),
    pytest.param(lambda r, t: _set(r["tokenizer"], "vocab_size", 100), ["tokenizer.vocab_size", ">= 300"],
                 id="vocab-too-small"),
    pytest.param(lambda r, t: _set(r["models"][0], "architecture", "bert"),
                 ["models[0].architecture", "'gpt2'", "'llama'", "'bert'"], id="unknown-architecture"),
    pytest.param(lambda r, t: _set(r, "device", "tpu"), ["device", "'cuda'"], id="unknown-device"),
    pytest.param(lambda r, t: r.pop("models"), ["missing required key 'models'"], id="missing-models"),
    pytest.param(lambda r, t: _set(r, "models", []), ["models", "at least 1"], id="empty-models"),
    pytest.param(lambda r, t: r["models"][2].pop("name"), ["models[2].name"], id="model-without-name"),
    pytest.param(lambda r, t: _set(r["models"][0], "name", "a/b"), ["models[0].name", "expected text matching"],
                 id="model-name-with-slash"),
    pytest.param(lambda r, t: _set(r["models"][2], "name", "gpt2-xs"), ["models[2].name", "repeats models[0].name"],
                 id="duplicate-model-name"),
    pytest.param(lambda r, t: _set(r["models"][3], "n_head", 7), ["models[3].d_model", "not divisible", "7"],
                 id="d_model-not-divisible-by-n_head"),
    pytest.param(_checkpoint_missing, ["models[0].checkpoint", "neither an existing local directory"],
                 id="checkpoint-not-found"),
    pytest.param(_checkpoint_without_config_json, ["models[0].checkpoint", "config.json"],
                 id="checkpoint-without-config-json"),
    pytest.param(lambda r, t: r["models"][1].update(checkpoint="EleutherAI/pythia-70m"),
                 ["models[1]", "checkpoint", "architecture"], id="checkpoint-and-sizes"),
    pytest.param(_text_corpus_missing_file, ["corpus.path", "not found", "missing.txt"],
                 id="text-corpus-missing-file"),
    pytest.param(lambda r, t: r["corpus"].update(source="parquet"), ["corpus.path", "required", "'parquet'"],
                 id="parquet-corpus-without-path"),
    pytest.param(_text_corpus, ["queries.source", "required when corpus.source is 'text'", "prompt/completion"],
                 id="text-corpus-without-queries"),
    pytest.param(lambda r, t: _text_corpus(r, t, "missing"), ["queries.source", "not found", "no-queries.jsonl"],
                 id="text-corpus-queries-file-missing"),
    pytest.param(_synthetic_with_queries, ["queries.source", "synthetic world writes its own queries"],
                 id="synthetic-world-with-queries"),
    pytest.param(lambda r, t: _set(r, "queries", {"sorce": "q.jsonl"}), ["queries.sorce", "did you mean 'source'"],
                 id="queries-key-typo"),
    pytest.param(lambda r, t: r["corpus"].update(source="hf_dataset", path="./not/here"),
                 ["corpus.path", "neither an existing local dataset directory nor a hub name"],
                 id="hf-dataset-neither-local-nor-hub"),
    pytest.param(lambda r, t: _set(r["corpus"]["synthetic"], "languages", ["fr", "de", "es"]),
                 ["corpus.synthetic.languages", "'en'"], id="languages-without-en"),
    pytest.param(lambda r, t: _set(r["corpus"]["synthetic"], "languages", ["en", "fr", "xx"]),
                 ["corpus.synthetic.languages[2]", "'xx'"], id="unknown-language"),
    pytest.param(lambda r, t: _set(r["training"], "warmup_steps", r["training"]["steps"]),
                 ["training.warmup_steps", "must be below steps"], id="warmup-not-below-steps"),
    pytest.param(lambda r, t: _set(r["models"][0], "training", {"step": 10}),
                 ["models[0].training.step", "did you mean 'steps'"], id="unknown-key-in-model-training"),
    pytest.param(lambda r, t: _set(r["models"][1], "training", {"steps": 50}),
                 ["models[1].training.warmup_steps", "steps = 50"], id="override-makes-warmup-too-long"),
    pytest.param(lambda r, t: _set(r["models"][1], "training", {"batch_size": 0}),
                 ["models[1].training.batch_size", ">= 1"], id="out-of-range-model-override"),
    pytest.param(lambda r, t: _set(r["influence"], "token_strategies", ["ekfac", "kfac"]),
                 ["influence.token_strategies", "['kfac'] not in influence.strategies"],
                 id="token-scores-of-an-unscored-strategy"),
    pytest.param(lambda r, t: _set(r["influence"], "token_strategies", ["identity"]),
                 ["influence.token_strategies", "lacks explorer.strategy 'ekfac'"],
                 id="token-scores-without-the-explorers-strategy"),
]


@pytest.mark.parametrize("mutate, expected", BAD_CONFIGS)
def test_bad_config_is_refused_with_the_key_named(raw, tmp_path, mutate, expected):
    mutate(raw, tmp_path)
    path = write_yaml(tmp_path / "bad.yaml", raw)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message  # the file is named first
    for part in expected:
        assert part in message, f"{part!r} not in {message!r}"


@pytest.mark.parametrize(
    "content, expected",
    [
        pytest.param("- just\n- a list\n", "expected a mapping of keys at the top level, got list", id="a-list"),
        pytest.param("just a string\n", "expected a mapping of keys at the top level, got str", id="a-string"),
        pytest.param("", "expected a mapping of keys at the top level, got NoneType", id="empty-file"),
        pytest.param("models: [a, b\nseed: 0\n", "not valid YAML", id="invalid-yaml"),
        pytest.param("seed: 0\n  device: cpu\n", "not valid YAML", id="bad-indentation"),
    ],
)
def test_file_that_is_not_a_config_mapping(tmp_path, content, expected):
    path = tmp_path / "odd.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_config_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ConfigError, match="config file not found") as info:
        load_config(path)
    assert str(path) in str(info.value)


def test_config_error_is_a_value_error():
    assert issubclass(ConfigError, ValueError)


# --- good configs -----------------------------------------------------------------------------------------------


def test_default_config_validates():
    config = load_config(DEFAULT_CONFIG)
    assert model_names(config) == ["gpt2-xs", "gpt2-s", "gpt2-m", "gpt2-l"]
    assert config["corpus"]["source"] == "synthetic"
    assert config["training"]["steps"] == 1200


@pytest.mark.parametrize("name", ["ci.yaml", "gpu.yaml", "hf.yaml"])
def test_shipped_configs_validate(name):
    config = load_config(ROOT / "configs" / name)
    assert model_names(config)
    for model in model_names(config):
        settings = training_settings(config, model)
        assert settings["warmup_steps"] < settings["steps"]


def test_defaults_are_filled(raw, tmp_path):
    schema = load_schema()
    raw.pop("tokenizer")
    raw.pop("evaluation")
    raw.pop("device")
    del raw["corpus"]["synthetic"]["math"]
    del raw["training"]["threads"]
    config = load_config(write_yaml(tmp_path / "c.yaml", raw))
    tokenizer_props = schema["properties"]["tokenizer"]["properties"]
    assert config["tokenizer"] == {"vocab_size": 2048, "min_frequency": 2}
    assert config["tokenizer"]["vocab_size"] == tokenizer_props["vocab_size"]["default"]
    assert config["evaluation"] == {"min_exposures": 5, "batch_size": 64}
    assert config["device"] == "auto"
    assert config["corpus"]["synthetic"]["math"] == {"n_problems": 400}
    assert config["training"]["threads"] == 1
    assert config["corpus"]["path"] is None and config["corpus"]["max_documents"] is None
    assert config["models"][0]["d_mlp"] is None and config["models"][0]["checkpoint"] is None


def test_minimal_config_gets_every_default():
    config = validate_config({"models": [{"name": "m"}]})
    assert config["seed"] == 0 and config["output_dir"] == "results"
    assert config["corpus"]["name"] == "world"
    assert config["corpus"]["synthetic"]["languages"] == ["en", "fr", "de"]
    assert config["corpus"]["synthetic"]["facts"]["exposures"] == [1, 2, 5, 8, 12]
    assert config["models"] == [
        {"name": "m", "architecture": "gpt2", "n_layer": 2, "d_model": 64, "n_head": 2, "d_mlp": None,
         "checkpoint": None, "training": {}}
    ]
    assert training_settings(config, "m") == config["training"]


def test_filled_defaults_are_not_shared_between_configs():
    first = validate_config({"models": [{"name": "m"}]})
    first["corpus"]["synthetic"]["languages"].append("es")
    second = validate_config({"models": [{"name": "m"}]})
    assert second["corpus"]["synthetic"]["languages"] == ["en", "fr", "de"]


def test_model_training_overrides_merge_without_defaults(raw, tmp_path):
    raw["models"][1]["training"] = {"steps": 300, "learning_rate": 1.0e-3}
    config = load_config(write_yaml(tmp_path / "c.yaml", raw))
    # The override block stays as written: filling it with defaults would silently override the top level.
    assert config["models"][1]["training"] == {"steps": 300, "learning_rate": 1.0e-3}
    assert config["models"][0]["training"] == {}
    settings = training_settings(config, "gpt2-s")
    assert settings["steps"] == 300 and settings["learning_rate"] == 1.0e-3
    assert settings["batch_size"] == raw["training"]["batch_size"] == 16  # from the top level, not a default
    assert settings["warmup_steps"] == 100
    assert training_settings(config, "gpt2-xs") == config["training"]
    assert config["training"]["steps"] == 1200  # the top level is untouched by the override


def test_top_level_training_overrides_reach_every_model(raw):
    raw["training"]["batch_size"] = 4
    raw["models"][2]["training"] = {"seq_len": 64}
    config = validate_config(raw)
    assert [training_settings(config, m)["batch_size"] for m in model_names(config)] == [4, 4, 4, 4]
    assert training_settings(config, "gpt2-m")["seq_len"] == 64
    assert training_settings(config, "gpt2-l")["seq_len"] == 128


def test_checkpoint_models_validate(raw, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    as_checkpoint(raw["models"][0], str(folder))
    as_checkpoint(raw["models"][1], "EleutherAI/pythia-70m")
    config = validate_config(raw)
    assert config["models"][0]["checkpoint"] == str(folder)
    assert config["models"][1]["checkpoint"] == "EleutherAI/pythia-70m"


def test_user_corpus_with_existing_path_validates(raw, tmp_path):
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"text": "hello"}\n')
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"prompt": "hel", "completion": "lo"}\n')
    raw["corpus"].update(source="jsonl", path=str(corpus), max_documents=10)
    raw["queries"] = {"source": str(queries)}
    config = validate_config(raw)
    assert config["corpus"]["path"] == str(corpus) and config["corpus"]["text_field"] == "text"
    assert config["queries"]["source"] == str(queries)


def test_the_synthetic_world_needs_no_queries_file(raw):
    assert validate_config(raw)["queries"] == {"source": None}


def test_validate_config_does_not_mutate_its_input(raw):
    raw.pop("tokenizer")
    raw["models"][0]["training"] = {"steps": 500}
    before = copy.deepcopy(raw)
    config = validate_config(raw)
    assert raw == before
    assert "tokenizer" in config and "tokenizer" not in raw
    config["models"][0]["training"]["steps"] = 1
    config["corpus"]["synthetic"]["languages"].append("es")
    assert raw == before  # the result shares no nested objects with the input


def test_source_label_names_the_config(raw):
    raw["seed"] = -1
    with pytest.raises(ConfigError, match=r"^my-study: seed: expected a value >= 0, got -1"):
        validate_config(raw, source="my-study")


def test_model_lookup_helpers():
    config = load_config(DEFAULT_CONFIG)
    assert model_entry(config, "gpt2-m")["d_model"] == 112
    with pytest.raises(ConfigError, match=r"unknown model name 'gpt9'.*gpt2-xs, gpt2-s, gpt2-m, gpt2-l"):
        model_entry(config, "gpt9")
    with pytest.raises(ConfigError, match="unknown model name"):
        training_settings(config, "gpt9")


def test_explicit_schema_argument(raw):
    schema = load_schema()
    schema["properties"]["seed"]["maximum"] = 10
    raw["seed"] = 11
    assert validate_config(raw)["seed"] == 11
    with pytest.raises(ConfigError, match="seed: expected a value <= 10"):
        validate_config(raw, schema=schema)


def test_missing_schema_file(tmp_path):
    with pytest.raises(ConfigError, match="schema not found"):
        load_schema(tmp_path / "nope.yaml")


def test_the_schema_is_package_data():
    """The schema is read as package data of influence_study.study (importlib.resources), so an installed
    wheel finds it: pyproject ships it, and config.py builds no path of its own (no __file__, no repository root)."""
    resource = importlib.resources.files("influence_study.study").joinpath("config.schema.yaml")
    assert resource.is_file()
    assert config_module.schema_resource() == resource
    assert load_schema() == yaml.safe_load(resource.read_text(encoding="utf-8"))
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "study/config.schema.yaml" in package_data["influence_study"]
    assert "__file__" not in Path(config_module.__file__).read_text()


def test_the_default_schema_comes_from_the_resource(tmp_path, monkeypatch, raw):
    """load_schema() and validate_config() read whatever importlib.resources gives, not a file of the checkout."""
    schema = load_schema()
    schema["properties"]["seed"]["maximum"] = 10
    replacement = tmp_path / "config.schema.yaml"
    replacement.write_text(yaml.safe_dump(schema))
    monkeypatch.setattr(config_module, "schema_resource", lambda: replacement)
    assert load_schema()["properties"]["seed"]["maximum"] == 10
    with pytest.raises(ConfigError, match="seed: expected a value <= 10"):
        validate_config({**raw, "seed": 11})


# --- the tests can fail ----------------------------------------------------------------------------------------


def test_schema_check_is_what_catches_a_wrong_type(raw, monkeypatch):
    """With the JSON-schema check switched off, a wrong type goes through silently.

    This shows that the bad-config tests above fail when the validation they test is broken, instead of passing
    for some unrelated reason.
    """
    raw["training"]["batch_size"] = "sixteen"
    with pytest.raises(ConfigError, match="training.batch_size: expected an integer"):
        validate_config(raw)

    monkeypatch.setattr(config_module._Validator, "iter_errors", lambda self, *args, **kwargs: iter(()))
    config = validate_config(raw)  # no error: nothing else checks the type
    assert config["training"]["batch_size"] == "sixteen"


# --- regressions found in review ---------------------------------------------------------------------------------


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r["training"].update(steps=1200.0), "training.steps: expected an integer"),
    (lambda r: r["models"][0].update(name=".."), "models[0].name"),
    (lambda r: r.update({1: 2}), "unknown key '1'"),
])
def test_review_regressions(raw, mutate, key):
    mutate(raw)
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(raw)


def test_checkpoint_entries_get_no_scratch_sizes(raw):
    raw["models"].append({"name": "pythia", "checkpoint": "EleutherAI/pythia-70m"})
    entry = validate_config(raw)["models"][-1]
    assert "architecture" not in entry and "n_layer" not in entry


def test_hub_dataset_name_without_organisation_is_accepted(raw, tmp_path):
    (tmp_path / "queries.parquet").write_bytes(b"")  # only its existence is checked here; the corpus step reads it
    raw["corpus"].update(source="hf_dataset", path="wikitext")
    raw["queries"] = {"source": str(tmp_path / "queries.parquet")}
    assert validate_config(raw)["corpus"]["path"] == "wikitext"


@pytest.mark.parametrize("mutate, key", [
    (lambda r: r["finetune"].update(models=["gpt2-xl"]), "finetune.models: ['gpt2-xl']"),
    (lambda r: r["finetune"].update(detection_rank=16), "finetune.detection_rank: 16"),
    (lambda r: r["finetune"].update(methods=["datainf", "identity"]), "finetune.methods: 'exact'"),
    (lambda r: r["finetune"].update(methods=["trak"]), "finetune.methods[0]"),
    (lambda r: r["finetune"]["tasks"].update(poetry={}), "finetune.tasks"),
    (lambda r: r["finetune"]["tasks"]["sentence_transform"].update(classes=11), "classes"),
    (lambda r: r["finetune"]["removal"].update(k=[90, 900]), "finetune.removal.k: [900]"),
    (lambda r: r["finetune"]["removal"].update(task="math_no_reason", k=[10]) or
     r["finetune"]["tasks"]["math_no_reason"].update(classes=2, per_class=7, test_per_class=2),
     "finetune.removal.k: [10]"),
])
def test_finetune_section_is_checked(raw, mutate, key):
    mutate(raw)
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate_config(raw)


def test_removal_may_leave_one_training_example(raw):
    raw["finetune"]["tasks"]["noisy_sentiment"] = {"n_train": 50, "n_test": 10}
    raw["finetune"]["removal"].update(task="noisy_sentiment", k=[49])
    assert validate_config(raw)["finetune"]["removal"]["k"] == [49]


@pytest.mark.parametrize("task, section", [
    ("noisy_sentiment", {"n_train": 37, "n_test": 5, "flip_fraction": 0.2}),
    ("sentence_transform", {"classes": 3, "per_class": 7, "test_per_class": 2}),
    ("math_with_reason", {"classes": 2, "per_class": 5, "test_per_class": 1}),
])
def test_train_size_counts_the_generated_training_examples(task, section):
    table = generate_tasks({task: section}, seed=3)
    assert finetune_train_size(task, section) == int((table["split"] == "train").sum())
