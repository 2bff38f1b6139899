"""influence_study: which training data makes a language model say what it says.

The package holds all the logic of the study; the Snakemake workflow (``Snakefile``) only wires its steps.
The influence engine's public API (``import influence_study`` imports the engine only: torch, safetensors, tqdm)::

    from influence_study import FactorArguments, LanguageModelingTask, fit_factors, pairwise_scores
    factors = fit_factors(model, LanguageModelingTask(), train_loader, strategy="ekfac")
    factors = fit_factors(model, LanguageModelingTask(), train_loader, FactorArguments(strategy="ekfac", blocks=2))
    scores = pairwise_scores(model, task, factors, query_loader, train_loader, query_rank=32)

The options of ``fit_factors`` and of the scoring functions are the fields of ``FactorArguments`` and
``ScoreArguments`` (each with its default and help), passed as an instance, as keywords, or both.
"""

from influence_study._version import __version__  # noqa: E402

from influence_study.engine.damping import DAMPING_FACTOR  # noqa: E402
from influence_study.engine.factors import Factors, fit_factors  # noqa: E402
from influence_study.engine.options import STRATEGIES, FactorArguments, ScoreArguments  # noqa: E402
from influence_study.engine.preconditioner import Preconditioner, model_fingerprint  # noqa: E402
from influence_study.engine.scoring import Scores, pairwise_scores, query_gradients, self_scores  # noqa: E402
from influence_study.engine.solvers import (PBRF, DataInfSolver, EmpiricalFisherSolver, ExactSolver,  # noqa: E402
                                           LissaSolver)
from influence_study.engine.tasks import ClassificationTask, LanguageModelingTask, RegressionTask, Task  # noqa: E402
from influence_study.engine.tracking import MLP_PATTERNS, select_modules  # noqa: E402

__all__ = [
    "Task", "LanguageModelingTask", "ClassificationTask", "RegressionTask",
    "fit_factors", "FactorArguments", "Factors", "STRATEGIES", "Preconditioner", "model_fingerprint",
    "pairwise_scores", "self_scores", "query_gradients", "ScoreArguments", "Scores",
    "LissaSolver", "DataInfSolver", "ExactSolver", "EmpiricalFisherSolver", "PBRF", "DAMPING_FACTOR",
    "select_modules", "MLP_PATTERNS",
]
