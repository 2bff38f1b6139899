"""The synthetic world's ground truth joined to influence rankings: what the analyses of abstraction, math and code,
role-play and memorisation share.

The queries table (``queries/{corpus}.parquet``) says which analysis each query belongs to, the relations table
(``queries/{corpus}-relations.parquet``: ``query_id, doc_id, relation``) says how a training document relates to a
query (a pair it does not list is *unrelated*), and the corpus (``corpus/{corpus}.parquet``) labels each document
(family, schema, theme, obfuscated names, quote...). The helpers here rank a model's documents per query
(:func:`rank_documents`; :func:`influence_study.stages.tables.ranked_documents` does it for every model), label the
ranked rows (:func:`label_relations`, :func:`with_documents`), turn labels into each query's shares of its top-k
(:func:`category_shares`) and summarise a per-query table per model with bootstrap confidence intervals
(:func:`summarise`).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.study.io import require_columns
from influence_study.analyses.common import mean_ci, top_k

# Relations of the ground truth, grouped as the paper reads them: a document related in meaning (the same fact in
# other words, in another language or in flipped order; a solution of the same schema; a story of the same theme),
# one related only by shared tokens (distractors built to share surface strings; in v2 worlds also documents of other
# facts written in the query's template), a verbatim copy, and (v2 worlds) a document of the same fact that repeats
# the query's wording: both meaning and tokens, so it counts as neither.
MEANING_RELATIONS = ("same_fact", "same_fact_other_language", "same_fact_flipped", "same_schema", "same_theme")
TOKEN_RELATIONS = ("lexical_overlap", "same_template")
COPY_RELATIONS = ("exact_copy",)
QUERY_WORDING_RELATIONS = ("same_fact_query_wording",)
UNRELATED = "unrelated"
RELATIONS = (*MEANING_RELATIONS, *TOKEN_RELATIONS, *COPY_RELATIONS, *QUERY_WORDING_RELATIONS)
SCORE_COLUMNS = ("query_id", "doc_id", "score")


def queries_of(queries: pd.DataFrame, analyses: Iterable[str]) -> pd.DataFrame:
    """The rows of the queries table whose ``analysis`` is one of ``analyses`` (in table order)."""
    require_columns(queries, ["query_id", "analysis"], "queries table")
    return queries[queries["analysis"].isin(list(analyses))].reset_index(drop=True)


def rank_documents(pairwise: pd.DataFrame, query_ids: Iterable[str], k: int | None) -> pd.DataFrame:
    """The ``k`` highest-scoring documents of each query of ``query_ids`` in one model's scores table (``k = None``:
    the full ranking), by raw score with ties broken by ``doc_id`` (:func:`common.top_k`): columns ``query_id,
    doc_id, score, rank, n_docs`` (``n_docs``: documents scored for the query), ids as strings."""
    require_columns(pairwise, list(SCORE_COLUMNS), "scores table")
    frame = pairwise[pairwise["query_id"].isin(set(query_ids))]
    columns = [*SCORE_COLUMNS, "rank", "n_docs"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    frame = frame[list(SCORE_COLUMNS)]
    if isinstance(frame["doc_id"].dtype, pd.CategoricalDtype):  # ties must fall by id, not by category order
        frame = frame.assign(doc_id=frame["doc_id"].cat.reorder_categories(sorted(frame["doc_id"].cat.categories)))
    n_docs = frame.groupby("query_id", observed=True).size()
    top = top_k(frame, int(n_docs.max()) if k is None else k)
    top["query_id"] = top["query_id"].astype(str)
    top["doc_id"] = top["doc_id"].astype(str)
    n_docs.index = n_docs.index.astype(str)
    top["n_docs"] = top["query_id"].map(n_docs).astype(int)
    return top[columns]


def label_relations(ranked: pd.DataFrame, relations: pd.DataFrame) -> pd.DataFrame:
    """``ranked`` with a ``relation`` column: the ground-truth relation of each (query, document) pair, or
    ``"unrelated"`` for a pair the relations table does not list. Raises on a pair listed twice."""
    require_columns(ranked, ["query_id", "doc_id"], "ranked documents")
    require_columns(relations, ["query_id", "doc_id", "relation"], "relations table")
    pairs = relations[["query_id", "doc_id", "relation"]].astype({"query_id": str, "doc_id": str, "relation": str})
    twice = pairs.duplicated(["query_id", "doc_id"])
    if twice.any():
        raise ValueError(f"relations table lists {int(twice.sum())} (query, document) pair(s) more than once, e.g. "
                         f"{pairs.loc[twice, ['query_id', 'doc_id']].iloc[0].tolist()}")
    out = ranked.drop(columns=["relation"], errors="ignore").merge(pairs, on=["query_id", "doc_id"], how="left")
    out["relation"] = out["relation"].fillna(UNRELATED)
    return out


def with_documents(ranked: pd.DataFrame, documents: pd.DataFrame, columns: Sequence[str],
                   suffix: str = "") -> pd.DataFrame:
    """``ranked`` with the corpus labels ``columns`` of each document (renamed ``<column><suffix>``). Raises when a
    ranked document is not in the corpus."""
    require_columns(documents, ["doc_id", *columns], "corpus table")
    labels = documents[["doc_id", *columns]].astype({"doc_id": str})
    labels = labels.rename(columns={c: f"{c}{suffix}" for c in columns})
    unknown = set(ranked["doc_id"]) - set(labels["doc_id"])
    if unknown:
        raise ValueError(f"{len(unknown)} ranked document(s) are not in the corpus table, e.g. {sorted(unknown)[:3]}")
    return ranked.merge(labels, on="doc_id", how="left")


def category_shares(labelled: pd.DataFrame, column: str, categories: Sequence[str],
                    by: Sequence[str] = ("model", "query_id")) -> pd.DataFrame:
    """Each group's (by default: each model's query's) share of ranked rows in each of ``categories`` of
    ``column``: one row per group with ``share_<category>`` columns (summing to 1) and ``ranked`` (rows in the
    group). Raises when ``column`` holds a value outside ``categories``."""
    require_columns(labelled, [*by, column], "labelled ranking")
    unexpected = set(labelled[column].dropna().unique()) - set(categories)
    if unexpected or labelled[column].isna().any():
        raise ValueError(f"{column}: values {sorted(map(str, unexpected)) or ['<missing>']} are not among the "
                         f"categories {list(categories)}")
    if labelled.empty:
        return pd.DataFrame(columns=[*by, *(f"share_{c}" for c in categories), "ranked"])
    counts = (labelled.groupby([*by, column], observed=True, sort=False).size()
              .unstack(column, fill_value=0).reindex(columns=list(categories), fill_value=0))
    ranked = counts.sum(axis=1)
    shares = counts.div(ranked, axis=0).add_prefix("share_")
    shares.columns.name = None
    shares["ranked"] = ranked
    return shares.reset_index()


def relation_counts(relations: pd.DataFrame, query_ids: Iterable[str], groups: Mapping[str, Sequence[str]]
                    ) -> pd.DataFrame:
    """For each of ``query_ids`` (index), how many documents the ground truth relates to it in each group of
    relations (``groups``: name -> relations), 0 when none."""
    pairs = relations[relations["query_id"].astype(str).isin(set(query_ids))]
    counts = {name: pairs[pairs["relation"].isin(list(members))].groupby(pairs["query_id"].astype(str)).size()
              for name, members in groups.items()}
    return pd.DataFrame(counts).reindex(list(query_ids)).fillna(0).astype(int)


def summarise(per_query: pd.DataFrame, measures: Sequence[str], by: Sequence[str] = ("model",),
              seed: int = 0) -> pd.DataFrame:
    """Mean and 95% bootstrap interval (:func:`common.mean_ci`, NaNs dropped) of each of ``measures`` per group of
    ``by``: long table ``*by, measure, mean, low, high, queries`` (``queries``: non-missing values), groups in
    order of appearance."""
    rows = []
    for key, group in per_query.groupby(list(by), sort=False, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        for measure in measures:
            values = group[measure].to_numpy(dtype=np.float64)
            mean, low, high = mean_ci(values, seed=seed)
            rows.append({**dict(zip(by, key)), "measure": measure, "mean": mean, "low": low, "high": high,
                         "queries": int(np.isfinite(values).sum())})
    return pd.DataFrame(rows, columns=[*by, "measure", "mean", "low", "high", "queries"])


def nested_statistics(by_model: pd.DataFrame, by: Sequence[str] = ("model",)) -> dict:
    """A :func:`summarise` table as nested dicts for the JSON summary: ``{model: {measure: {mean, low, high,
    queries}}}`` (one level more per extra ``by`` column), order kept."""
    out: dict = {}
    for row in by_model.to_dict("records"):
        node = out
        for column in by:
            node = node.setdefault(str(row[column]), {})
        node[row["measure"]] = {key: row[key] for key in ("mean", "low", "high", "queries")}
    return out


def model_values(statistics: Mapping, measure: str, group: str | None = None) -> dict[str, float]:
    """The mean of ``measure`` per model (ordered as stored) from :func:`nested_statistics` output (under
    ``group`` when the statistics are split by a group)."""
    return {model: (node[group] if group else node)[measure]["mean"] for model, node in statistics.items()
            if (group is None or group in node)}


def interval_above(statistics: Mapping, measure: str, group: str | None = None) -> bool:
    """Whether the largest model's confidence interval of ``measure`` lies entirely above the smallest's."""
    nodes = [(node[group] if group else node)[measure] for node in statistics.values()
             if group is None or group in node]
    return len(nodes) >= 2 and nodes[-1]["low"] > nodes[0]["high"]


def describe(statistics: Mapping, measure: str, group: str | None = None, fmt: str = "{:.0%}") -> str:
    """``"model mean [low, high], ..."`` of ``measure`` per model (``fmt``: how a value is written), for a finding's
    measured text."""
    parts = []
    for model, node in statistics.items():
        node = node.get(group, {}) if group is not None else node
        if measure not in node:
            continue
        value = node[measure]
        if value["queries"] == 0:
            parts.append(f"{model} not measured")
        else:
            parts.append(f"{model} {fmt.format(value['mean'])} [{fmt.format(value['low'])}, "
                         f"{fmt.format(value['high'])}]")
    return ", ".join(parts)
