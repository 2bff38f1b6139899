"""Glue between Snakemake and :mod:`influence_study.stages.steps`: one call per rule, logged to the rule's log."""

from __future__ import annotations

import importlib
from typing import Any

from influence_study.stages import influence as influence_steps, steps
from influence_study.study.runtime import logged_to


def run_step(smk: Any) -> None:
    """Call ``<step>(config, **named inputs, **named outputs, **other params)``, where ``<step>`` is
    ``smk.params.step``: a function of :mod:`influence_study.stages.steps` or :mod:`influence_study.stages.influence`, or
    ``"<module>:<function>"`` for a function of ``influence_study.<module>`` (e.g. ``"analyses.sparsity:run"``).

    The rule's named inputs and outputs must be called like the step function's parameters; the rule's first
    log file receives everything the step prints, and torch uses the rule's ``threads``.
    """
    params = dict(smk.params.items())
    name = params.pop("step")
    function = step_function(name)
    kwargs = {**dict(smk.input.items()), **dict(smk.output.items()), **params}
    kwargs = {k: (list(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    with logged_to(smk.log[0] if smk.log else None, threads=smk.threads):
        function(smk.config, **kwargs)


def step_function(name: str):
    """The function a rule's ``step`` parameter names (see :func:`run_step`)."""
    if ":" in name:
        module, _, attribute = name.partition(":")
        return getattr(importlib.import_module(f"influence_study.{module}"), attribute)
    function = getattr(steps, name, None) or getattr(influence_steps, name, None)
    if function is None:
        raise AttributeError(f"step {name!r}: no such function in influence_study.stages.steps or .influence_steps")
    return function
