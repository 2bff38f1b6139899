"""Training a causal LM from scratch on packed documents: a short loop a reader can follow top to bottom."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from influence_study.models.evaluation import heldout_loss
from influence_study.study.devices import autocast
from influence_study.study.seeds import epoch_order_seed


def packed_blocks(documents: Sequence[Sequence[int]], seq_len: int, eos_id: int, seed: int) -> Iterator[torch.Tensor]:
    """Endless stream of ``seq_len``-token blocks: each epoch shuffles the documents (a stream seeded by
    :func:`~influence_study.study.seeds.epoch_order_seed` of ``seed`` and the epoch), joins them with
    EOS separators (``EOS doc EOS doc ...``) and cuts the stream into blocks; the remainder is dropped."""
    if not documents:
        raise ValueError("packed_blocks: no training documents")
    total = sum(len(d) + 1 for d in documents)
    if total < seq_len:
        raise ValueError(f"packed_blocks: the corpus has {total} tokens, fewer than one block of {seq_len}")
    epoch = 0
    while True:
        order = np.random.default_rng(epoch_order_seed(seed, epoch)).permutation(len(documents))
        stream = np.fromiter(
            (tok for i in order for tok in (eos_id, *documents[i])), dtype=np.int64, count=total)
        for start in range(0, total - seq_len + 1, seq_len):
            yield torch.from_numpy(stream[start:start + seq_len].copy())
        epoch += 1


def steps_for(settings: Mapping, documents: Sequence[Sequence[int]]) -> int:
    """Optimiser steps of a run: ``settings["steps"]``, or, when ``settings["epochs"]`` is set, enough steps for
    that many passes over the packed documents (ceil(epochs x tokens / (batch_size x seq_len)), EOS separators
    counted), so a larger corpus is seen as often as a smaller one."""
    epochs = settings.get("epochs")
    if epochs is None:
        return int(settings["steps"])
    tokens = sum(len(d) + 1 for d in documents)
    return max(1, math.ceil(epochs * tokens / (settings["batch_size"] * settings["seq_len"])))


def batches(blocks: Iterator[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    """Group blocks into ``[batch_size, seq_len]`` tensors."""
    while True:
        yield torch.stack([next(blocks) for _ in range(batch_size)])


@dataclass
class TrainingResult:
    """History (one row per logged step) and totals of a training run."""
    history: pd.DataFrame
    seconds: float
    tokens: int


def train_language_model(model: torch.nn.Module, train_documents: Sequence[Sequence[int]],
                         valid_documents: Sequence[Sequence[int]], settings: Mapping, eos_id: int, seed: int,
                         device: torch.device | str = "cpu", progress: bool = True,
                         log: Callable[[str], None] = print, dtype: str = "float32",
                         stop_at_valid_loss: float | None = None) -> TrainingResult:
    """Train ``model`` in place with AdamW, linear warmup and cosine decay, on packed training documents.

    ``settings`` holds ``seq_len, batch_size, steps, learning_rate, warmup_steps, weight_decay, grad_clip,
    eval_every`` and optionally ``epochs`` (which then sets the steps: :func:`steps_for`). The validation loss
    (nats per token on held-out documents) is measured every ``eval_every`` steps and at the end.
    ``dtype="bfloat16"`` computes in bf16 autocast. Deterministic on CPU for a fixed seed and thread count.

    ``stop_at_valid_loss``: stop at the first measurement whose validation loss is at or below it (the run's
    checkpoint at that step: the schedule is still the full run's, so the history is a prefix of the full run's);
    the run goes to the end when no measurement reaches it. ``TrainingResult.tokens`` counts the steps taken.
    """
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device).train()
    steps = steps_for(settings, train_documents)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (decay if param.ndim >= 2 else no_decay).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings["learning_rate"], betas=(0.9, 0.95))
    schedule = get_cosine_schedule_with_warmup(optimizer, settings["warmup_steps"], steps)
    stream = batches(packed_blocks(train_documents, settings["seq_len"], eos_id, seed), settings["batch_size"])

    rows, running, count = [], 0.0, 0
    start = time.perf_counter()
    bar = tqdm(range(1, steps + 1), desc="training", unit="step", disable=not progress, mininterval=2.0)
    for step in bar:
        input_ids = next(stream).to(device)
        with autocast(dtype, device):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()} at step {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
        optimizer.step()
        schedule.step()
        running, count = running + loss.item(), count + 1
        if step % settings["eval_every"] == 0 or step == steps:
            with autocast(dtype, device):
                valid = heldout_loss(model, valid_documents, eos_id, device=device) if valid_documents else float("nan")
            model.train()
            rows.append({"step": step, "tokens": step * settings["batch_size"] * settings["seq_len"],
                         "learning_rate": schedule.get_last_lr()[0], "train_loss": running / count,
                         "valid_loss": valid, "seconds": time.perf_counter() - start})
            bar.set_postfix(train=f"{running / count:.3f}", valid=f"{valid:.3f}")
            log(f"step {step}/{steps}: train loss {running / count:.4f}, valid loss {valid:.4f}")
            running, count = 0.0, 0
            if stop_at_valid_loss is not None and valid <= stop_at_valid_loss:
                log(f"stopped at step {step}/{steps}: valid loss {valid:.4f} <= {stop_at_valid_loss:.4f}")
                break
    bar.close()
    model.eval()
    seconds = time.perf_counter() - start
    return TrainingResult(pd.DataFrame(rows), seconds, step * settings["batch_size"] * settings["seq_len"])
