"""influence_study: which training data makes a language model say what it says.

The package holds all the logic of the study; the Snakemake workflow (``Snakefile``) only wires its steps.
The influence engine's public API (imported on first use: torch, safetensors, tqdm)::

    from influence_study import FactorArguments, LanguageModelingTask, fit_factors, pairwise_scores
    factors = fit_factors(model, LanguageModelingTask(), train_loader, strategy="ekfac")
    factors = fit_factors(model, LanguageModelingTask(), train_loader, FactorArguments(strategy="ekfac", blocks=2))
    scores = pairwise_scores(model, task, factors, query_loader, train_loader, query_rank=32)

The options of ``fit_factors`` and of the scoring functions are the fields of ``FactorArguments`` and
``ScoreArguments`` (each with its default and help), passed as an instance, as keywords, or both.
"""

import importlib

from influence_study._version import __version__  # noqa: E402

# The engine's public names and the module of each, imported when first used (PEP 562), so that ``import
# influence_study.<module>`` for a step that needs no torch (an analysis, a figure) does not import the engine.
_EXPORTS = {
    "DAMPING_FACTOR": "engine.damping",
    "Factors": "engine.factors", "fit_factors": "engine.factors",
    "STRATEGIES": "engine.options", "FactorArguments": "engine.options", "ScoreArguments": "engine.options",
    "Preconditioner": "engine.preconditioner", "model_fingerprint": "engine.preconditioner",
    "Scores": "engine.scoring", "pairwise_scores": "engine.scoring", "query_gradients": "engine.scoring",
    "self_scores": "engine.scoring",
    "PBRF": "engine.solvers", "DataInfSolver": "engine.solvers", "EmpiricalFisherSolver": "engine.solvers",
    "ExactSolver": "engine.solvers", "LissaSolver": "engine.solvers",
    "ClassificationTask": "engine.tasks", "LanguageModelingTask": "engine.tasks", "RegressionTask": "engine.tasks",
    "Task": "engine.tasks",
    "MLP_PATTERNS": "engine.tracking", "select_modules": "engine.tracking",
}

__all__ = [
    "__version__",
    "Task", "LanguageModelingTask", "ClassificationTask", "RegressionTask",
    "fit_factors", "FactorArguments", "Factors", "STRATEGIES", "Preconditioner", "model_fingerprint",
    "pairwise_scores", "self_scores", "query_gradients", "ScoreArguments", "Scores",
    "LissaSolver", "DataInfSolver", "ExactSolver", "EmpiricalFisherSolver", "PBRF", "DAMPING_FACTOR",
    "select_modules", "MLP_PATTERNS",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"influence_study.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'influence_study' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
