"""Step of the role-play analysis (:mod:`influence_study.analyses.roleplay`): the themes of each role-play query's
top-k documents per model size, against the BM25 ranking."""

from __future__ import annotations

from typing import Mapping, Sequence


from influence_study.analyses.relations import nested_statistics, queries_of, summarise
from influence_study.analyses.roleplay import MEASURES, roleplay_table, verdicts
from influence_study.analyses.scale import bm25_ranked, scale_numbers
from influence_study.stages.tables import correct_answers, ranked_documents, read_columns, read_learning, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, documents: str, queries: str, candidates: str,
        evaluations: Sequence[str], per_query: str, by_model: str, summary: str) -> None:
    """Step of ``analysis_roleplay`` (``analyses.roleplay.top_k``: top documents per query); the BM25 candidates
    and the models' evaluations give the v2 baselines and query sets (:mod:`analyses.scale`)."""
    k = config["analyses"]["roleplay"]["top_k"]
    learning_table = read_learning(learning)
    query_ids = queries_of(read_columns(queries, ["query_id", "analysis"], "queries table"), ["roleplay"])["query_id"]
    document_table = read_columns(documents, ["doc_id", "theme", "split"], "corpus table")
    ranked = ranked_documents(pairwise, learning_table, query_ids, k)
    table = roleplay_table(ranked, document_table, query_ids)
    by_model_table = summarise(table, MEASURES, by=("model",), seed=config["seed"])
    bm25 = roleplay_table(bm25_ranked(read_parquet(candidates), query_ids, k), document_table, query_ids)
    statistics = {"k": k, "queries": int(len(query_ids)), "models": nested_statistics(by_model_table),
                  "scale": scale_numbers(table, bm25, "share_survival", learning_table, correct_answers(evaluations),
                                         chance="chance_survival", seed=config["seed"])}
    write_analysis(config, "roleplay", {"per_query": (table, per_query), "by_model": (by_model_table, by_model)},
                   statistics, verdicts, summary,
                   inputs=[*pairwise, learning, documents, queries, candidates, *evaluations])
