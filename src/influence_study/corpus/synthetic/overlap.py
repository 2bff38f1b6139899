"""Token overlap between queries and documents: how much of a query's wording a related document repeats.

``token_overlap`` of a (query, document) pair is the share of the query's distinct lower-case word tokens
(``\\w+`` over prompt + completion) that occur in the document. World v2 writes it into the relations table;
:func:`relation_overlap_summary` summarises it per relation class, with an ``unrelated`` row from a seeded sample
of unrelated training documents per query, so that the analyses can see which classes share tokens and which
share meaning.
"""

from __future__ import annotations

import random
import re
from typing import Iterable

import pandas as pd

from influence_study.study.seeds import unrelated_sample_seed

WORD = re.compile(r"\w+")
UNRELATED = "unrelated"


def token_set(text: str) -> frozenset[str]:
    """The distinct lower-case ``\\w+`` tokens of ``text``."""
    return frozenset(w.lower() for w in WORD.findall(text))


def _query_tokens(queries: pd.DataFrame) -> dict[str, frozenset[str]]:
    return {q: token_set(p + c) for q, p, c in zip(queries["query_id"], queries["prompt"], queries["completion"])}


def _overlaps(pairs: Iterable[tuple[str, str]], query_tokens: dict, doc_tokens: dict) -> list[float]:
    out = []
    for query_id, doc_id in pairs:
        mine = query_tokens[query_id]
        out.append(len(mine & doc_tokens[doc_id]) / len(mine) if mine else 0.0)
    return out


def with_token_overlap(relations: pd.DataFrame, queries: pd.DataFrame, documents: pd.DataFrame) -> pd.DataFrame:
    """``relations`` with a ``token_overlap`` column (see the module docstring)."""
    used = set(relations["doc_id"])
    doc_tokens = {d: token_set(t) for d, t in zip(documents["doc_id"], documents["text"]) if d in used}
    frame = relations.copy()
    frame["token_overlap"] = _overlaps(zip(frame["query_id"], frame["doc_id"]), _query_tokens(queries), doc_tokens)
    return frame


def _unrelated_sample(world, per_query: int, seed: int) -> pd.DataFrame:
    train_ids = list(world.documents.loc[world.documents["split"] == "train", "doc_id"])
    related = world.relations.groupby("query_id")["doc_id"].apply(set).to_dict()
    rng = random.Random(unrelated_sample_seed(seed))
    rows = []
    for query_id in world.queries["query_id"]:
        mine = related.get(query_id, set())
        pool = [d for d in rng.sample(train_ids, min(len(train_ids), per_query + len(mine))) if d not in mine]
        rows += [(query_id, d) for d in pool[:per_query]]
    return pd.DataFrame(rows, columns=["query_id", "doc_id"])


def relation_overlap_summary(world, unrelated_per_query: int = 20, seed: int = 0) -> pd.DataFrame:
    """Token overlap per relation class of ``world`` (a :class:`World`, v1 or v2): columns ``relation, pairs,
    mean_token_overlap, median_token_overlap``, one row per relation and an ``unrelated`` row computed on
    ``unrelated_per_query`` training documents per query that it is not related to (a sample seeded by
    ``seed``)."""
    documents, queries = world.documents, world.queries
    relations = world.relations
    if "token_overlap" not in relations:
        relations = with_token_overlap(relations, queries, documents)
    unrelated = with_token_overlap(_unrelated_sample(world, unrelated_per_query, seed), queries, documents)
    both = pd.concat([relations[["relation", "token_overlap"]], unrelated.assign(relation=UNRELATED)
                      [["relation", "token_overlap"]]], ignore_index=True)
    summary = both.groupby("relation", sort=True)["token_overlap"].agg(["size", "mean", "median"]).reset_index()
    return summary.rename(columns={"size": "pairs", "mean": "mean_token_overlap",
                                   "median": "median_token_overlap"})
