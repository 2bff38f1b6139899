"""TF-IDF candidate filter: a modified Okapi BM25 that keeps the top-k training documents per query.

Grosse et al. (2023) do not score every (query, document) pair with influence functions; they first keep, per
query, the top-k candidate documents of a modified Okapi BM25:

* ``k1 = 1.5``;
* binary term presence: a term counts once however often it occurs, in the document and in the query;
* no document-length normalisation (BM25's ``b = 0``);
* ``IDF(t) = log((C - n + 0.5) / (n + 0.5) + 1)`` with ``C`` the number of documents and ``n`` the number of
  documents containing ``t`` (always positive, so a term in every document still counts, a little).

Under binary presence ``tf = 1``, so each term contributes ``idf * tf * (k1 + 1) / (tf + k1) = idf`` and ``k1``
does not change the scores; it is kept explicit so that the parameter means what it means in BM25.

Words are lowercase unicode word tokens (``(?u)\\b\\w+\\b``), read by one scikit-learn ``CountVectorizer``
fitted on the documents and shared by the queries; query words outside the documents' vocabulary are ignored.
All scoring runs on scipy sparse matrices; only queries are processed in chunks.

:func:`bm25_recall` measures the paper's caveat: how many of a query's most influential documents (found by
scoring the whole corpus) the filter would have kept.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from influence_study.study.io import require_columns

__all__ = ["BM25_K1", "TOKEN_PATTERN", "word_vectorizer", "bm25_idf", "bm25_scores", "bm25_candidates",
           "bm25_recall"]

BM25_K1 = 1.5
"""BM25's term-frequency saturation parameter, as in the paper."""

TOKEN_PATTERN = r"(?u)\b\w+\b"
"""One word = one maximal run of unicode word characters (single characters included)."""


def word_vectorizer() -> CountVectorizer:
    """A fresh binary, lowercasing ``CountVectorizer`` with :data:`TOKEN_PATTERN`: the word tokenisation shared
    by documents and queries (fit it on the documents, transform the queries with it)."""
    return CountVectorizer(binary=True, lowercase=True, token_pattern=TOKEN_PATTERN)


def bm25_idf(document_frequency: np.ndarray, n_documents: int) -> np.ndarray:
    """BM25 inverse document frequency ``log((C - n + 0.5) / (n + 0.5) + 1)`` (float64), elementwise over
    ``document_frequency`` (``n``, the number of documents containing each term) with ``C = n_documents``."""
    if isinstance(n_documents, bool) or not isinstance(n_documents, Integral) or n_documents < 0:
        raise ValueError(f"n_documents must be a non-negative integer, got {n_documents!r}")
    n = np.asarray(document_frequency, dtype=np.float64)
    if np.any(~np.isfinite(n)) or np.any(n < 0) or np.any(n > n_documents):
        raise ValueError(f"document_frequency must lie in [0, n_documents={n_documents}]")
    return np.log((n_documents - n + 0.5) / (n + 0.5) + 1.0)


def _check_k1(k1: float) -> float:
    if isinstance(k1, bool) or not isinstance(k1, Real) or not np.isfinite(k1) or k1 < 0:
        raise ValueError(f"k1 must be a finite number >= 0, got {k1!r}")
    return float(k1)


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, (str, bytes)):
        raise TypeError(f"{what} must be a sequence of strings, not a single string")
    texts = list(texts)
    if pd.api.types.infer_dtype(texts, skipna=False) not in ("string", "empty"):
        first = next(i for i, t in enumerate(texts) if not isinstance(t, str))  # only to name the culprit
        raise TypeError(f"{what} must all be strings; position {first} holds {type(texts[first]).__name__}")
    return texts


class _BM25Index:
    """The documents' side of BM25: the fitted vectorizer and the weighted term-document matrix ``[V, C]``."""

    def __init__(self, documents: Sequence[str], k1: float):
        k1 = _check_k1(k1)
        documents = _check_texts(documents, "documents")
        if not documents:
            raise ValueError("BM25 needs at least one document")
        self.n_documents = len(documents)
        self.vectorizer: CountVectorizer | None = word_vectorizer()
        try:
            presence = self.vectorizer.fit_transform(documents).tocsr()  # [C, V], binary
        except ValueError as err:
            if "empty vocabulary" not in str(err):
                raise
            # No document holds a single word: nothing can match, every score is 0.
            self.vectorizer = None
            self.weights = sp.csr_matrix((0, self.n_documents), dtype=np.float64)
            return
        n_terms = presence.shape[1]
        document_frequency = np.bincount(presence.indices, minlength=n_terms)
        idf = bm25_idf(document_frequency, self.n_documents)
        tf = presence.astype(np.float64)  # binary presence: tf = 1 wherever the term occurs
        tf.data = tf.data * (k1 + 1.0) / (tf.data + k1)  # BM25 saturation, no length term (b = 0)
        self.weights = (tf @ sp.diags(idf)).T.tocsr()  # [V, C]: idf(t) * saturated tf(t, d)

    def query_terms(self, queries: list[str]) -> sp.csr_matrix:
        """Binary query-term matrix ``[Q, V]``; words outside the documents' vocabulary are dropped."""
        if self.vectorizer is None:
            return sp.csr_matrix((len(queries), 0), dtype=np.float64)
        return self.vectorizer.transform(queries).astype(np.float64).tocsr()

    def scores(self, queries: list[str]) -> sp.csr_matrix:
        """Sparse BM25 scores ``[Q, C]`` of already-checked query texts."""
        product = self.query_terms(queries) @ self.weights
        return sp.csr_matrix(product, shape=(len(queries), self.n_documents), dtype=np.float64)


def bm25_scores(documents: Sequence[str], queries: Sequence[str], k1: float = BM25_K1) -> sp.csr_matrix:
    """Modified-BM25 scores ``[queries, documents]`` as a float64 CSR matrix.

    ``score(q, d) = sum over words t in both q and d of idf(t) * tf * (k1 + 1) / (tf + k1)`` with ``tf = 1``
    (binary presence, in queries too) and :func:`bm25_idf` computed over ``documents``. Pairs sharing no word
    are absent (score 0). Raises ``ValueError`` for ``k1 < 0`` or no documents, ``TypeError`` for non-string
    texts."""
    index = _BM25Index(documents, k1)
    return index.scores(_check_texts(queries, "queries"))


def _check_positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_unique(ids: pd.Series, name: str) -> None:
    duplicated = ids[ids.duplicated()]
    if len(duplicated):
        raise ValueError(f"{name} must be unique; duplicated: {sorted(set(duplicated))[:5]}")


def _top_k_block(block: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of each row's top ``top_k`` positive entries of a dense block, ordered by row, then
    descending value, then column (ties, the k-th place included, go to the lower column)."""
    n_rows, n_cols = block.shape
    k = min(top_k, n_cols)
    # k-th largest value of each row; everything above it is kept, and of the values equal to it only the
    # first (k - number above) by column, so a tie straddling the k-th place is settled by position.
    kth = -np.partition(-block, k - 1, axis=1)[:, k - 1:k]
    above = block > kth
    at = block == kth
    room = k - above.sum(axis=1, keepdims=True)
    keep = (above | (at & (np.cumsum(at, axis=1) <= room))) & (block > 0)
    rows, cols = np.nonzero(keep)
    order = np.lexsort((cols, -block[rows, cols], rows))
    return rows[order], cols[order]


def bm25_candidates(documents: pd.DataFrame, queries: pd.DataFrame, top_k: int, k1: float = BM25_K1,
                    query_chunk: int = 256) -> pd.DataFrame:
    """Each query's top ``top_k`` documents by modified BM25, as a long table.

    ``documents`` has columns ``doc_id``, ``text``; ``queries`` has ``query_id``, ``prompt``, ``completion``
    and a query's text is ``prompt + " " + completion``. Only documents with a positive score are kept, so a
    query may get fewer than ``top_k`` rows (none when it shares no word with any document). Rows are ordered
    by query (in ``queries`` order) and ``rank`` (1 = best): descending score, ties by the document's position in
    ``documents``. Queries are scored ``query_chunk`` at a time (a dense ``[query_chunk, C]`` block each).

    Returns columns ``query_id`` (str), ``doc_id`` (str), ``rank`` (int64), ``bm25`` (float64). Raises
    ``ValueError`` for missing columns, ``top_k < 1``, ``query_chunk < 1``, duplicated ``doc_id`` or
    ``query_id``, ``k1 < 0`` or no documents."""
    require_columns(documents, ["doc_id", "text"], "documents")
    require_columns(queries, ["query_id", "prompt", "completion"], "queries")
    top_k = _check_positive_int(top_k, "top_k")
    query_chunk = _check_positive_int(query_chunk, "query_chunk")
    doc_ids = documents["doc_id"].astype(str).to_numpy()
    query_ids = queries["query_id"].astype(str).to_numpy()
    _check_unique(pd.Series(doc_ids), "documents.doc_id")
    _check_unique(pd.Series(query_ids), "queries.query_id")
    prompts = _check_texts(queries["prompt"], "queries.prompt")
    completions = _check_texts(queries["completion"], "queries.completion")
    texts = (pd.Series(prompts, dtype=object) + " " + pd.Series(completions, dtype=object)).tolist()

    index = _BM25Index(documents["text"], k1)
    parts_q, parts_d, parts_r, parts_s = [], [], [], []
    for start in range(0, len(texts), query_chunk):
        block = index.scores(texts[start:start + query_chunk]).toarray()
        rows, cols = _top_k_block(block, top_k)
        first = np.searchsorted(rows, rows, side="left")
        parts_q.append(rows + start)
        parts_d.append(cols)
        parts_r.append(np.arange(len(rows)) - first + 1)
        parts_s.append(block[rows, cols])

    def joined(parts: list[np.ndarray], dtype) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    q, d = joined(parts_q, np.int64), joined(parts_d, np.int64)
    return pd.DataFrame({
        "query_id": pd.Series(query_ids[q], dtype=object).astype(str),
        "doc_id": pd.Series(doc_ids[d], dtype=object).astype(str),
        "rank": joined(parts_r, np.int64),
        "bm25": joined(parts_s, np.float64),
    })


def bm25_recall(pairwise: pd.DataFrame, candidates: pd.DataFrame, ks: Sequence[int],
                top: int = 10) -> pd.DataFrame:
    """How much of each query's most influential documents the BM25 filter keeps.

    ``pairwise`` (``query_id, doc_id, score``) holds influence scores over the whole, unfiltered corpus;
    ``candidates`` (``query_id, doc_id, rank``) is :func:`bm25_candidates`'s output. For every query in
    ``pairwise`` and every ``k`` in ``ks``: ``recall`` = fraction of the query's top ``top`` documents by
    descending ``score`` (ties by ``doc_id``; fewer if the query has fewer documents) whose candidate ``rank``
    is ``<= k``; ``n_candidates`` = number of the query's candidate rows with ``rank <= k``. A query without
    candidates gets recall 0; candidates of queries absent from ``pairwise`` are ignored.

    Returns columns ``query_id`` (str), ``k``, ``top``, ``recall`` (float64), ``n_candidates``, sorted by
    ``query_id`` then ``k``. Raises ``ValueError`` for missing columns, ``top < 1``, a ``k < 1`` or duplicated
    ``(query_id, doc_id)`` pairs in either table."""
    require_columns(pairwise, ["query_id", "doc_id", "score"], "pairwise")
    require_columns(candidates, ["query_id", "doc_id", "rank"], "candidates")
    top = _check_positive_int(top, "top")
    if isinstance(ks, Integral):
        raise TypeError("ks must be a sequence of integers, not a single integer")
    ks = sorted({_check_positive_int(k, "every k in ks") for k in ks})

    pw = pd.DataFrame({"query_id": pairwise["query_id"].astype(str), "doc_id": pairwise["doc_id"].astype(str),
                       "score": pd.to_numeric(pairwise["score"]).astype(np.float64)})
    cand = pd.DataFrame({"query_id": candidates["query_id"].astype(str),
                         "doc_id": candidates["doc_id"].astype(str),
                         "rank": pd.to_numeric(candidates["rank"]).astype(np.int64)})
    for table, name in ((pw, "pairwise"), (cand, "candidates")):
        if table.duplicated(["query_id", "doc_id"]).any():
            raise ValueError(f"{name} has duplicated (query_id, doc_id) pairs")

    # Each query's unfiltered top `top`, then the candidate rank of each of those documents (NaN: not kept).
    pw = pw.sort_values(["query_id", "score", "doc_id"], ascending=[True, False, True], kind="mergesort",
                        na_position="last")
    truth = pw[pw.groupby("query_id", sort=False).cumcount() < top]
    truth = truth.merge(cand, on=["query_id", "doc_id"], how="left")
    query_ids = pd.Index(pd.unique(truth["query_id"]), name="query_id").sort_values()
    n_truth = truth.groupby("query_id").size().reindex(query_ids)

    frames = []
    for k in ks:  # one vectorised pass per k, none per query
        hits = (truth["rank"] <= k).groupby(truth["query_id"]).sum().reindex(query_ids, fill_value=0)
        kept = cand.loc[cand["rank"] <= k].groupby("query_id").size().reindex(query_ids, fill_value=0)
        frames.append(pd.DataFrame({
            "query_id": query_ids.to_numpy(),
            "k": np.int64(k),
            "top": np.int64(top),
            "recall": (hits.to_numpy(np.float64) / n_truth.to_numpy(np.float64)),
            "n_candidates": kept.to_numpy(np.int64),
        }))
    if not frames:
        return pd.DataFrame({"query_id": pd.Series([], dtype=object).astype(str),
                             "k": np.zeros(0, np.int64), "top": np.zeros(0, np.int64),
                             "recall": np.zeros(0, np.float64), "n_candidates": np.zeros(0, np.int64)})
    out = pd.concat(frames, ignore_index=True)
    out["query_id"] = out["query_id"].astype(str)
    return out.sort_values(["query_id", "k"], kind="mergesort").reset_index(drop=True)
