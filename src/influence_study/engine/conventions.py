"""The conventions that change influence scores without changing the model, each an explicit option whose
effective value the factors and the scores record (``metadata["conventions"]``).

Those the engine cannot decide alone are read off the model and torch's global state at fit and score time, and
an option can force the deterministic choice for the duration of a call (restored afterwards):

- the attention kernel: ``config._attn_implementation`` of a Hugging Face model (``eager``, ``sdpa``, ...) and the
  enabled backends of ``torch.nn.functional.scaled_dot_product_attention`` (fused flash/memory-efficient kernels
  or the math kernel); option ``attention_kernel``;
- TF32 for float32 matmuls (CUDA): ``torch.backends.cuda.matmul.allow_tf32``, ``torch.get_float32_matmul_precision()``
  and, where torch has them, the ``fp32_precision`` settings; option ``tf32``.

The others are choices of the task (:meth:`~influence_study.engine.tasks.Task.conventions`: mean or sum over
tokens, masked prompt tokens), of the factors (``sampled_labels``: true or empirical Fisher; ``track_bias``) and of
the scores (``sum_queries``/``mean_queries``; ``n_train``: division by N).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from influence_study.engine.tracking import ModuleTracker, module_dims

ATTENTION_KERNELS = ("eager", "math")
#: the backends of scaled_dot_product_attention, by the name of their ``torch.backends.cuda.*_sdp_enabled`` flag
SDPA_BACKENDS = ("flash", "mem_efficient", "math", "cudnn")
#: the new-API precision settings of float32 matmuls and convolutions (torch >= 2.9), by attribute path
FP32_PRECISION_SETTINGS = ("cuda.matmul", "cudnn.conv", "cudnn.rnn", "mkldnn.matmul")
CURVATURE_NORMALISATION = "A: mean over real tokens; S and the eigenvalues: mean over sequences (G = mean over N)"


def _setting(path: str):
    """The ``torch.backends`` object at ``path`` (``"cuda.matmul"``), or ``None`` where this torch has none with
    an ``fp32_precision``."""
    target: Any = torch.backends
    for part in path.split("."):
        target = getattr(target, part, None)
    return target if target is not None and hasattr(target, "fp32_precision") else None


def _readable(getter):
    """``getter()``, or ``None`` where torch refuses to answer (after a mix of its legacy and new TF32 APIs)."""
    try:
        return getter()
    except RuntimeError:
        return None


def numerics_state(model: torch.nn.Module) -> dict:
    """The attention kernel and float32-matmul precision in force now, as JSON values."""
    config = getattr(model, "config", None)
    state = {
        "attention_implementation": getattr(config, "_attn_implementation", None),
        "sdpa_backends": [name for name in SDPA_BACKENDS
                          if getattr(torch.backends.cuda, f"{name}_sdp_enabled", lambda: False)()],
        "cuda_matmul_allow_tf32": _readable(lambda: bool(torch.backends.cuda.matmul.allow_tf32)),
        "cudnn_allow_tf32": _readable(lambda: bool(torch.backends.cudnn.allow_tf32)),
        "float32_matmul_precision": _readable(torch.get_float32_matmul_precision),
    }
    settings = {path: _setting(path) for path in FP32_PRECISION_SETTINGS}
    if any(s is not None for s in settings.values()):
        state["fp32_precision"] = {path: s.fp32_precision for path, s in settings.items() if s is not None}
    return state


def check_options(options) -> None:
    """``ValueError`` for a convention option of ``options`` (FactorArguments or ScoreArguments) that is not
    valid, before any work is done."""
    kernel, tf32 = getattr(options, "attention_kernel", None), getattr(options, "tf32", None)
    if kernel is not None and kernel not in ATTENTION_KERNELS:
        raise ValueError(f"attention_kernel: expected None or one of {ATTENTION_KERNELS}, got {kernel!r}")
    if tf32 is not None and not isinstance(tf32, bool):
        raise ValueError(f"tf32: expected None, True or False, got {tf32!r}")
    if not isinstance(getattr(options, "track_bias", True), bool):
        raise ValueError(f"track_bias: expected True or False, got {options.track_bias!r}")
    n_train = getattr(options, "n_train", None)
    if n_train is not None and (not isinstance(n_train, int) or isinstance(n_train, bool) or n_train < 1):
        raise ValueError(f"n_train: expected None or the number of training sequences (>= 1), got {n_train!r}")
    if getattr(options, "mean_queries", False) and getattr(options, "sum_queries", False):
        raise ValueError("mean_queries and sum_queries: choose one (the mean is the sum divided by the queries)")


@contextlib.contextmanager
def forced_numerics(model: torch.nn.Module, options) -> Iterator[dict]:
    """Apply ``options.attention_kernel`` and ``options.tf32`` (``None``: leave as it is) inside the context,
    restore the previous settings after, and yield :func:`numerics_state` as it is inside."""
    check_options(options)
    kernel, tf32 = getattr(options, "attention_kernel", None), getattr(options, "tf32", None)
    with contextlib.ExitStack() as stack:
        if kernel == "eager":
            config = getattr(model, "config", None)
            if config is None or not hasattr(config, "_attn_implementation"):
                raise ValueError(f"attention_kernel='eager' needs a Hugging Face model (with config."
                                 f"_attn_implementation); {type(model).__name__} has none: use 'math'")
            previous = config._attn_implementation
            if previous != "eager":
                config._attn_implementation = "eager"
                stack.callback(setattr, config, "_attn_implementation", previous)
        elif kernel == "math":
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        if tf32 is not None:
            stack.enter_context(_tf32(tf32))
        yield numerics_state(model)


@contextlib.contextmanager
def _tf32(allowed: bool) -> Iterator[None]:
    settings = {path: s for path in FP32_PRECISION_SETTINGS if (s := _setting(path)) is not None}
    if settings:  # the new API; the legacy flags are views of it
        saved = {path: s.fp32_precision for path, s in settings.items()}
        for path, s in settings.items():
            if not (allowed and path.startswith("mkldnn")):  # TF32 is a CUDA format: CPU matmuls stay float32
                s.fp32_precision = "tf32" if allowed else "ieee"
        try:
            yield
        finally:
            for path, s in settings.items():
                s.fp32_precision = saved[path]
        return
    saved_precision, saved_cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high" if allowed else "highest")
    torch.backends.cudnn.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(saved_precision)
        torch.backends.cudnn.allow_tf32 = saved_cudnn


def task_conventions(task) -> dict:
    """``{"task": class name, **task.conventions()}`` (a task without the method records its class only)."""
    conventions = getattr(task, "conventions", None)
    return {"task": type(task).__name__, **(conventions() if callable(conventions) else {})}


def fit_conventions(numerics: Mapping, task, sampled_labels, track_bias: bool) -> dict:
    """What the factors record: the numerics of the fit, the task's conventions, the Fisher and the bias."""
    fisher = None if sampled_labels is None else ("true (sampled labels)" if sampled_labels else "empirical")
    return {**numerics, **task_conventions(task), "sampled_labels": sampled_labels, "fisher": fisher,
            "track_bias": track_bias, "curvature_normalisation": CURVATURE_NORMALISATION}


def tracks_bias(factors) -> bool:
    """Whether ``factors`` were fitted with the bias columns (the default, and what factors written before the
    option existed did)."""
    return bool(factors.metadata.get("conventions", {}).get("track_bias", True))


def make_tracker(model: torch.nn.Module, modules: dict, track_bias: bool = True) -> ModuleTracker:
    """A :class:`~influence_study.engine.tracking.ModuleTracker`, capturing the inputs without the bias column
    when ``track_bias`` is False (the gradient matrices are then ``[out, in]``: the weights only)."""
    return ModuleTracker(model, modules) if track_bias else _WeightTracker(model, modules)


class _WeightTracker(ModuleTracker):
    """A tracker that never appends the homogeneous coordinate: bias gradients are left out."""

    def _make_forward_hook(self, name: str, has_bias: bool):
        return super()._make_forward_hook(name, False)


def weight_columns(grads: Mapping[str, torch.Tensor], modules: Mapping[str, torch.nn.Module],
                   track_bias: bool) -> dict[str, torch.Tensor]:
    """``grads`` ``[.., out, in(+1)]`` without their bias column when ``track_bias`` is False."""
    if track_bias:
        return dict(grads)
    return {name: g[..., :module_dims(modules[name])[1]].contiguous() for name, g in grads.items()}


def reduce_queries(grads: Mapping[str, torch.Tensor], options) -> tuple[dict[str, torch.Tensor], str]:
    """The query gradients as ``options.sum_queries``/``mean_queries`` ask, and the reduction's name."""
    if options.sum_queries:
        return {name: g.sum(0, keepdim=True) for name, g in grads.items()}, "sum"
    if options.mean_queries:
        return {name: g.mean(0, keepdim=True) for name, g in grads.items()}, "mean"
    return dict(grads), "none"


def finish_scores(scores, numerics: Mapping, task, factors, options, query_reduction: str | None):
    """Divide ``scores`` (a :class:`~influence_study.engine.scoring.Scores`) by ``options.n_train`` if set, and
    record the conventions of the scoring call and of the factors in its metadata; returns ``scores``."""
    n_train = getattr(options, "n_train", None)
    if n_train is not None:
        scores.scores = scores.scores / n_train
        if scores.per_module is not None:
            scores.per_module = scores.per_module / n_train
        if scores.per_token is not None:
            scores.per_token = scores.per_token / n_train
        scores.metadata["normalisation"] = f"divided by N = {n_train} training sequences"
    scores.metadata["conventions"] = {
        **numerics, **task_conventions(task), "query_reduction": query_reduction, "n_train": n_train,
        "track_bias": tracks_bias(factors), "sampled_labels": factors.metadata.get("sampled_labels"),
        "factors": factors.metadata.get("conventions")}
    return scores
