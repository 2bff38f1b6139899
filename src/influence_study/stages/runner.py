"""Glue between Snakemake and the stages: one call per rule, logged to the rule's log."""

from __future__ import annotations

from typing import Any

from influence_study.stages.registry import READS_CONFIG, step_function
from influence_study.study.runtime import logged_to

# Rule params that are for the runner and Snakemake, never passed to the step: ``step`` names the step, and
# ``config_slice`` holds the config values the step reads (:mod:`influence_study.stages.config_slices`), there only so
# that Snakemake's params rerun trigger reruns the job when one of them changes (the step reads the whole config).
RUNNER_PARAMS: frozenset[str] = frozenset({"step", "config_slice"})


def run_step(smk: Any) -> None:
    """Call the step ``smk.params.step`` names (:data:`influence_study.stages.registry.STEPS`) as
    ``step(config, **named inputs, **named outputs, **other params)``, or without the config for a step that reads
    none (the figures). The params of :data:`RUNNER_PARAMS` (``step``, ``config_slice``) are not passed.

    The rule's named inputs and outputs must be called like the step function's parameters; the rule's first
    log file receives everything the step prints, and torch uses the rule's ``threads``.
    """
    params = dict(smk.params.items())
    name = params["step"]
    params = {key: value for key, value in params.items() if key not in RUNNER_PARAMS}
    function = step_function(name)
    kwargs = {**dict(smk.input.items()), **dict(smk.output.items()), **params}
    kwargs = {k: (list(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    args = (smk.config,) if name in READS_CONFIG else ()
    with logged_to(smk.log[0] if smk.log else None, threads=smk.threads):
        function(*args, **kwargs)
