"""influence_study: which training data makes a language model say what it says.

The package holds all the logic of the study; the Snakemake workflow (``Snakefile``) only wires its steps.
The influence engine's public API::

    from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
    factors = fit_factors(model, LanguageModelingTask(), train_loader, strategy="ekfac")
    scores = pairwise_scores(model, task, factors, query_loader, train_loader, query_rank=32)
"""

from influence_study._version import __version__  # noqa: E402

from influence_study.engine.factors import STRATEGIES, Factors, fit_factors  # noqa: E402
from influence_study.engine.preconditioner import Preconditioner, model_fingerprint  # noqa: E402
from influence_study.engine.scoring import Scores, pairwise_scores, query_gradients, self_scores  # noqa: E402
from influence_study.engine.solvers import PBRF, DataInfSolver, ExactSolver, LissaSolver  # noqa: E402
from influence_study.engine.tasks import ClassificationTask, LanguageModelingTask, RegressionTask, Task  # noqa: E402
from influence_study.engine.tracking import MLP_PATTERNS, select_modules  # noqa: E402

__all__ = [
    "Task", "LanguageModelingTask", "ClassificationTask", "RegressionTask",
    "fit_factors", "Factors", "STRATEGIES", "Preconditioner", "model_fingerprint",
    "pairwise_scores", "self_scores", "query_gradients", "Scores",
    "LissaSolver", "DataInfSolver", "ExactSolver", "PBRF",
    "select_modules", "MLP_PATTERNS",
]
