"""LoRA fine-tuning of a causal LM on prompt/completion pairs through ``peft``.

The loss is the summed cross-entropy of the completion tokens (the prompt is context only), averaged over the
examples of a batch; only the LoRA matrices are trained. The LoRA modules are ``nn.Linear`` layers named
``...lora_A.default`` and ``...lora_B.default``, which the influence engine tracks like any other linear layer
(:data:`LORA_MODULES`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import peft
import torch
from tqdm import tqdm

from influence_study.engine.tasks import at_least_float32
from influence_study.models.evaluation import completion_sequences, padded_batches

LORA_MODULES = ("*lora_A*", "*lora_B*")
# The attention projections per architecture (DataInf adapts the query and value projections; GPT-2 and
# GPT-NeoX fuse query, key and value into one matrix).
DEFAULT_TARGETS = {"gpt2": ["c_attn"], "gpt_neox": ["query_key_value"], "llama": ["q_proj", "v_proj"]}


@dataclass
class Examples:
    """Tokenised prompt/completion pairs: ``BOS prompt completion`` with the completion's first position."""

    sequences: list[list[int]]
    starts: list[int]
    pad_id: int

    def batches(self, batch_size: int, subset: Sequence[int] | None = None) -> tuple[list[dict], np.ndarray]:
        """Length-sorted padded batches (labels = completion tokens) of ``subset`` (default: all) and the
        position of every example in loader order."""
        positions = np.arange(len(self.sequences)) if subset is None else np.asarray(subset, dtype=int)
        out, order = [], []
        for idx, batch in padded_batches([self.sequences[i] for i in positions], [self.starts[i] for i in positions],
                                         self.pad_id, batch_size):
            out.append(batch)
            order.append(positions[idx])
        return out, (np.concatenate(order) if order else np.zeros(0, dtype=int))


def encode_examples(tokenizer, prompts: Sequence[str], completions: Sequence[str], max_length: int) -> Examples:
    """``BOS prompt completion`` token ids of each pair (truncated from the left to ``max_length``)."""
    sequences, starts, _ = completion_sequences(tokenizer, list(prompts), list(completions), max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    return Examples(sequences, starts, pad)


def target_modules(model: torch.nn.Module, targets: Sequence[str] | None) -> list[str]:
    """``targets``, or the attention projections of the model's architecture when ``None``."""
    if targets:
        return list(targets)
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in DEFAULT_TARGETS:
        raise ValueError(f"finetune.lora.target_modules: no default for model type {kind!r}; name the modules "
                         f"to adapt (e.g. {DEFAULT_TARGETS['llama']})")
    return DEFAULT_TARGETS[kind]


def add_lora(model: torch.nn.Module, rank: int, alpha: float | None, targets: Sequence[str] | None, seed: int):
    """Wrap ``model`` in a ``peft`` LoRA model of rank ``rank`` (scale ``alpha / rank``; ``alpha=None`` gives
    ``alpha = rank``, i.e. scale 1) on ``targets``; the LoRA matrices are initialised from ``seed``.

    GPT-2's ``Conv1D`` layers store their weight transposed; ``fan_in_fan_out`` is set for them."""
    if rank < 1:
        raise ValueError(f"finetune.ranks: expected positive LoRA ranks, got {rank}")
    names = target_modules(model, targets)
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [t for t in names if t not in present]
    if missing:
        raise ValueError(f"finetune.lora.target_modules: {missing} not found in {type(model).__name__}")
    fan_in_fan_out = getattr(model.config, "model_type", None) == "gpt2"
    config = peft.LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, target_modules=names,
                             lora_dropout=0.0, bias="none", fan_in_fan_out=fan_in_fan_out)
    torch.manual_seed(seed)
    return peft.get_peft_model(model, config)


def completion_loss(model, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Summed cross-entropy of the completion tokens of every example of ``batch``, averaged over examples."""
    logits = at_least_float32(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1])
    labels = batch["labels"][:, 1:]
    losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return (losses * (labels != -100)).sum() / len(labels)


@torch.no_grad()
def mean_completion_loss(model, batches: Sequence[Mapping[str, torch.Tensor]], device) -> float:
    """Mean over examples of the summed completion cross-entropy (nats per example)."""
    model.eval()
    total, n = 0.0, 0
    for batch in batches:
        batch = {k: v.to(device) for k, v in batch.items()}
        total += completion_loss(model, batch).item() * len(batch["labels"])
        n += len(batch["labels"])
    return total / max(n, 1)


def train_lora(model, examples: Examples, train: Sequence[int], settings: Mapping, seed: int,
               device: torch.device | str = "cpu", progress: bool = True) -> pd.DataFrame:
    """Train the LoRA parameters of ``model`` (a peft model) in place on the examples at positions ``train``.

    ``settings``: ``epochs``, ``batch_size``, ``learning_rate``, ``weight_decay``. AdamW with a constant rate,
    examples reshuffled every epoch from ``seed``. Returns the mean training loss per epoch (nats per example)
    with the elapsed seconds.
    """
    device = torch.device(device)
    model.to(device).train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("train_lora: the model has no trainable (LoRA) parameters")
    optimizer = torch.optim.AdamW(trainable, lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    rng = np.random.default_rng(seed)
    train = np.asarray(train, dtype=int)
    rows, start = [], time.perf_counter()
    bar = tqdm(range(1, settings["epochs"] + 1), desc="lora fine-tuning", unit="epoch", disable=not progress)
    for epoch in bar:
        order = rng.permutation(train)
        total = 0.0
        for first in range(0, len(order), settings["batch_size"]):
            chunk = order[first:first + settings["batch_size"]]
            batch, _ = examples.batches(len(chunk), chunk)
            batch = {k: v.to(device) for k, v in batch[0].items()}
            loss = completion_loss(model, batch)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"LoRA training loss became {loss.item()} in epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(chunk)
        rows.append({"epoch": epoch, "train_loss": total / len(order), "seconds": time.perf_counter() - start})
        bar.set_postfix(loss=f"{total / len(order):.3f}")
    model.eval()
    return pd.DataFrame(rows)
