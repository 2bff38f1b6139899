"""The damping rule of the paper, in one place: ``λ = 0.1 × the mean eigenvalue`` of a module's curvature.

Each curvature gives the mean of its eigenvalues in its own way, all of them the same rule:

- (E)K-FAC: the mean of ``Λ`` (the eigenvalues in the Kronecker eigenbasis);
- the diagonal Fisher and a dense matrix: the mean diagonal entry (= the mean eigenvalue, the trace over the size);
- per-example gradients ``g_i`` (DataInf, the empirical Fisher): the mean squared gradient entry (= the mean diagonal
  entry of ``(1/n) Σ_i g_i g_i^T``).
"""

from __future__ import annotations

import math
from typing import Mapping

import torch

#: the paper's damping is this factor times the mean eigenvalue of the module's curvature
DAMPING_FACTOR = 0.1


def mean_damping(curvature: torch.Tensor) -> float:
    """``DAMPING_FACTOR × the mean of curvature``, averaged in float64: ``curvature`` holds a module's eigenvalues,
    the diagonal of its curvature matrix or its squared gradient entries (see the module docstring)."""
    return DAMPING_FACTOR * curvature.double().mean().item()


def gradient_damping(gradients: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Per module, ``DAMPING_FACTOR × the mean squared entry`` of its per-example gradients ``[n, ...]`` (the mean
    diagonal entry of the empirical Fisher: DataInf's rule, Kwon et al.)."""
    return {name: mean_damping(g.double() ** 2) for name, g in gradients.items()}


def check_damping(damping) -> None:
    """``None`` (the default rule) or a positive finite number; ``ValueError`` otherwise."""
    if damping is None:
        return
    value = float(damping)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"damping: expected a positive number "
                         f"(or None for {DAMPING_FACTOR} x mean eigenvalue), got {damping}")
