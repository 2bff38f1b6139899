"""The BM25 candidate filter (candidates.py) against a brute-force reference written here in plain Python.

The reference tokenises with ``re.findall(r"\\w+", text.lower())``, counts documents per word with explicit
loops, applies the IDF formula of Grosse et al. (2023) by hand and sums it over the words a query shares with a
document. Scores are sums of a handful of float64 logarithms, so they must agree to round-off (rtol 1e-12).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from influence_study.corpus.candidates import BM25_K1, bm25_candidates, bm25_idf, bm25_recall, bm25_scores

# "the" is in every document (lowest IDF); case, repeats and accented words on both sides.
DOCUMENTS = [
    "The cat sat on the mat.",
    "The dog chased the cat; the CAT ran, the cat hid.",
    "Le café est très bon, the café au lait aussi.",
    "Die Straße ist lang und die Brücke ist alt, the end.",
    "the quick brown fox",
    "THE Dog and the fox and the dog",
    "Über the Straße: a naïve CAFÉ",
    "the end",
]
QUERIES = [
    "the cat the Cat CAT dog",          # repeated words, mixed case
    "Café très naïve LAIT zebra",       # accents; "zebra" is in no document
    "STRASSE straße Über the",          # "strasse" is not "straße"; "über" only in one document
    "xylophone quartz",                 # shares no word with any document
]


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def reference_scores(documents: list[str], queries: list[str]) -> list[list[float]]:
    doc_words = [words(d) for d in documents]
    n_docs = len(documents)
    doc_freq: dict[str, int] = {}
    for ws in doc_words:
        for w in ws:
            doc_freq[w] = doc_freq.get(w, 0) + 1
    out = []
    for q in queries:
        row = []
        for ws in doc_words:
            total = 0.0
            for w in sorted(words(q)):
                if w in ws:
                    n = doc_freq[w]
                    total += math.log((n_docs - n + 0.5) / (n + 0.5) + 1.0)
            row.append(total)
        out.append(row)
    return out


def reference_top_k(documents: list[str], queries: list[str], top_k: int) -> list[list[tuple[int, float]]]:
    """Per query: (document position, score) of the best top_k positive scores, ties by position."""
    result = []
    for row in reference_scores(documents, queries):
        ranked = sorted([(-s, i) for i, s in enumerate(row) if s > 0])
        result.append([(i, -neg) for neg, i in ranked[:top_k]])
    return result


def frames(documents: list[str], queries: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(documents))], "text": documents})
    # Split each query so that prompt + " " + completion is the query text.
    prompts, completions = [], []
    for q in queries:
        head, _, tail = q.partition(" ")
        prompts.append(head)
        completions.append(tail)
    qs = pd.DataFrame({"query_id": [f"q{i}" for i in range(len(queries))], "prompt": prompts,
                       "completion": completions})
    return docs, qs


def test_scores_match_brute_force_reference():
    got = bm25_scores(DOCUMENTS, QUERIES)
    assert isinstance(got, sp.csr_matrix)
    assert got.shape == (len(QUERIES), len(DOCUMENTS))
    assert got.dtype == np.float64
    expected = np.array(reference_scores(DOCUMENTS, QUERIES))
    np.testing.assert_allclose(got.toarray(), expected, rtol=1e-12, atol=0)
    # The reference is not trivial: a low-IDF word, a zero row, and several distinct positive values.
    assert (expected[3] == 0).all()
    assert len(np.unique(expected[expected > 0])) >= 5


def test_idf_formula_and_common_word():
    n_docs = len(DOCUMENTS)
    df = np.array([0, 1, 3, n_docs])
    expected = [math.log((n_docs - n + 0.5) / (n + 0.5) + 1.0) for n in df]
    np.testing.assert_allclose(bm25_idf(df, n_docs), expected, rtol=1e-15)
    # "the" is in every document: small but positive, the same for every document.
    the = bm25_scores(DOCUMENTS, ["THE the"]).toarray()[0]
    np.testing.assert_allclose(the, np.full(n_docs, math.log(0.5 / (n_docs + 0.5) + 1.0)), rtol=1e-15)
    assert 0 < the[0] < bm25_idf(np.array([1]), n_docs)[0]


def test_binary_presence_and_unknown_words():
    once = bm25_scores(DOCUMENTS, ["cat"]).toarray()
    np.testing.assert_array_equal(bm25_scores(DOCUMENTS, ["Cat cat CAT cat"]).toarray(), once)
    np.testing.assert_array_equal(bm25_scores(DOCUMENTS, ["cat zebra unknownword"]).toarray(), once)
    # Document 1 holds "cat" four times, document 0 twice: under binary presence they score the same.
    assert once[0, 0] == once[0, 1] > 0


def test_k1_does_not_change_binary_scores():
    base = bm25_scores(DOCUMENTS, QUERIES, k1=BM25_K1).toarray()
    for k1 in (0.0, 0.3, 12.0):
        np.testing.assert_allclose(bm25_scores(DOCUMENTS, QUERIES, k1=k1).toarray(), base, rtol=1e-15, atol=0)


@pytest.mark.parametrize("top_k", [1, 2, 3, 5, 8, 20])
@pytest.mark.parametrize("query_chunk", [1, 3, 256])
def test_candidates_match_reference(top_k, query_chunk):
    docs, qs = frames(DOCUMENTS, QUERIES)
    got = bm25_candidates(docs, qs, top_k=top_k, query_chunk=query_chunk)
    assert list(got.columns) == ["query_id", "doc_id", "rank", "bm25"]
    assert got["rank"].dtype == np.int64 and got["bm25"].dtype == np.float64
    assert pd.api.types.is_string_dtype(got["query_id"]) and pd.api.types.is_string_dtype(got["doc_id"])
    expected = []
    for qi, chosen in enumerate(reference_top_k(DOCUMENTS, QUERIES, top_k)):
        for rank, (pos, score) in enumerate(chosen, start=1):
            expected.append((f"q{qi}", f"d{pos}", rank, score))
    assert [tuple(r[:3]) for r in got.itertuples(index=False)] == [e[:3] for e in expected]
    np.testing.assert_allclose(got["bm25"].to_numpy(), [e[3] for e in expected], rtol=1e-12)
    assert (got["bm25"] > 0).all()
    assert "q3" not in set(got["query_id"])  # no shared word: no rows at all


# Exact ties: "alpha" is in four documents, "beta" in two. For the query "alpha beta" the scores are
# alpha+beta (p3) > beta (p5) > alpha (p1 = p2 = p4) > 0 (p0, p6 excluded).
TIE_DOCS = {"p0": "zeta one", "p1": "alpha two", "p2": "alpha three", "p3": "alpha beta",
            "p4": "alpha four", "p5": "beta five", "p6": "gamma six"}
TIE_QUERY = pd.DataFrame({"query_id": ["q"], "prompt": ["alpha"], "completion": ["beta"]})


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("query_chunk", [1, 8])
def test_ties_broken_by_document_position(reverse, query_chunk):
    ids = sorted(TIE_DOCS, reverse=reverse)
    docs = pd.DataFrame({"doc_id": ids, "text": [TIE_DOCS[i] for i in ids]})
    ties = ["p1", "p2", "p4"][::-1] if reverse else ["p1", "p2", "p4"]  # in document order
    full = ["p3", "p5"] + ties
    for top_k in range(1, 9):
        got = bm25_candidates(docs, TIE_QUERY, top_k=top_k, query_chunk=query_chunk)
        assert got["doc_id"].tolist() == full[:top_k]  # the tie at the k-th place goes to the earlier document
        assert got["rank"].tolist() == list(range(1, min(top_k, 5) + 1))
    got = bm25_candidates(docs, TIE_QUERY, top_k=5)
    assert got["bm25"].iloc[2] == got["bm25"].iloc[3] == got["bm25"].iloc[4] < got["bm25"].iloc[1]


def test_candidates_non_string_ids_and_no_match():
    docs = pd.DataFrame({"doc_id": [10, 11], "text": ["red apple", "green pear"]})
    qs = pd.DataFrame({"query_id": [1, 2], "prompt": ["a red", "blue"], "completion": ["apple", "sky"]})
    got = bm25_candidates(docs, qs, top_k=3)
    assert got["query_id"].tolist() == ["1"] and got["doc_id"].tolist() == ["10"]
    assert got["rank"].tolist() == [1]


def test_errors():
    docs, qs = frames(DOCUMENTS, QUERIES)
    with pytest.raises(ValueError, match=r"documents.*\['text'\]"):
        bm25_candidates(docs.drop(columns="text"), qs, top_k=3)
    with pytest.raises(ValueError, match=r"queries.*\['completion'\]"):
        bm25_candidates(docs, qs.drop(columns="completion"), top_k=3)
    with pytest.raises(ValueError, match="top_k"):
        bm25_candidates(docs, qs, top_k=0)
    with pytest.raises(ValueError, match="k1"):
        bm25_candidates(docs, qs, top_k=3, k1=-0.5)
    with pytest.raises(ValueError, match="k1"):
        bm25_scores(DOCUMENTS, QUERIES, k1=-1.0)
    with pytest.raises(ValueError, match="doc_id"):
        bm25_candidates(pd.DataFrame({"doc_id": ["a", "a"], "text": ["x", "y"]}), qs, top_k=3)
    with pytest.raises(ValueError, match="at least one document"):
        bm25_scores([], ["query"])
    with pytest.raises(TypeError, match="strings"):
        bm25_scores(["fine", None], ["query"])
    with pytest.raises(TypeError, match="strings"):
        bm25_scores(DOCUMENTS, ["ok", 3])


def test_recall_hand_example():
    pairwise = pd.DataFrame({
        "query_id": ["qA"] * 6 + ["qB"] * 2 + ["qC"],
        "doc_id": ["a", "b", "d", "c", "e", "f", "p", "q", "r"],
        "score": [5.0, 4.0, 3.0, 3.0, 1.0, 0.0, 2.0, 1.0, 1.0],
    })
    candidates = pd.DataFrame({
        "query_id": ["qA"] * 5 + ["qB"] + ["qZ"],
        "doc_id": ["c", "x", "a", "d", "b", "q", "a"],
        "rank": [1, 2, 3, 4, 5, 1, 1],
    })
    # Worked out by hand, top = 3:
    #   qA: top 3 by score = a (5), b (4), then c and d tie at 3 -> c by doc_id. Truth {a, b, c}.
    #       k=1: kept {c}             -> 1/3, 1 candidate
    #       k=3: kept {c, x, a}       -> 2/3, 3 candidates
    #       k=5: kept {c, x, a, d, b} -> 3/3, 5 candidates
    #   qB: only two documents, truth {p, q}; kept {q} for every k -> 1/2, 1 candidate.
    #   qC: truth {r}, no candidates -> 0, 0 candidates.
    #   qZ has candidates but no pairwise scores: not reported.
    got = bm25_recall(pairwise, candidates, ks=[5, 1, 3], top=3)
    assert list(got.columns) == ["query_id", "k", "top", "recall", "n_candidates"]
    assert got["query_id"].tolist() == ["qA"] * 3 + ["qB"] * 3 + ["qC"] * 3
    assert got["k"].tolist() == [1, 3, 5] * 3
    assert (got["top"] == 3).all()
    np.testing.assert_allclose(got["recall"].to_numpy(),
                               [1 / 3, 2 / 3, 1.0, 0.5, 0.5, 0.5, 0.0, 0.0, 0.0], rtol=1e-15)
    assert got["n_candidates"].tolist() == [1, 3, 5, 1, 1, 1, 0, 0, 0]


def test_recall_on_bm25_candidates_of_itself_is_one():
    # Using BM25 itself as the "influence" score, the BM25 top-k must recall its own top-k completely.
    docs, qs = frames(DOCUMENTS, QUERIES[:3])
    scores = bm25_scores(DOCUMENTS, QUERIES[:3]).toarray()
    pairwise = pd.DataFrame({"query_id": np.repeat(qs["query_id"].to_numpy(), len(DOCUMENTS)),
                             "doc_id": np.tile(docs["doc_id"].to_numpy(), len(QUERIES[:3])),
                             "score": scores.ravel()})
    # Break BM25's exact ties in the same direction as doc_id so that both orders agree.
    pairwise["score"] -= 1e-9 * np.tile(np.arange(len(DOCUMENTS)), len(QUERIES[:3]))
    candidates = bm25_candidates(docs, qs, top_k=8)
    got = bm25_recall(pairwise, candidates, ks=[2], top=2)
    np.testing.assert_allclose(got["recall"].to_numpy(), 1.0)


def test_recall_errors():
    pairwise = pd.DataFrame({"query_id": ["q"], "doc_id": ["a"], "score": [1.0]})
    candidates = pd.DataFrame({"query_id": ["q"], "doc_id": ["a"], "rank": [1]})
    with pytest.raises(ValueError, match=r"pairwise.*\['score'\]"):
        bm25_recall(pairwise.drop(columns="score"), candidates, ks=[1])
    with pytest.raises(ValueError, match=r"candidates.*\['rank'\]"):
        bm25_recall(pairwise, candidates.drop(columns="rank"), ks=[1])
    with pytest.raises(ValueError, match="top"):
        bm25_recall(pairwise, candidates, ks=[1], top=0)
    with pytest.raises(ValueError, match="ks"):
        bm25_recall(pairwise, candidates, ks=[0])
