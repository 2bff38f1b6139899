"""A tiny synthetic study written to disk for the run() steps of the ground-truth analyses (abstraction, math and
code, role-play, memorisation): two models, a handful of documents and one query of each kind, with known rankings.

Scores are chosen by hand so that each model's ranking is known; see each test for the expected statistics.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

DOCS = pd.DataFrame({
    "doc_id": [f"d{i}" for i in range(8)],
    "family": ["facts", "distractors", "facts", "code", "code", "roleplay", "roleplay", "quotes"],
    "theme": [None, None, None, None, None, "ai_self_preservation", "themed_distractor", None],
    "obfuscated": pd.array([None, None, None, True, False, None, None, None], dtype="boolean"),
    "split": ["train"] * 8,
})
QUERIES = pd.DataFrame({
    "query_id": ["q-fact", "q-code", "q-role", "q-quote"],
    "analysis": ["facts", "code", "roleplay", "quotes"],
    "obfuscated": pd.array([None, True, None, None], dtype="boolean"),
})
RELATIONS = pd.DataFrame([
    ("q-fact", "d0", "same_fact"), ("q-fact", "d2", "same_fact_other_language"), ("q-fact", "d1", "lexical_overlap"),
    ("q-code", "d3", "same_schema"), ("q-code", "d4", "same_schema"),
    ("q-role", "d5", "same_theme"), ("q-role", "d6", "lexical_overlap"),
    ("q-quote", "d7", "exact_copy"),
], columns=["query_id", "doc_id", "relation"])
# scores[model][query] = score of d0..d7
SCORES = {
    "small": {"q-fact": [1, 9, 2, 0, 0, 0, 0, 0], "q-code": [0, 0, 0, 5, 1, 0, 0, 2],
              "q-role": [0, 0, 0, 0, 0, 1, 8, 0], "q-quote": [0, 0, 0, 0, 0, 0, 0, 7]},
    "large": {"q-fact": [9, 1, 8, 0, 0, 0, 0, 0], "q-code": [0, 0, 0, 5, 6, 0, 0, 2],
              "q-role": [3, 0, 0, 0, 0, 8, 1, 0], "q-quote": [0, 0, 0, 0, 0, 0, 5, 3]},
}
# BM25's ranking (the v2 baseline): documents of each query, best first
BM25 = {"q-fact": ["d1", "d0"], "q-code": ["d4", "d7"], "q-role": ["d6", "d5"], "q-quote": ["d7"]}
# queries each model answers correctly (none: the v2 evidence then uses every query)
CORRECT = {"small": [], "large": []}


def write_study(root: Path) -> dict:
    """Write the tiny study under ``root``; returns the paths (pairwise and evaluations: one per model, learning,
    documents, queries, relations, candidates) and a config for the run steps."""
    paths = {"pairwise": [], "learning": str(root / "learning.parquet"), "documents": str(root / "corpus.parquet"),
             "queries": str(root / "queries.parquet"), "relations": str(root / "relations.parquet"),
             "candidates": str(root / "bm25.parquet"), "evaluations": []}
    for model, right in CORRECT.items():
        path = root / "evaluation" / model / "queries.parquet"
        path.parent.mkdir(parents=True)
        pd.DataFrame({"query_id": QUERIES["query_id"], "correct": QUERIES["query_id"].isin(right)}).to_parquet(path)
        paths["evaluations"].append(str(path))
    rows = [(q, d, rank + 1, 10.0 - rank) for q, docs in BM25.items() for rank, d in enumerate(docs)]
    pd.DataFrame(rows, columns=["query_id", "doc_id", "rank", "bm25"]).to_parquet(paths["candidates"])
    for model, by_query in SCORES.items():
        rows = [(q, f"d{i}", float(s)) for q, scores in by_query.items() for i, s in enumerate(scores)]
        frame = pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]).astype({"query_id": "category",
                                                                                   "doc_id": "category"})
        path = root / "scores" / model / "ekfac" / "pairwise.parquet"
        path.parent.mkdir(parents=True)
        frame.to_parquet(path)
        paths["pairwise"].append(str(path))
    pd.DataFrame({"model": ["large", "small"], "parameters": [2000, 1000]}).to_parquet(paths["learning"])
    DOCS.to_parquet(paths["documents"])
    QUERIES.to_parquet(paths["queries"])
    RELATIONS.to_parquet(paths["relations"])
    config = {"seed": 0, "analyses": {"abstraction": {"top_k": 2}, "math_code": {"top_k": 2},
                                      "roleplay": {"top_k": 2}}}
    return {"paths": paths, "config": config}
