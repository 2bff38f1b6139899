"""Steps of the word-order analysis (:mod:`influence_study.analyses.word_order`): every probe sequence scored, as a
training document added once, against its own query with one model's factors; then the statistics per probe group
and model size."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import model_sizes, scale_models
from influence_study.analyses.word_order import (PROBE_COLUMNS, SCORE_COLUMNS, contrast_statistics, group_statistics,
                                                 probes_in_training, summarise, verdicts)
from influence_study.engine.scoring import pairwise_scores
from influence_study.engine.tasks import LanguageModelingTask
from influence_study.stages.influence import load_study_factors, table_provenance, write_table
from influence_study.stages.influence_inputs import document_batches, load_study_inputs
from influence_study.stages.tables import read_learning, write_analysis
from influence_study.study.io import read_parquet, require_columns, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger


def probe_scores(model, factors, query_batches, probe_sequences: Sequence[Sequence[int]],
                 probe_query: Sequence[int], pad_id: int, batch_size: int, damping=None,
                 progress: bool = False) -> np.ndarray:
    """Raw influence of each probe, as a training sequence, on its own query.

    ``query_batches``: :class:`~influence_study.stages.influence_inputs.Batches` of the queries; ``probe_sequences``:
    token ids of each probe as a training sequence; ``probe_query[i]``: the source position (as in
    ``query_batches.order``) of probe i's query. Full query rank (the probes are few)."""
    if len(probe_sequences) != len(probe_query):
        raise ValueError(f"probe_query: {len(probe_query)} query positions for {len(probe_sequences)} probes")
    if len(probe_sequences) == 0:
        return np.zeros(0)
    probes = document_batches(probe_sequences, pad_id, batch_size)
    result = pairwise_scores(model, LanguageModelingTask(), factors, query_batches.batches, probes.batches,
                             damping=damping, progress=progress)
    row_of = {int(position): row for row, position in enumerate(query_batches.order)}
    column_of = {int(probes.order[index]): column for column, index in enumerate(result.train_indices.tolist())}
    missing = sorted({int(q) for q in probe_query} - set(row_of))
    if missing:
        raise ValueError(f"probe_query: query positions {missing[:5]} are not in query_batches")
    scores = result.scores.double().numpy()
    return np.array([scores[row_of[int(q)], column_of[i]] for i, q in enumerate(probe_query)])


def score_model(config: Mapping, model_name: str, model_dir: str, factors_dir: str, documents: str, queries: str,
                probes: str, scores: str, progress: bool = True) -> None:
    """Step of ``word_order_scores``: every probe of the probe table scored against its query with one model's
    factors (``model, probe_id, query_id, probe_set, group, text, tokens, score, score_norm``)."""
    table = read_parquet(probes)
    if table.empty:  # a corpus without probes (e.g. the user's own): an empty table, nothing to score
        write_parquet(pd.DataFrame({c: pd.Series(dtype=float if "score" in c else np.int32 if c == "tokens" else str)
                                    for c in SCORE_COLUMNS}),
                      scores, metadata=provenance(config, [probes], model=model_name, note="no probes"))
        get_logger().info("word-order probes of %s: the probe table is empty", model_name)
        return
    require_columns(table, PROBE_COLUMNS, probes)
    inputs = load_study_inputs(model_dir, documents, queries, device=resolve_device(config["device"]))
    position = pd.Series(np.arange(len(inputs.queries)), index=inputs.queries["query_id"].astype(str))
    unknown = sorted(set(table["query_id"].astype(str)) - set(position.index))
    if unknown:
        raise ValueError(f"{probes}: probes of queries {unknown[:5]} that are not in {queries}; rebuild the corpus")
    probe_query = position.loc[table["query_id"].astype(str)].to_numpy()
    factors = load_study_factors(factors_dir, inputs.model, device="cpu")
    section = config["influence"]
    sequences = inputs.encode_documents(table["text"].tolist())
    query_batches = inputs.query_batches(section["batch_size"], np.unique(probe_query))
    raw = probe_scores(inputs.model, factors, query_batches, sequences, probe_query, inputs.pad_id,
                       section["batch_size"], section["damping"], progress)
    n_train = len(inputs.documents)
    frame = table[["probe_id", "query_id", "probe_set", "group", "text"]].reset_index(drop=True).astype(str)
    frame.insert(0, "model", model_name)
    frame["tokens"] = np.asarray([len(s) for s in sequences], dtype=np.int32)
    frame["score"] = raw.astype(np.float64)
    frame["score_norm"] = raw / n_train
    strategy = factors.strategy
    record = table_provenance(config, model_name, strategy, factors_dir, [documents, queries, probes],
                               n_train=n_train, what="influence of adding each probe (not in the training data) "
                                                     "once, as a training sequence 'EOS text', on its query")
    write_table(frame[SCORE_COLUMNS], scores, record)
    get_logger().info("word-order probes of %s: %d probes of %d queries", model_name, len(frame),
                      frame["query_id"].nunique())


def run(config: Mapping, scores: Sequence[str], learning: str, documents: str, table: str, groups: str,
        summary: str) -> None:
    """Step of ``analysis_word_order``: merge the per-model probe scores, statistics per group and model size."""
    section = config["analyses"]["word_order"]
    frame = pd.concat([read_parquet(p) for p in scores], ignore_index=True)
    learning_table = read_learning(learning)
    sizes = model_sizes(learning_table)
    order = [m for m in sizes.index if m in set(frame["model"])]
    frame["model"] = pd.Categorical(frame["model"], categories=order, ordered=True)
    frame = frame.sort_values(["model", "probe_id"], kind="stable").reset_index(drop=True)
    frame["model"] = frame["model"].astype(str)
    stats = group_statistics(frame, order, section["confidence"], section["resamples"], config["seed"])
    learners, left_out = scale_models(learning_table)
    in_training = probes_in_training(frame.drop_duplicates("probe_id"),
                                     read_parquet(documents, columns=["text", "split"]))
    statistics = {"probes": int(frame["probe_id"].nunique()), "queries": int(frame["query_id"].nunique()),
                  "probes_in_training": in_training, "confidence": section["confidence"],
                  "models": summarise(stats, sizes),
                  "contrasts": contrast_statistics(frame, order, section["confidence"], section["resamples"],
                                                   config["seed"]),
                  "scale_models": [m for m in learners if m in order], "left_out": left_out}
    write_analysis(config, "word_order", {"table": (frame, table), "groups": (stats, groups)}, statistics,
                   verdicts, summary, inputs=[*scores, learning, documents])
