"""Step of the layers analysis (:mod:`influence_study.analyses.layers`): influence over depth, centres of mass per
query family and depth-restricted top documents, per model."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
from tqdm import tqdm

from influence_study.analyses.layers import layer_columns, model_layer_tables, summarise, verdicts
from influence_study.stages.tables import load_family_tables, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, queries: str, relations: str, profile: str,
        layers: str, restricted: str, summary: str) -> None:
    """Step of ``analysis_layers``: layer profiles, centres of mass and depth-restricted top documents of every
    model (``analyses.layers.top_k`` documents per query)."""
    k = config["analyses"]["layers"]["top_k"]
    query_table = read_parquet(queries, columns=["query_id", "analysis"])
    query_table["query_id"] = query_table["query_id"].astype(str)
    ground_truth = read_parquet(relations, columns=["query_id", "doc_id", "relation"])
    tables = load_family_tables(pairwise, learning)
    profiles, longs, restricteds = [], [], []
    for model in tqdm(list(tables), desc="layers", unit="model"):
        frame = tables.pop(model)  # free each table once used
        columns = layer_columns(frame)
        one = model_layer_tables(frame[["query_id", "doc_id", *columns]], model, query_table, ground_truth, k)
        for store, part in zip((profiles, longs, restricteds), one):
            store.append(part)
        del frame
    profile_table = pd.concat(profiles, ignore_index=True)
    restricted_table = pd.concat(restricteds, ignore_index=True)
    statistics = {"top_k": k, "queries": int(profile_table["query_id"].nunique()),
                  "models": summarise(profile_table, restricted_table, seed=config["seed"])}
    write_analysis(config, "layers", {"profile": (profile_table, profile),
                                      "layers": (pd.concat(longs, ignore_index=True), layers),
                                      "restricted": (restricted_table, restricted)},
                   statistics, verdicts, summary, inputs=[*pairwise, learning, queries, relations])
