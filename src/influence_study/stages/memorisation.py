"""Step of the memorisation control (:mod:`influence_study.analyses.memorisation`): the rank of each quote query's
exact copies in its full ranking, per model size."""

from __future__ import annotations

from typing import Mapping, Sequence

from influence_study.analyses.memorisation import (TOP_C_THRESHOLD, copy_ranks, memorisation_table,
                                                   summarise_memorisation, verdicts)
from influence_study.analyses.relations import queries_of
from influence_study.stages.tables import ranked_documents, read_columns, write_analysis


def run(config: Mapping, pairwise: Sequence[str], learning: str, queries: str, relations: str, copies: str,
        per_query: str, summary: str) -> None:
    """Step of ``analysis_memorisation``: the full ranking of each quote query, the rank of its copies."""
    query_ids = queries_of(read_columns(queries, ["query_id", "analysis"], "queries table"), ["quotes"])["query_id"]
    relation_table = read_columns(relations, ["query_id", "doc_id", "relation"], "relations table")
    ranked = ranked_documents(pairwise, learning, query_ids, k=None)
    copy_table = copy_ranks(ranked, relation_table, query_ids)
    table = memorisation_table(ranked, copy_table)
    statistics = {"queries": int(len(query_ids)), "top_c_threshold": TOP_C_THRESHOLD,
                  "models": summarise_memorisation(table, copy_table, seed=config["seed"])}
    write_analysis(config, "memorisation", {"copies": (copy_table, copies), "per_query": (table, per_query)},
                   statistics, verdicts, summary, inputs=[*pairwise, learning, queries, relations])
