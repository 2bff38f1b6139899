"""What of the config each workflow step reads, as a rule parameter: Snakemake reruns a job whose params changed
(its ``params`` rerun trigger, on by default), so a rule that passes the config values its step reads as the param
``config_slice`` is rerun exactly when one of them changes, and the jobs below it rerun because their inputs are
newer. The runner never passes ``config_slice`` to the step (:data:`influence_study.stages.runner.RUNNER_PARAMS`):
the step reads the whole config; the slice only tells Snakemake what the step depends on.

The rules build their slices with the helpers at the end of ``workflow/rules/common.smk``, which only name keys;
what needs more than naming keys is here.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from influence_study.study.config import model_entry, training_settings

# The ``influence`` keys a scoring step reads (score_shard, gather_scores, token_scores): the fields of
# :class:`~influence_study.stages.sharded_scores.ScoringSettings`, which take the keys of the same names
# (tests/test_step_registry.py keeps the two equal; not imported here, so that the Snakefile does not load torch).
SCORING_KEYS: tuple[str, ...] = ("influence.batch_size", "influence.query_batch_size", "influence.query_rank",
                                 "influence.rescore_top_k", "influence.damping")
# The ``influence`` keys the factors are fitted with (:func:`influence_study.stages.influence.fit_study_factors`).
FACTOR_KEYS: tuple[str, ...] = ("influence.fit_documents", "influence.batch_size", "influence.modules",
                                "influence.sampled_labels")
# Both, each key once: what a step that fits factors and scores with them reads (the matched-loss comparison).
FIT_AND_SCORE_KEYS: tuple[str, ...] = tuple(dict.fromkeys((*FACTOR_KEYS, *SCORING_KEYS)))


def config_value(config: Mapping, key: str) -> Any:
    """The value at a dotted key: ``"seed"``, ``"influence.damping"``, ``"analyses.sparsity"`` (a KeyError names the
    key when the config has no such value)."""
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"config slice: the config has no key {key!r}")
        value = value[part]
    return value


def select(config: Mapping, keys: Iterable[str]) -> dict:
    """``{key: value}`` of each dotted key, in the order given."""
    return {key: config_value(config, key) for key in keys}


def model_slice(config: Mapping, model_name: str) -> dict:
    """What a step that builds, trains or retrains model ``model_name`` reads of it: its config entry and, for a model
    trained from scratch, its position in ``models`` (its seeds derive from it,
    :mod:`influence_study.study.seeds`) and its effective training settings (``training`` with the entry's
    overrides). An imported checkpoint reads only its entry."""
    entry = model_entry(config, model_name)
    if entry.get("checkpoint"):
        return {"model": dict(entry)}
    return {"model": dict(entry), "model_position": config["models"].index(entry),
            "training": training_settings(config, model_name)}
