"""The proximal Bregman response function (PBRF): ground-truth influence by optimisation, for small models."""

from __future__ import annotations

from typing import Mapping

import torch
from torch.func import grad
from tqdm import tqdm

from influence_study.engine.functional import FunctionalModel
from influence_study.engine.passes import iterate, model_device, take
from influence_study.engine.preconditioner import Preconditioner
from influence_study.engine.tracking import frozen_parameters


class PBRF(Preconditioner):
    """Ground truth by optimisation: for each training example z_m, minimise with Adam

    ``(1/N) Σ_i D(h(θ, x_i), h(θ_s, x_i)) ± ε L(z_m, θ) + ½ Σ_ℓ λ_ℓ |θ_ℓ - θ_sℓ|^2``

    over the tracked parameters (D the Bregman divergence of the loss on the outputs), and report
    ``(f(θ+) - f(θ-)) / 2ε`` (central difference; ``central=False``: ``(f(θ+) - f(θ_s)) / ε``). Same sign and
    scale as the other strategies: the influence of adding one copy of z_m, before the 1/N normalisation.

    It preconditions no gradient: :func:`~influence_study.pairwise_scores` gets its scores from
    :meth:`direct_pairwise` (without per-module or per-token shares, query batching or summed queries), and
    :meth:`precondition` and :func:`~influence_study.self_scores` are not available.
    """

    strategy = "pbrf"

    def __init__(self, functional: FunctionalModel, loader, damping_default: dict[str, float], epsilon: float,
                 steps: int, learning_rate: float, central: bool, max_examples, metadata: dict, progress: bool):
        if not epsilon > 0:
            raise ValueError(f"epsilon: expected a positive number, got {epsilon}")
        if steps < 1:
            raise ValueError(f"steps: expected a positive number of Adam steps, got {steps}")
        self.functional, self.loader = functional, loader
        self._default = damping_default
        self.epsilon, self.steps, self.learning_rate, self.central = epsilon, steps, learning_rate, central
        self.max_examples, self.progress = max_examples, progress
        self.metadata = metadata
        self.module_names = list(functional.modules)

    def default_damping(self):
        """0.1 × the mean diagonal of the sampled Fisher per module (computed when the PBRF was fitted)."""
        return dict(self._default)

    def _precondition(self, grads, damping):
        raise NotImplementedError("pbrf: the PBRF computes pairwise scores by optimisation and preconditions no "
                                  "gradient (precondition and self_scores are not available for it)")

    def check_score_options(self, options) -> None:
        """``ValueError`` for per-module or per-token shares, query batching and summed queries (``dtype`` and
        ``rescore_top_k`` are ignored: the PBRF scores at full rank, in the model's dtype)."""
        if options.per_module or options.per_token or options.query_rank is not None or options.sum_queries:
            raise ValueError("pbrf: per_module, per_token, query_rank and sum_queries are not available for "
                             "the PBRF")

    def _anchors(self):
        """Each training batch with its outputs at θ_s and the gradient of the loss there."""
        device = model_device(self.functional.model)
        theta = self.functional.params()
        anchors = []
        for step in iterate(self.loader, self.functional.task, device, "pbrf(loader)", self.max_examples):
            with torch.no_grad():
                outputs = self.functional.outputs(theta, step.batch).detach()
            loss_grad = grad(lambda o: self.functional.task.train_loss(o, step.batch))(outputs).detach()
            anchors.append((step.batch, outputs, loss_grad))
        return anchors, sum(self.functional.task.num_examples(a[0]) for a in anchors)

    def response(self, example, sign: float, damping: Mapping[str, float], anchors, n_total) -> dict:
        """The PBRF minimiser for ``sign * ε`` weight on ``example``'s loss."""
        task = self.functional.task
        theta_s = self.functional.params()
        theta = {n: t.clone().requires_grad_(True) for n, t in theta_s.items()}
        optimiser = torch.optim.Adam(theta.values(), lr=self.learning_rate)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, self.steps)
        # frozen: backward must reach only theta, never accumulate .grad in the model's own parameters
        with frozen_parameters(self.functional.model), torch.enable_grad():
            for _ in range(self.steps):
                optimiser.zero_grad()
                for batch, h_s, g_s in anchors:
                    h = self.functional.outputs(theta, batch)
                    bregman = task.train_loss(h, batch) - task.train_loss(h_s, batch) - (g_s * (h - h_s)).sum()
                    (bregman / n_total).backward()
                objective = sign * self.epsilon * task.train_loss(self.functional.outputs(theta, example), example)
                objective = objective + sum(0.5 * damping[n] * ((theta[n] - theta_s[n]) ** 2).sum() for n in theta)
                objective.backward()
                optimiser.step()
                schedule.step()
        return {n: t.detach() for n, t in theta.items()}

    def measurements(self, theta, queries) -> torch.Tensor:
        """f of every query example at parameters ``theta`` [Q]."""
        values = []
        with torch.no_grad():
            for batch in queries:
                for i in range(self.functional.task.num_examples(batch)):
                    example = take(batch, slice(i, i + 1))
                    values.append(self.functional.task.measurement(self.functional.outputs(theta, example), example))
        return torch.stack(values).double()

    def pairwise(self, query_loader, train_loader, damping=None, start=0, stop=None):
        """``[Q, M]`` PBRF influence of each example of ``train_loader`` (``start <= index < stop``) on each
        query of ``query_loader``, and the indices of those training examples (``damping`` as in
        :meth:`damping_values`)."""
        return self.direct_pairwise(query_loader, train_loader, self.damping_values(damping), start, stop)

    def direct_pairwise(self, query_loader, train_loader, damping, start=0, stop=None):
        """:meth:`pairwise` with the per-module ``damping`` already resolved (what
        :func:`~influence_study.pairwise_scores` calls)."""
        device = model_device(self.functional.model)
        task = self.functional.task
        queries = [s.batch for s in iterate(query_loader, task, device, "pbrf(query_loader)")]
        anchors, n_total = self._anchors()
        base = self.measurements(self.functional.params(), queries)
        columns, indices = [], []
        steps = list(iterate(train_loader, task, device, "pbrf(train_loader)", start=start, stop=stop))
        total = sum(s.size for s in steps)
        bar = tqdm(total=total, desc="pbrf", disable=not self.progress, leave=False)
        for step in steps:
            for i in range(step.size):
                example = take(step.batch, slice(i, i + 1))
                plus = self.measurements(self.response(example, 1.0, damping, anchors, n_total), queries)
                if self.central:
                    minus = self.measurements(self.response(example, -1.0, damping, anchors, n_total), queries)
                    columns.append((plus - minus) / (2 * self.epsilon))
                else:
                    columns.append((plus - base) / self.epsilon)
                indices.append(int(step.indices[i]))
                bar.update(1)
        bar.close()
        return torch.stack(columns, dim=1), torch.tensor(indices)
