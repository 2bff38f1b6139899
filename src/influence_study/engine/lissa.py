"""LiSSA: the stochastic Neumann series ``h_j = v + (I - (G_batch + λ)/scale) h_{j-1}``, result ``h_depth / scale``,
with exact Gauss-Newton-vector products on mini-batches (``torch.func`` jvp/vjp)."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from tqdm import tqdm

from influence_study.engine.functional import FunctionalModel
from influence_study.engine.passes import check_finite, iterate, model_device
from influence_study.engine.preconditioner import Preconditioner


class LissaSolver(Preconditioner):
    """LiSSA: ``h_j = v + (I - (G_batch + λ)/scale) h_{j-1}``, ``(G + λ)^-1 v ≈ h_depth / scale``.

    Each step uses the exact Gauss-Newton-vector product of one mini-batch of ``loader`` (cycled), averaged
    over its examples. ``scale`` must exceed the largest eigenvalue of ``G + λ``; by default it is twice a
    power-iteration estimate on the first batch, started from a Gaussian vector drawn with ``seed`` (so that a
    fit is reproducible)."""

    strategy = "lissa"

    def __init__(self, functional: FunctionalModel, loader, damping_default, depth: int,
                 scale: float | None, metadata: dict, progress: bool, seed: int = 0):
        """``damping_default``: the default damping per module, or a function that computes it (called once, when
        the default is first needed, so that a caller who always passes a damping pays nothing for it)."""
        if depth < 1:
            raise ValueError(f"depth: expected a positive number of LiSSA iterations, got {depth}")
        if scale is not None and not scale > 0:
            raise ValueError(f"scale: expected a positive number, got {scale}")
        self.functional, self.loader = functional, loader
        self._default = damping_default
        self.depth, self.scale, self.progress, self.seed = depth, scale, progress, seed
        self.metadata = metadata
        self.module_names = list(functional.modules)

    def default_damping(self):
        """0.1 × the mean diagonal of the sampled Fisher per module, computed on first use
        (:func:`~influence_study.engine.solvers.sampled_fisher_damping`)."""
        if callable(self._default):
            self._default = self._default()
        return dict(self._default)

    def _batches(self):
        device = model_device(self.functional.model)
        while True:
            for step in iterate(self.loader, self.functional.task, device, "lissa(loader)"):
                yield step

    def estimate_scale(self, damping: Mapping[str, float], iterations: int = 20) -> float:
        """Twice the largest eigenvalue of ``G_batch + λ`` on the first batch (power iteration)."""
        step = next(self._batches())
        theta = self.functional.params()
        generator = torch.Generator().manual_seed(self.seed)
        v = {n: torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for n, t in theta.items()}
        top = 0.0
        for _ in range(iterations):
            norm = math.sqrt(sum((t ** 2).sum().item() for t in v.values()))
            v = {n: t / norm for n, t in v.items()}
            gv = self.functional.ggn_vector_product(step.batch, v)
            gv = {n: gv[n] / step.size + damping[n] * v[n] for n in v}
            top = math.sqrt(sum((t ** 2).sum().item() for t in gv.values()))
            v = gv
        return 2.0 * top

    def _precondition(self, grads, damping):
        scale = self.scale if self.scale is not None else self.estimate_scale(damping)
        self.metadata["scale_used"] = scale
        first = grads[self.module_names[0]]
        out = {n: torch.empty_like(first.new_empty(grads[n].shape)) for n in self.module_names}
        batches = self._batches()
        for b in range(first.shape[0]):
            v = {n: grads[n][b].detach() for n in self.module_names}
            h = dict(v)
            for _ in tqdm(range(self.depth), desc=f"lissa query {b}", disable=not self.progress, leave=False):
                step = next(batches)
                gh = self.functional.ggn_vector_product(step.batch, h)
                h = {n: v[n] + h[n] - (gh[n] / step.size + damping[n] * h[n]) / scale for n in h}
            for n in self.module_names:
                out[n][b] = h[n] / scale
        check_finite(out, "LiSSA solution (increase scale or damping)")
        return out
