"""The abstraction analysis and the shared ground-truth helpers (analyses.relations) against hand-computed shares on
tiny tables and a brute-force ranking in plain Python."""

import json

import numpy as np
import pandas as pd
import pytest
from relations_world import write_study

from influence_study.analyses.abstraction import abstraction_table, eligible_queries, verdicts
from influence_study.analyses.relations import (category_shares, label_relations, rank_documents,
                                                summarise)
from influence_study.stages.abstraction import run

DOCS = pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)],
                     "family": ["facts", "distractors", "facts", "distractors", "facts", "facts"],
                     "theme": [None] * 6})


def pairwise(scores: dict) -> pd.DataFrame:
    """A scores table from {query: [score of d0, d1, ...]} (categorical ids, as the pipeline writes them)."""
    rows = [(q, f"d{i}", float(s)) for q, values in scores.items() for i, s in enumerate(values)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"]).astype({"query_id": "category",
                                                                               "doc_id": "category"})


def relations(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=["query_id", "doc_id", "relation"])


def table_for(scores, rels, k, queries=None, model="m"):
    queries = queries if queries is not None else pd.DataFrame({"query_id": list(scores), "analysis": "facts"})
    eligible = eligible_queries(rels, queries)
    ranked = rank_documents(pairwise(scores), list(scores), k).assign(model=model)
    return abstraction_table(ranked, rels, eligible, DOCS).set_index("query_id")


def test_shares_and_index_of_a_hand_made_top3():
    # top 3 of q: d1 (same_fact), d2 (lexical_overlap), d3 (unrelated); d0 (same_fact) ranks 4th, outside
    rels = relations(("q", "d1", "same_fact"), ("q", "d2", "lexical_overlap"), ("q", "d0", "same_fact"))
    row = table_for({"q": [1.0, 9.0, 8.0, 7.0, 0.5, 0.0]}, rels, k=3).loc["q"]
    assert row["share_same_fact"] == pytest.approx(1 / 3)
    assert row["share_meaning"] == pytest.approx(1 / 3)
    assert row["share_token_only"] == pytest.approx(1 / 3)
    assert row["share_unrelated"] == pytest.approx(1 / 3)
    assert row["abstraction_index"] == pytest.approx(0.5)
    assert row["share_other_distractor"] == pytest.approx(1 / 3)  # d3 is a distractor built for another query
    assert row["chance_meaning"] == pytest.approx(2 / 6) and row["chance_token_only"] == pytest.approx(1 / 6)
    assert np.isnan(row["cross_lingual_share"])  # no other-language document in the ground truth


def test_ties_at_the_cut_are_broken_by_document_id():
    # d2 and d4 tie at the cut (k = 2): d2 (lexical) enters, d4 (same fact) does not
    rels = relations(("q", "d4", "same_fact"), ("q", "d2", "lexical_overlap"), ("q", "d1", "same_fact"))
    row = table_for({"q": [0.0, 5.0, 3.0, 0.0, 3.0, 0.0]}, rels, k=2).loc["q"]
    assert row["share_token_only"] == pytest.approx(0.5) and row["share_meaning"] == pytest.approx(0.5)


def test_missing_relations_and_undefined_index():
    rels = relations(("a", "d0", "same_fact"), ("a", "d1", "lexical_overlap"),
                     ("b", "d0", "same_fact_other_language"),  # no token-only document: not eligible
                     ("c", "d0", "same_fact"), ("c", "d1", "lexical_overlap"))
    scores = {"a": [9, 8, 0, 0, 0, 0], "b": [9, 0, 0, 0, 0, 0], "c": [0, 0, 9, 8, 0, 0], "z": [1] * 6}
    table = table_for(scores, rels, k=2)
    assert set(table.index) == {"a", "c"}  # b (meaning only) and z (no relation at all) are left out
    assert table.loc["a", "abstraction_index"] == pytest.approx(0.5)
    assert np.isnan(table.loc["c", "abstraction_index"])  # top 2 holds neither kind
    assert table.loc["c", "share_unrelated"] == 1.0
    stats = summarise(table.reset_index(), ["abstraction_index"])
    assert stats.loc[0, "mean"] == pytest.approx(0.5) and stats.loc[0, "queries"] == 1


def test_shares_match_a_brute_force_ranking():
    rng = np.random.default_rng(0)
    n_docs, k = 40, 7
    names = ["same_fact", "same_fact_other_language", "lexical_overlap", "same_theme"]
    scores = {f"q{j}": rng.integers(0, 6, n_docs).astype(float) for j in range(12)}  # many ties
    rows = [(q, f"d{i}", names[rng.integers(4)]) for q in scores for i in range(n_docs) if rng.random() < 0.4]
    rels = relations(*rows)
    frame = pairwise(scores)
    shuffled = list(rng.permutation(frame["doc_id"].cat.categories))  # category order must not decide ties
    frame["doc_id"] = frame["doc_id"].cat.reorder_categories(shuffled)
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(n_docs)], "family": "facts", "theme": None})
    queries = pd.DataFrame({"query_id": list(scores), "analysis": "facts"})
    ranked = rank_documents(frame, list(scores), k).assign(model="m")
    table = abstraction_table(ranked, rels, eligible_queries(rels, queries), docs).set_index("query_id")
    lookup = {(q, d): r for q, d, r in rows}
    for q in table.index:
        values = scores[q]
        order = sorted(range(n_docs), key=lambda i: (-values[i], f"d{i}"))[:k]
        labels = [lookup.get((q, f"d{i}"), "unrelated") for i in order]
        meaning = sum(label in ("same_fact", "same_fact_other_language", "same_theme") for label in labels) / k
        token = labels.count("lexical_overlap") / k
        row = table.loc[q]
        assert row["share_meaning"] == pytest.approx(meaning) and row["share_token_only"] == pytest.approx(token)
        expected = meaning / (meaning + token) if meaning + token else np.nan
        assert row["abstraction_index"] == pytest.approx(expected, nan_ok=True)


def test_label_relations_rejects_a_pair_listed_twice_and_shares_reject_unknown_categories():
    rels = relations(("q", "d0", "same_fact"), ("q", "d0", "lexical_overlap"))
    with pytest.raises(ValueError, match="more than once"):
        label_relations(pd.DataFrame({"query_id": ["q"], "doc_id": ["d0"]}), rels)
    with pytest.raises(ValueError, match="not among the categories"):
        category_shares(pd.DataFrame({"model": ["m"], "query_id": ["q"], "relation": ["odd"]}), "relation", ["a"])


def statistics(means, lows, highs):
    models = {f"m{i}": {"all": {"abstraction_index": {"mean": m, "low": lo, "high": hi, "queries": 5}}}
              for i, (m, lo, hi) in enumerate(zip(means, lows, highs))}
    return {"k": 10, "queries": 5, "models": models}


def test_verdicts_follow_the_checks():
    assert verdicts(statistics([0.2, 0.5, 0.8], [0.1, 0.4, 0.7], [0.3, 0.6, 0.9]))[0].verdict == "replicated"
    assert verdicts(statistics([0.2, 0.5, 0.45], [0.1, 0.4, 0.35], [0.3, 0.6, 0.55]))[0].verdict == "mixed"
    assert verdicts(statistics([0.8, 0.5, 0.2], [0.7, 0.4, 0.1], [0.9, 0.6, 0.3]))[0].verdict == "not replicated"
    assert verdicts({"k": 10, "queries": 0, "models": {}})[0].verdict == "not measured"


def test_run_on_a_tiny_study(tmp_path):
    study = write_study(tmp_path)
    out = {"per_query": str(tmp_path / "pq.parquet"), "by_model": str(tmp_path / "bm.parquet"),
           "summary": str(tmp_path / "abstraction.json")}
    paths = study["paths"]
    run(study["config"], paths["pairwise"], paths["learning"], paths["documents"], paths["queries"],
        paths["relations"], paths["candidates"], paths["evaluations"], **out)
    summary = json.loads((tmp_path / "abstraction.json").read_text())
    models = summary["statistics"]["models"]
    assert list(models) == ["small", "large"]  # ordered by parameters, not by the learning table's order
    assert summary["statistics"]["queries"] == 2  # the facts and role-play queries; code has no token-only docs
    # small: q-fact top 2 = d1 (lexical), d2 (other language); q-role = d6 (lexical), d5 (theme) -> 0.5 and 0.5
    # large: q-fact = d0, d2 (both meaning); q-role = d5 (theme), d0 (unrelated) -> 1 and 1
    assert models["small"]["all"]["abstraction_index"]["mean"] == pytest.approx(0.5)
    assert models["large"]["all"]["abstraction_index"]["mean"] == pytest.approx(1.0)
    assert models["large"]["all"]["cross_lingual_share"]["mean"] == pytest.approx(0.5)
    assert summary["findings"][0]["verdict"] == "replicated"
