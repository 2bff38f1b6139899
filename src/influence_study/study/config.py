"""Study configuration: load, validate against the schema, fill defaults, check cross-references.

The schema (``config.schema.yaml``, package data of :mod:`influence_study.study`, read with
:mod:`importlib.resources` so that it is found wherever the package is installed) types, ranges, defaults and
describes every key. This module turns the first violation into one message that names the key, e.g.::

    config.yaml: models[1].n_layer: expected an integer >= 1, got 0

and adds the checks a JSON schema cannot express (files that must exist, unique model names, divisibility, finite
numbers, an output directory that can be one, a corpus with something to read).

:func:`check_config` (what ``influence-study check-config`` and the Snakefile run before any job) adds the checks
that look beyond the machine's files, hub ids that can be neither found in the cache nor downloaded, and returns
the warnings of :func:`config_warnings` (a setting that is valid but does nothing, e.g. a query rank no tracked
gradient reaches).
"""

from __future__ import annotations

import copy
import difflib
import importlib.resources
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import jsonschema
import yaml

from influence_study.study import config_checks

SCHEMA_PACKAGE, SCHEMA_NAME = "influence_study.study", "config.schema.yaml"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_HUB_DATASET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# JSON Schema counts 2.0 as an integer; a config that says `steps: 1200.0` is a typo here, not an integer.
_Validator = jsonschema.validators.extend(
    jsonschema.Draft7Validator,
    type_checker=jsonschema.Draft7Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)),
)
_SIZE_KEYS = ("architecture", "n_layer", "d_model", "n_head", "d_mlp")


class ConfigError(ValueError):
    """A configuration is invalid; the message names the offending key."""


def schema_resource() -> importlib.resources.abc.Traversable:
    """The packaged configuration schema: ``config.schema.yaml`` among the package data of
    :mod:`influence_study.study` (wherever the package is installed; never a path into a source checkout)."""
    return importlib.resources.files(SCHEMA_PACKAGE).joinpath(SCHEMA_NAME)


def load_schema(path: str | os.PathLike | None = None) -> dict:
    """Read the configuration schema (YAML) from ``path`` or, by default, the packaged one
    (:func:`schema_resource`)."""
    schema = Path(path) if path is not None else schema_resource()
    if not schema.is_file():
        raise ConfigError(f"configuration schema not found: {schema}")
    return yaml.safe_load(schema.read_text(encoding="utf-8"))


def load_config(path: str | os.PathLike, schema: Mapping | None = None) -> dict:
    """Read a YAML config file and return it validated, with defaults filled in."""
    return validate_config(read_config_file(path), schema=schema, source=str(path))


def read_config_file(path: str | os.PathLike) -> Any:
    """The raw YAML of a config file (not validated)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    with open(path) as handle:
        try:
            return yaml.safe_load(handle)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err


def check_config(raw: Any, schema: Mapping | None = None, source: str = "config") -> tuple[dict, list[str]]:
    """Everything checked before any job runs (``influence-study check-config``, the Snakefile): the validated
    config (:func:`validate_config`), then that every hub id (a ``checkpoint`` that is not a local path, a hub
    dataset as ``corpus.path``) is in the local Hugging Face cache or the hub can be reached. Returns the config
    and its warnings (:func:`config_warnings`); raises :class:`ConfigError` naming the first bad key."""
    config = validate_config(raw, schema=schema, source=source)
    for key, message in config_checks.hub_problems(config):
        raise ConfigError(f"{source}: {key}: {message}")
    return config, config_warnings(config, source)


def check_config_file(path: str | os.PathLike, schema: Mapping | None = None) -> tuple[dict, list[str]]:
    """:func:`check_config` of a YAML config file."""
    return check_config(read_config_file(path), schema=schema, source=str(path))


def config_warnings(config: Mapping, source: str = "config") -> list[str]:
    """Settings of a validated config that are valid but do nothing: an ``influence.query_rank`` at or above the
    rank of every tracked gradient of every model (``min(out, in + bias)`` of each tracked module; the engine then
    keeps them all at full rank, so query batching approximates nothing and only adds the re-scoring pass)."""
    warnings = []
    rank = config["influence"]["query_rank"]
    if rank is not None:
        bounds = [(config_checks.gradient_rank(entry, config["influence"]["modules"]), i)
                  for i, entry in enumerate(config["models"])]
        if bounds and all(bound is not None for bound, _ in bounds):
            bound, i = max(bounds)
            if rank >= bound:
                warnings.append(
                    f"{source}: influence.query_rank: {rank} is at least the rank of every tracked gradient (at most "
                    f"{bound}, min(out, in + bias) of the largest tracked module of models[{i}] "
                    f"{config['models'][i]['name']!r}), so no query gradient is approximated and query batching only "
                    f"adds a re-scoring pass; use null (full rank) or a rank below {bound}")
    return warnings


def validate_config(raw: Any, schema: Mapping | None = None, source: str = "config") -> dict:
    """Validate ``raw`` against the schema, fill defaults and run the cross-checks.

    Returns a new dict; ``raw`` is not modified. Raises :class:`ConfigError` naming the first bad key.
    """
    schema = load_schema() if schema is None else schema
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys at the top level, got {type(raw).__name__}")
    config = copy.deepcopy(dict(raw))
    for path, value in config_checks.non_finite_numbers(config):
        raise ConfigError(f"{source}: {_key(path)}: expected a finite number, got {value!r}")
    error = jsonschema.exceptions.best_match(_Validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(f"{source}: {_describe(error)}")
    _check_models_raw(config.get("models", []), source)
    _fill_defaults(config, schema)
    for entry in config.get("models", []):
        if entry.get("checkpoint") is not None:  # a checkpoint brings its own architecture and sizes
            for key in _SIZE_KEYS:
                entry.pop(key, None)
    _check_semantics(config, source)
    return config


def training_settings(config: Mapping, model_name: str) -> dict:
    """The effective training settings of one model: top-level ``training`` updated by the model's overrides."""
    entry = model_entry(config, model_name)
    return {**config["training"], **entry.get("training", {})}


def model_entry(config: Mapping, model_name: str) -> dict:
    """The config entry of model ``model_name``; a clear error lists the known names otherwise."""
    for entry in config["models"]:
        if entry["name"] == model_name:
            return entry
    known = ", ".join(m["name"] for m in config["models"])
    raise ConfigError(f"unknown model name {model_name!r}; the config defines: {known}")


def finetune_train_size(task: str, section: Mapping) -> int:
    """Number of training examples that :func:`influence_study.finetune.datasets.generate_tasks` makes for the
    fine-tuning task ``task`` from its settings ``section`` (``finetune.tasks.<task>``)."""
    if task == "noisy_sentiment":
        return section["n_train"]
    return section["classes"] * (section["per_class"] - section["test_per_class"])


def model_names(config: Mapping) -> list[str]:
    """Names of the model family, in config order."""
    return [m["name"] for m in config["models"]]


# --- internals -------------------------------------------------------------------------------------------------


def _key(path: Iterable) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    key = _key(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(str(k) for k in set(error.instance) - set(allowed))
        bad = extra[0] if extra else "?"
        full = f"{key}.{bad}" if error.absolute_path else bad
        hint = difflib.get_close_matches(bad, allowed, n=1)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {full!r}{did_you_mean} (allowed here: {', '.join(allowed)})"
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        where = f"{key}.{missing}" if error.absolute_path else missing
        return f"missing required key {where!r}"
    got = f", got {error.instance!r}"
    text = {
        "type": lambda: f"expected {_type_words(error.validator_value)}",
        "enum": lambda: f"expected one of {', '.join(map(repr, error.validator_value))}",
        "minimum": lambda: f"expected a value >= {error.validator_value}",
        "maximum": lambda: f"expected a value <= {error.validator_value}",
        "exclusiveMinimum": lambda: f"expected a value > {error.validator_value}",
        "exclusiveMaximum": lambda: f"expected a value < {error.validator_value}",
        "minItems": lambda: f"expected at least {error.validator_value} item(s)",
        "uniqueItems": lambda: "expected items without repeats",
        "pattern": lambda: f"expected text matching {error.validator_value}",
        "minLength": lambda: "expected a non-empty string",
    }.get(error.validator, lambda: error.message)()
    description = schema.get("description")
    suffix = f" ({description.strip()})" if isinstance(description, str) else ""
    return f"{key}: {text}{got}{suffix}"


def _type_words(value: Any) -> str:
    names = value if isinstance(value, list) else [value]
    words = {"integer": "an integer", "number": "a number", "string": "a string", "array": "a list",
             "object": "a mapping", "boolean": "true/false", "null": "null"}
    return " or ".join(words.get(n, n) for n in names)


def _fill_defaults(instance: Any, schema: Mapping) -> None:
    """Fill schema defaults into ``instance`` in place, recursing into objects and arrays of objects."""
    if schema.get("x-fill-defaults") is False:
        return
    if isinstance(instance, dict):
        for name, sub in schema.get("properties", {}).items():
            if name not in instance and "default" in sub:
                instance[name] = copy.deepcopy(sub["default"])
            if name in instance:
                _fill_defaults(instance[name], sub)
    elif isinstance(instance, list) and isinstance(schema.get("items"), Mapping):
        for item in instance:
            _fill_defaults(item, schema["items"])


def _check_models_raw(models: list, source: str) -> None:
    for i, entry in enumerate(models):
        if entry.get("checkpoint") is not None:
            given = [k for k in _SIZE_KEYS if k in entry]
            if given:
                raise ConfigError(
                    f"{source}: models[{i}] ({entry['name']!r}) names a checkpoint and also "
                    f"{', '.join(given)}; a checkpoint model takes its architecture from the checkpoint"
                )


def _check_semantics(config: dict, source: str) -> None:
    problem = config_checks.output_dir_problem(config["output_dir"])
    if problem:
        raise ConfigError(f"{source}: output_dir: {problem}")
    corpus = config["corpus"]
    if corpus["source"] == "synthetic":
        if "en" not in corpus["synthetic"]["languages"]:
            raise ConfigError(f"{source}: corpus.synthetic.languages: must include 'en' (queries are in English)")
    else:
        path = corpus.get("path")
        if not path:
            raise ConfigError(f"{source}: corpus.path: required when corpus.source is {corpus['source']!r}")
        if corpus["source"] != "hf_dataset" and not Path(path).exists():
            raise ConfigError(f"{source}: corpus.path: file or directory not found: {path}")
        problem = config_checks.corpus_problem(corpus["source"], path)
        if problem:
            raise ConfigError(f"{source}: corpus.path: {problem}")
        if corpus["source"] == "hf_dataset" and not Path(path).exists() and not _HUB_DATASET.match(path):
            raise ConfigError(
                f"{source}: corpus.path: {path!r} is neither an existing local dataset directory nor a hub name"
            )
    queries = config["queries"]["source"]
    if corpus["source"] == "synthetic" and queries is not None:
        raise ConfigError(f"{source}: queries.source: the synthetic world writes its own queries; set it only for "
                          f"a corpus of your own (corpus.source text, jsonl, parquet or hf_dataset)")
    if corpus["source"] != "synthetic" and queries is None:
        raise ConfigError(f"{source}: queries.source: required when corpus.source is {corpus['source']!r}: a "
                          f".jsonl or .parquet file of prompt/completion rows to score (README, 'Your own corpus "
                          f"or models')")
    if queries is not None and not Path(queries).is_file():
        raise ConfigError(f"{source}: queries.source: file not found: {queries}")

    seen: dict[str, int] = {}
    for i, entry in enumerate(config["models"]):
        name = entry["name"]
        if name in seen:
            raise ConfigError(f"{source}: models[{i}].name: {name!r} repeats models[{seen[name]}].name")
        seen[name] = i
        checkpoint = entry.get("checkpoint")
        if checkpoint is not None:
            if not Path(checkpoint).exists() and not _looks_like_hub_id(checkpoint):
                raise ConfigError(
                    f"{source}: models[{i}].checkpoint: {checkpoint!r} is neither an existing local directory "
                    "nor a hub id of the form 'org/name'"
                )
            if Path(checkpoint).exists() and not (Path(checkpoint) / "config.json").is_file():
                raise ConfigError(
                    f"{source}: models[{i}].checkpoint: {checkpoint} has no config.json "
                    "(expected a directory written by save_pretrained)"
                )
            continue
        if entry["d_model"] % entry["n_head"]:
            raise ConfigError(
                f"{source}: models[{i}].d_model: {entry['d_model']} is not divisible by "
                f"n_head = {entry['n_head']}"
            )
    influence = config["influence"]
    token_strategies = influence.get("token_strategies")
    if token_strategies is not None:
        unscored = [s for s in token_strategies if s not in influence["strategies"]]
        if unscored:
            raise ConfigError(f"{source}: influence.token_strategies: {unscored} not in influence.strategies "
                              f"{influence['strategies']} (token scores need the strategy's factors and scores)")
        if config["explorer"]["strategy"] not in token_strategies:
            raise ConfigError(f"{source}: influence.token_strategies: {token_strategies} lacks explorer.strategy "
                              f"{config['explorer']['strategy']!r}, whose token scores the explorer shows")
    if config["explorer"]["strategy"] not in influence["strategies"]:
        raise ConfigError(f"{source}: explorer.strategy: {config['explorer']['strategy']!r} is not one of "
                          f"influence.strategies {influence['strategies']}")
    if config["analyses"]["strategy"] not in influence["strategies"]:
        raise ConfigError(f"{source}: analyses.strategy: {config['analyses']['strategy']!r} is not one of "
                          f"influence.strategies {influence['strategies']}")
    finetune = config["finetune"]
    unknown = sorted(set(finetune["models"] or []) - {m["name"] for m in config["models"]})
    if unknown:
        raise ConfigError(f"{source}: finetune.models: {unknown} are not names of `models`")
    if finetune["detection_rank"] is not None and finetune["detection_rank"] not in finetune["ranks"]:
        raise ConfigError(f"{source}: finetune.detection_rank: {finetune['detection_rank']} is not one of "
                          f"finetune.ranks {finetune['ranks']}")
    removal = finetune["removal"]
    if removal["task"] not in finetune["tasks"]:
        raise ConfigError(f"{source}: finetune.removal.task: {removal['task']!r} is not one of finetune.tasks "
                          f"{sorted(finetune['tasks'])}")
    if removal["method"] not in finetune["methods"]:
        raise ConfigError(f"{source}: finetune.removal.method: {removal['method']!r} is not one of "
                          f"finetune.methods {finetune['methods']}")
    if removal["task"] in finetune["tasks"]:
        available = finetune_train_size(removal["task"], finetune["tasks"][removal["task"]])
        too_many = [k for k in removal["k"] if k >= available]
        if too_many:
            raise ConfigError(f"{source}: finetune.removal.k: {too_many} leave no training example of "
                              f"{removal['task']!r} ({available} in all); use values below {available}")
    unknown = sorted(set(config["analyses"]["memorisation_sign"]["models"] or []) - {m["name"] for m in config["models"]})
    if unknown:
        raise ConfigError(f"{source}: analyses.memorisation_sign.models: {unknown} are not names of `models`")
    matched = config["analyses"]["abstraction"]["matched_loss"]
    scratch = {m["name"] for m in config["models"] if not m.get("checkpoint")}
    for key in ("reference", "model"):
        if matched[key] is not None and matched[key] not in scratch:
            raise ConfigError(f"{source}: analyses.abstraction.matched_loss.{key}: {matched[key]!r} is not a model "
                              f"trained from scratch (those of `models`: {sorted(scratch)}); the comparison "
                              f"retrains the model, so neither can be an imported checkpoint")
    if matched["reference"] is not None and matched["reference"] == matched["model"]:
        raise ConfigError(f"{source}: analyses.abstraction.matched_loss: reference and model are both "
                          f"{matched['model']!r}; give two models")
    if "exact" not in finetune["methods"]:
        raise ConfigError(f"{source}: finetune.methods: 'exact' is the reference every method is compared with; "
                          f"keep it in the list")
    too_deep = [k for k in config["candidates"]["recall_k"] if k > config["candidates"]["top_k"]]
    if too_deep:
        raise ConfigError(f"{source}: candidates.recall_k: {too_deep} exceed candidates.top_k = "
                          f"{config['candidates']['top_k']}")
    for where, settings in [("training", config["training"])] + [
        (f"models[{i}].training", {**config["training"], **m.get("training", {})})
        for i, m in enumerate(config["models"])
    ]:
        if settings["warmup_steps"] >= settings["steps"]:
            raise ConfigError(
                f"{source}: {where}.warmup_steps: {settings['warmup_steps']} must be below "
                f"steps = {settings['steps']}"
            )


def _looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and not text.startswith((".", "/"))
