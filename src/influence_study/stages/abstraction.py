"""Step of the abstraction analysis (:mod:`influence_study.analyses.abstraction`): the relations of each query's
top-k documents per model size, against the BM25 ranking and the queries each model answers correctly."""

from __future__ import annotations

from typing import Mapping, Sequence


from influence_study.analyses.abstraction import abstraction_table, eligible_queries, summarise_abstraction, verdicts
from influence_study.analyses.common import model_sizes
from influence_study.analyses.relations import nested_statistics
from influence_study.analyses.scale import bm25_ranked, scale_numbers
from influence_study.stages.tables import correct_answers, ranked_documents, read_columns, read_learning, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, documents: str, queries: str, relations: str,
        candidates: str, evaluations: Sequence[str], per_query: str, by_model: str, summary: str) -> None:
    """Step of ``analysis_abstraction`` (``analyses.abstraction.top_k``: top documents per query); the BM25
    candidates and the models' evaluations give the v2 baselines and query sets (:mod:`analyses.scale`)."""
    k = config["analyses"]["abstraction"]["top_k"]
    learning_table = read_learning(learning)
    query_table = read_columns(queries, ["query_id", "analysis"], "queries table")
    relation_table = read_columns(relations, ["query_id", "doc_id", "relation"], "relations table")
    document_table = read_columns(documents, ["doc_id", "family", "theme"], "corpus table")
    eligible = eligible_queries(relation_table, query_table)
    ranked = ranked_documents(pairwise, learning_table, eligible["query_id"], k)
    table = abstraction_table(ranked, relation_table, eligible, document_table)
    by_model_table = summarise_abstraction(table, seed=config["seed"])
    bm25 = abstraction_table(bm25_ranked(read_parquet(candidates), eligible["query_id"], k), relation_table,
                             eligible, document_table)
    sizes = model_sizes(learning_table)
    statistics = {"k": k, "queries": int(len(eligible)),
                  "queries_by_analysis": {str(a): int(n) for a, n in eligible["analysis"].value_counts().items()},
                  "parameters": {m: int(sizes[m]) for m in dict.fromkeys(table["model"])},
                  "models": nested_statistics(by_model_table, by=("model", "analysis")),
                  "scale": scale_numbers(table, bm25, "abstraction_index", learning_table,
                                         correct_answers(evaluations), chance="chance_abstraction_index",
                                         seed=config["seed"])}
    write_analysis(config, "abstraction", {"per_query": (table, per_query), "by_model": (by_model_table, by_model)},
                   statistics, verdicts, summary,
                   inputs=[*pairwise, learning, documents, queries, relations, candidates, *evaluations])
