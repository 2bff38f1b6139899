"""DataInf (Kwon et al. 2023): the per-module closed form on per-example gradients ``g_i`` (true labels by default:
the empirical Fisher, as in the paper): ``(G + λI)^-1 v ≈ (1/λ)(v - (1/n) Σ_i (g_i·v)/(λ + |g_i|^2) g_i)``."""

from __future__ import annotations

import torch

from influence_study.engine.damping import gradient_damping
from influence_study.engine.preconditioner import Preconditioner


class DataInfSolver(Preconditioner):
    """DataInf (Kwon et al. 2023): per-module Sherman-Morrison closed form on stored per-example gradients.

    ``gradients[module]`` is ``[n, out, in(+1)]``. Default damping per module: 0.1 × the mean squared gradient
    entry (the paper's rule; equal to 0.1 × mean eigenvalue of the empirical Fisher block)."""

    strategy = "datainf"

    def __init__(self, gradients: dict[str, torch.Tensor], metadata: dict):
        self.gradients = {name: g.flatten(1) for name, g in gradients.items()}  # [n, out * in(+1)]
        self.squared_norms = {name: (g ** 2).sum(1) for name, g in self.gradients.items()}
        self.metadata = metadata
        self.module_names = list(gradients)

    def default_damping(self):
        """0.1 × the mean squared gradient entry per module
        (:func:`~influence_study.engine.damping.gradient_damping`)."""
        return gradient_damping(self.gradients)

    def _precondition(self, grads, damping):
        out = {}
        for name in self.module_names:
            g = self.gradients[name].to(grads[name].device)
            v = grads[name].flatten(1).to(g.dtype)
            lam = damping[name]
            coefficients = (v @ g.T) / (lam + self.squared_norms[name].to(g.device))
            out[name] = ((v - coefficients @ g / g.shape[0]) / lam).reshape(grads[name].shape).to(grads[name].dtype)
        return out
