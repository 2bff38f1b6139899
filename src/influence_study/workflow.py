"""Glue between Snakemake and :mod:`influence_study.steps`: one call per rule, logged to the rule's log."""

from __future__ import annotations

from typing import Any

from . import influence_steps, steps
from .runtime import logged_to


def run_step(smk: Any) -> None:
    """Call ``<step>(config, **named inputs, **named outputs, **other params)``, where ``<step>`` is
    ``smk.params.step`` in :mod:`influence_study.steps` or :mod:`influence_study.influence_steps`.

    The rule's named inputs and outputs must be called like the step function's parameters; the rule's first
    log file receives everything the step prints, and torch uses the rule's ``threads``.
    """
    params = dict(smk.params.items())
    name = params.pop("step")
    function = getattr(steps, name, None) or getattr(influence_steps, name)
    kwargs = {**dict(smk.input.items()), **dict(smk.output.items()), **params}
    kwargs = {k: (list(v) if isinstance(v, list) else v) for k, v in kwargs.items()}
    with logged_to(smk.log[0] if smk.log else None, threads=smk.threads):
        function(smk.config, **kwargs)
