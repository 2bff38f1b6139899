"""Every query of a study scored against every training document, one shard of documents at a time, and the
shards gathered into tables.

The recipe is the paper's: each query chunk is scored with rank-r preconditioned query gradients (query batching),
then each query's top-k documents are re-scored at full rank. A shard cannot know the global top-k, so it
re-scores its LOCAL top-k (under the same ordering: score descending, ties by document position), a superset of
the global top-k's members in that shard; the gather then picks the global top-k from the low-rank scores and takes
the full-rank value for exactly those pairs. Any number of shards therefore gives the table of one shard. The same
is done for each query's top-k among its BM25 candidates (the candidate-restricted table).

Shard tables hold integer positions (``query_index`` into the queries table, ``doc_index`` into the training
documents); :func:`gather_shards` checks that together they cover every pair exactly once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from influence_study.stages.influence_inputs import StudyInputs, shard_range
from influence_study.engine.scoring import pairwise_scores
from influence_study.engine.tasks import LanguageModelingTask

LAYER_NUMBER = re.compile(r"\.(\d+)\.")
TOKEN_QUERY_CHUNK = 8


@dataclass(frozen=True)
class ScoringSettings:
    """How a shard is scored: the ``influence`` keys of the same names (their defaults and meaning are in the
    config schema, the one place they are set; :func:`influence_study.stages.influence.scoring_settings`)."""

    batch_size: int
    query_batch_size: int
    query_rank: int | None
    rescore_top_k: int | None
    damping: float | None = None

    @property
    def rescoring(self) -> bool:
        return self.query_rank is not None and self.rescore_top_k is not None


def module_layers(module_names: Sequence[str]) -> np.ndarray:
    """The transformer block of each tracked module (the first ``.<number>.`` in its name), e.g.
    ``transformer.h.3.mlp.c_fc`` -> 3."""
    layers = []
    for name in module_names:
        match = LAYER_NUMBER.search(f".{name}.")
        if match is None:
            raise ValueError(f"module {name!r}: no layer number in its name; per-layer scores need names like "
                             f"'transformer.h.3.mlp.c_fc'")
        layers.append(int(match.group(1)))
    return np.asarray(layers)


def layer_columns(n_layers: int) -> list[str]:
    return [f"layer_{i}" for i in range(n_layers)]


def top_k_mask(query_index: np.ndarray, doc_index: np.ndarray, score: np.ndarray, k: int) -> np.ndarray:
    """For rows of (query, document, score), mark each query's ``k`` highest scores; ties go to the lower
    document position. The same rule decides the shard-local and the global top-k, which is what makes
    sharding exact."""
    order = np.lexsort((doc_index, -score.astype(np.float64), query_index))
    sorted_queries = query_index[order]
    group_start = np.r_[0, np.flatnonzero(np.diff(sorted_queries)) + 1]
    sizes = np.diff(np.r_[group_start, len(order)])
    rank = np.arange(len(order)) - np.repeat(group_start, sizes)
    mask = np.zeros(len(order), dtype=bool)
    mask[order[rank < k]] = True
    return mask


def _top_k(frame: pd.DataFrame, k: int) -> np.ndarray:
    """:func:`top_k_mask` of a frame of pairs (``query_index``, ``doc_index``, ``score``)."""
    return top_k_mask(frame["query_index"].to_numpy(), frame["doc_index"].to_numpy(), frame["score"].to_numpy(), k)


def _pair_frame(scores, query_positions, doc_positions, layers, n_layers, full_rank: bool) -> pd.DataFrame:
    per_module = scores.per_module  # [modules, Q, M]
    per_layer = torch.zeros((n_layers, *per_module.shape[1:]), dtype=per_module.dtype)
    per_layer.index_add_(0, torch.as_tensor(layers), per_module)
    q, m = per_module.shape[1:]
    frame = pd.DataFrame({
        "query_index": np.repeat(query_positions, m).astype(np.int32),
        "doc_index": np.tile(doc_positions, q).astype(np.int32),
        "score": scores.scores.reshape(-1).numpy().astype(np.float32),
    })
    for i, column in enumerate(layer_columns(n_layers)):
        frame[column] = per_layer[i].reshape(-1).numpy().astype(np.float32)
    frame["full_rank"] = full_rank
    return frame


def score_shard(inputs: StudyInputs, factors, shard: int, n_shards: int, settings: ScoringSettings,
                candidates: pd.DataFrame | None = None, progress: bool = True) -> pd.DataFrame:
    """Score every query against the training documents of shard ``shard`` (0-based) of ``n_shards``.

    Returns rows ``query_index, doc_index, score, layer_*, full_rank`` (raw scores, see
    :mod:`influence_study.engine.scoring` for the sign): one row per pair with the query-batched (rank-r) score, plus,
    when re-scoring, full-rank rows for each query's local top-k overall and among its ``candidates``
    (``query_index, doc_index`` pairs).
    """
    task = LanguageModelingTask()
    layers = module_layers(factors.module_names)
    n_layers = int(layers.max()) + 1
    documents = inputs.document_batches(settings.batch_size)
    shard_batches = documents.select(shard_range(len(documents), shard, n_shards))
    shard_docs = shard_batches.order
    if len(shard_docs) == 0:
        raise ValueError(f"shard {shard + 1} of {n_shards} holds no training document: use at most "
                         f"{len(documents)} shards (one per batch of {settings.batch_size})")
    n_queries = len(inputs.query_sequences)
    parts = []
    chunks = range(0, n_queries, settings.query_batch_size)
    for start in tqdm(chunks, desc=f"shard {shard + 1}/{n_shards}: query chunks", disable=not progress):
        queries = inputs.query_batches(settings.batch_size, range(start, min(start + settings.query_batch_size,
                                                                             n_queries)))
        low = pairwise_scores(inputs.model, task, factors, queries.batches, shard_batches.batches,
                              query_rank=settings.query_rank, per_module=True, damping=settings.damping,
                              progress=progress)
        frame = _pair_frame(low, queries.order, shard_docs[low.train_indices.numpy()], layers, n_layers,
                            full_rank=False)
        parts.append(frame)
        if not settings.rescoring:
            continue
        chosen = _top_k(frame, settings.rescore_top_k)
        if candidates is not None:
            keys = frame[["query_index", "doc_index"]].merge(candidates[["query_index", "doc_index"]], how="left",
                                                              indicator=True)
            rows = np.flatnonzero((keys["_merge"] == "both").to_numpy())
            chosen[rows[_top_k(frame.iloc[rows], settings.rescore_top_k)]] = True
        wanted = frame.loc[chosen, ["query_index", "doc_index"]]
        again = inputs.document_batches(settings.batch_size, subset=np.unique(wanted["doc_index"]))
        full = pairwise_scores(inputs.model, task, factors, queries.batches, again.batches, query_rank=None,
                               per_module=True, damping=settings.damping, progress=False)
        full_frame = _pair_frame(full, queries.order, again.order[full.train_indices.numpy()], layers, n_layers,
                                 full_rank=True)
        parts.append(full_frame.merge(wanted, on=["query_index", "doc_index"]))
    return pd.concat(parts, ignore_index=True)


def _keys(frame: pd.DataFrame, n_docs: int) -> np.ndarray:
    return frame["query_index"].to_numpy(np.int64) * n_docs + frame["doc_index"].to_numpy(np.int64)


def _rescore(base: pd.DataFrame, full: pd.DataFrame, chosen: np.ndarray, n_docs: int, columns: list[str],
             what: str) -> pd.DataFrame:
    """``base`` with the full-rank values of its ``chosen`` rows, and a ``rescored`` column."""
    base = base.copy()
    base["rescored"] = chosen
    if not chosen.any():
        return base
    full = full.sort_values(["query_index", "doc_index"])
    full_keys = _keys(full, n_docs)
    wanted = _keys(base.loc[chosen], n_docs)
    where = np.searchsorted(full_keys, wanted)
    found = np.zeros(len(wanted), dtype=bool)
    if len(full_keys):
        found = (where < len(full_keys)) & (full_keys[np.minimum(where, len(full_keys) - 1)] == wanted)
    if not found.all():
        raise ValueError(f"{what}: {int((~found).sum())} top-k pairs have no full-rank score in any shard; were the "
                         f"shards computed with the same settings (rescore_top_k, candidates)?")
    base.loc[chosen, columns] = full[columns].to_numpy()[where]
    return base


def gather_shards(shards: Sequence[pd.DataFrame], n_queries: int, n_docs: int, settings: ScoringSettings,
                  candidates: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Join shard tables into ``(pairwise, candidate_scores)``.

    ``pairwise``: every (query, document) pair sorted by ``query_index, doc_index``, with ``score``, ``layer_*``
    and ``rescored`` (full-rank value of one of the query's global top-k). ``candidate_scores`` (when
    ``candidates`` is given): the pairs of ``candidates`` with their scores, each query's top-k among them
    re-scored at full rank.
    """
    frame = pd.concat(shards, ignore_index=True)
    columns = ["score", *[c for c in frame.columns if c.startswith("layer_")]]
    full = frame[frame["full_rank"]]
    low = frame[~frame["full_rank"]].sort_values(["query_index", "doc_index"], ignore_index=True)
    keys = _keys(low, n_docs)
    expected = n_queries * n_docs
    if len(low) != expected or not np.array_equal(keys, np.arange(expected)):
        missing = expected - len(np.unique(keys))
        raise ValueError(f"the shards do not cover every (query, document) pair exactly once: {len(low)} rows for "
                         f"{n_queries} queries x {n_docs} documents ({missing} pairs missing); was a shard computed "
                         f"for another corpus or shard count?")
    low = low.drop(columns="full_rank")

    def chosen(pairs: pd.DataFrame) -> np.ndarray:
        if not settings.rescoring:
            return np.zeros(len(pairs), dtype=bool)
        return _top_k(pairs, settings.rescore_top_k)

    pairwise = _rescore(low, full, chosen(low), n_docs, columns, "pairwise")
    if candidates is None:
        return pairwise, None
    restricted = low.iloc[np.sort(_keys(candidates, n_docs))].reset_index(drop=True)
    restricted = restricted.merge(candidates, on=["query_index", "doc_index"], how="left")
    return pairwise, _rescore(restricted, full, chosen(restricted), n_docs, columns, "candidate scores")


def token_scores(inputs: StudyInputs, factors, top: pd.DataFrame, settings: ScoringSettings,
                 progress: bool = True) -> pd.DataFrame:
    """Full-rank token scores of the pairs in ``top`` (``query_index, doc_index``, other columns are kept).

    One row per real token of each document: ``position`` (0-based, the input position t: its share is the
    influence carried by the gradient of predicting token t+1, so the token shaded is the one BEFORE the
    predicted one, as in the paper), ``token_id`` and ``score`` (raw). They sum to the pair's full-rank score.
    """
    task = LanguageModelingTask()
    parts = []
    query_positions = np.unique(top["query_index"])
    # token scores cost queries x documents x tokens x parameters for every query-document pair of a call, of
    # which only each query's own top documents are wanted: few queries per call keep the waste small
    chunk_size = min(settings.query_batch_size, TOKEN_QUERY_CHUNK)
    chunks = range(0, len(query_positions), chunk_size)
    for start in tqdm(chunks, desc="token scores: query chunks", disable=not progress):
        chunk = query_positions[start:start + chunk_size]
        wanted = top[top["query_index"].isin(chunk)]
        queries = inputs.query_batches(settings.batch_size, chunk)
        documents = inputs.document_batches(settings.batch_size, subset=np.unique(wanted["doc_index"]))
        result = pairwise_scores(inputs.model, task, factors, queries.batches, documents.batches, query_rank=None,
                                 per_token=True, damping=settings.damping, progress=False)
        doc_order = documents.order[result.train_indices.numpy()]
        row_of_query = {int(q): r for r, q in enumerate(queries.order)}
        column_of_doc = {int(d): c for c, d in enumerate(doc_order)}
        rows = wanted["query_index"].map(row_of_query).to_numpy(dtype=np.int64, copy=True)
        cols = wanted["doc_index"].map(column_of_doc).to_numpy(dtype=np.int64, copy=True)
        values = result.per_token[rows, cols]  # [pairs, T]
        mask = result.token_mask[cols]  # [pairs, T]
        pair, position = np.nonzero(mask.numpy())
        doc_ids = np.zeros((len(doc_order), mask.shape[1]), dtype=np.int64)
        for c, d in enumerate(doc_order):
            sequence = inputs.document_sequences[int(d)]
            doc_ids[c, :len(sequence)] = sequence
        ids = doc_ids[cols]
        frame = wanted.iloc[pair].reset_index(drop=True)
        frame["position"] = position.astype(np.int32)
        frame["token_id"] = ids[pair, position]
        frame["score"] = values.numpy()[pair, position].astype(np.float32)
        parts.append(frame)
    columns = [*top.columns, "position", "token_id", "score"]
    if not parts:
        return pd.DataFrame(columns=columns)
    return pd.concat(parts, ignore_index=True).sort_values(["query_index", "rank", "position"] if "rank" in top
                                                             else ["query_index", "doc_index", "position"],
                                                             ignore_index=True)
