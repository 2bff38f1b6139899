"""Step of the sparsity analysis (:mod:`influence_study.analyses.sparsity`): a power-law fit of each query's top
tail and the share of its top 1%, per model and per query family."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from influence_study.analyses.common import scale_models
from influence_study.analyses.sparsity import (among, distinct_documents, sparsity_table, summarise, summarise_families,
                                               survival_curves, verdicts)
from influence_study.stages.tables import load_family_tables, query_families, read_learning, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, table: str, curves: str, summary: str,
        documents: str | None = None, queries: str | None = None) -> None:
    """Step of ``analysis_sparsity``: per-query power-law fits and top-1% shares of every model (the
    ``analyses.sparsity`` section sets the tail, deduplication, the bootstrap draws and how many queries are
    fitted). ``documents`` (the corpus table) is needed for ``dedupe``; ``queries`` gives each query's family."""
    section = config["analyses"]["sparsity"]
    tail_fraction = section.get("tail_fraction")
    dedupe = bool(section.get("dedupe", False))
    resamples = section.get("resamples", 1000)
    learning_table = read_learning(learning)
    tables = load_family_tables(pairwise, learning_table, columns=["query_id", "doc_id", "score_norm"])
    query_ids = np.array(sorted(next(iter(tables.values()))["query_id"].unique()))
    if section["max_queries"] is not None and section["max_queries"] < len(query_ids):
        rng = np.random.default_rng(config["seed"])
        query_ids = np.sort(rng.choice(query_ids, size=section["max_queries"], replace=False))
    keep = None
    if dedupe:
        if documents is None:
            raise ValueError("analyses.sparsity.dedupe: true needs the corpus table (documents) to find identical "
                             "texts; pass documents= or set dedupe: false")
        keep = distinct_documents(read_parquet(documents))
    families = query_families(queries) if queries is not None else None
    tail = section["tail_size"]
    per_query, survival = [], []
    for model, frame in tqdm(tables.items(), desc="sparsity", unit="model"):
        frame = frame[frame["query_id"].isin(query_ids)]
        n_docs = frame.groupby("query_id", observed=True).size().min()
        fits = sparsity_table(frame, min(tail, int(n_docs)), section["bootstrap"], config["seed"],
                              tail_fraction=tail_fraction, keep=keep)
        fits.insert(0, "model", model)
        if families is not None:
            fits.insert(2, "analysis", fits["query_id"].astype(str).map(families).astype(object))
        per_query.append(fits)
        typical = fits.dropna(subset=["alpha"]).sort_values("alpha")
        shown = typical["query_id"].iloc[[len(typical) // 2]] if len(typical) else []
        pool = frame if keep is None else frame[among(frame["doc_id"], keep)]
        size = int(fits["n"].max()) if len(fits) else tail
        curve = survival_curves(pool, shown, size)
        curve.insert(0, "model", model)
        survival.append(curve)
    per_query = pd.concat(per_query, ignore_index=True)
    statistics = {"tail_size": tail, "tail_fraction": tail_fraction, "dedupe": dedupe,
                  "tail_documents": int(per_query["n"].max()) if len(per_query) else tail,
                  "documents_fitted": int(per_query["documents"].max()) if len(per_query) else 0,
                  "bootstrap": section["bootstrap"], "queries": int(len(query_ids)),
                  "models": summarise(per_query, resamples, config["seed"]),
                  "families": summarise_families(per_query, resamples, config["seed"])}
    statistics["scale_models"], statistics["left_out"] = scale_models(learning_table)
    write_analysis(config, "sparsity", {"table": (per_query, table),
                                        "curves": (pd.concat(survival, ignore_index=True), curves)},
                   statistics, verdicts, summary,
                   inputs=[*pairwise, learning, *([documents] if documents else []), *([queries] if queries else [])])
