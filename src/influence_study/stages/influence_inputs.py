"""What the influence stages feed the engine: a study's model, its training documents and its queries as batches.

A training document is scored as one sequence ``EOS document`` (truncated to the model's context), which is how
it appears in the packed training stream (documents are separated by EOS); every token after the first is a
label. A query is ``BOS prompt completion`` with the prompt labelled -100, so f = log p(completion | prompt),
exactly as :func:`influence_study.models.evaluation.completion_scores` reads it.

Batches are length-sorted (less padding) and their composition depends only on the documents and the batch size,
never on the shard: a shard is a contiguous run of whole batches, so a sharded run computes every score from the
very same batches as an unsharded one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from influence_study.corpus.tokenizer import encode_documents
from influence_study.models.build import context_length
from influence_study.models.evaluation import completion_sequences, padded_batches
from influence_study.study.io import read_parquet, require_columns


@dataclass
class Batches:
    """Padded batches and, for each batch, the positions (in the source list) of its examples, in order."""

    batches: list[dict[str, torch.Tensor]]
    positions: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.batches)

    @property
    def order(self) -> np.ndarray:
        """Source position of every example in loader order (column/row ``i`` of a score matrix)."""
        return np.concatenate(self.positions) if self.positions else np.zeros(0, dtype=np.int64)

    def select(self, batch_range: range) -> "Batches":
        """The batches in ``batch_range`` (a shard)."""
        return Batches([self.batches[i] for i in batch_range], [self.positions[i] for i in batch_range])


def make_batches(sequences: Sequence[Sequence[int]], scored_from: Sequence[int], pad_id: int, batch_size: int,
                 subset: Sequence[int] | None = None) -> Batches:
    """Length-sorted padded batches of ``sequences`` (or of the positions ``subset`` only)."""
    positions = np.arange(len(sequences)) if subset is None else np.asarray(sorted(set(int(i) for i in subset)))
    chosen = [sequences[i] for i in positions]
    starts = [scored_from[i] for i in positions]
    batches, where = [], []
    for idx, batch in padded_batches(chosen, starts, pad_id, batch_size):
        batches.append(batch)
        where.append(positions[idx])
    return Batches(batches, where)


def document_batches(sequences: Sequence[Sequence[int]], pad_id: int, batch_size: int,
                     subset: Sequence[int] | None = None) -> Batches:
    """Training sequences (``EOS document``, see :func:`encode_training_documents`) as length-sorted padded
    batches in which every real token after the first is a label."""
    return make_batches(sequences, [1] * len(sequences), pad_id, batch_size, subset)


def encode_training_documents(tokenizer, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Each text as the training sequence it is scored as: ``EOS text``, truncated to ``max_length`` tokens."""
    return [[tokenizer.eos_token_id, *ids][:max_length] for ids in encode_documents(tokenizer, texts)]


def shard_range(n_batches: int, shard: int, n_shards: int) -> range:
    """Batches ``[floor(shard * n / n_shards), floor((shard + 1) * n / n_shards))``: ``n_shards`` contiguous
    shards that cover every batch once (``shard`` is 0-based)."""
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise ValueError(f"shard: expected 0 <= shard < n_shards, got shard {shard} of {n_shards}")
    return range(shard * n_batches // n_shards, (shard + 1) * n_batches // n_shards)


def parse_scatteritem(item: str) -> tuple[int, int]:
    """``"2-of-3"`` (Snakemake's scatter item, 1-based) -> ``(1, 3)`` (0-based shard, shard count)."""
    try:
        index, total = (int(part) for part in str(item).split("-of-"))
    except ValueError:
        raise ValueError(f"scatteritem: expected '<i>-of-<n>', got {item!r}") from None
    if not 1 <= index <= total:
        raise ValueError(f"scatteritem: expected 1 <= i <= n, got {item!r}")
    return index - 1, total


def check_scored_completions(table: pd.DataFrame, sequences: Sequence[Sequence[int]], starts: Sequence[int],
                             max_length: int, where: str) -> None:
    """Refuse queries whose completion keeps no token to score (empty after tokenisation, or cut off by the
    truncation to ``max_length``): their f = log p(completion | prompt) has no term, so every score would be 0.
    The error names the first such query id (and how many there are)."""
    empty = [i for i, (sequence, start) in enumerate(zip(sequences, starts)) if start >= len(sequence)]
    if not empty:
        return
    first = table.iloc[empty[0]]
    more = f" (and {len(empty) - 1} more: {table['query_id'].iloc[empty[1:6]].astype(str).tolist()})" \
        if len(empty) > 1 else ""
    raise ValueError(f"{where}: query {str(first['query_id'])!r}{more} has no completion token to score "
                     f"(completion {first['completion']!r}, prompt and completion truncated to {max_length} tokens), "
                     f"so f = log p(completion | prompt) has no term and every score of it would be 0; give it a "
                     f"non-empty completion or drop it")


@dataclass
class StudyInputs:
    """A trained model with its tokenizer, the training documents and the queries, ready to score."""

    model: torch.nn.Module
    tokenizer: object
    documents: pd.DataFrame  # training split only, in corpus order; position = column of the score matrices
    queries: pd.DataFrame
    document_sequences: list[list[int]]
    query_sequences: list[list[int]]
    query_starts: list[int]
    max_length: int

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self.eos_id

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    def document_batches(self, batch_size: int, subset: Sequence[int] | None = None) -> Batches:
        """Training documents as length-sorted batches (every real token after the first is a label)."""
        return document_batches(self.document_sequences, self.pad_id, batch_size, subset)

    def encode_documents(self, texts: Sequence[str]) -> list[list[int]]:
        """Other texts (e.g. probes that are not in the corpus) tokenised exactly as the training documents are."""
        return encode_training_documents(self.tokenizer, texts, self.max_length)

    def query_batches(self, batch_size: int, subset: Sequence[int] | None = None) -> Batches:
        """Queries as length-sorted batches (prompt tokens labelled -100)."""
        return make_batches(self.query_sequences, self.query_starts, self.pad_id, batch_size, subset)


def load_study_inputs(model_dir: str | os.PathLike, documents: str | os.PathLike,
                      queries: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                      max_length: int | None = None) -> StudyInputs:
    """Load a ``save_pretrained`` model directory (with its tokenizer), the training split of the corpus table
    and the queries table, and tokenise both (documents as ``EOS doc``, queries as ``BOS prompt completion``)."""
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{model_dir}: the tokenizer has no EOS token; documents are scored as 'EOS document'")
    max_length = min(max_length or context_length(model), context_length(model))
    docs = read_parquet(documents)
    require_columns(docs, ["doc_id", "text", "split"], str(documents))
    docs = docs.loc[docs["split"] == "train"].reset_index(drop=True)
    if docs.empty:
        raise ValueError(f"{documents}: no document in the training split")
    table = (read_parquet(queries) if queries is not None
             else pd.DataFrame(columns=["query_id", "prompt", "completion"]))
    require_columns(table, ["query_id", "prompt", "completion"], str(queries))
    table = table.reset_index(drop=True)
    doc_sequences = encode_training_documents(tokenizer, docs["text"], max_length)
    query_sequences, starts, _ = completion_sequences(tokenizer, table["prompt"], table["completion"], max_length)
    check_scored_completions(table, query_sequences, starts, max_length, str(queries))
    return StudyInputs(model, tokenizer, docs, table, doc_sequences, query_sequences, starts, max_length)
