"""Influence of fine-tuning examples on test loss, on the LoRA parameters, by several methods (DataInf's setting).

Every method approximates ``(G + λI)^-1`` for the same per-module damping ``λ_l = 0.1 × mean squared gradient
entry`` (DataInf's rule) and is scored the same way, ``score[t, m] = ∇log p(test_t)^T (G + λI)^-1 ∇log p(train_m)``
(the study's sign: positive = adding the training example raises the test example's log-likelihood, i.e. helps;
DataInf's own sign is the opposite). The methods:

- ``identity``: the gradient dot product (no curvature);
- ``datainf``: Kwon et al.'s Sherman-Morrison closed form on the empirical Fisher;
- ``ekfac``: EK-FAC fitted on the true labels (the empirical Fisher, the matrix the others approximate);
- ``lissa``: the stochastic Neumann series with Gauss-Newton-vector products (the engine's LiSSA). By default it is
  solved for the summed test gradient only (one solve instead of one per test example, so it has no per-test
  scores); ``per_test`` solves every test example (the cost grows with the number of test examples);
- ``exact``: the dense damped empirical Fisher per module, solved exactly (the reference).

The influence on the total test loss of a training example is the sum of its column.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from influence_study.engine.damping import gradient_damping
from influence_study.engine.factors import fit_factors
from influence_study.engine.passes import per_example_gradients
from influence_study.engine.solvers import gradient_solver
from influence_study.engine.tasks import LanguageModelingTask
from influence_study.engine.tracking import evaluation_mode, select_modules
from influence_study.finetune.lora import LORA_MODULES

METHODS = ("identity", "datainf", "ekfac", "lissa", "exact")
# Methods whose preconditioner costs one solve per query: only the summed test gradient is solved unless their
# options ask for ``per_test``.
PER_QUERY_COST = ("lissa",)
METHOD_OPTIONS = {"identity": {}, "datainf": {"sampled_labels": False}, "ekfac": {"sampled_labels": False},
                  "lissa": {}, "exact": {"curvature": "empirical_fisher", "block_diagonal": True}}
# Methods built from the per-example training gradients alone: made from the ones already computed (their fit
# time is then only building the solver; the gradients are counted once, in ``gradient_seconds``).
FROM_GRADIENTS = ("datainf", "exact")


@dataclass
class MethodResult:
    """Scores of one method: ``pairwise`` ``[test, train]`` (``None`` when only the summed test gradient was
    solved, see :data:`PER_QUERY_COST`), ``total``
    ``[train]`` (influence on the summed test log-likelihood) and the seconds spent fitting and solving."""

    pairwise: np.ndarray | None
    total: np.ndarray
    fit_seconds: float
    solve_seconds: float


@dataclass
class LoraInfluence:
    """Every method's scores with the shared cost of the per-example gradients and the damping used."""

    methods: dict[str, MethodResult] = field(default_factory=dict)
    gradient_seconds: float = 0.0
    damping: dict[str, float] = field(default_factory=dict)


def _flat(grads: Mapping[str, torch.Tensor], names: Sequence[str]) -> torch.Tensor:
    return torch.cat([grads[name].flatten(1).double() for name in names], dim=1)


def datainf_damping(train_gradients: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """``λ_l = 0.1 × mean squared entry`` of module ``l``'s per-example training gradients (Kwon et al.)."""
    return gradient_damping(train_gradients)


def lora_influence(model: torch.nn.Module, train_batches: Sequence[Mapping], test_batches: Sequence[Mapping],
                   methods: Sequence[str] = METHODS, lissa: Mapping | None = None, modules=LORA_MODULES,
                   seed: int = 0, dtype: torch.dtype = torch.float32, progress: bool = False) -> LoraInfluence:
    """Scores of every training example (in ``train_batches`` order) on every test example (in ``test_batches``
    order) by each of ``methods``, on the tracked ``modules`` (default: the LoRA matrices).

    ``lissa`` holds the LiSSA options (``depth``, ``scale``), ``batches`` (how many training batches its
    Gauss-Newton-vector products cycle over; default all) and ``per_test`` (solve every test example, not only
    their sum; default false). ``dtype``: of the per-example gradients (scores are accumulated in float64).
    ``datainf`` and ``exact`` are built from the training gradients computed here (not computed again).
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"finetune.methods: unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
    task = LanguageModelingTask()
    selected = select_modules(model, list(modules))
    names = list(selected)
    result = LoraInfluence()
    with evaluation_mode(model):  # no dropout in the gradients
        started = time.perf_counter()
        train, _ = per_example_gradients(model, task, train_batches, selected, "logp", dtype=dtype, progress=progress,
                                         desc="training gradients")
        test, _ = per_example_gradients(model, task, test_batches, selected, "measurement", dtype=dtype,
                                        progress=progress, desc="test gradients")
        result.gradient_seconds = time.perf_counter() - started
        result.damping = datainf_damping(train)
        train_flat = _flat(train, names)
        summed = {name: g.sum(0, keepdim=True) for name, g in test.items()}
        lissa = dict(lissa or {})
        lissa_batches = lissa.pop("batches", None)
        summed_only = set() if lissa.pop("per_test", False) else set(PER_QUERY_COST)
        for method in methods:
            started = time.perf_counter()
            options = dict(METHOD_OPTIONS[method])
            loader = train_batches
            if method == "lissa":
                options.update(lissa)
                loader = list(train_batches)[:lissa_batches] if lissa_batches else train_batches
            if method in FROM_GRADIENTS:
                preconditioner = gradient_solver(method, model, selected, train, **options)
            else:
                preconditioner = fit_factors(model, task, loader, strategy=method, modules=names, seed=seed,
                                             dtype=dtype, progress=progress, **options)
            fitted = time.perf_counter()
            queries = summed if method in summed_only else test
            solved = _flat(preconditioner.precondition(queries, result.damping), names)
            scores = (solved @ train_flat.T).cpu().numpy()
            done = time.perf_counter()
            pairwise = None if method in summed_only else scores
            total = scores[0] if method in summed_only else scores.sum(0)
            result.methods[method] = MethodResult(pairwise, total, fitted - started, done - fitted)
    return result
