"""Which modules are tracked, and hooks that capture their inputs and output gradients.

Every tracked module is an affine map ``y = W a + b``: a ``torch.nn.Linear`` (weight ``[out, in]``) or
Hugging Face GPT-2's ``Conv1D`` (weight ``[in, out]``). The engine works on each module's gradient as one matrix
``DW`` of shape ``[out, in (+1)]``: the weight gradient in ``Linear`` orientation, with the bias gradient as its
last column (the paper's homogeneous coordinate) when the module has a bias. For one example,
``DW = sum_t s_t a_t^T`` over its tokens, with ``a_t`` the input (a 1 appended for the bias) and ``s_t`` the
gradient with respect to the output.
"""

from __future__ import annotations

import contextlib
import fnmatch
import sys
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import nn

#: default tracked modules (the MLP weight matrices) for known Hugging Face architectures, as name patterns
MLP_PATTERNS: dict[str, tuple[str, ...]] = {
    "gpt2": ("*.mlp.c_fc", "*.mlp.c_proj"),
    "gpt_neox": ("*.mlp.dense_h_to_4h", "*.mlp.dense_4h_to_h"),
    "llama": ("*.mlp.gate_proj", "*.mlp.up_proj", "*.mlp.down_proj"),
    "mistral": ("*.mlp.gate_proj", "*.mlp.up_proj", "*.mlp.down_proj"),
    "qwen2": ("*.mlp.gate_proj", "*.mlp.up_proj", "*.mlp.down_proj"),
    "gemma": ("*.mlp.gate_proj", "*.mlp.up_proj", "*.mlp.down_proj"),
    "opt": ("*.fc1", "*.fc2"),
    "gptj": ("*.mlp.fc_in", "*.mlp.fc_out"),
}


def is_trackable(module: nn.Module) -> bool:
    """Whether ``module`` is an ``nn.Linear`` or Hugging Face's ``Conv1D``. The engine needs only torch: ``Conv1D``
    is recognised without importing transformers (a model that has one has imported it)."""
    if isinstance(module, nn.Linear):
        return True
    conv1d = getattr(sys.modules.get("transformers.pytorch_utils"), "Conv1D", None)
    return isinstance(conv1d, type) and isinstance(module, conv1d)


def module_dims(module: nn.Module) -> tuple[int, int, bool]:
    """``(out_features, in_features, has_bias)`` of a trackable module."""
    if isinstance(module, nn.Linear):
        return module.out_features, module.in_features, module.bias is not None
    in_features, out_features = module.weight.shape  # Conv1D stores [in, out]
    return out_features, in_features, module.bias is not None


def default_patterns(model: nn.Module) -> tuple[str, ...] | None:
    """The MLP patterns of ``model``'s architecture (from ``model.config.model_type``), or ``None``."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return MLP_PATTERNS.get(model_type)


def select_modules(model: nn.Module, modules: str | Sequence[str] | None = None) -> dict[str, nn.Module]:
    """The tracked modules of ``model`` by qualified name, in model order.

    ``modules`` is a list of exact names or glob patterns (``"*.mlp.*"``); ``None`` selects the MLP weight
    matrices of known Hugging Face architectures (``MLP_PATTERNS``) and otherwise every ``nn.Linear``/``Conv1D``.
    Raises ``ValueError`` if nothing matches and ``TypeError`` if a name or a pattern matches only modules that
    cannot be tracked (anything but ``nn.Linear`` and ``Conv1D``).
    """
    named = dict(model.named_modules())
    if modules is None:
        patterns = default_patterns(model)
        if patterns is None:
            chosen = {n: m for n, m in named.items() if is_trackable(m)}
            if not chosen:
                raise ValueError(f"no module matched the default selection: {type(model).__name__} has no "
                                 f"nn.Linear or Conv1D modules; pass modules=[...] with names to track")
            return chosen
    else:
        patterns = (modules,) if isinstance(modules, str) else tuple(modules)
        if not patterns:
            raise ValueError("modules: an empty selection; pass None for the default or a list of names/patterns")
    chosen: dict[str, nn.Module] = {}
    for pattern in patterns:
        # "" names the model itself (what the default selection calls a bare nn.Linear); patterns never match it
        hits = {n: m for n, m in named.items() if n == pattern or (n and fnmatch.fnmatchcase(n, pattern))}
        if not hits:
            close = [n for n in named if n and pattern.split(".")[-1].strip("*") in n][:5]
            raise ValueError(f"modules: no module of {type(model).__name__} matched {pattern!r}"
                             + (f"; similar names: {close}" if close else ""))
        trackable = {n: m for n, m in hits.items() if is_trackable(m)}
        if not trackable:
            kinds = sorted({f"{n} ({type(m).__name__})" for n, m in hits.items()})[:5]
            raise TypeError(f"modules: {pattern!r} matched only modules that cannot be tracked: {kinds}; only "
                            f"nn.Linear and transformers' Conv1D can be tracked")
        chosen.update(trackable)
    order = {n: i for i, n in enumerate(named)}
    return dict(sorted(chosen.items(), key=lambda item: order[item[0]]))


def with_bias_column(activations: torch.Tensor, has_bias: bool) -> torch.Tensor:
    """Append the homogeneous coordinate (a column of ones) when the module has a bias."""
    if not has_bias:
        return activations
    ones = torch.ones(*activations.shape[:-1], 1, dtype=activations.dtype, device=activations.device)
    return torch.cat([activations, ones], dim=-1)


@dataclass
class Captured:
    """What one forward/backward pass left for one module: its input ``x`` [B, T, in] (a view of what the module
    received), the output gradients ``s`` [B, T, out] (T = 1 for modules without a token dimension), and
    ``tokens`` = T. ``a`` is ``x`` with the bias column. ``received``: the output gradient arrived (a consumer of
    :class:`ModuleTracker` may have released ``x`` or ``s`` since, by setting them to None)."""

    x: torch.Tensor | None = None
    s: torch.Tensor | None = None
    has_bias: bool = False
    tokens: int = 0
    received: bool = False
    version: int = 0  # x._version when captured: an in-place change of the input afterwards is refused

    @property
    def a(self) -> torch.Tensor:
        """The inputs with the homogeneous coordinate (a 1 appended for the bias): ``[B, T, in(+1)]``, formed on
        each access, so that only the module being used holds that copy."""
        if self.x._version != self.version:
            raise RuntimeError("the input of a tracked module was modified in place after the module used it; the "
                               "engine reads it after the forward pass: make that operation out of place")
        return with_bias_column(self.x, self.has_bias)

    def per_example_gradient(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``DW_b = sum_t s_bt a_bt^T`` for every example b: ``[B, out, in(+1)]``."""
        s, a = self.s, self.a
        if dtype is not None:
            s, a = s.to(dtype), a.to(dtype)
        return torch.bmm(s.transpose(1, 2), a)


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode inside the context (no dropout), its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Switch ``requires_grad`` off for every parameter of ``model`` inside the context (restored after), so
    that passes that differentiate with respect to something else never compute or accumulate weight
    gradients."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class ModuleTracker:
    """Capture inputs and output gradients of ``modules`` during the passes made inside :meth:`track`.

    Inside the context every parameter of the model has ``requires_grad`` switched off (and restored after),
    and the output of a tracked module that nothing upstream differentiates starts the graph (a copy of it that
    requires gradient): the backward pass then computes only the activation gradients the engine reads, never
    weight gradients that it would throw away, nor the input gradient of the lowest tracked module. Captured
    tensors are detached and kept in ``self.captured[name]``.

    A pass may consume them as they come instead: ``on_input(name, record)`` is called in the forward pass once a
    module's input is captured, ``on_gradient(name, record)`` in the backward pass once its output gradient is;
    a consumer that is done with ``record.x`` or ``record.s`` may release it (set it to None), so that it is not
    held until the end of the pass.
    """

    def __init__(self, model: nn.Module, modules: dict[str, nn.Module]):
        self.model = model
        self.modules = modules
        self.captured: dict[str, Captured] = {}
        self.on_input: Callable[[str, Captured], None] | None = None
        self.on_gradient: Callable[[str, Captured], None] | None = None

    @contextlib.contextmanager
    def track(self) -> Iterator["ModuleTracker"]:
        handles = []
        with frozen_parameters(self.model):
            try:
                for name, module in self.modules.items():
                    has_bias = module_dims(module)[2]
                    handles.append(module.register_forward_hook(self._make_forward_hook(name, has_bias)))
                with torch.enable_grad():
                    yield self
            finally:
                for handle in handles:
                    handle.remove()

    def clear(self) -> None:
        self.captured = {}

    def _make_forward_hook(self, name: str, has_bias: bool):
        def hook(module, args, output):
            x = args[0].detach()
            x = x.reshape(x.shape[0], -1, x.shape[-1])
            record = Captured(x=x, has_bias=has_bias, tokens=x.shape[1], version=x._version)
            self.captured[name] = record
            if self.on_input is not None:
                self.on_input(name, record)
            batch = output.shape[0]
            starts_graph = not output.requires_grad
            if starts_graph:
                # nothing upstream is differentiated: the graph starts at this output, so the backward pass stops
                # here instead of computing the input gradient (a [tokens, out] x [out, in] product) that nothing
                # reads. The clone keeps the returned output a non-leaf, so in-place ops on it stay legal.
                output = output.detach().requires_grad_(True).clone()

            def grad_hook(grad):
                record.s = grad.detach().reshape(batch, -1, grad.shape[-1])
                record.received = True
                if self.on_gradient is not None:
                    self.on_gradient(name, record)

            output.register_hook(grad_hook)
            return output if starts_graph else None
        return hook

    def gradients(self, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Per-example gradient matrices ``{name: [B, out, in(+1)]}`` of the last backward pass."""
        return {name: self._get(name).per_example_gradient(dtype) for name in self.modules}

    def _get(self, name: str) -> Captured:
        record = self.captured.get(name)
        if record is None or not record.received:
            raise RuntimeError(f"module {name!r} received no gradient: is it used by the task's loss? "
                               f"(modules that the measurement or loss does not depend on cannot be tracked)")
        return record


def param_matrix(module: nn.Module, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Parameter-shaped ``weight``/``bias`` tensors of ``module`` as one ``[out, in(+1)]`` matrix."""
    w = weight if isinstance(module, nn.Linear) else weight.T
    return w if bias is None else torch.cat([w, bias.unsqueeze(-1)], dim=-1)


def split_matrix(module: nn.Module, matrix: torch.Tensor) -> list[torch.Tensor]:
    """Inverse of :func:`param_matrix`: ``[weight, bias]`` (or ``[weight]``) in the module's parameter shapes;
    leading batch dimensions are kept."""
    _, n_in, has_bias = module_dims(module)
    w = matrix[..., :n_in]
    if not isinstance(module, nn.Linear):
        w = w.transpose(-1, -2)
    return [w, matrix[..., n_in]] if has_bias else [w]


def module_params(module: nn.Module) -> list[torch.Tensor]:
    """``[weight, bias]`` or ``[weight]``: the parameters the gradient matrix covers."""
    return [module.weight] + ([module.bias] if module.bias is not None else [])
