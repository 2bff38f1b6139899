"""Solvers that use no Kronecker factors: ``lissa``, ``datainf``, ``exact`` and ``pbrf``, and how they are made.

All work in the same per-module gradient-matrix space as the factors (``[out, in(+1)]`` per tracked module)
and are created with :func:`~influence_study.fit_factors` (which calls :func:`make_solver`). ``G`` is the
Gauss-Newton Hessian of the per-sequence summed loss averaged over sequences, ``G = E_seq[J^T H_out J]``, the same
curvature the factors approximate.

- ``lissa`` (:mod:`~influence_study.engine.lissa`): the stochastic Neumann series
  ``h_j = v + (I - (G_batch + λ)/scale) h_{j-1}``, result ``h_depth / scale``, with exact Gauss-Newton-vector
  products on mini-batches (``torch.func`` jvp/vjp).
- ``datainf`` (:mod:`~influence_study.engine.datainf`): Kwon et al.'s closed form per module, on per-example
  gradients ``g_i`` (true labels by default: the empirical Fisher, as in the paper):
  ``(G + λI)^-1 v ≈ (1/λ)(v - (1/n) Σ_i (g_i·v)/(λ + |g_i|^2) g_i)``.
- ``exact`` (:mod:`~influence_study.engine.exact`): the dense damped Gauss-Newton matrix over all tracked
  parameters, built per example from the Jacobian of the outputs and the Hessian of the loss on the outputs, and
  solved with ``torch.linalg``; with ``curvature="empirical_fisher"`` the dense damped empirical Fisher
  ``(1/n) Σ_i g_i g_i^T`` of the per-example gradients of the true labels' loss instead (the matrix DataInf
  approximates: its "exact" reference).
- ``pbrf`` (:mod:`~influence_study.engine.pbrf`): ground truth by optimisation of the proximal Bregman response
  function with Adam (small models).

The solver classes are importable from here as well as from their modules.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from influence_study.engine.damping import mean_damping
from influence_study.engine.datainf import DataInfSolver
from influence_study.engine.exact import EmpiricalFisherSolver, ExactSolver, gauss_newton_matrix
from influence_study.engine.functional import FunctionalModel
from influence_study.engine.lissa import LissaSolver
from influence_study.engine.options import SOLVER_STRATEGIES, STRATEGY_OPTIONS, FactorArguments
from influence_study.engine.passes import example_gradient_batches, per_example_gradients
from influence_study.engine.pbrf import PBRF
from influence_study.engine.preconditioner import Preconditioner, fitted_metadata
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import evaluation_mode

__all__ = ["DataInfSolver", "EmpiricalFisherSolver", "ExactSolver", "FunctionalModel", "LissaSolver", "PBRF",
           "gradient_solver", "make_solver", "sampled_fisher_damping"]

CURVATURES = ("gauss_newton", "empirical_fisher")


def sampled_fisher_damping(model, task, loader, modules, max_examples, seed, progress) -> dict[str, float]:
    """0.1 × the mean diagonal of the sampled Fisher per module (the default damping rule without factors), from
    per-example gradients streamed in float64 (O(batch) memory)."""
    squares: dict[str, torch.Tensor] = {}
    n = 0
    for grads in example_gradient_batches(model, task, loader, modules, "sampled", max_examples, torch.float64, seed,
                                          progress, desc="damping estimate"):
        for name, g in grads.items():
            squares[name] = squares.get(name, 0) + (g ** 2).sum(0)
        n += len(next(iter(grads.values())))
    return {name: mean_damping(s / n) for name, s in squares.items()}


def gradient_solver(strategy: str, model: nn.Module, modules: Mapping[str, nn.Module],
                    gradients: Mapping[str, torch.Tensor], sampled_labels: bool = False,
                    curvature: str = "empirical_fisher", block_diagonal: bool = False) -> Preconditioner:
    """The solvers built from per-example gradients alone, from gradients the caller already has
    (``gradients[module]``: ``[n, out, in(+1)]`` of the tracked ``modules`` of ``model``, e.g. from
    :func:`~influence_study.engine.passes.per_example_gradients`): ``datainf``, or ``exact`` with
    ``curvature="empirical_fisher"``. Their sign does not matter (both use only ``g gᵀ`` and ``(g·v) g``).
    ``sampled_labels`` only records how the gradients were made."""
    missing = sorted(set(modules) - set(gradients))
    if missing:
        raise ValueError(f"gradients: no per-example gradients for the tracked module(s) {missing}")
    gradients = {name: gradients[name] for name in modules}
    n = len(next(iter(gradients.values())))
    if strategy == "datainf":
        meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, sampled_labels=bool(sampled_labels))
        return DataInfSolver(gradients, meta)
    if strategy == "exact" and curvature == "empirical_fisher":
        meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, curvature=curvature,
                               block_diagonal=bool(block_diagonal))
        return EmpiricalFisherSolver(gradients, bool(block_diagonal), meta)
    raise ValueError(f"gradient_solver: builds 'datainf' or 'exact' with curvature='empirical_fisher', not "
                     f"{strategy!r} with curvature={curvature!r}")


def make_solver(model: nn.Module, task: Task, loader: Iterable, modules: Mapping[str, nn.Module],
                options: FactorArguments) -> Preconditioner:
    """Create the solver ``options.strategy`` (see the module docstring) on the tracked ``modules``; called by
    :func:`~influence_study.fit_factors`, which has checked that ``options`` sets only the strategy's own
    options (:data:`~influence_study.engine.options.STRATEGY_OPTIONS`)."""
    strategy = options.strategy
    if strategy not in SOLVER_STRATEGIES:
        raise ValueError(f"make_solver: expected one of {', '.join(SOLVER_STRATEGIES)}, got {strategy!r}")
    max_examples, seed, progress = options.max_examples, options.seed, options.progress
    with evaluation_mode(model):
        if strategy == "datainf":
            kind = "sampled" if options.sampled_labels else "loss"  # the paper: true labels (empirical Fisher)
            grads, _ = per_example_gradients(model, task, loader, modules, kind, max_examples, options.dtype, seed,
                                             progress, desc="datainf gradients")
            return gradient_solver(strategy, model, modules, grads, sampled_labels=bool(options.sampled_labels))
        if strategy == "exact" and options.curvature not in CURVATURES:
            raise ValueError(f"curvature: expected 'gauss_newton' or 'empirical_fisher', got {options.curvature!r}")
        if strategy == "exact" and options.curvature == "empirical_fisher":
            grads, _ = per_example_gradients(model, task, loader, modules, "loss", max_examples, torch.float64, seed,
                                             progress, desc="empirical Fisher gradients")
            return gradient_solver(strategy, model, modules, grads, curvature=options.curvature,
                                   block_diagonal=options.block_diagonal)
        functional = FunctionalModel(model, task, modules)
        if strategy == "exact":
            matrix, n = gauss_newton_matrix(functional, loader, max_examples, options.block_diagonal, progress)
            meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, curvature=options.curvature,
                                   block_diagonal=bool(options.block_diagonal))
            return ExactSolver(functional, matrix, meta)
        if strategy == "lissa":
            meta = fitted_metadata(model, modules, strategy, depth=options.depth, scale=options.scale)

            def damping_default():  # only when a caller leaves the damping to the solver (a pass over the data)
                with evaluation_mode(model):
                    return sampled_fisher_damping(model, task, loader, modules, max_examples, seed, progress)

            return LissaSolver(functional, loader, damping_default, options.depth, options.scale, meta, progress, seed)
        damping_default = sampled_fisher_damping(model, task, loader, modules, max_examples, seed, progress)
        meta = fitted_metadata(model, modules, strategy, **{k: getattr(options, k) for k in STRATEGY_OPTIONS["pbrf"]})
        return PBRF(functional, loader, damping_default, options.epsilon, options.steps, options.learning_rate,
                    options.central, max_examples, meta, progress)
