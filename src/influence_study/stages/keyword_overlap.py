"""Step of the keyword-overlap analysis (:mod:`influence_study.analyses.keyword_overlap`): the query's keywords in
its top-k documents under the gradient dot product and under EK-FAC, per model."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from influence_study.analyses.keyword_overlap import (STRATEGIES, keywords, overlap_matrix, summarise, top_overlap,
                                                      verdicts)
from influence_study.analyses.layers import score_array, top_documents
from influence_study.stages.tables import load_family_tables, read_learning, write_analysis
from influence_study.study.io import read_parquet, require_columns


def run(config: Mapping, learning: str, queries: str, documents: str, table: str, summary: str,
        identity: Sequence[str] = (), ekfac: Sequence[str] = ()) -> None:
    """Step of ``analysis_keyword_overlap``: keyword overlap of each query's top-k documents under the gradient dot
    product (``identity``) and EK-FAC, per model. ``identity`` is empty when the study has no identity scores: the
    finding is then "not measured"."""
    section = config["analyses"]["keyword_overlap"]
    k = section["top_k"]
    query_table = read_parquet(queries, columns=["query_id", "prompt", "completion"])
    corpus = read_parquet(documents, columns=["doc_id", "text", "split"])
    require_columns(corpus, ["doc_id", "text", "split"], "corpus table")
    corpus = corpus[corpus["split"] == "train"]
    query_ids = query_table["query_id"].astype(str).tolist()
    words = [keywords(p + c, section["min_length"]) for p, c in zip(query_table["prompt"], query_table["completion"])]
    overlap = overlap_matrix(words, corpus["text"].tolist())
    with np.errstate(invalid="ignore"):
        chance = pd.Series(np.nanmean(overlap, axis=1) if overlap.size else np.nan, index=query_ids)
    statistics = {"top_k": k, "min_length": section["min_length"], "queries": len(query_ids),
                  "keywords_per_query": float(np.mean([len(w) for w in words])) if words else float("nan")}
    rows = []
    if identity:
        learning_table = read_learning(learning)
        families = {"identity": load_family_tables(identity, learning_table, columns=["query_id", "doc_id", "score"]),
                    "ekfac": load_family_tables(ekfac, learning_table, columns=["query_id", "doc_id", "score"])}
        for model in tqdm(list(families["ekfac"]), desc="keyword overlap", unit="model"):
            for strategy in STRATEGIES:
                frame = families[strategy].pop(model, None)
                if frame is None:
                    continue
                ranked_queries, ranked_docs, scores = score_array(frame, ["score"])
                chosen, valid = top_documents(scores[:, :, 0], k)
                top = pd.DataFrame({"query_id": np.broadcast_to(ranked_queries[:, None], chosen.shape)[valid],
                                    "doc_id": ranked_docs[chosen][valid]})
                part = top_overlap(top, overlap, query_ids, corpus["doc_id"].tolist()).reset_index()
                part.insert(0, "strategy", strategy)
                part.insert(0, "model", model)
                part["chance_overlap"] = chance.reindex(part["query_id"]).to_numpy()
                part["keywords"] = part["query_id"].map(dict(zip(query_ids, map(len, words))))
                rows.append(part)
    per_query = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["model", "strategy", "query_id", "keyword_overlap", "any_keyword", "chance_overlap", "keywords"])
    statistics["measured"] = bool(rows)
    if not rows:
        statistics["note"] = "not measured: the study computes no gradient dot product (identity) scores"
    statistics["models"] = summarise(per_query, seed=config["seed"]) if rows else {}
    inputs = [*identity, *ekfac, learning, queries, documents]
    write_analysis(config, "keyword_overlap", {"table": (per_query, table)}, statistics, verdicts, summary, inputs)
