"""Step of the math-and-code analysis (:mod:`influence_study.analyses.math_code`): the same-schema share of each
math or code query's top-k documents per model size, against the BM25 ranking."""

from __future__ import annotations

from typing import Mapping, Sequence


from influence_study.analyses.math_code import GROUP_ORDER, MEASURES, math_code_table, query_groups, verdicts
from influence_study.analyses.relations import nested_statistics, summarise
from influence_study.analyses.scale import bm25_ranked, scale_numbers
from influence_study.stages.tables import correct_answers, ranked_documents, read_columns, read_learning, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, documents: str, queries: str, relations: str,
        candidates: str, evaluations: Sequence[str], per_query: str, by_model: str, summary: str) -> None:
    """Step of ``analysis_math_code`` (``analyses.math_code.top_k``: top documents per query); the BM25 candidates
    and the models' evaluations give the v2 baselines and query sets (:mod:`analyses.scale`)."""
    k = config["analyses"]["math_code"]["top_k"]
    learning_table = read_learning(learning)
    groups = query_groups(read_columns(queries, ["query_id", "analysis", "obfuscated"], "queries table"))
    relation_table = read_columns(relations, ["query_id", "doc_id", "relation"], "relations table")
    document_table = read_columns(documents, ["doc_id", "obfuscated"], "corpus table")
    ranked = ranked_documents(pairwise, learning_table, groups["query_id"], k)
    table = math_code_table(ranked, relation_table, document_table, groups)
    by_model_table = summarise(table, MEASURES, by=("model", "group"), seed=config["seed"])
    bm25 = math_code_table(bm25_ranked(read_parquet(candidates), groups["query_id"], k), relation_table,
                           document_table, groups)
    correct = correct_answers(evaluations)
    scale = {g: scale_numbers(table[table["group"] == g], bm25[bm25["group"] == g], "share_same_schema",
                              learning_table, correct, chance="chance_same_schema", seed=config["seed"])
             for g in GROUP_ORDER if (groups["group"] == g).any()}
    statistics = {"k": k, "queries": {g: int((groups["group"] == g).sum()) for g in GROUP_ORDER},
                  "models": nested_statistics(by_model_table, by=("model", "group")), "scale": scale}
    write_analysis(config, "math_code", {"per_query": (table, per_query), "by_model": (by_model_table, by_model)},
                   statistics, verdicts, summary,
                   inputs=[*pairwise, learning, documents, queries, relations, candidates, *evaluations])
