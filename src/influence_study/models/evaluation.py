"""What a trained model has learned: held-out loss and completion accuracy on the corpus's queries."""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F


def padded_batches(sequences: Sequence[Sequence[int]], scored_from: Sequence[int], pad_id: int,
                   batch_size: int) -> Iterator[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Batches of right-padded sequences with ``labels`` = the tokens at positions >= ``scored_from[i]``
    (and -100 elsewhere), grouped by length. Yields ``(indices, batch)``."""
    order = np.argsort([len(s) for s in sequences], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(sequences[i]) for i in idx)
        input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(idx), width), dtype=torch.long)
        labels = torch.full((len(idx), width), -100, dtype=torch.long)
        for row, i in enumerate(idx):
            seq = torch.as_tensor(sequences[i], dtype=torch.long)
            input_ids[row, :len(seq)] = seq
            attention[row, :len(seq)] = 1
            labels[row, scored_from[i]:len(seq)] = seq[scored_from[i]:]
        yield idx, {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _token_logprobs(model, batch: dict[str, torch.Tensor], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-position log-probability of the label, whether it is the argmax, and the label mask (shifted)."""
    batch = {k: v.to(device) for k, v in batch.items()}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    mask = labels != -100
    safe = labels.clamp(min=0)
    logprobs = -F.cross_entropy(logits.transpose(1, 2), safe, reduction="none")
    top1 = logits.argmax(-1) == safe
    return logprobs * mask, top1 & mask, mask


@torch.no_grad()
def heldout_loss(model, documents: Sequence[Sequence[int]], eos_id: int, batch_size: int = 64,
                 device: torch.device | str = "cpu") -> float:
    """Mean cross-entropy in nats per token of ``documents``, each read as ``EOS doc`` (every document token
    is predicted). Token-weighted over all documents."""
    model.eval()
    sequences = [[eos_id, *doc] for doc in documents if len(doc)]
    if not sequences:
        raise ValueError("heldout_loss: no non-empty documents")
    total, count = 0.0, 0
    for _, batch in padded_batches(sequences, [1] * len(sequences), eos_id, batch_size):
        logprobs, _, mask = _token_logprobs(model, batch, device)
        total -= logprobs.sum().item()
        count += mask.sum().item()
    return total / count


def completion_sequences(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                         max_length: int | None = None) -> tuple[list[list[int]], list[int], np.ndarray]:
    """Token ids of ``BOS prompt completion`` for each pair, the position of each completion's first token, and
    whether the sequence was truncated to its last ``max_length`` tokens (the prompt loses its beginning first;
    the start never goes below 1, so a completion that alone does not fit loses its first tokens)."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if len(prompts) else []
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"] if len(completions) else []
    sequences = [[bos, *p, *c] for p, c in zip(prompt_ids, completion_ids)]
    starts = [1 + len(p) for p in prompt_ids]
    truncated = np.zeros(len(sequences), dtype=bool)
    if max_length is not None:
        for i, seq in enumerate(sequences):
            cut = len(seq) - max_length
            if cut > 0:
                sequences[i] = seq[cut:]
                starts[i] = max(starts[i] - cut, 1)
                truncated[i] = True
    return sequences, starts, truncated


@torch.no_grad()
def completion_scores(model, tokenizer, prompts: Sequence[str], completions: Sequence[str], batch_size: int = 64,
                      device: torch.device | str = "cpu", max_length: int | None = None) -> pd.DataFrame:
    """Score each completion given its prompt (read as ``BOS prompt completion``).

    Returns one row per pair: ``logprob`` (log p(completion | prompt), nats), ``n_tokens`` (completion tokens
    scored), ``token_accuracy`` (share of those tokens that are the model's top-1 prediction), ``correct``
    (every one is top-1, i.e. greedy decoding reproduces the completion exactly) and ``truncated``.
    A sequence longer than ``max_length`` (the model's context) keeps only its last ``max_length`` tokens
    (``truncated`` is true): the prompt loses its beginning, and if the completion alone does not fit, its first
    tokens are not scored (``n_tokens`` is then smaller than the completion).
    """
    model.eval()
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else bos
    sequences, starts, truncated = completion_sequences(tokenizer, prompts, completions, max_length)
    out = np.zeros((len(sequences), 4))
    for idx, batch in padded_batches(sequences, starts, pad, batch_size):
        logprobs, top1, mask = _token_logprobs(model, batch, device)
        n = mask.sum(1)
        out[idx, 0] = logprobs.sum(1).cpu().numpy()
        out[idx, 1] = n.cpu().numpy()
        out[idx, 2] = (top1.sum(1) / n.clamp(min=1)).cpu().numpy()
        out[idx, 3] = (top1.sum(1) == n).cpu().numpy()
    return pd.DataFrame({"logprob": out[:, 0], "n_tokens": out[:, 1].astype(int),
                         "token_accuracy": out[:, 2], "correct": out[:, 3].astype(bool), "truncated": truncated})


def evaluate_completions(model, tokenizer, rows: pd.DataFrame, batch_size: int, device, max_length: int) -> dict:
    """Mean completion loss (nats per example) and exact-match accuracy of greedy decoding on ``rows`` (columns
    ``prompt`` and ``completion``), from :func:`completion_scores`."""
    scores = completion_scores(model, tokenizer, rows["prompt"], rows["completion"], batch_size, device, max_length)
    return {"loss": float(-scores["logprob"].mean()), "accuracy": float(scores["correct"].mean())}
