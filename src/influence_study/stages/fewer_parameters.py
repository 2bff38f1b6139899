"""Step of the fewer-parameters analysis (:mod:`influence_study.analyses.fewer_parameters`): influence restricted to
the last layer, the upper half or the first layer against influence on all layers, per model and query."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from influence_study.analyses.common import model_sizes
from influence_study.analyses.fewer_parameters import (ABSTRACT_FAMILIES, CONCRETE_FAMILIES, OVERLAP_THRESHOLD,
                                                       PEARSON_THRESHOLD, PER_QUERY_COLUMNS, RESTRICTIONS,
                                                       agreement_table, family_table, layer_sum_error, summarise,
                                                       verdicts)
from influence_study.analyses.layers import layer_columns
from influence_study.stages.tables import read_columns, read_learning, table_model, write_analysis


def run(config: Mapping, pairwise: Sequence[str], learning: str, queries: str, per_query: str, by_family: str,
        summary: str) -> None:
    """Step of ``analysis_fewer_parameters``: per model, query and restriction, the Pearson correlation and top-k
    overlap of the restricted against the full EK-FAC score; their means per query family."""
    k = config["analyses"]["fewer_parameters"]["top_k"]
    seed = config["seed"]
    query_table = read_columns(queries, ["query_id", "analysis"], "queries table")
    by_model = {table_model(path): path for path in pairwise}
    sizes = model_sizes(read_learning(learning))
    missing = sorted(set(by_model) - set(sizes.index))
    if missing:
        raise ValueError(f"models {missing} have scores but no row in the learning table {learning}")
    parts, n_layers, extra = [], {}, {}
    for model in tqdm([m for m in sizes.index if m in by_model], desc="fewer parameters", unit="model"):
        path = by_model[model]
        wanted = [c for c in pq.read_schema(path).names if c.startswith("layer_")]  # the tables are large
        frame = read_columns(path, ["query_id", "doc_id", "score", *wanted], f"scores table of {model}")
        n_layers[model] = len(layer_columns(frame))
        extra[model] = {"layer_sum_error": layer_sum_error(frame)}
        parts.append(agreement_table(frame, model, query_table, k))
        del frame
    parts = [p for p in parts if len(p)]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=PER_QUERY_COLUMNS)
    table = table.astype({"n_layers": int, "pearson": float, "overlap": float, "k": int, "n_docs": int})
    families = family_table(table, seed=seed)
    statistics = {"top_k": k, "queries": int(len(query_table)), "restrictions": list(RESTRICTIONS),
                  "abstract_families": list(ABSTRACT_FAMILIES), "concrete_families": list(CONCRETE_FAMILIES),
                  "pearson_threshold": PEARSON_THRESHOLD, "overlap_threshold": OVERLAP_THRESHOLD,
                  "models": summarise(table, n_layers, seed=seed, extra=extra)}
    write_analysis(config, "fewer_parameters", {"per_query": (table, per_query), "by_family": (families, by_family)},
                   statistics, verdicts, summary, inputs=[*pairwise, learning, queries])
