"""Tasks: how a batch gives the model's outputs, the training loss and the measurement f.

A :class:`Task` is the one place where a user says how loss and measurement are computed; the engine
(:func:`~influence_study.fit_factors`, :func:`~influence_study.pairwise_scores`) works on any PyTorch model
through it. Conventions, shared by every task:

- ``train_loss`` is SUMMED over examples and tokens (not averaged), so that the gradient of one example's share
  is the gradient of its whole-sequence loss ``L(z) = -log p(z)``. (``LanguageModelingTask(token_reduction=
  "mean")`` averages over each sequence's tokens instead; factors and scores record it: :meth:`Task.conventions`.)
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
#: how :class:`LanguageModelingTask` reduces a sequence's token losses
TOKEN_REDUCTIONS = ("sum", "mean")


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

    def conventions(self) -> dict:
        """The task's choices that change scores without changing the model (how tokens are reduced, which are
        masked), as JSON values; :func:`~influence_study.fit_factors` and the scoring functions record them in
        their metadata. The base class has none."""
        return {}

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

    Args:
        token_reduction: ``"sum"`` (the default: a sequence's loss is ``-log p(z)``, its measurement
            ``log p(completion | prompt)``) or ``"mean"`` (both divided by the sequence's number of predicted
            tokens, as Hugging Face's mean loss is).
        mask_prompt: ``True`` (the default): positions labelled -100 (a query's prompt, padding) are not
            predicted. ``False``: every real token after the first (``attention_mask``) is predicted from
            ``input_ids`` and ``labels`` are not read, so f = log p(prompt and completion) (the unmasked prompt).
    """

    required_keys = ("input_ids", "attention_mask", "labels")

    def __init__(self, token_reduction: str = "sum", mask_prompt: bool = True):
        if token_reduction not in TOKEN_REDUCTIONS:
            raise ValueError(f"token_reduction: expected one of {TOKEN_REDUCTIONS}, got {token_reduction!r}")
        if not isinstance(mask_prompt, bool):
            raise TypeError(f"mask_prompt: expected True or False, got {mask_prompt!r}")
        self.token_reduction = token_reduction
        self.mask_prompt = mask_prompt

    def conventions(self) -> dict:
        """``{"token_reduction": "sum" | "mean", "mask_prompt": bool}``."""
        return {"token_reduction": self.token_reduction, "mask_prompt": self.mask_prompt}

    def outputs(self, model, batch):
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits

    @staticmethod
    def _shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = at_least_float32(logits[:, :-1])
        labels = labels[:, 1:]
        return logits, labels

    def _targets(self, outputs: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, targets, mask)`` of the predicted positions (shifted by one), by :attr:`mask_prompt`."""
        if self.mask_prompt:
            logits, labels = self._shifted(outputs, batch["labels"])
            return logits, labels, labels != -100
        logits, labels = self._shifted(outputs, batch["input_ids"])
        return logits, labels, batch["attention_mask"][:, 1:].bool()

    def _reduce(self, losses: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.token_reduction == "sum":
            return (losses * mask).sum()
        return ((losses * mask).sum(-1) / mask.sum(-1).clamp(min=1)).sum()

    def train_loss(self, outputs, batch, sample=False, generator=None):
        logits, labels, mask = self._targets(outputs, batch)
        if sample:
            labels = sample_like(logits, generator).to(labels.device)
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        return self._reduce(losses, mask)

    def measurement(self, outputs, batch):
        logits, labels, mask = self._targets(outputs, batch)
        losses = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
        return -self._reduce(losses, mask)

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
