"""Pairwise and self influence scores, with per-module and per-token decompositions, low-rank query batching,
full-rank re-scoring of each query's top examples, and slices of the training set for sharding.

Sign and scale of every score here: ``score[q, m] = ∇f_q(θ)^T (G + λI)^-1 ∇log p(z_m)``, UNNORMALISED.
Positive means that adding ``z_m`` to the training set raises ``f_q`` (log p(completion | prompt) for a
language-model query). Divide by the number of training sequences N (:meth:`Scores.normalised`) for the change
of f, in nats, from adding one copy of ``z_m``.

Training examples are streamed: memory holds the preconditioned query gradients, one batch of activations and
the ``[queries, examples]`` output, never the training set's gradients.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterable

import torch

from influence_study.engine.conventions import (finish_scores, forced_numerics, make_tracker, reduce_queries,
                                               tracks_bias, weight_columns)
from influence_study.engine.memory_plan import available_memory, check_fits, plan_for_scores
from influence_study.engine.options import (QUERY_GRADIENT_OPTIONS, SELF_SCORE_OPTIONS, ScoreArguments,
                                            check_unused_options, resolve_options)
from influence_study.engine.passes import (backward_gradients, check_finite, iterate, model_device,
                                           per_example_gradients, take)
from influence_study.engine.preconditioner import Preconditioner
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import ModuleTracker, evaluation_mode, select_modules

log = logging.getLogger(__name__)  # a child of the package logger: study.runtime.logged_to records its lines

SIGN_CONVENTION = ("positive = adding the training sequence raises the measurement f; raw scores are "
                   "grad f^T (G + damping I)^-1 grad log p(z), unnormalised (divide by N for one added copy)")


@dataclass
class Scores:
    """Influence scores and how they were computed.

    ``scores``: ``[queries, examples]`` for :func:`pairwise_scores`, ``[examples]`` for :func:`self_scores`
    (raw, see the module docstring for sign and scale). ``train_indices``: the position in the training loader
    of each column. ``per_module``: ``[modules, *scores.shape]`` (sums to ``scores``), in ``module_names``
    order. ``per_token``: ``[queries, examples, tokens]`` (sums over tokens to ``scores``; zero at padding) and
    ``token_mask`` ``[examples, tokens]``. ``metadata``: strategy, damping per module, query rank, counts, and
    ``conventions`` (attention kernel, TF32, task, queries' reduction, N, and the factors' conventions).
    """

    scores: torch.Tensor
    train_indices: torch.Tensor
    module_names: list[str]
    per_module: torch.Tensor | None = None
    per_token: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    metadata: dict = field(default_factory=dict)

    def normalised(self, n_train: int) -> torch.Tensor:
        """Scores divided by the number of training sequences: the change of f from adding one copy (nats)."""
        if n_train < 1:
            raise ValueError(f"n_train: expected the number of training sequences (>= 1), got {n_train}")
        return self.scores / n_train


@dataclass
class _Query:
    """One module's preconditioned query gradients: dense ``[Q, out, in]`` and/or low-rank factors."""

    dense: torch.Tensor | None
    left: torch.Tensor | None = None   # [Q, out, r] (singular values folded in)
    right: torch.Tensor | None = None  # [Q, in, r]
    full_rank: torch.Tensor | None = None  # the unapproximated [Q, out, in], kept for re-scoring

    def for_rescoring(self) -> "_Query":
        """The full-rank query (this one if it was never approximated)."""
        return _Query(self.full_rank if self.full_rank is not None else self.dense)


def _low_rank(dense: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(left [Q, out, r], right [Q, in, r])`` with ``left @ right^T`` the best rank-r approximation of each
    ``dense[q]`` (Eckart-Young): the projection of ``dense[q]`` onto its top-r singular subspace on the smaller
    side. That subspace comes from the eigendecomposition of the small Gram matrix in float64 (4-5x faster than
    a full SVD; float64 keeps every singular value above ~1e-7 of the largest resolved)."""
    wide = dense.shape[-2] < dense.shape[-1]  # out < in: project the columns onto the top left singular vectors
    small = dense if wide else dense.transpose(-1, -2)  # [Q, k, n] with k <= n
    gram = small.double() @ small.double().transpose(-1, -2)  # [Q, k, k]
    basis = torch.linalg.eigh(gram).eigenvectors[..., -rank:].flip(-1).to(dense.dtype)  # [Q, k, r], top first
    projected = small.transpose(-1, -2) @ basis  # [Q, n, r]
    return (basis, projected) if wide else (projected, basis)


# a module's rank-r queries are materialised as a dense [Q, out, in] (faster when tokens per example are many)
# only up to this size: above it the low-rank factors are kept, which is what query batching is for (memory)
DENSE_QUERY_LIMIT_BYTES = 256 * 2 ** 20


def _prepare_queries(preconditioned: dict[str, torch.Tensor], query_rank: int | None, tokens_per_example: int,
                     keep_full_rank: bool) -> dict[str, _Query]:
    """Low-rank factors where ``query_rank`` asks for them. The low-rank product is used token by token when
    that is cheaper than forming per-example gradients, or when the dense form of the module's queries would
    exceed :data:`DENSE_QUERY_LIMIT_BYTES`; otherwise ``U V^T`` is materialised once (the same numbers)."""
    out = {}
    for name, dense in preconditioned.items():
        q, n_out, n_in = dense.shape
        if query_rank is None or query_rank >= min(n_out, n_in):
            out[name] = _Query(dense)
            continue
        left, right = _low_rank(dense, query_rank)
        low_rank_cost = tokens_per_example * q * query_rank * (n_out + n_in)
        dense_cost = (tokens_per_example + q) * n_out * n_in
        full_rank = dense if keep_full_rank else None
        if low_rank_cost < dense_cost or dense.numel() * dense.element_size() > DENSE_QUERY_LIMIT_BYTES:
            out[name] = _Query(None, left, right, full_rank)
        else:
            out[name] = _Query(left @ right.transpose(-1, -2), full_rank=full_rank)
    return out


def _module_scores(query: _Query, a: torch.Tensor, s: torch.Tensor, tokens: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``([Q, B] scores, [Q, B, T] token scores or None)`` of one module for one batch's inputs ``a`` [B, T, in]
    and output gradients ``s`` [B, T, out]."""
    if query.left is not None:
        projected_s = torch.einsum("bto,qor->qbtr", s, query.left)
        projected_a = torch.einsum("bti,qir->qbtr", a, query.right)
        per_token = (projected_s * projected_a).sum(-1)
        return per_token.sum(-1), per_token if tokens else None
    dense = query.dense
    if tokens:
        per_token = (torch.einsum("bti,qoi->qbto", a, dense) * s.unsqueeze(0)).sum(-1)
        return per_token.sum(-1), per_token
    gradients = torch.bmm(s.transpose(1, 2), a)  # [B, out, in]: per-example gradient
    return dense.flatten(1) @ gradients.flatten(1).T, None


def _score_batch(tracker: ModuleTracker, queries: dict[str, _Query], dtype, tokens: bool):
    totals, per_token = [], None
    for name, query in queries.items():
        record = tracker._get(name)
        a, s = record.a.to(dtype), record.s.to(dtype)
        module_total, module_tokens = _module_scores(query, a, s, tokens)
        if not torch.isfinite(module_total).all():
            check_finite({name: a}, "inputs")
            check_finite({name: s}, "training gradients")
            check_finite({name: query.dense if query.dense is not None else query.left}, "preconditioned query gradient")
            raise FloatingPointError(f"NaN or Inf in the scores of module {name!r}")
        record.x = record.s = None  # released as soon as used (no module's tensors wait for the others')
        totals.append(module_total)
        if tokens:
            per_token = module_tokens if per_token is None else per_token + module_tokens
    return torch.stack(totals), per_token


def _resolve_slice(train_slice) -> tuple[int, int | None]:
    if train_slice is None:
        return 0, None
    if isinstance(train_slice, slice):
        if train_slice.step not in (None, 1):
            raise ValueError(f"train_slice: only contiguous slices (step 1) are supported, got {train_slice}")
        start, stop = train_slice.start or 0, train_slice.stop
    else:
        if len(train_slice) != 2:
            raise ValueError(f"train_slice: expected (start, stop) or a slice, got {train_slice!r}")
        start, stop = train_slice
    start = 0 if start is None else start
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop) if v is not None):
        raise ValueError(f"train_slice: start and stop must be integers (stop may be None), got ({start}, {stop})")
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"train_slice: expected 0 <= start <= stop, got ({start}, {stop})")
    return start, stop


def _scoring_pass(model, task, tracker, queries, train_loader, device, dtype, start, stop, tokens, progress,
                  rows: set[int] | None = None, desc="scoring"):
    """Stream ``train_loader``; returns per-module scores [modules, Q, M], token scores, masks and indices."""
    module_parts, token_parts, mask_parts, index_parts = [], [], [], []
    for step in iterate(train_loader, task, device, "train_loader", start=start, stop=stop, progress=progress,
                        desc=desc):
        batch, indices = step.batch, step.indices
        if rows is not None:
            keep = torch.tensor([int(i) in rows for i in indices], dtype=torch.bool)
            if not keep.any():
                continue
            batch, indices = take(batch, keep.to(device)), indices[keep]
        backward_gradients(model, task, tracker, batch, "logp")
        per_module, per_token = _score_batch(tracker, queries, dtype, tokens)
        module_parts.append(per_module.cpu())
        index_parts.append(indices)
        if tokens:
            mask = task.token_mask(batch)
            width = per_token.shape[-1]
            mask = mask.cpu() if mask is not None and mask.shape[-1] == width else torch.ones(per_token.shape[1:], dtype=torch.bool)
            token_parts.append(per_token.cpu())
            mask_parts.append(mask)
    if not module_parts:
        raise ValueError(f"train_loader: no training example in the slice [{start}, {stop})")
    per_module = torch.cat(module_parts, dim=-1)
    indices = torch.cat(index_parts)
    if tokens:
        width = max(t.shape[-1] for t in token_parts)
        token_parts = [torch.nn.functional.pad(t, (0, width - t.shape[-1])) for t in token_parts]
        mask_parts = [torch.nn.functional.pad(m, (0, width - m.shape[-1])) for m in mask_parts]
        tracker.clear()
        return per_module, torch.cat(token_parts, dim=1), torch.cat(mask_parts, dim=0), indices
    tracker.clear()
    return per_module, None, None, indices


def query_gradients(model, task: Task, module_names, query_loader: Iterable,
                    options: ScoreArguments | torch.dtype | None = None, **overrides) -> dict[str, torch.Tensor]:
    """``{module: [Q, out, in(+1)]}``: the gradient of each query's measurement f.

    Of :class:`~influence_study.engine.options.ScoreArguments` (``options`` and keyword ``overrides``) only
    ``dtype`` and ``progress`` apply; a dtype in place of ``options`` is the ``dtype`` (the former positional
    argument)."""
    if isinstance(options, torch.dtype):
        if "dtype" in overrides:
            raise TypeError(f"query_gradients: the dtype given twice ({options} and {overrides['dtype']})")
        options, overrides = None, {**overrides, "dtype": options}
    options = resolve_options(ScoreArguments, options, overrides, "query_gradients", QUERY_GRADIENT_OPTIONS)
    modules = select_modules(model, list(module_names))
    return _query_gradients(model, task, modules, query_loader, options.dtype, options.progress)


def _query_gradients(model, task, modules, query_loader, dtype, progress) -> dict[str, torch.Tensor]:
    grads, _ = per_example_gradients(model, task, query_loader, modules, "measurement", dtype=dtype,
                                     progress=progress, desc="query gradients")
    return grads


def pairwise_scores(model: torch.nn.Module, task: Task, factors: Preconditioner, query_loader: Iterable,
                    train_loader: Iterable, options: ScoreArguments | None = None, **overrides) -> Scores:
    """Influence of every training example on every query: ``scores[q, m] = ∇f_q^T (G + λI)^-1 ∇log p(z_m)``.

    Args:
        model, task: the model and how batches give its loss and measurement.
        factors: what :func:`~influence_study.fit_factors` returned (any strategy, fitted on this model).
        query_loader: batches of queries (for a language model: prompt positions labelled -100).
        train_loader: batches of training examples, in a fixed order; column m of the result is the m-th
            example of this loader (``Scores.train_indices``).
        options: a :class:`~influence_study.engine.options.ScoreArguments` (``None``: its defaults): damping,
            query rank, per-module and per-token shares, re-scoring, a slice of the training set, dtype, summed
            queries, progress bars (their help is on the fields).
        **overrides: fields of :class:`~influence_study.engine.options.ScoreArguments` that replace those of
            ``options`` (``damping=1e-3, query_rank=32``); a name that is not a field raises ``TypeError``.

    Returns:
        :class:`Scores` with ``scores`` ``[queries, examples]``, raw (unnormalised; divided by N with ``n_train``).
        Positive = adding the example raises f.
    """
    started = time.perf_counter()
    options = resolve_options(ScoreArguments, options, overrides, "pairwise_scores")
    query_rank, rescore_top_k = options.query_rank, options.rescore_top_k
    dtype, progress = options.dtype, options.progress
    if query_rank is not None and (not isinstance(query_rank, int) or isinstance(query_rank, bool) or query_rank < 1):
        raise ValueError(f"query_rank: expected a positive integer or None, got {query_rank!r}")
    if rescore_top_k is not None and (not isinstance(rescore_top_k, int) or isinstance(rescore_top_k, bool)
                                      or rescore_top_k < 1):
        raise ValueError(f"rescore_top_k: expected a positive integer or None, got {rescore_top_k!r}")
    start, stop = _resolve_slice(options.train_slice)
    factors.check_model(model)
    device = model_device(model)
    with evaluation_mode(model), forced_numerics(model, options) as numerics:
        factors.check_score_options(options)
        damping_used = factors.damping_values(options.damping)  # validated once; used for every batch below
        direct = factors.direct_pairwise(query_loader, train_loader, damping_used, start, stop)
        if direct is not None:  # a preconditioner that computes the scores itself (the PBRF)
            values, indices = direct
            return finish_scores(Scores(values, indices, list(factors.module_names),
                                        metadata=_metadata(factors, damping_used, None, None, started)),
                                 numerics, task, factors, options, "none")
        modules = select_modules(model, list(factors.module_names))
        if options.memory_check:  # engine.memory_plan: logged; refused before any pass if it cannot fit
            plan = plan_for_scores(task, factors, modules, query_loader, train_loader, options, start, stop,
                                   DENSE_QUERY_LIMIT_BYTES)
            log.info("%s", plan)
            check_fits(plan, *available_memory(device, options.memory_limit))
        grads = weight_columns(_query_gradients(model, task, modules, query_loader, dtype, progress), modules,
                               tracks_bias(factors))
        grads, query_reduction = reduce_queries(grads, options)
        preconditioned = factors.precondition_with(grads, damping_used)
        check_finite(preconditioned, "preconditioned query gradient")
        tokens_per_example = _tokens_per_example(train_loader)
        queries = _prepare_queries(preconditioned, query_rank, tokens_per_example,
                                   keep_full_rank=rescore_top_k is not None)
        del grads, preconditioned  # from here only the prepared queries are held (what the memory plan counts)
        tracker = make_tracker(model, modules, tracks_bias(factors))
        per_token = options.per_token
        with tracker.track():
            per_mod, tok, mask, indices = _scoring_pass(model, task, tracker, queries, train_loader, device, dtype,
                                                        start, stop, per_token, progress)
            total = per_mod.sum(0)
            if rescore_top_k is not None and query_rank is not None:
                k = min(rescore_top_k, total.shape[1])
                top = torch.topk(total, k, dim=1).indices.unique()
                rows = {int(indices[i]) for i in top}
                full = {name: q.for_rescoring() for name, q in queries.items()}
                re_mod, re_tok, _, re_idx = _scoring_pass(model, task, tracker, full, train_loader, device, dtype,
                                                          start, stop, per_token, False, rows, "re-scoring")
                where = {int(i): n for n, i in enumerate(indices)}
                columns = torch.tensor([where[int(i)] for i in re_idx])
                per_mod[:, :, columns] = re_mod
                if per_token:
                    tok[:, columns, :re_tok.shape[-1]] = re_tok
                total = per_mod.sum(0)
    meta = _metadata(factors, damping_used, query_rank, rescore_top_k, started)
    return finish_scores(Scores(total, indices, list(modules), per_mod if options.per_module else None, tok, mask,
                                meta), numerics, task, factors, options, query_reduction)


def self_scores(model: torch.nn.Module, task: Task, factors: Preconditioner, train_loader: Iterable,
                options: ScoreArguments | None = None, **overrides) -> Scores:
    """Self-influence ``∇log p(z_m)^T (G + λI)^-1 ∇log p(z_m)`` of every training example (``scores``
    ``[examples]``, raw, non-negative for a positive-definite preconditioner).

    Of :class:`~influence_study.engine.options.ScoreArguments` (``options`` and keyword ``overrides``) it takes
    ``damping``, ``per_module``, ``train_slice``, ``dtype``, ``progress``, ``n_train``, ``attention_kernel``,
    ``tf32``, ``memory_check`` and ``memory_limit``; another keyword raises ``TypeError``, another field set in
    ``options`` ``ValueError``."""
    started = time.perf_counter()
    options = resolve_options(ScoreArguments, options, overrides, "self_scores", SELF_SCORE_OPTIONS)
    check_unused_options(options, SELF_SCORE_OPTIONS, "self_scores")
    dtype = options.dtype
    start, stop = _resolve_slice(options.train_slice)
    factors.check_model(model)
    device = model_device(model)
    modules = select_modules(model, list(factors.module_names))
    damping_used = factors.damping_values(options.damping)  # validated once; used for every batch below
    if options.memory_check:  # engine.memory_plan: logged; refused before any pass if it cannot fit
        plan = plan_for_scores(task, factors, modules, None, train_loader, options)
        log.info("%s", plan)
        check_fits(plan, *available_memory(device, options.memory_limit))
    tracker = make_tracker(model, modules, tracks_bias(factors))
    parts, index_parts = [], []
    with evaluation_mode(model), forced_numerics(model, options) as numerics:
        with tracker.track():
            for step in iterate(train_loader, task, device, "train_loader", start=start, stop=stop,
                                progress=options.progress, desc="self-influence"):
                backward_gradients(model, task, tracker, step.batch, "logp")
                grads = tracker.gradients(dtype)
                check_finite(grads, "training gradients")
                preconditioned = factors.precondition_with(grads, damping_used)
                parts.append(torch.stack([(preconditioned[n] * grads[n]).sum((1, 2)) for n in modules]).cpu())
                index_parts.append(step.indices)
    per_mod = torch.cat(parts, dim=-1)
    meta = _metadata(factors, damping_used, None, None, started)
    return finish_scores(Scores(per_mod.sum(0), torch.cat(index_parts), list(modules),
                                per_mod if options.per_module else None, metadata=meta),
                         numerics, task, factors, options, None)


def _tokens_per_example(loader) -> int:
    """A rough token count per example (from the first batch's ``input_ids`` if any), for the cost model."""
    try:
        first = next(iter(loader))
    except (StopIteration, TypeError):
        return 1
    ids = first.get("input_ids") if isinstance(first, dict) else None
    return int(ids.shape[-1]) if torch.is_tensor(ids) and ids.dim() == 2 else 1


def _metadata(factors: Preconditioner, damping, query_rank, rescore_top_k, started) -> dict:
    """What :class:`Scores` records: strategy, damping per module, query rank, sign and normalisation, the model
    fingerprint and the seconds taken."""
    if isinstance(damping, dict):
        damping = {k: float(v) for k, v in damping.items()}
    log.info("scores (%s) in %.1f s", factors.strategy, time.perf_counter() - started)
    return {"strategy": factors.strategy, "damping": damping, "query_rank": query_rank,
            "rescore_top_k": rescore_top_k, "sign": SIGN_CONVENTION, "normalisation": "raw",
            "model_fingerprint": factors.metadata.get("model_fingerprint"),
            "seconds": round(time.perf_counter() - started, 3)}
