"""Solvers that use no Kronecker factors: ``lissa``, ``datainf``, ``exact`` and ``pbrf``.

All work in the same per-module gradient-matrix space as the factors (``[out, in(+1)]`` per tracked module)
and are created with :func:`~influence_study.fit_factors`. ``G`` is the Gauss-Newton Hessian of the per-sequence
summed loss averaged over sequences, ``G = E_seq[J^T H_out J]``, the same curvature the factors approximate.

- ``lissa``: the stochastic Neumann series ``h_j = v + (I - (G_batch + λ)/scale) h_{j-1}``, result
  ``h_depth / scale``, with exact Gauss-Newton-vector products on mini-batches (``torch.func`` jvp/vjp).
- ``datainf``: Kwon et al.'s closed form per module, on per-example gradients ``g_i`` (true labels by default:
  the empirical Fisher, as in the paper): ``(G + λI)^-1 v ≈ (1/λ)(v - (1/n) Σ_i (g_i·v)/(λ + |g_i|^2) g_i)``.
- ``exact``: the dense damped Gauss-Newton matrix over all tracked parameters, built per example from the
  Jacobian of the outputs and the Hessian of the loss on the outputs, and solved with ``torch.linalg``; with
  ``curvature="empirical_fisher"`` the dense damped empirical Fisher ``(1/n) Σ_i g_i g_i^T`` of the per-example
  gradients of the true labels' loss instead (the matrix DataInf approximates: its "exact" reference).
- ``pbrf``: ground truth by optimisation of the proximal Bregman response function with Adam (small models).
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, jvp, vjp
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm.auto import tqdm

from influence_study.engine.passes import check_finite, example_gradient_batches, iterate, model_device, per_example_gradients, take
from influence_study.engine.preconditioner import Preconditioner, fitted_metadata
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import evaluation_mode, frozen_parameters, module_dims, param_matrix, split_matrix


class _TaskModule(nn.Module):
    """Wraps ``model`` so that ``functional_call`` can run the task's forward."""

    def __init__(self, model, task):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch):
        return self.task.outputs(self.model, batch)


class FunctionalModel:
    """The model's outputs as a function of the tracked modules' gradient-matrix-shaped parameters."""

    def __init__(self, model: nn.Module, task: Task, modules: Mapping[str, nn.Module]):
        self.model, self.task, self.modules = model, task, dict(modules)
        self.wrapper = _TaskModule(model, task)
        self.shapes = {name: (module_dims(m)[0], module_dims(m)[1] + module_dims(m)[2]) for name, m in modules.items()}
        self.sizes = [o * i for o, i in self.shapes.values()]

    def params(self) -> dict[str, torch.Tensor]:
        """Current tracked parameters as ``{module: [out, in(+1)]}`` (detached)."""
        return {n: param_matrix(m, m.weight, m.bias).detach() for n, m in self.modules.items()}

    def outputs(self, matrices: Mapping[str, torch.Tensor], batch) -> torch.Tensor:
        params = {}
        for name, module in self.modules.items():
            parts = split_matrix(module, matrices[name])
            prefix = f"model.{name}." if name else "model."  # name "" = the model itself (a bare nn.Linear)
            params[f"{prefix}weight"] = parts[0]
            if len(parts) == 2:
                params[f"{prefix}bias"] = parts[1]
        return functional_call(self.wrapper, params, (batch,), strict=False)

    def flatten(self, matrices: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``{module: [..., out, in]}`` -> ``[..., P]`` in module order."""
        return torch.cat([matrices[n].flatten(-2) for n in self.modules], dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = torch.split(flat, self.sizes, dim=-1)
        return {n: p.unflatten(-1, self.shapes[n]) for n, p in zip(self.modules, pieces)}

    def ggn_vector_product(self, batch, vector: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``sum over the batch's examples of J^T H_out J v`` (Gauss-Newton-vector product; not averaged)."""
        theta = self.params()
        vector = {n: v.detach().to(theta[n].dtype) for n, v in vector.items()}
        function = lambda p: self.outputs(p, batch)  # noqa: E731
        # no_grad: the untracked parameters of the model may require grad, and ordinary autograd would then record
        # a graph through every product (and, in LiSSA, chain it through all iterations); the torch.func
        # transforms below are unaffected by it. The fused scaled-dot-product-attention kernels (flash,
        # memory-efficient, CPU flash) have no forward-mode derivative; the math kernel computes the same attention
        # from differentiable primitives.
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            outputs, jv = jvp(function, (theta,), (vector,))
            loss_gradient = grad(lambda o: self.task.train_loss(o, batch))
            _, hjv = jvp(loss_gradient, (outputs,), (jv,))
            _, pullback = vjp(function, theta)
            return pullback(hjv)[0]

    def ggn_matrix(self, batch) -> torch.Tensor:
        """Dense ``sum over the batch's examples of J^T H_out J`` [P, P] (one example at a time)."""
        theta = self.flatten(self.params())
        total = torch.zeros(theta.numel(), theta.numel(), dtype=torch.float64, device=theta.device)
        n = self.task.num_examples(batch)
        for i in range(n):
            example = take(batch, slice(i, i + 1))
            function = lambda flat: self.outputs(self.unflatten(flat), example)  # noqa: E731
            with torch.no_grad():  # no graph through untracked parameters (the torch.func transforms still work)
                outputs = function(theta)
                jacobian = jacrev(function)(theta).reshape(-1, theta.numel()).double()
                out_hessian = hessian(lambda o: self.task.train_loss(o, example))(outputs)
                out_hessian = out_hessian.reshape(outputs.numel(), outputs.numel()).double()
                total += jacobian.T @ out_hessian @ jacobian
        return total


def _mean_diagonal(model, task, loader, modules, max_examples, seed, progress) -> dict[str, float]:
    """0.1 × the mean diagonal of the sampled Fisher per module (the default damping rule without factors)."""
    squares: dict[str, torch.Tensor] = {}
    n = 0
    for grads in example_gradient_batches(model, task, loader, modules, "sampled", max_examples, torch.float64, seed,
                                          progress, desc="damping estimate"):  # streamed: O(batch) memory
        for name, g in grads.items():
            squares[name] = squares.get(name, 0) + (g ** 2).sum(0)
        n += len(next(iter(grads.values())))
    return {name: 0.1 * (s / n).mean().item() for name, s in squares.items()}


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
        return {name: 0.1 * (g.double() ** 2).mean().item() for name, g in self.gradients.items()}

    def _precondition(self, grads, damping):
        out = {}
        for name in self.module_names:
            g = self.gradients[name].to(grads[name].device)
            v = grads[name].flatten(1).to(g.dtype)
            lam = damping[name]
            coefficients = (v @ g.T) / (lam + self.squared_norms[name].to(g.device))
            out[name] = ((v - coefficients @ g / g.shape[0]) / lam).reshape(grads[name].shape).to(grads[name].dtype)
        return out


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
        diagonal = torch.split(torch.diagonal(self.matrix), self.functional.sizes)
        return {name: 0.1 * d.mean().item() for name, d in zip(self.module_names, diagonal)}

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
        self._diagonal = {name: (flat[name] ** 2).mean().item() for name in self.module_names}
        self.metadata = metadata

    def default_damping(self):
        return {name: 0.1 * value for name, value in self._diagonal.items()}

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


class PBRF:
    """Ground truth by optimisation: for each training example z_m, minimise with Adam

    ``(1/N) Σ_i D(h(θ, x_i), h(θ_s, x_i)) ± ε L(z_m, θ) + ½ Σ_ℓ λ_ℓ |θ_ℓ - θ_sℓ|^2``

    over the tracked parameters (D the Bregman divergence of the loss on the outputs), and report
    ``(f(θ+) - f(θ-)) / 2ε`` (central difference; ``central=False``: ``(f(θ+) - f(θ_s)) / ε``). Same sign and
    scale as the other strategies: the influence of adding one copy of z_m, before the 1/N normalisation.
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

    def damping_values(self, damping=None) -> dict[str, float]:
        return Preconditioner.damping_values(self, damping)  # type: ignore[arg-type]

    def default_damping(self):
        return dict(self._default)

    def check_model(self, model):
        Preconditioner.check_model(self, model)  # type: ignore[arg-type]

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
        query of ``query_loader``, and the indices of those training examples."""
        damping = self.damping_values(damping)
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


def gradient_solver(strategy: str, model: nn.Module, modules: Mapping[str, nn.Module],
                    gradients: Mapping[str, torch.Tensor], sampled_labels: bool = False,
                    curvature: str = "empirical_fisher", block_diagonal: bool = False) -> Preconditioner:
    """The solvers built from per-example gradients alone, from gradients the caller already has
    (``gradients[module]``: ``[n, out, in(+1)]`` of the tracked ``modules`` of ``model``, e.g. from
    :func:`~influence_study.engine.passes.per_example_gradients`): ``datainf``, or ``exact`` with
    ``curvature="empirical_fisher"``. Their sign does not matter (both use only ``g gᵀ`` and ``(g·v) g``).
    ``sampled_labels`` only records how the gradients were made."""
    missing = sorted(set(modules) - set(gradients))
    if missing:
        raise ValueError(f"gradients: no per-example gradients for the tracked module(s) {missing}")
    gradients = {name: gradients[name] for name in modules}
    n = len(next(iter(gradients.values())))
    if strategy == "datainf":
        meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, sampled_labels=bool(sampled_labels))
        return DataInfSolver(gradients, meta)
    if strategy == "exact" and curvature == "empirical_fisher":
        meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, curvature=curvature,
                               block_diagonal=bool(block_diagonal))
        return EmpiricalFisherSolver(gradients, bool(block_diagonal), meta)
    raise ValueError(f"gradient_solver: builds 'datainf' or 'exact' with curvature='empirical_fisher', not "
                     f"{strategy!r} with curvature={curvature!r}")


def make_solver(strategy: str, model, task: Task, loader: Iterable, modules, sampled_labels=None,
                max_examples=None, dtype=torch.float32, seed: int = 0, progress: bool = True, **options):
    """Create the solver ``strategy`` (see the module docstring); called by :func:`fit_factors`."""
    allowed = {"lissa": {"depth", "scale"}, "datainf": set(), "exact": {"block_diagonal", "curvature"},
               "pbrf": {"epsilon", "steps", "learning_rate", "central"}}[strategy]
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TypeError(f"fit_factors: unexpected option(s) {unknown} for strategy {strategy!r}; "
                        f"it takes {sorted(allowed) or 'none'}")
    with evaluation_mode(model):
        if strategy == "datainf":
            kind = "sampled" if sampled_labels else "loss"  # the paper: true labels (empirical Fisher)
            grads, _ = per_example_gradients(model, task, loader, modules, kind, max_examples, dtype, seed, progress,
                                             desc="datainf gradients")
            return gradient_solver(strategy, model, modules, grads, sampled_labels=bool(sampled_labels))
        curvature = options.get("curvature", "gauss_newton")
        if strategy == "exact" and curvature not in ("gauss_newton", "empirical_fisher"):
            raise ValueError(f"curvature: expected 'gauss_newton' or 'empirical_fisher', got {curvature!r}")
        if strategy == "exact" and curvature == "empirical_fisher":
            grads, _ = per_example_gradients(model, task, loader, modules, "loss", max_examples, torch.float64, seed,
                                             progress, desc="empirical Fisher gradients")
            return gradient_solver(strategy, model, modules, grads, **options)
        functional = FunctionalModel(model, task, modules)
        if strategy == "exact":
            device = model_device(model)
            matrix, n = None, 0
            for step in iterate(loader, task, device, "fit_factors(loader)", max_examples, progress=progress,
                                desc="exact Gauss-Newton"):
                part = functional.ggn_matrix(step.batch)
                matrix = part if matrix is None else matrix + part
                n += step.size
            matrix = matrix / n
            if options.get("block_diagonal", False):
                mask = torch.block_diag(*[torch.ones(s, s, dtype=torch.bool) for s in functional.sizes])
                matrix = matrix * mask.to(matrix.device)
            check_finite({"all tracked modules": matrix}, "Gauss-Newton matrix")
            meta = fitted_metadata(model, modules, strategy, counts={"sequences": n}, curvature=curvature,
                                   block_diagonal=bool(options.get("block_diagonal", False)))
            return ExactSolver(functional, matrix, meta)
        if strategy == "lissa":
            meta = fitted_metadata(model, modules, strategy, depth=options.get("depth", 1000),
                                   scale=options.get("scale"))

            def damping_default():  # only when a caller leaves the damping to the solver (a pass over the data)
                with evaluation_mode(model):
                    return _mean_diagonal(model, task, loader, modules, max_examples, seed, progress)

            return LissaSolver(functional, loader, damping_default, options.get("depth", 1000), options.get("scale"),
                               meta, progress, seed)
        damping_default = _mean_diagonal(model, task, loader, modules, max_examples, seed, progress)
        meta = fitted_metadata(model, modules, strategy, **{k: options.get(k) for k in sorted(allowed)})
        return PBRF(functional, loader, damping_default, options.get("epsilon", 1e-3), options.get("steps", 500),
                    options.get("learning_rate", 1e-3), options.get("central", True), max_examples, meta, progress)
