"""The passes over the data that fit curvature factors: the covariance pass (sums of ``a a^T`` and ``s s^T``), the
per-sequence pass (the EK-FAC eigenvalue correction, the diagonal Fisher), and the activation cache with which the
eigenvalue correction reuses what the covariance pass captured instead of running the model again.

Reuse is exact: with true labels (empirical Fisher) the correction pass would recompute the very tensors the
covariance pass captured; with sampled labels it would draw its labels from the ``seed + 1`` stream, batch after
batch, on the same logits, so the covariance pass draws them itself, batch after batch from that stream, and
backpropagates them through the same graph (one forward pass instead of two). Either way the factors are
bit-identical to a fit without the cache.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

from influence_study.engine.options import FactorArguments
from influence_study.engine.passes import backward_from, check_finite, iterate
from influence_study.engine.tracking import Captured, ModuleTracker

#: ``update(name, a [B, T, in], s [B, T, out])`` of a per-sequence pass
Update = Callable[[str, torch.Tensor, torch.Tensor], None]


class ActivationCache:
    """The captured records (inputs and output gradients) of every tracked module for the first batches of a pass,
    up to ``budget`` bytes.

    Batches are kept in loader order until one does not fit; from then on none is (``complete`` is False), and the
    later pass recomputes the batches after the kept prefix.
    """

    def __init__(self, budget: int):
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 0:
            raise ValueError(f"activation_cache: expected a number of bytes (an integer >= 0), got {budget!r}")
        self.budget, self.used = budget, 0
        self.batches: list[tuple[int, dict[str, Captured]]] = []
        self.complete = budget > 0  # every batch offered so far was kept

    def admits(self, nbytes: int) -> bool:
        """Whether a batch of ``nbytes`` is kept; the first refusal closes the cache."""
        if self.complete and self.used + nbytes <= self.budget:
            return True
        self.complete = False
        return False

    def keep(self, size: int, tracker: ModuleTracker, nbytes: int) -> None:
        """Keep the tracker's records of a batch of ``size`` examples (``admits(nbytes)`` was True)."""
        self.used += nbytes
        self.batches.append((size, {name: tracker._get(name) for name in tracker.modules}))

    def drain(self) -> Iterator[tuple[int, dict[str, Captured]]]:
        """The kept batches in order, each released once it has been used."""
        while self.batches:
            yield self.batches.pop(0)
        self.used = 0


def captured_bytes(tracker: ModuleTracker) -> int:
    """Bytes of the storage behind the tracker's captured inputs and output gradients (a view keeps its whole base
    alive)."""
    return sum(t.untyped_storage().nbytes() for name in tracker.modules
               for t in (tracker._get(name).x, tracker._get(name).s))


def accumulate(sums: dict[str, torch.Tensor], name: str, value: torch.Tensor) -> None:
    """``sums[name] += value`` in place; the first ``value`` (a fresh tensor) starts it as ``0 + value`` would."""
    if name in sums:
        sums[name].add_(value)
    else:
        sums[name] = value.add_(0)


class _Covariances:
    """The consumer of the covariance pass: adds each module's ``a^T a`` as soon as its input is captured and
    ``s^T s`` as soon as its output gradient is, then releases them (unless the batch is to be cached)."""

    def __init__(self, dtype: torch.dtype):
        self.dtype, self.weight, self.padded, self.keep = dtype, None, False, False
        self.a_sum: dict[str, torch.Tensor] = {}
        self.s_sum: dict[str, torch.Tensor] = {}

    def batch(self, mask: torch.Tensor | None, keep: bool) -> None:
        """Before a batch: its token mask and whether its records are kept."""
        self.weight = None if mask is None else mask.to(self.dtype).unsqueeze(-1)
        self.padded = mask is not None and not bool(mask.all())
        self.keep = keep

    def _add(self, sums: dict, name: str, tokens: torch.Tensor) -> None:
        tokens = tokens.to(self.dtype)
        # padding is weighted out; an all-real mask would multiply by 1, which is skipped (exact) unless the product
        # would also have made a non-contiguous tensor contiguous
        if self.weight is not None and self.weight.shape[:2] == tokens.shape[:2] and self.weight.dim() == 3 \
                and (self.padded or not tokens.is_contiguous()):
            tokens = tokens * self.weight
        flat = tokens.reshape(-1, tokens.shape[-1])
        accumulate(sums, name, flat.T @ flat)

    def on_input(self, name: str, record: Captured) -> None:
        self._add(self.a_sum, name, record.a)
        if not self.keep:
            record.x = None

    def on_gradient(self, name: str, record: Captured) -> None:
        self._add(self.s_sum, name, record.s)
        if not self.keep:
            record.s = None


def covariance_pass(model, task, loader, tracker: ModuleTracker, options: FactorArguments, kind: str, device,
                    generator: torch.Generator, cache: ActivationCache | None = None,
                    correction_generator: torch.Generator | None = None) -> tuple[dict, dict, int, int]:
    """Sums of ``a a^T`` over real tokens and of ``s s^T`` over tokens, with token and sequence counts, added while
    the model runs (no module's tensors are held to the end of a batch); with ``cache``, each batch's records for
    the correction pass (for sampled labels, backpropagated from labels drawn with ``correction_generator``)
    while the cache admits them."""
    sums = _Covariances(options.dtype)
    n_tokens = n_seq = 0
    tracker.on_input, tracker.on_gradient = sums.on_input, sums.on_gradient
    try:
        for step in iterate(loader, task, device, "fit_factors(loader)", options.max_examples,
                            progress=options.progress, desc="covariances"):
            mask = task.token_mask(step.batch)
            keep = cache is not None and cache.complete
            sums.batch(mask, keep)
            tracker.clear()
            outputs = task.outputs(model, step.batch)
            backward_from(task, outputs, step.batch, kind, generator, retain_graph=keep and kind == "sampled")
            for name in tracker.modules:
                tracker._get(name)  # every module received its gradient
            tokens = next(iter(tracker.captured.values())).tokens
            n_tokens += int(mask.sum()) if mask is not None and mask.dim() == 2 else step.size * tokens
            n_seq += step.size
            if keep and cache.admits(captured_bytes(tracker)):  # s of the correction's labels: as many bytes
                if kind == "sampled":
                    tracker.on_gradient = None
                    backward_from(task, outputs, step.batch, kind, correction_generator)
                    tracker.on_gradient = sums.on_gradient
                cache.keep(step.size, tracker, captured_bytes(tracker))
            del outputs  # the graph of a batch that was not kept is released here
    finally:
        tracker.on_input = tracker.on_gradient = None
        tracker.clear()
    check_finite(sums.a_sum, "activation covariance")
    check_finite(sums.s_sum, "output-gradient covariance")
    return sums.a_sum, sums.s_sum, n_tokens, n_seq


def per_sequence_pass(model, task, loader, tracker: ModuleTracker, options: FactorArguments, kind: str, device,
                      update: Update, desc: str, generator: torch.Generator,
                      cache: ActivationCache | None = None) -> int:
    """Call ``update(name, a [B, T, in], s [B, T, out])`` (in ``options.dtype``) with every batch's captured inputs
    and output pseudo-gradients, whose per-sequence gradients are ``DW_b = s_b^T a_b``: the batches of ``cache``
    first (no model pass), then, unless the cache held them all, the later batches of ``loader``. Returns the
    number of sequences."""
    n_seq = skip = 0
    if cache is not None:
        complete = cache.complete
        for size, records in cache.drain():
            for name in tracker.modules:
                record = records.pop(name)
                update(name, record.a.to(options.dtype), record.s.to(options.dtype))
                del record
            n_seq += size
            skip += 1
        if complete and skip:
            return n_seq
    for index, step in enumerate(iterate(loader, task, device, "fit_factors(loader)", options.max_examples,
                                         progress=options.progress, desc=desc)):
        if index < skip:
            continue
        tracker.clear()
        backward_from(task, task.outputs(model, step.batch), step.batch, kind, generator)
        for name in tracker.modules:  # one module at a time: peak memory is one module's [B, out, in]
            record = tracker._get(name)
            update(name, record.a.to(options.dtype), record.s.to(options.dtype))
            record.x = record.s = None
        n_seq += step.size
    tracker.clear()
    return n_seq
