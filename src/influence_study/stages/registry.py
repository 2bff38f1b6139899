"""Every step a workflow rule can run, by the name its ``step`` parameter gives (``params: step="lds.run"``).

A step named ``"<module>.<function>"`` is :func:`influence_study.stages.<module>.<function>`, called as
``function(config, **named inputs, **named outputs, **other params)``; a step named ``"<analysis>.figure"`` is the
figure step :func:`influence_study.plots.<analysis>.figure`, called without the config (figures read only their
tables), like ``models.loss_figure``. :data:`STEPS` maps every name to its function, :data:`READS_CONFIG` names the
steps that take the config first; ``tests/test_step_registry.py`` checks every rule's step and files against them.
"Other params" are every param but ``step`` and ``config_slice`` (:data:`influence_study.stages.runner.RUNNER_PARAMS`):
a rule's ``config_slice`` holds the config values its step reads, so that changing one reruns the rule
(:mod:`influence_study.stages.config_slices`), and is not passed to the step.

The tables below declare each step's function by its dotted path, and :data:`STEPS` imports a step's module only
when the step is first looked up: a job imports what its step needs (about 2 s), not every stage and figure
module with their libraries (about 5.5 s, measured on the 2-core CI machine), which the ~150 jobs of a study
would each pay.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping

# Steps called as step(config, **files, **params), in the order of the workflow.
CONFIG_STEPS: dict[str, str] = {
    "corpus.make_corpus": "stages.corpus.make_corpus",
    "corpus.make_tokenizer": "stages.corpus.make_tokenizer",
    "models.train_model": "stages.models.train_model",
    "models.evaluate_model": "stages.models.evaluate_model",
    "models.learning_table": "stages.models.learning_table",
    "influence.fit_model_factors": "stages.influence.fit_model_factors",
    "influence.make_candidates": "stages.influence.make_candidates",
    "influence.score_shard": "stages.influence.score_shard",
    "influence.gather_scores": "stages.influence.gather_scores",
    "influence.token_scores": "stages.influence.token_scores",
    "influence.bm25_recall_table": "stages.influence.bm25_recall_table",
    "influence.explorer_page": "stages.influence.explorer_page",
    "validation.run_setting": "stages.validation.run_setting",
    "validation.run": "stages.validation.run",
    "lds.make_subsets": "stages.lds.make_subsets",
    "lds.retrain_subset": "stages.lds.retrain_subset",
    "lds.run": "stages.lds.run",
    "calibration.make_plan": "stages.calibration.make_plan",
    "calibration.retrain_with_copies": "stages.calibration.retrain_with_copies",
    "calibration.run": "stages.calibration.run",
    "approximations.run": "stages.approximations.run",
    "sparsity.run": "stages.sparsity.run",
    "matched_loss.run": "stages.matched_loss.run",
    "abstraction.run": "stages.abstraction.run",
    "layers.run": "stages.layers.run",
    "math_code.run": "stages.math_code.run",
    "cross_lingual.run": "stages.cross_lingual.run",
    "roleplay.run": "stages.roleplay.run",
    "memorisation.run": "stages.memorisation.run",
    "word_order.score_model": "stages.word_order.score_model",
    "word_order.run": "stages.word_order.run",
    "keyword_overlap.run": "stages.keyword_overlap.run",
    "finetune.make_tasks": "stages.finetune.make_tasks",
    "finetune.finetune_and_score": "stages.finetune.finetune_and_score",
    "datainf.run": "stages.datainf.run",
    "memorisation_sign.score_documents": "stages.memorisation_sign.score_documents",
    "memorisation_sign.run": "stages.memorisation_sign.run",
    "fewer_parameters.run": "stages.fewer_parameters.run",
    "removal.run_removal": "stages.removal.run_removal",
    "removal.run": "stages.removal.run",
    "reports.run_notebook": "stages.reports.run_notebook",
    "reports.findings_report": "stages.reports.findings_report",
}

# Steps called as step(**files, **params): the figures, which read only their tables.
FILE_STEPS: dict[str, str] = {
    "models.loss_figure": "stages.models.loss_figure",
    "validation.figure": "plots.validation.figure",
    "lds.figure": "plots.lds.figure",
    "calibration.figure": "plots.calibration.figure",
    "approximations.figure": "plots.approximations.figure",
    "sparsity.figure": "plots.sparsity.figure",
    "abstraction.figure": "plots.abstraction.figure",
    "layers.figure": "plots.layers.figure",
    "math_code.figure": "plots.math_code.figure",
    "cross_lingual.figure": "plots.cross_lingual.figure",
    "roleplay.figure": "plots.roleplay.figure",
    "memorisation.figure": "plots.memorisation.figure",
    "word_order.figure": "plots.word_order.figure",
    "keyword_overlap.figure": "plots.keyword_overlap.figure",
    "datainf.figure": "plots.datainf.figure",
    "memorisation_sign.figure": "plots.memorisation_sign.figure",
    "fewer_parameters.figure": "plots.fewer_parameters.figure",
    "removal.figure": "plots.removal.figure",
}


class StepTable(MutableMapping):
    """Step name -> function, resolved from the dotted paths of :data:`CONFIG_STEPS` and :data:`FILE_STEPS` on first
    access (``"stages.lds.run"`` is :func:`influence_study.stages.lds.run`). Assigning a name replaces its function
    (tests do); the names are fixed by the tables."""

    def __init__(self, targets: dict[str, str]):
        self._targets = dict(targets)
        self._functions: dict[str, Callable] = {}

    def __getitem__(self, name: str) -> Callable:
        if name not in self._functions:
            module, _, attribute = self._targets[name].rpartition(".")
            self._functions[name] = getattr(importlib.import_module(f"influence_study.{module}"), attribute)
        return self._functions[name]

    def __setitem__(self, name: str, function: Callable) -> None:
        if name not in self._targets:
            raise UnknownStep(f"step {name!r}: not in the registry's tables")
        self._functions[name] = function

    def __delitem__(self, name: str) -> None:
        self._functions.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)


class UnknownStep(KeyError):
    """A rule names a step that is not in :data:`STEPS`."""

    def __str__(self) -> str:
        return str(self.args[0])


STEPS: StepTable = StepTable({**CONFIG_STEPS, **FILE_STEPS})
READS_CONFIG: frozenset[str] = frozenset(CONFIG_STEPS)


def step_function(name: str) -> Callable:
    """The function of step ``name`` (see the module docstring); :class:`UnknownStep`, naming the known steps, when
    there is none."""
    if name not in STEPS:
        raise UnknownStep(f"step {name!r}: no such step; the known steps are {', '.join(sorted(STEPS))}")
    return STEPS[name]
