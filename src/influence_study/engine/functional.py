"""The model's outputs as a function of the tracked modules' gradient-matrix-shaped parameters (``torch.func``).

The solvers that use no factors work on it: the exact Gauss-Newton matrix, LiSSA's Gauss-Newton-vector products
and the PBRF's optimisation all see the tracked parameters as ``{module: [out, in(+1)]}``, the same space as the
factors' gradient matrices (PAPER.md section 1).
"""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn
from torch.func import functional_call, grad, hessian, jacrev, jvp, vjp
from torch.nn.attention import SDPBackend, sdpa_kernel

from influence_study.engine.passes import take
from influence_study.engine.tasks import Task
from influence_study.engine.tracking import module_dims, param_matrix, split_matrix


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
        """The task's outputs of the model on ``batch`` with the tracked parameters replaced by ``matrices``."""
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
        """``[..., P]`` -> ``{module: [..., out, in]}`` (the inverse of :meth:`flatten`)."""
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
