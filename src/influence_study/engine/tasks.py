"""Tasks: how a batch gives the model's outputs, the training loss and the measurement f.

A :class:`Task` is the one place where a user says how loss and measurement are computed; the engine
(:func:`~influence_study.fit_factors`, :func:`~influence_study.pairwise_scores`) works on any PyTorch model
through it. Conventions, shared by every task:

- ``train_loss`` is SUMMED over examples and tokens (not averaged), so that the gradient of one example's share
  is the gradient of its whole-sequence loss ``L(z) = -log p(z)``.
- ``measurement`` is f SUMMED over the batch; for a language model f = log p(completion | prompt).
- Dimension 0 of every batch tensor indexes examples, and examples do not interact inside the model (no batch
  norm), so per-example gradients can be read off one batched backward pass.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Mapping

import torch
import torch.nn.functional as F

Batch = Mapping[str, torch.Tensor]


class Task(ABC):
    """How to compute outputs, the summed training loss and the summed measurement for a batch.

    Subclass it for your own model. ``outputs`` runs the model; ``train_loss`` and ``measurement`` are functions
    of those outputs and the batch only (the engine needs this split to build Gauss-Newton products and the
    proximal Bregman objective). Override ``required_keys`` to have loaders checked, and ``token_mask`` when the
    tracked activations carry a token dimension with padding.
    """

    #: keys every batch must contain (checked on the first batch, with a clear error)
    required_keys: tuple[str, ...] = ()

    @abstractmethod
    def outputs(self, model: torch.nn.Module, batch: Batch) -> torch.Tensor:
        """Run ``model`` on ``batch``; return the outputs the loss is defined on (e.g. logits)."""

    @abstractmethod
    def train_loss(self, outputs: torch.Tensor, batch: Batch, sample: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
        """The training loss summed over examples and tokens. With ``sample=True`` the targets are drawn from
        the model's own predictive distribution (detached), which makes the gradient covariance the true
        Fisher, equal to the Gauss-Newton Hessian for these losses."""

    @abstractmethod
    def measurement(self, outputs: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The measurement f summed over the batch (higher = more of what the query asks)."""

    def token_mask(self, batch: Batch) -> torch.Tensor | None:
        """``[batch, tokens]`` boolean mask of real (non-padding) positions, or ``None`` if every position of
        a tracked activation is real."""
        return None

    def num_examples(self, batch: Batch) -> int:
        """Number of examples in ``batch`` (the length of its first tensor)."""
        return len(next(iter(batch.values())))

    def check_batch(self, batch: Any, where: str) -> None:
        """Raise a clear error if ``batch`` is not a mapping with :attr:`required_keys`."""
        if not isinstance(batch, Mapping):
            raise TypeError(f"{where}: expected each batch to be a dict with keys {list(self.required_keys)}, "
                            f"got {type(batch).__name__}")
        missing = [k for k in self.required_keys if k not in batch]
        if missing:
            raise KeyError(f"{where}: batch is missing key(s) {missing}; it has {sorted(batch)} and "
                           f"{type(self).__name__} needs {list(self.required_keys)}")


def at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32 if it is in a half-precision dtype; float32 and float64 are kept (a float64 model's loss
    and measurement stay in float64)."""
    return t.float() if t.is_floating_point() and torch.finfo(t.dtype).bits < 32 else t


def sample_like(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One target per row of ``logits`` [..., classes], drawn from softmax(logits) (no gradient)."""
    probs = torch.softmax(logits.detach().float(), dim=-1).reshape(-1, logits.shape[-1])
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


class LanguageModelingTask(Task):
    """Any Hugging Face causal LM (``AutoModelForCausalLM``).

    Batches hold ``input_ids``, ``attention_mask`` and ``labels`` (the tokens to predict, -100 where ignored;
    labels are shifted inside the task as Hugging Face does). For a training sequence every real token after
    the first is a label; for a query the prompt positions are -100, so f = log p(completion | prompt).
    """

    required_keys = ("input_ids", "attention_mask", "labels")

    def outputs(self, model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @staticmethod
    def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = at_least_float32(logits[:, :-1])
        labels = labels[:, 1:]
        return logits, labels

    def train_loss(self, outputs, batch, sample=False, generator=None):
        logits, labels = self._shifted(outputs, batch["labels"])
        mask = labels != -100
        if sample:
            labels = sample_like(logits, generator).to(labels.device)
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        return (losses * mask).sum()

    def measurement(self, outputs, batch):
        logits, labels = self._shifted(outputs, batch["labels"])
        mask = labels != -100
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        return -(losses * mask).sum()

    def token_mask(self, batch):
        return batch["attention_mask"].bool()


class ClassificationTask(Task):
    """A classifier whose outputs are logits ``[batch, classes]``; batches hold ``inputs`` and ``labels``.

    Training loss: summed cross-entropy. Measurement: the log-probability of the true class, summed.
    """

    required_keys = ("inputs", "labels")

    def outputs(self, model, batch):
        return model(batch["inputs"])

    def train_loss(self, outputs, batch, sample=False, generator=None):
        labels = sample_like(outputs, generator).to(outputs.device) if sample else batch["labels"]
        return F.cross_entropy(at_least_float32(outputs), labels, reduction="sum")

    def measurement(self, outputs, batch):
        return -F.cross_entropy(at_least_float32(outputs), batch["labels"], reduction="sum")


class RegressionTask(Task):
    """A regression model with outputs ``[batch, dims]`` and a Gaussian likelihood of unit variance: the loss
    is ``0.5 * ||output - target||^2`` summed; sampled targets are ``output + N(0, I)``. The measurement is the
    log-likelihood of the true target up to a constant (``-0.5 * ||output - target||^2``), summed."""

    required_keys = ("inputs", "targets")

    def outputs(self, model, batch):
        return model(batch["inputs"])

    def _targets(self, batch, outputs):
        target = batch["targets"]
        return target.reshape(outputs.shape).to(outputs.dtype)

    def train_loss(self, outputs, batch, sample=False, generator=None):
        if sample:
            noise = torch.randn(outputs.shape, generator=generator, device=outputs.device, dtype=outputs.dtype)
            target = outputs.detach() + noise
        else:
            target = self._targets(batch, outputs)
        return 0.5 * ((outputs - target) ** 2).sum()

    def measurement(self, outputs, batch):
        return -0.5 * ((outputs - self._targets(batch, outputs)) ** 2).sum()
