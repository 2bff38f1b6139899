"""Curvature factors: the pure linear algebra of K-FAC and EK-FAC, per tracked module.

Notation (PAPER.md section 1): for one module with input ``a`` (a 1 appended for the bias) and output
gradient ``s``, the per-sequence gradient is ``DW = sum_t s_t a_t^T`` ``[out, in]``.

- ``A = E_tokens[a a^T]`` (average over real tokens) and ``S = sum_tokens[s s^T] / n_sequences``, so that under
  the K-FAC assumption (tokens independent, ``a`` independent of ``s``) ``A ⊗ S`` approximates the per-sequence
  Fisher ``E_seq[vec(DW) vec(DW)^T]`` (the token count per sequence goes into ``S``).
- EK-FAC: ``A = Q_A diag(λ_A) Q_A^T``, ``S = Q_S diag(λ_S) Q_S^T``, then refit the eigenvalues on per-sequence
  gradients: ``Λ_ij = E_seq[(Q_S^T DW Q_A)_ij^2]``. K-FAC uses ``Λ = λ_S λ_A^T``.
- Inverse-Hessian-vector product of ``V`` ``[.., out, in]``: ``Q_S [(Q_S^T V Q_A) ⊘ (Λ + λ)] Q_A^T``.
- Block-diagonal option: ``A`` and ``S`` keep only ``blocks`` diagonal blocks each; ``Q_A`` and ``Q_S`` are then
  block-diagonal and stored as their blocks.

The functions here take explicit tensors so tests can check them against dense references; the default damping
of every curvature is :func:`~influence_study.engine.damping.mean_damping`.
"""

from __future__ import annotations

from typing import Sequence

import torch


def block_slices(size: int, blocks: int) -> list[slice]:
    """``blocks`` contiguous slices covering ``range(size)`` with sizes differing by at most one."""
    if blocks < 1 or blocks > size:
        raise ValueError(f"blocks: expected 1 <= blocks <= {size} (the smallest factor dimension), got {blocks}")
    bounds = torch.linspace(0, size, blocks + 1).round().long().tolist()
    return [slice(lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]


def diagonal_blocks(matrix: torch.Tensor, blocks: int) -> list[torch.Tensor]:
    """The ``blocks`` diagonal blocks of a square matrix."""
    return [matrix[sl, sl].clone() for sl in block_slices(matrix.shape[0], blocks)]


def eigendecompose(blocks: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Eigen-decomposition of each symmetric block: ``(eigenvector blocks, all eigenvalues concatenated)``.
    Computed in float64 for stability, returned in the input dtype."""
    vectors, values = [], []
    for block in blocks:
        lam, q = torch.linalg.eigh(block.double())
        vectors.append(q.to(block.dtype))
        values.append(lam.to(block.dtype))
    return vectors, torch.cat(values)


def rotate(matrix: torch.Tensor, q_s: Sequence[torch.Tensor], q_a: Sequence[torch.Tensor],
           inverse: bool = False) -> torch.Tensor:
    """``Q_S^T M Q_A`` (or, with ``inverse=True``, ``Q_S M Q_A^T``) for block-diagonal ``Q_S`` and ``Q_A``
    given as blocks; ``matrix`` may have leading batch dimensions."""
    rows = _offsets(q_s)
    cols = _offsets(q_a)
    left = [(q.T if not inverse else q) for q in q_s]
    right = [(q if not inverse else q.T) for q in q_a]
    if len(left) == 1:
        out = left[0] @ matrix
    else:
        out = torch.cat([lq @ matrix[..., sl, :] for lq, sl in zip(left, rows)], dim=-2)
    if len(right) == 1:
        return out @ right[0]
    return torch.cat([out[..., :, sl] @ rq for rq, sl in zip(right, cols)], dim=-1)


def _offsets(blocks: Sequence[torch.Tensor]) -> list[slice]:
    out, start = [], 0
    for block in blocks:
        out.append(slice(start, start + block.shape[0]))
        start += block.shape[0]
    return out


def eigenbasis_precondition(matrix: torch.Tensor, q_s: Sequence[torch.Tensor], q_a: Sequence[torch.Tensor],
                            eigenvalues: torch.Tensor, damping: float) -> torch.Tensor:
    """``Q_S [(Q_S^T V Q_A) ⊘ (Λ + λ)] Q_A^T``: the (E)K-FAC damped inverse applied to ``V``."""
    rotated = rotate(matrix, q_s, q_a) / (eigenvalues + damping)
    return rotate(rotated, q_s, q_a, inverse=True)


def kfac_eigenvalues(s_eigenvalues: torch.Tensor, a_eigenvalues: torch.Tensor) -> torch.Tensor:
    """K-FAC eigenvalues ``λ_S λ_A^T`` ``[out, in]`` (clamped at zero: covariances are PSD)."""
    return torch.outer(s_eigenvalues.clamp(min=0), a_eigenvalues.clamp(min=0))
