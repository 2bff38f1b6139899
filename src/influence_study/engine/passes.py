"""Passes over a data loader: batches on the model's device, example counting, per-example gradients."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Mapping

import torch
from tqdm import tqdm

from influence_study.engine.tasks import Task
from influence_study.engine.tracking import ModuleTracker


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a model without parameters)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def to_device(batch: Mapping, device: torch.device) -> dict:
    """Move every tensor of ``batch`` to ``device`` (other values are kept)."""
    return {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()}


def take(batch: Mapping, rows) -> dict:
    """Rows ``rows`` (a slice or an index tensor) of every tensor of ``batch``."""
    return {k: (v[rows] if torch.is_tensor(v) else v) for k, v in batch.items()}


@dataclass
class Step:
    """One batch of a pass: its tensors (on device), global example indices and number of examples."""

    batch: dict
    indices: torch.Tensor
    size: int


def iterate(loader: Iterable, task: Task, device: torch.device, where: str, max_examples: int | None = None,
            start: int = 0, stop: int | None = None, progress: bool = False, desc: str | None = None) -> Iterator[Step]:
    """Batches of ``loader`` on ``device`` with their global example indices (position in the loader's order).

    Only examples with ``start <= index < stop`` are yielded (batches outside are skipped without compute),
    and at most ``max_examples`` of them. The first batch is checked against ``task.required_keys``.
    """
    if iter(loader) is loader:
        raise TypeError(f"{where}: got a one-shot iterator ({type(loader).__name__}); pass something that can be "
                        f"iterated several times in the same order, e.g. a list of batches or a DataLoader "
                        f"without shuffling")
    seen = 0
    position = 0
    total = None
    try:
        total = len(loader)  # type: ignore[arg-type]
    except TypeError:
        pass
    bar = tqdm(loader, total=total, desc=desc or where, disable=not progress, leave=False)
    checked = False
    for raw in bar:
        if not checked:
            task.check_batch(raw, where)
            checked = True
        size = task.num_examples(raw)
        lo, hi = position, position + size
        position = hi
        first = max(lo, start)
        last = hi if stop is None else min(hi, stop)
        if max_examples is not None:
            last = min(last, first + max_examples - seen)
        if last <= first:
            if (stop is not None and lo >= stop) or (max_examples is not None and seen >= max_examples):
                break
            continue
        batch = raw if (first, last) == (lo, hi) else take(raw, slice(first - lo, last - lo))
        seen += last - first
        yield Step(to_device(batch, device), torch.arange(first, last), last - first)
        if max_examples is not None and seen >= max_examples:
            break
    bar.close()
    if not checked:
        raise ValueError(f"{where}: the loader yielded no batches")


def backward_gradients(model, task: Task, tracker: ModuleTracker, batch: dict, kind: str,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """One forward and backward pass inside ``tracker.track()``; returns the scalar that was differentiated.

    ``kind`` is ``"sampled"`` (training loss on labels sampled from the model: Fisher pseudo-gradients),
    ``"loss"`` (training loss on true labels), ``"logp"`` (minus the training loss: gradients of log p(z), the
    direction whose influence the scores report) or ``"measurement"`` (f).
    """
    tracker.clear()
    outputs = task.outputs(model, batch)
    return backward_from(task, outputs, batch, kind, generator)


def backward_from(task: Task, outputs: torch.Tensor, batch: dict, kind: str, generator: torch.Generator | None = None,
                  retain_graph: bool = False) -> torch.Tensor:
    """The backward half of :func:`backward_gradients`, from the model's ``outputs`` (with ``retain_graph``, the
    graph is kept for another backward pass from the same outputs); returns the scalar that was differentiated."""
    if kind == "sampled":
        value = task.train_loss(outputs, batch, sample=True, generator=generator)
    elif kind == "loss":
        value = task.train_loss(outputs, batch)
    elif kind == "logp":
        value = -task.train_loss(outputs, batch)
    elif kind == "measurement":
        value = task.measurement(outputs, batch)
    else:  # pragma: no cover - internal misuse
        raise ValueError(kind)
    if not value.requires_grad:
        raise RuntimeError(f"the task's {kind} does not depend on any tracked module")
    value.backward(retain_graph=retain_graph)
    return value.detach()


def check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    """Raise ``FloatingPointError`` naming the first module whose tensor has NaN or Inf.

    A finite sum proves every element finite (a NaN or an infinity makes the sum NaN or infinite), in one read
    of the tensor and no mask as large as it; only a non-finite sum (a bad element, or finite values whose sum
    overflows) is checked element by element."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and torch.isfinite(tensor.sum()):
            continue
        if not torch.isfinite(tensor).all():
            raise FloatingPointError(f"NaN or Inf in the {what} of module {name!r}: check the model's outputs, "
                                     f"the learning rate it was trained with, or use float32/float64")


def sampling_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded with ``seed`` (for sampled labels)."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def example_gradient_batches(model, task, loader, modules, kind: str, max_examples=None, dtype=torch.float32,
                             seed: int = 0, progress: bool = False,
                             desc: str = "per-example gradients") -> Iterator[dict[str, torch.Tensor]]:
    """Per-example gradients ``{module: [B, out, in(+1)]}`` of each batch of ``loader``, streamed (``kind`` as in
    :func:`~influence_study.engine.passes.backward_gradients`)."""
    device = model_device(model)
    tracker = ModuleTracker(model, modules)
    generator = sampling_generator(seed, device)
    with tracker.track():
        for step in iterate(loader, task, device, "loader", max_examples, progress=progress, desc=desc):
            backward_gradients(model, task, tracker, step.batch, kind, generator)
            grads = tracker.gradients(dtype)
            check_finite(grads, "per-example gradients")
            yield grads


def per_example_gradients(model, task, loader, modules, kind: str, max_examples=None, dtype=torch.float32,
                          seed: int = 0, progress: bool = False, desc: str = "per-example gradients"):
    """``{module: [n, out, in(+1)]}`` per-example gradients over ``loader`` (as :func:`example_gradient_batches`,
    concatenated), and the number of examples."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    for grads in example_gradient_batches(model, task, loader, modules, kind, max_examples, dtype, seed, progress,
                                          desc):
        for name, g in grads.items():
            chunks[name].append(g)
    out = {}
    for name in list(chunks):  # one module at a time, its batches freed as soon as they are joined
        out[name] = torch.cat(chunks.pop(name))
    return out, len(next(iter(out.values())))
