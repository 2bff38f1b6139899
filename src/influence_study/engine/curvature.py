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


def eigendecompose(blocks: Sequence[torch.Tensor], dtype: torch.dtype = torch.float64
                   ) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Eigen-decomposition of each symmetric block: ``(eigenvector blocks, all eigenvalues concatenated)``.
    Computed in ``dtype`` (float64 by default, for stability), returned in the input dtype."""
    vectors, values = [], []
    for block in blocks:
        lam, q = torch.linalg.eigh(block.to(dtype))
        vectors.append(q.to(block.dtype))
        values.append(lam.to(block.dtype))
    return vectors, torch.cat(values)


def rotate(matrix: torch.Tensor, q_s: Sequence[torch.Tensor], q_a: Sequence[torch.Tensor],
           inverse: bool = False) -> torch.Tensor:
    """``Q_S^T M Q_A`` (or, with ``inverse=True``, ``Q_S M Q_A^T``) for block-diagonal ``Q_S`` and ``Q_A``
    given as blocks; ``matrix`` may have leading batch dimensions."""
    return rotate_columns(rotate_rows(matrix, q_s, inverse), q_a, inverse)


def rotate_rows(matrix: torch.Tensor, q_s: Sequence[torch.Tensor], inverse: bool = False) -> torch.Tensor:
    """``Q_S^T M`` (``inverse``: ``Q_S M``), the left half of :func:`rotate`."""
    left = [(q.T if not inverse else q) for q in q_s]
    if len(left) == 1:
        return left[0] @ matrix
    return torch.cat([lq @ matrix[..., sl, :] for lq, sl in zip(left, _offsets(q_s))], dim=-2)


def rotate_columns(matrix: torch.Tensor, q_a: Sequence[torch.Tensor], inverse: bool = False) -> torch.Tensor:
    """``M Q_A`` (``inverse``: ``M Q_A^T``), the right half of :func:`rotate`; for a ``matrix`` of row vectors
    (tokens ``[.., T, in]``) it rotates each row into the eigenbasis (``Q_A^T a_t``)."""
    right = [(q if not inverse else q.T) for q in q_a]
    if len(right) == 1:
        return matrix @ right[0]
    return torch.cat([matrix[..., :, sl] @ rq for rq, sl in zip(right, _offsets(q_a))], dim=-1)


def token_rotation_is_cheaper(tokens: int, q_s: Sequence[torch.Tensor], q_a: Sequence[torch.Tensor]) -> bool:
    """Whether rotating each of ``tokens`` tokens' ``s_t`` and ``a_t`` into the eigenbasis and then forming
    ``(S Q_S)^T (A Q_A)`` takes fewer multiply-adds than forming ``DW = S^T A`` and rotating it (``Q_S^T DW Q_A``)."""
    n_out, n_in = sum(q.shape[0] for q in q_s), sum(q.shape[0] for q in q_a)
    s_square, a_square = sum(q.shape[0] ** 2 for q in q_s), sum(q.shape[0] ** 2 for q in q_a)
    gradient_route = tokens * n_out * n_in + s_square * n_in + n_out * a_square
    token_route = tokens * (s_square + a_square + n_out * n_in)
    return token_route < gradient_route


def squared_rotation_sum(a: torch.Tensor, s: torch.Tensor, q_s: Sequence[torch.Tensor],
                         q_a: Sequence[torch.Tensor], token_rotation: bool = False) -> torch.Tensor:
    """``sum_b (Q_S^T DW_b Q_A)^2`` ``[out, in]`` over the examples of inputs ``a`` [B, T, in] and output
    gradients ``s`` [B, T, out], with ``DW_b = s_b^T a_b`` (the EK-FAC eigenvalue correction of one batch).

    By default ``DW`` is formed and rotated (the reference order; one ``[B, out, in]`` intermediate is freed
    before the next is made). With ``token_rotation`` and where :func:`token_rotation_is_cheaper`, the tokens
    are rotated first and ``(S Q_S)^T (A Q_A)`` formed in one batched product: the same numbers up to float
    round-off (relative ~1e-6 in float32), with fewer multiply-adds and no unrotated ``DW``."""
    if token_rotation and token_rotation_is_cheaper(a.shape[1], q_s, q_a):
        rotated = torch.bmm(rotate_columns(s, q_s).transpose(1, 2), rotate_columns(a, q_a))
    else:
        rotated = rotate_rows(torch.bmm(s.transpose(1, 2), a), q_s)
        rotated = rotate_columns(rotated, q_a)
    return rotated.square_().sum(0)


def _offsets(blocks: Sequence[torch.Tensor]) -> list[slice]:
    out, start = [], 0
    for block in blocks:
        out.append(slice(start, start + block.shape[0]))
        start += block.shape[0]
    return out


def eigenbasis_precondition(matrix: torch.Tensor, q_s: Sequence[torch.Tensor], q_a: Sequence[torch.Tensor],
                            eigenvalues: torch.Tensor, damping: float) -> torch.Tensor:
    """``Q_S [(Q_S^T V Q_A) ⊘ (Λ + λ)] Q_A^T``: the (E)K-FAC damped inverse applied to ``V``."""
    rotated = rotate(matrix, q_s, q_a).div_(eigenvalues + damping)
    return rotate(rotated, q_s, q_a, inverse=True)


def kfac_eigenvalues(s_eigenvalues: torch.Tensor, a_eigenvalues: torch.Tensor) -> torch.Tensor:
    """K-FAC eigenvalues ``λ_S λ_A^T`` ``[out, in]`` (clamped at zero: covariances are PSD)."""
    return torch.outer(s_eigenvalues.clamp(min=0), a_eigenvalues.clamp(min=0))
