"""The keyword-overlap analysis: keywords of known sentences, the overlap matrix against a brute-force set
comparison, the top-k summary on hand-made documents, and the not-measured path without identity scores."""

import json
import re

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses.keyword_overlap import keywords, overlap_matrix, top_overlap, verdicts
from influence_study.study.io import write_parquet


def test_keywords_of_known_sentences():
    # "The", "of", "was", "first" are English stop words; "ok" is shorter than 3 characters; repeats count once
    assert keywords("The first President of the Republic of Nivuria was Grotre Mous, ok? Nivuria!") == \
        ["president", "republic", "nivuria", "grotre", "mous"]
    assert keywords("The young cook reads a book by the river.") == ["young", "cook", "reads", "book", "river"]
    # a single character is no token (the pattern needs two), whatever min_length
    assert keywords("def f(x_values): return x_values", min_length=1) == ["def", "x_values", "return"]
    assert keywords("an of the") == []


def _brute_force_overlap(query_keywords, texts):
    expected = np.full((len(query_keywords), len(texts)), np.nan)
    for i, words in enumerate(query_keywords):
        for j, text in enumerate(texts):
            present = set(re.findall(r"\w\w+", text.lower()))
            if words:
                expected[i, j] = sum(w in present for w in words) / len(words)
    return expected


def test_overlap_matrix_matches_a_brute_force_set_comparison():
    queries = [["president", "nivuria", "mous"], ["river", "book"], []]
    texts = ["President Mous of NIVURIA.", "A book by the riverside.", "presidents and rivers", "book river book"]
    matrix = overlap_matrix(queries, texts)
    np.testing.assert_allclose(matrix, _brute_force_overlap(queries, texts))
    assert matrix[0, 0] == 1.0 and matrix[1, 1] == 0.5 and matrix[0, 2] == 0.0  # whole words only
    assert np.isnan(matrix[2]).all()


def test_top_overlap_per_query():
    overlap = np.array([[1.0, 0.5, 0.0], [0.0, 0.0, 0.25]])
    top = pd.DataFrame({"query_id": ["a", "a", "b", "b"], "doc_id": ["x", "y", "x", "z"]})
    result = top_overlap(top, overlap, ["a", "b"], ["x", "y", "z"])
    assert result.loc["a"].to_dict() == {"keyword_overlap": 0.75, "any_keyword": 1.0}
    assert result.loc["b"].to_dict() == {"keyword_overlap": 0.125, "any_keyword": 0.5}
    with pytest.raises(ValueError, match="unknown documents"):
        top_overlap(top.assign(doc_id="w"), overlap, ["a", "b"], ["x", "y", "z"])


def _family(tmp_path):
    """Two queries, six documents; the identity scores favour the documents sharing the query's words."""
    queries = pd.DataFrame({"query_id": ["q1", "q2"], "prompt": ["The capital of Zorbia is", "Sofia buys apples"],
                            "completion": [" Velmar", " and pears"]})
    texts = ["Zorbia capital Velmar", "Zorbia is far", "nothing here", "apples and pears", "Sofia sings", "quiet"]
    documents = pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)], "text": texts, "split": "train"})
    write_parquet(queries, tmp_path / "queries.parquet")
    write_parquet(documents, tmp_path / "documents.parquet")
    write_parquet(pd.DataFrame({"model": ["m"], "parameters": [10]}), tmp_path / "learning.parquet")
    identity = {"q1": [3, 2, 1, 0, 0, 0], "q2": [0, 0, 1, 3, 2, 0]}
    ekfac = {"q1": [0, 0, 3, 2, 1, 0], "q2": [3, 2, 0, 0, 0, 1]}
    paths = {}
    for strategy, scores in (("identity", identity), ("ekfac", ekfac)):
        frame = pd.DataFrame([{"query_id": q, "doc_id": f"d{i}", "score": float(s)} for q, v in scores.items()
                              for i, s in enumerate(v)])
        path = tmp_path / "m" / strategy / "pairwise.parquet"
        write_parquet(frame, path, metadata={"model": "m"})
        paths[strategy] = [str(path)]
    return paths


def test_run_compares_the_strategies(tmp_path):
    from influence_study.stages.keyword_overlap import run

    paths = _family(tmp_path)
    config = {"seed": 0, "analyses": {"keyword_overlap": {"top_k": 2, "min_length": 3}}}
    run(config, str(tmp_path / "learning.parquet"), str(tmp_path / "queries.parquet"),
        str(tmp_path / "documents.parquet"), table=str(tmp_path / "t.parquet"), summary=str(tmp_path / "s.json"),
        identity=paths["identity"], ekfac=paths["ekfac"])
    table = pd.read_parquet(tmp_path / "t.parquet").set_index(["strategy", "query_id"])
    # q1 keywords: capital, zorbia, velmar. identity top 2: d0 (3 of 3), d1 (1 of 3) -> 2/3
    assert table.loc[("identity", "q1"), "keyword_overlap"] == pytest.approx(2 / 3)
    # q2 keywords: sofia, buys, apples, pears. identity top 2: d3 (2 of 4), d4 (1 of 4) -> 3/8; ekfac: d0, d1 -> 0
    assert table.loc[("identity", "q2"), "keyword_overlap"] == pytest.approx(3 / 8)
    assert table.loc[("ekfac", "q2"), "any_keyword"] == 0.0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["findings"][0]["verdict"] == "replicated"
    chance = np.mean([3 / 3, 1 / 3, 0, 0, 0, 0])  # q1's overlap with every document
    assert table.loc[("identity", "q1"), "chance_overlap"] == pytest.approx(chance)


def test_without_identity_scores_the_finding_is_not_measured(tmp_path):
    from influence_study.stages.keyword_overlap import run

    _family(tmp_path)
    config = {"seed": 0, "analyses": {"keyword_overlap": {"top_k": 2, "min_length": 3}}}
    run(config, str(tmp_path / "learning.parquet"), str(tmp_path / "queries.parquet"),
        str(tmp_path / "documents.parquet"), table=str(tmp_path / "t.parquet"), summary=str(tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["findings"][0]["verdict"] == "not measured"
    assert pd.read_parquet(tmp_path / "t.parquet").empty


def test_verdict_per_size():
    stats = {"top_k": 50, "models": {
        "s": {"identity": {"keyword_overlap": {"mean": 0.3}}, "ekfac": {"keyword_overlap": {"mean": 0.2}},
              "chance": {"mean": 0.01}},
        "l": {"identity": {"keyword_overlap": {"mean": 0.1}}, "ekfac": {"keyword_overlap": {"mean": 0.2}},
              "chance": {"mean": 0.01}}}}
    (item,) = verdicts(stats)
    assert item.verdict == "mixed" and list(item.checks.values()) == [True, False]


def _per_query(identity, ekfac):
    rows = [{"model": "m", "strategy": strategy, "query_id": f"q{i}", "keyword_overlap": float(value),
             "any_keyword": float(value > 0), "chance_overlap": 0.01, "keywords": 4}
            for strategy, values in (("identity", identity), ("ekfac", ekfac)) for i, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_v2_paired_difference_over_queries():
    from influence_study.analyses.keyword_overlap import summarise

    rng = np.random.default_rng(0)
    ekfac = rng.uniform(0.1, 0.5, size=20)
    # positive control: the dot product's top documents share 0.15 more of the keywords for every query
    stats = {"top_k": 5, "models": summarise(_per_query(ekfac + 0.15 + 0.02 * rng.normal(size=20), ekfac))}
    (item,) = verdicts(stats)
    assert item.verdict_v2 == "replicated" and item.interval_checks[0]["low"] > 0
    assert "20 queries" in item.interval_checks[0]["name"]
    # negative control: the same overlap under both strategies
    (item,) = verdicts({"top_k": 5, "models": summarise(_per_query(ekfac, ekfac))})
    assert item.verdict_v2 != "replicated" and item.verdict_v2 == "inconclusive"
    # EK-FAC with more overlap for every query: contradicted
    (item,) = verdicts({"top_k": 5, "models": summarise(_per_query(ekfac, ekfac + 0.2))})
    assert item.verdict_v2 == "not replicated"
