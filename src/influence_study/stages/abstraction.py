"""Step of the abstraction analysis (:mod:`influence_study.analyses.abstraction`): the relations of each query's
top-k documents per model size, against the BM25 ranking and the queries each model answers correctly."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from influence_study.analyses.abstraction import abstraction_table, eligible_queries, summarise_abstraction, verdicts
from influence_study.analyses.common import model_sizes
from influence_study.analyses.matched_loss import matched_numbers
from influence_study.analyses.relations import nested_statistics, rank_documents
from influence_study.analyses.scale import bm25_ranked, scale_numbers
from influence_study.stages.tables import correct_answers, ranked_documents, read_columns, read_learning, write_analysis
from influence_study.study.io import read_json, read_parquet


def matched_statistics(config: Mapping, table: pd.DataFrame, correct: pd.DataFrame, eligible: pd.DataFrame,
                       relation_table: pd.DataFrame, document_table: pd.DataFrame, k: int, scores: str,
                       answers: str, checkpoint: str) -> dict:
    """The ``matched_loss`` statistics of the abstraction summary: the retrain's record (``checkpoint``, without its
    history) and, when it was measured, :func:`~influence_study.analyses.matched_loss.matched_numbers` of the
    abstraction index of the matched checkpoint (``scores``, ``answers``) against the family's ``table``."""
    record = read_json(checkpoint)
    record = {key: value for key, value in record.items() if key not in ("history", "provenance")}
    if not record["measured"]:
        return {"checkpoint": record}
    matched = record["matched"]
    ranked = rank_documents(read_parquet(scores), eligible["query_id"], k).assign(model=matched)
    rows = pd.concat([table, abstraction_table(ranked, relation_table, eligible, document_table)], ignore_index=True)
    answered = read_columns(answers, ["query_id", "correct"], "matched-loss answers").assign(model=matched)
    numbers = matched_numbers(rows, "abstraction_index", record["reference"], record["model"],
                              pd.concat([correct, answered], ignore_index=True), chance="chance_abstraction_index",
                              seed=config["seed"])
    return {"checkpoint": record, "numbers": numbers}


def run(config: Mapping, pairwise: Sequence[str], learning: str, documents: str, queries: str, relations: str,
        candidates: str, evaluations: Sequence[str], per_query: str, by_model: str, summary: str,
        matched_scores: str | None = None, matched_answers: str | None = None,
        matched_checkpoint: str | None = None) -> None:
    """Step of ``analysis_abstraction`` (``analyses.abstraction.top_k``: top documents per query); the BM25
    candidates and the models' evaluations give the v2 baselines and query sets (:mod:`analyses.scale`); the
    ``matched_*`` files (rule ``matched_loss_scores``) the comparison at matched held-out loss
    (:mod:`analyses.matched_loss`)."""
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
    correct = correct_answers(evaluations)
    statistics = {"k": k, "queries": int(len(eligible)),
                  "queries_by_analysis": {str(a): int(n) for a, n in eligible["analysis"].value_counts().items()},
                  "parameters": {m: int(sizes[m]) for m in dict.fromkeys(table["model"])},
                  "models": nested_statistics(by_model_table, by=("model", "analysis")),
                  "scale": scale_numbers(table, bm25, "abstraction_index", learning_table,
                                         correct, chance="chance_abstraction_index", seed=config["seed"])}
    matched = [matched_scores, matched_answers, matched_checkpoint]
    if all(matched):
        statistics["matched_loss"] = matched_statistics(config, table, correct, eligible, relation_table,
                                                        document_table, k, *matched)
    write_analysis(config, "abstraction", {"per_query": (table, per_query), "by_model": (by_model_table, by_model)},
                   statistics, verdicts, summary,
                   inputs=[*pairwise, learning, documents, queries, relations, candidates, *evaluations,
                           *[path for path in matched if path]])
