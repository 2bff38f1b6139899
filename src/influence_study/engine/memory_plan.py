"""The memory plan of an engine stage (fitting factors, pairwise scoring with or without token scores,
self-influence): the bytes it needs per tracked module and in total, from the module shapes, before any pass over
the data; and the check that refuses a stage, naming the module, that cannot fit.

Columns, for a module whose gradient matrix is ``[out, in(+1)]`` and batches of ``B`` examples of ``T`` tokens:
``factors`` what the strategy stores in the factor dtype (kfac/ekfac: A and S covariance and eigenvector blocks,
their eigenvalues and ``Λ`` [out, in]; diagonal: [out, in]); ``gradients`` the per-example gradients
``[B, out, in]`` of a training batch, where the stage forms them; ``queries`` the preconditioned query gradients as
scoring keeps them (dense or rank-r factors); ``activations`` the inputs ``a`` [B, T, in] and output gradients
``s`` [B, T, out] the tracker holds; ``workspace`` the covariance sums and the heaviest transient step (the float64
copy, eigenvectors and LAPACK ``syevd`` workspace of ``torch.linalg.eigh``, rotations into the eigenbasis, dtype
copies); ``scores`` the module's share of the output.

A stage runs in phases (covariances, eigendecomposition, ...): each module holds some tensors for a whole phase,
and one module at a time adds a transient step, so a phase needs the held bytes of every module plus the largest
transient step. The total is the largest phase; a module's ``need`` is its own worst phase (its columns are not all
held at once). Not counted: what is already in memory (the parameters; for scoring, the fitted factors) and the
model's own forward/backward graph, which depends on the architecture, not on the engine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple

import torch
from torch import nn

from influence_study.engine.conventions import tracks_bias
from influence_study.engine.curvature import block_slices, token_rotation_is_cheaper
from influence_study.engine.options import FactorArguments
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import module_dims

MiB, GiB = 2 ** 20, 2 ** 30
COLUMNS = ("factors", "gradients", "queries", "activations", "workspace", "scores")
_F64 = 8  # bytes of a float64: eigendecompositions and low-rank Gram matrices are computed in float64
_FACTORS = ("identity", "diagonal", "kfac", "ekfac")


class MemoryPlanError(MemoryError):
    """A stage, or one module of it, needs more memory than is available (the message names both)."""


@dataclass(frozen=True)
class ModuleMemory:
    """The bytes one tracked module needs in a stage (the columns are described in the module docstring);
    ``need`` is the most it holds at once, at its ``worst`` phase."""

    name: str
    shape: tuple[int, int]
    factors: int = 0
    gradients: int = 0
    queries: int = 0
    activations: int = 0
    workspace: int = 0
    scores: int = 0
    need: int = 0
    worst: str = ""


@dataclass(frozen=True)
class MemoryPlan:
    """The memory plan of one stage: a :class:`ModuleMemory` per tracked module, the bytes of each phase, and
    ``total`` (the largest phase). ``str(plan)`` is a table in MiB/GiB."""

    stage: str
    modules: tuple[ModuleMemory, ...]
    phases: tuple[tuple[str, int], ...]
    details: str = ""
    hint: str = ""
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        """Bytes of the stage's largest phase, :attr:`peak_phase`."""
        return max((size for _, size in self.phases), default=0)

    peak_phase = property(lambda self: max(self.phases, key=lambda phase: phase[1], default=("",))[0],
                          doc="The phase that needs :attr:`total`.")

    def format(self) -> str:
        """A readable table: one line per module with its columns and need, then the phases and the total."""
        columns = [c for c in COLUMNS if any(getattr(row, c) for row in self.modules)]
        width = max([len("module")] + [len(row.name) for row in self.modules])
        head = f"{'module':<{width}}  {'[out x in]':>14}" + "".join(f"  {c:>11}" for c in columns + ["need"])
        lines = [f"memory plan of {self.stage}" + (f" ({self.details})" if self.details else ""), head]
        for row in self.modules:
            cells = [format_bytes(getattr(row, c)) for c in columns + ["need"]]
            lines.append(f"{row.name:<{width}}  {f'[{row.shape[0]} x {row.shape[1]}]':>14}"
                         + "".join(f"  {cell:>11}" for cell in cells))
        phases = ", ".join(f"{name} {format_bytes(size)}" for name, size in self.phases)
        lines.append(f"total {format_bytes(self.total)} (peak at {self.peak_phase or '-'}; phases: {phases or '-'})")
        lines += [f"note: {note}" for note in self.notes]
        return "\n".join(lines)

    __str__ = format


def format_bytes(size: int | float) -> str:
    """``size`` bytes in MiB (below 1 GiB) or GiB."""
    return f"{size / GiB:.2f} GiB" if size >= GiB else f"{size / MiB:.3g} MiB"


class _Phases:
    """Per phase and module: bytes held for the whole phase and the largest transient step."""

    def __init__(self):
        self.held, self.transient = {}, {}  # {phase: {module: bytes}}

    def add(self, phase: str, name: str, held: int = 0, transient: int = 0) -> None:
        held_here, transient_here = self.held.setdefault(phase, {}), self.transient.setdefault(phase, {})
        held_here[name] = held_here.get(name, 0) + int(held)
        transient_here[name] = max(transient_here.get(name, 0), int(transient))

    def need(self, phase: str, name: str) -> int:
        return self.held[phase].get(name, 0) + self.transient[phase].get(name, 0) if phase else 0

    def plan(self, stage: str, rows: Mapping[str, dict], **extra) -> MemoryPlan:
        phases = tuple((phase, sum(held.values()) + max(self.transient[phase].values(), default=0))
                       for phase, held in self.held.items())
        worst = {name: max(self.held, key=lambda phase: self.need(phase, name), default="") for name in rows}
        modules = tuple(ModuleMemory(name, need=self.need(worst[name], name), worst=worst[name], **columns)
                        for name, columns in rows.items())
        return MemoryPlan(stage, modules, phases, **extra)


def _module_shape(module: nn.Module, track_bias: bool = True) -> tuple[int, int, int]:
    """``(out, in(+1), bytes of one element of the module's activations)``."""
    n_out, n_in, has_bias = module_dims(module)
    return n_out, n_in + int(has_bias and track_bias), module.weight.dtype.itemsize


def eigh_bytes(size: int, dtype: torch.dtype = torch.float32, eigh_dtype: torch.dtype = torch.float64) -> int:
    """Bytes of ``torch.linalg.eigh`` of a ``size x size`` block of ``dtype`` computed in ``eigh_dtype``: the copy
    (when the dtypes differ), eigenvectors, eigenvalues and LAPACK ``syevd``'s ``1 + 6n + 2n^2`` elements."""
    element = eigh_dtype.itemsize
    copy = element * size * size if dtype != eigh_dtype else 0
    return copy + element * (size * size + size + 1 + 6 * size + 2 * size * size) + 4 * (3 + 5 * size)


def plan_factor_fit(modules: Mapping[str, nn.Module], options: FactorArguments | str = "ekfac", batch_size: int = 1,
                    sequence_length: int = 1, masked: bool = False) -> MemoryPlan:
    """The memory plan of :func:`~influence_study.fit_factors` for ``modules`` (``{name: module}``, as
    :func:`~influence_study.engine.tracking.select_modules` returns) with ``options`` (or a strategy name),
    batches of ``batch_size`` examples of ``sequence_length`` tokens, ``masked`` when tokens are padded."""
    options = FactorArguments(strategy=options) if isinstance(options, str) else options
    strategy, dtype, size = options.strategy, options.dtype, options.dtype.itemsize
    eigh_dtype, phases, rows = getattr(options, "eigh_dtype", torch.float64), _Phases(), {}
    for name, module in modules.items():
        n_out, n_in, element = _module_shape(module, getattr(options, "track_bias", True))
        tokens = batch_size * sequence_length * (n_in + n_out)
        activations = tokens * element
        converted = tokens * size if dtype != module.weight.dtype else 0  # a.to(dtype), s.to(dtype)
        gradients, matrix = batch_size * n_out * n_in * size, n_out * n_in * size
        rows[name] = row = dict(shape=(n_out, n_in), activations=activations if strategy != "identity" else 0)
        if strategy in ("kfac", "ekfac"):
            a_blocks, s_blocks = ([b.stop - b.start for b in block_slices(n, max(1, min(options.blocks, n)))]
                                  for n in (n_in, n_out))
            row["factors"] = stored = size * (2 * sum(k * k for k in a_blocks + s_blocks) + n_in + n_out) + matrix
            sums, square = size * (n_in * n_in + n_out * n_out), size * max(n_in, n_out) ** 2
            eigh_a, eigh_s = (max(eigh_bytes(k, dtype, eigh_dtype) for k in ks) for ks in (a_blocks, s_blocks))
            # covariance pass (streamed: a, s released at once), a a^T added to its sum, copies of a, s (dtype, mask)
            phases.add("covariances", name, sums, activations + converted + tokens * size * masked + square)
            # A and S averaged (sums / count) beside the sums while each block is decomposed: first A's blocks,
            # then S's beside A's eigenvectors; the eigenvectors and eigenvalues still to come are not there yet
            covariances = size * sum(k * k for k in a_blocks + s_blocks)
            worst = max(eigh_a, size * sum(k * k for k in a_blocks) + eigh_s)
            phases.add("eigendecomposition", name, max(sums, stored),  # its sums freed once it is decomposed
                       max(0, sums + worst - (stored - covariances)))
            row["workspace"] = sums + max(sums + worst, square)
            if strategy == "ekfac":  # squared_rotation_sum: DW [B, out, in] then Q_S^T DW, then (Q_S^T DW) Q_A, or
                # (with token_rotation, where cheaper) S Q_S and A Q_A [B, T, .] and their product; squared in place
                q_a, q_s = ([torch.empty(k, 0, device="meta") for k in ks] for ks in (a_blocks, s_blocks))
                if getattr(options, "token_rotation", False) and token_rotation_is_cheaper(sequence_length, q_s, q_a):
                    rotations = tokens * size + gradients
                else:
                    rotations = (2 + int(options.blocks > 1)) * gradients
                phases.add("eigenvalue correction", name, activations + stored + matrix,  # the sums are freed
                           converted + rotations + matrix)
                row.update(gradients=gradients, workspace=max(row["workspace"], sums + rotations - gradients))
        elif strategy == "diagonal":  # DW, squared in place, its sum over examples added in place
            phases.add("diagonal", name, activations + matrix, converted + gradients + matrix)
            phases.add("average", name, activations + 2 * matrix)
            row.update(factors=matrix, gradients=gradients, workspace=matrix + gradients)
    details = f"{strategy}, {dtype}, blocks {options.blocks}, batches of {batch_size} x {sequence_length} tokens"
    hint = ("track fewer modules (modules=...), split A and S into diagonal blocks (blocks=...), use smaller batches, "
            "or set memory_limit (memory_check=False skips the check)")
    return phases.plan("fit_factors", rows, details=details, hint=hint,
                       notes=("not counted: the model's own forward/backward graph",))


def _stored_factors(factors, name: str) -> tuple[int, torch.dtype]:
    """Bytes of the tensors a fitted preconditioner stores for module ``name`` and their dtype."""
    values = [t for t in (getattr(factors, "tensors", None) or {}).get(name, {}).values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in values), values[0].dtype if values else torch.float32


def _preconditioner(factors) -> tuple[str, int, bool]:
    """``(strategy, blocks, whether the bias column is tracked)`` of a fitted preconditioner or a strategy name."""
    if isinstance(factors, str):
        return factors, 1, True
    return factors.strategy, int(factors.metadata.get("blocks", 1) or 1), tracks_bias(factors)


def _preconditioning(strategy: str, blocks: int, queries: int, factor_dtype, dtype) -> tuple[int, int]:
    """``(bytes of the preconditioned output, transient bytes)`` of preconditioning ``queries`` elements."""
    convert, out = queries * factor_dtype.itemsize * (factor_dtype != dtype), queries * dtype.itemsize
    if strategy in ("kfac", "ekfac"):  # rotate, divide, rotate back (blocks: concatenated pieces)
        return out, (2 + int(blocks > 1)) * queries * factor_dtype.itemsize + convert
    # identity: the gradients themselves; diagonal: one division; a solver: roughly
    return {"identity": (0, 0), "diagonal": (out, convert)}.get(strategy, (out, 2 * out))


def plan_scoring(modules: Mapping[str, nn.Module], factors, n_queries: int, query_rank: int | None = None,
                 batch_size: int = 1, sequence_length: int = 1, *, per_token: bool = False,
                 dtype: torch.dtype = torch.float32, train_examples: int | None = None,
                 query_batch_size: int | None = None, query_length: int | None = None, sum_queries: bool = False,
                 rescore: bool = False, dense_query_limit: int = 256 * MiB) -> MemoryPlan:
    """The memory plan of :func:`~influence_study.pairwise_scores`: ``n_queries`` queries (in batches of
    ``query_batch_size`` x ``query_length`` tokens; default: as the training batches) against ``train_examples``
    training examples (``None``: unknown, the scores are not counted) in batches of ``batch_size`` x
    ``sequence_length`` tokens, with ``factors`` a fitted preconditioner (or a strategy name), the query rank,
    token scores, the compute ``dtype``, summed queries, re-scoring, and ``_prepare_queries``'s dense limit."""
    (strategy, blocks, bias), size = _preconditioner(factors), dtype.itemsize
    q_eff, examples, phases, rows = 1 if sum_queries else n_queries, train_examples or 0, _Phases(), {}
    query_tokens = (query_batch_size or batch_size) * (query_length or sequence_length)
    for name, module in modules.items():
        n_out, n_in, element = _module_shape(module, bias)
        stored, factor_dtype = _stored_factors(factors, name)
        grads, unit = n_queries * n_out * n_in * size, q_eff * n_out * n_in
        to_dtype = (n_in + n_out) * size if dtype != module.weight.dtype else 0  # per token: a, s in dtype
        batch_grads = (query_batch_size or batch_size) * n_out * n_in * size  # (check_finite: no mask when finite)
        phases.add("query gradients", name, grads + query_tokens * (n_in + n_out) * element,
                   max(query_tokens * to_dtype, batch_grads))
        concatenated = 2 * grads  # the batches' gradients and their torch.cat
        phases.add("query concatenation", name, grads, grads)  # one module's batches joined at a time
        grads = unit * size  # summed (sum_queries) or not, the gradients kept for preconditioning
        preconditioned, transient = _preconditioning(strategy, blocks, unit, factor_dtype, dtype)
        phases.add("preconditioning", name, grads + preconditioned, transient)
        dense = preconditioned or grads  # identity: the gradients are the preconditioned queries
        low_rank = query_rank is not None and query_rank < min(n_out, n_in)
        factored = low_rank and (sequence_length * q_eff * query_rank * (n_out + n_in)
                                 < (sequence_length + q_eff) * n_out * n_in or unit * size > dense_query_limit)
        kept = dense
        if low_rank:
            small = min(n_out, n_in)
            gram, factor_bytes = _F64 * q_eff * small * small, q_eff * query_rank * (n_out + n_in) * size
            copies = 2 * _F64 * unit if dtype != torch.float64 else 0  # small.double() twice
            eigh = 2 * gram + _F64 * (1 + 6 * small + 2 * small * small)
            kept = (factor_bytes if factored else unit * size) + (dense if rescore else 0)
            phases.add("low-rank queries", name, grads + preconditioned + kept - (dense if rescore else 0),
                       max(copies + gram, eigh) + (0 if factored else factor_bytes))
        tokens = batch_size * sequence_length
        activations, share = tokens * (n_in + n_out) * element, q_eff * examples * size
        gradients = 0 if per_token or factored else batch_size * n_out * n_in * size
        # rank-r: s and a projected on the factors and their product, per token; token scores: a projected on every
        # query [Q, B, T, out], times s; otherwise the batch's per-example gradients and their [Q, B] scores
        step = (4 * q_eff * tokens * query_rank * size if factored else 2 * q_eff * tokens * n_out * size
                if per_token else gradients + q_eff * batch_size * size)
        phases.add("scoring", name, kept + activations + share, tokens * to_dtype + step)
        if rescore and low_rank:  # the top examples again, at full rank
            step = 2 * q_eff * tokens * n_out * size if per_token else batch_size * n_out * n_in * size
            phases.add("re-scoring", name, kept + activations + 2 * share, tokens * to_dtype + step)
        phases.add("scores", name, kept + activations + 2 * share)  # the batches' shares and their torch.cat
        rows[name] = dict(shape=(n_out, n_in), factors=stored, gradients=gradients, queries=kept, scores=share,
                          activations=activations, workspace=max(concatenated, grads + preconditioned + transient))
    if modules and examples:  # the summed scores (and token scores, padded and concatenated): no one module's
        phases.add("scores", "", q_eff * examples * size * (1 + (3 * sequence_length if per_token else 0)))
    notes = ("not counted: the fitted factors (already in memory) and the model's own forward/backward graph",
             *(("the number of training examples is unknown: the scores are not counted",) * (train_examples is None)),
             *((f"the preconditioning of {strategy!r} is roughly estimated",) * (strategy not in _FACTORS)))
    details = (f"{strategy}, {n_queries} queries{' summed' * sum_queries}, rank {query_rank or 'full'}, {dtype}, "
               f"{train_examples} training examples, batches of {batch_size} x {sequence_length} tokens"
               + ", token scores" * per_token)
    return phases.plan("pairwise_scores", rows, details=details, notes=notes, hint=(
        "score fewer queries per call, store them at a lower rank (query_rank=...), use smaller batches or a slice "
        "of the training set (train_slice=...), or set memory_limit (memory_check=False skips the check)"))


def plan_self_scores(modules: Mapping[str, nn.Module], factors, batch_size: int = 1, sequence_length: int = 1,
                     dtype: torch.dtype = torch.float32) -> MemoryPlan:
    """The memory plan of :func:`~influence_study.self_scores`: every module's per-example gradients of a batch and
    their preconditioned copies are held together, and one module at a time is preconditioned."""
    (strategy, blocks, bias), phases, rows = _preconditioner(factors), _Phases(), {}
    for name, module in modules.items():
        n_out, n_in, element = _module_shape(module, bias)
        stored, factor_dtype = _stored_factors(factors, name)
        unit = batch_size * n_out * n_in
        activations = batch_size * sequence_length * (n_in + n_out) * element
        preconditioned, transient = _preconditioning(strategy, blocks, unit, factor_dtype, dtype)
        grads = unit * dtype.itemsize  # the previous batch's gradients and preconditioned ones live until replaced
        phases.add("gradients", name, activations + 2 * grads + preconditioned)  # (check_finite: no mask when finite)
        phases.add("preconditioning", name, activations + grads + 2 * preconditioned, max(transient, grads))
        rows[name] = dict(shape=(n_out, n_in), factors=stored, gradients=unit * dtype.itemsize,
                          activations=activations, workspace=preconditioned + transient)
    return phases.plan("self_scores", rows, details=f"{strategy}, batches of {batch_size} x {sequence_length} tokens",
                       hint="use smaller batches, or set memory_limit (memory_check=False skips the check)",
                       notes=("not counted: the fitted factors (already in memory) and the model's own graph",))


class LoaderShape(NamedTuple):
    """Examples per batch, tokens per example, whether the first batch has padding, examples (``None``: unknown)."""

    batch_size: int
    tokens: int
    masked: bool
    examples: int | None


def loader_shape(task: Task, loader: Iterable, max_examples: int | None = None) -> LoaderShape:
    """The :class:`LoaderShape` of ``loader``'s first batch (no model call; torch's global random state is restored,
    since a DataLoader draws its seed from it). The tokens are the second dimension of ``input_ids`` (or of the
    first tensor: integer ids ``[B, T]``, floating ``[B, T, features]``), 1 otherwise. A loader that cannot be
    read this way (a one-shot iterator, no batch) gives zeros: the pass that follows raises the clear error."""
    state = torch.random.get_rng_state()
    try:
        if isinstance(loader, Iterator):  # not read here: the pass refuses it
            raise TypeError("a one-shot iterator")
        first = next(iter(loader))
        batch_size = task.num_examples(first)
        tensor = first.get("input_ids", next(value for value in first.values() if torch.is_tensor(value)))
        deep = tensor.dim() >= 3 if tensor.is_floating_point() else tensor.dim() == 2
        tokens = int(tensor.shape[1]) if deep else 1
        mask = task.token_mask(first)
        masked = mask is not None and not bool(mask.all())  # padded: the covariance pass weights a and s
        if isinstance(loader, Sequence):
            examples = sum(task.num_examples(batch) for batch in loader)
        else:
            examples = len(loader) * batch_size if hasattr(loader, "__len__") else None
    except (StopIteration, TypeError, KeyError, ValueError, AttributeError, IndexError):
        return LoaderShape(0, 0, False, None)
    finally:
        torch.random.set_rng_state(state)
    if max_examples is not None:
        batch_size = min(batch_size, max_examples)
        examples = max_examples if examples is None else min(examples, max_examples)
    return LoaderShape(batch_size, tokens, masked, examples)


def plan_for_scores(task: Task, factors, modules: Mapping[str, nn.Module], query_loader: Iterable | None,
                    train_loader: Iterable, options, start: int = 0, stop: int | None = None,
                    dense_query_limit: int = 256 * MiB) -> MemoryPlan:
    """:func:`plan_scoring` (:func:`plan_self_scores` without ``query_loader``) for the scoring functions' own
    arguments (``options``: a ``ScoreArguments``; ``[start, stop)``: the training slice)."""
    train = loader_shape(task, train_loader)
    if query_loader is None:
        return plan_self_scores(modules, factors, train.batch_size, train.tokens, options.dtype)
    queries = loader_shape(task, query_loader)
    examples = None if train.examples is None else max(0, min(train.examples, stop or train.examples) - start)
    return plan_scoring(modules, factors, queries.examples or queries.batch_size, options.query_rank,
                        train.batch_size, train.tokens, per_token=options.per_token, dtype=options.dtype,
                        train_examples=examples, query_batch_size=queries.batch_size, query_length=queries.tokens,
                        sum_queries=options.sum_queries or getattr(options, "mean_queries", False),
                        rescore=options.rescore_top_k is not None, dense_query_limit=dense_query_limit)


def available_memory(device: str | torch.device | None = None, limit: int | None = None) -> tuple[int | None, str]:
    """``(bytes available, where that number comes from)``: ``limit`` when given; on CUDA the free memory
    (``torch.cuda.mem_get_info``) plus what torch's caching allocator reserved but has not allocated; on the CPU (and
    ``meta``: the host it would be materialised on) ``MemAvailable`` of ``/proc/meminfo`` (else ``os.sysconf``)."""
    device = torch.device("cpu" if device is None else device)
    if limit is not None:
        return int(limit), "memory_limit"
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return free + cached, f"free memory of {device} (torch.cuda.mem_get_info)"
    if device.type not in ("cpu", "meta"):
        return None, f"unknown for {device}"
    try:
        with open("/proc/meminfo") as meminfo:
            found = [int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:")]
        if found:
            return found[0], "MemAvailable of /proc/meminfo"
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available pages (os.sysconf)"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


def check_fits(plan: MemoryPlan, available: int | None, source: str = "given") -> None:
    """Raise :class:`MemoryPlanError` if a module of ``plan`` alone (its worst phase: for fitting, typically its
    eigendecomposition), or the stage as a whole, needs more than ``available`` bytes; the message names the
    module, its phase, the bytes needed and available. ``available=None`` (unknown) checks nothing."""
    if available is None:
        return
    for row in sorted(plan.modules, key=lambda row: -row.need):
        if row.need > available:
            columns = ", ".join(f"{c} {format_bytes(getattr(row, c))}" for c in COLUMNS if getattr(row, c))
            raise MemoryPlanError(
                f"{plan.stage}: module {row.name!r} [{row.shape[0]} x {row.shape[1]}] needs {format_bytes(row.need)} "
                f"at its {row.worst} ({columns}) but {format_bytes(available)} are available ({source}); {plan.hint}")
    if plan.total > available:
        largest = ", ".join(f"{row.name!r} {format_bytes(row.need)}"
                            for row in sorted(plan.modules, key=lambda row: -row.need)[:3])
        raise MemoryPlanError(
            f"{plan.stage}: its {plan.peak_phase} needs {format_bytes(plan.total)} for {len(plan.modules)} modules "
            f"(the largest: {largest}) but {format_bytes(available)} are available ({source}); {plan.hint}")
