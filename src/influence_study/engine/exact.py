"""Dense damped solves over all tracked parameters: the exact references of the approximations.

- :class:`ExactSolver`: the dense Gauss-Newton matrix ``G = E_seq[J^T H_out J]``, built per example from the Jacobian
  of the outputs and the Hessian of the loss on the outputs (:func:`gauss_newton_matrix`), solved with
  ``torch.linalg``; EK-FAC approximates it.
- :class:`EmpiricalFisherSolver`: the dense empirical Fisher ``(1/n) Σ_i g_i g_i^T`` of per-example gradients (the
  matrix DataInf approximates: its "exact" reference).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch

from influence_study.engine.damping import gradient_damping, mean_damping
from influence_study.engine.functional import FunctionalModel
from influence_study.engine.passes import check_finite, iterate, model_device
from influence_study.engine.preconditioner import Preconditioner


def gauss_newton_matrix(functional: FunctionalModel, loader: Iterable, max_examples: int | None = None,
                        block_diagonal: bool = False, progress: bool = False) -> tuple[torch.Tensor, int]:
    """``(G [P, P] float64, number of examples)``: the Gauss-Newton matrix averaged over the examples of ``loader``
    (``block_diagonal``: only its within-module blocks)."""
    device = model_device(functional.model)
    matrix, n = None, 0
    for step in iterate(loader, functional.task, device, "fit_factors(loader)", max_examples, progress=progress,
                        desc="exact Gauss-Newton"):
        part = functional.ggn_matrix(step.batch)
        matrix = part if matrix is None else matrix + part
        n += step.size
    matrix = matrix / n
    if block_diagonal:
        mask = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in functional.sizes])
        matrix = matrix * mask.to(matrix.device)
    check_finite({"all tracked modules": matrix}, "Gauss-Newton matrix")
    return matrix, n


class ExactSolver(Preconditioner):
    """Dense damped Gauss-Newton solve over all tracked parameters (``matrix`` [P, P], float64).

    ``block_diagonal=True`` keeps only the within-module blocks (the structure EK-FAC assumes)."""

    strategy = "exact"

    def __init__(self, functional: FunctionalModel, matrix: torch.Tensor, metadata: dict):
        self.functional = functional
        self.matrix = matrix
        self.metadata = metadata
        self.module_names = list(functional.modules)

    def default_damping(self):
        """0.1 × the mean diagonal entry of each module's block of the matrix."""
        diagonal = torch.split(torch.diagonal(self.matrix), self.functional.sizes)
        return {name: mean_damping(d) for name, d in zip(self.module_names, diagonal)}

    def _precondition(self, grads, damping):
        first = grads[self.module_names[0]]
        flat = self.functional.flatten(grads).to(self.matrix.device, self.matrix.dtype)
        diag = torch.cat([torch.full((size,), damping[n], dtype=self.matrix.dtype, device=self.matrix.device)
                          for n, size in zip(self.module_names, self.functional.sizes)])
        solved = torch.linalg.solve(self.matrix + torch.diag(diag), flat.T).T
        return {n: t.to(first.device, first.dtype) for n, t in self.functional.unflatten(solved).items()}


class EmpiricalFisherSolver(Preconditioner):
    """Dense damped empirical Fisher ``(1/n) Σ_i g_i g_i^T``, solved exactly (``strategy="exact"`` with
    ``curvature="empirical_fisher"``).

    ``gradients[module]`` is ``[n, out, in(+1)]``. ``block_diagonal=True`` keeps one block per module (the
    layer-wise structure DataInf assumes) and stores only those blocks; otherwise one matrix over all modules.
    Default damping per module: 0.1 × the mean diagonal entry of its block (= 0.1 × the mean squared gradient
    entry, DataInf's rule)."""

    strategy = "exact"

    def __init__(self, gradients: Mapping[str, torch.Tensor], block_diagonal: bool, metadata: dict):
        self.module_names = list(gradients)
        self.shapes = {name: tuple(g.shape[1:]) for name, g in gradients.items()}
        flat = {name: g.flatten(1).double() for name, g in gradients.items()}
        n = len(next(iter(flat.values())))
        self.groups = [[name] for name in self.module_names] if block_diagonal else [self.module_names]
        self.matrices = []
        for group in self.groups:
            g = torch.cat([flat[name] for name in group], dim=1)
            self.matrices.append(g.T @ g / n)
        check_finite({", ".join(group): m for group, m in zip(self.groups, self.matrices)}, "empirical Fisher")
        self._default = gradient_damping(flat)
        self.metadata = metadata

    def default_damping(self):
        """0.1 × the mean diagonal entry of each module's block (the mean squared gradient entry)."""
        return dict(self._default)

    def _precondition(self, grads, damping):
        out = {}
        for group, matrix in zip(self.groups, self.matrices):
            first = grads[group[0]]
            v = torch.cat([grads[name].flatten(1) for name in group], dim=1).to(matrix.device, matrix.dtype)
            sizes = [math.prod(self.shapes[name]) for name in group]
            diag = torch.cat([torch.full((size,), damping[name], dtype=matrix.dtype, device=matrix.device)
                              for name, size in zip(group, sizes)])
            solved = torch.linalg.solve(matrix + torch.diag(diag), v.T).T
            for name, piece in zip(group, torch.split(solved, sizes, dim=1)):
                out[name] = piece.reshape(grads[name].shape).to(first.device, first.dtype)
        return out
