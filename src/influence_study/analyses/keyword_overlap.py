"""Gradient dot product vs EK-FAC: how much do a query's top documents share its keywords? (Grosse et al. 2023,
appendix: the top sequences of the gradient dot product are dominated by token overlap more than EK-FAC's.)

A query's keywords are the content words of its prompt and completion: lowercased words (runs of at least two
word characters, scikit-learn's default token pattern) of at least ``min_length`` characters that are not in
scikit-learn's English stop words. Per (query, document) the overlap is the fraction of the query's keywords that
occur in the document; per query and strategy, the mean overlap of its top-k documents and the share of them that
contain at least one keyword. The mean overlap of all training documents is the chance level.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer

from influence_study.analyses.common import mean_ci
from influence_study.analyses.intervals import describe_interval, interval_check
from influence_study.findings import Evidence, finding

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
STRATEGIES = ("identity", "ekfac")  # gradient dot product, EK-FAC


def keywords(text: str, min_length: int = 3) -> list[str]:
    """The distinct content words of ``text`` in order of first appearance: lowercased tokens of at least
    ``min_length`` characters that are not English stop words (scikit-learn's list)."""
    words = TOKEN_PATTERN.findall(text.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= min_length and w not in ENGLISH_STOP_WORDS))


def overlap_matrix(query_keywords: Sequence[Sequence[str]], texts: Sequence[str]) -> np.ndarray:
    """``[n_queries, n_texts]``: the fraction of each query's keywords that occur (as whole lowercased tokens) in
    each text; NaN for a query without keywords."""
    vocabulary = sorted({w for words in query_keywords for w in words})
    if not vocabulary:
        return np.full((len(query_keywords), len(texts)), np.nan)
    index = {w: i for i, w in enumerate(vocabulary)}
    vectorizer = CountVectorizer(vocabulary=vocabulary, binary=True, lowercase=True,
                                 token_pattern=TOKEN_PATTERN.pattern)
    present = vectorizer.transform(texts)  # [n_texts, vocabulary], 1 where the text has the word
    rows, cols = [], []
    for q, words in enumerate(query_keywords):
        rows += [q] * len(words)
        cols += [index[w] for w in words]
    wanted = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(query_keywords), len(vocabulary)))
    shared = (wanted @ present.T).toarray()
    counts = np.asarray(wanted.sum(axis=1)).ravel()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts[:, None] > 0, shared / counts[:, None], np.nan)


def top_overlap(top: pd.DataFrame, overlap: np.ndarray, query_ids: Sequence[str],
                doc_ids: Sequence[str]) -> pd.DataFrame:
    """Per query of ``top`` (its top-k rows, ``query_id, doc_id``): ``keyword_overlap`` (mean fraction of its
    keywords present in its top documents) and ``any_keyword`` (share of them with at least one)."""
    q_index = pd.Index([str(q) for q in query_ids])
    d_index = pd.Index([str(d) for d in doc_ids])
    q = q_index.get_indexer(top["query_id"].astype(str))
    d = d_index.get_indexer(top["doc_id"].astype(str))
    if (q < 0).any() or (d < 0).any():
        raise ValueError(f"top documents name {int((q < 0).sum())} unknown queries and {int((d < 0).sum())} "
                         f"unknown documents (not in the queries or corpus table)")
    values = overlap[q, d]
    frame = pd.DataFrame({"query_id": top["query_id"].astype(str).to_numpy(), "keyword_overlap": values,
                          "any_keyword": np.where(np.isnan(values), np.nan, (values > 0).astype(float))})
    return frame.groupby("query_id", sort=True).mean()


def summarise(per_query: pd.DataFrame, seed: int = 0) -> dict:
    """Per model (ordered as in ``per_query``) and strategy: mean keyword overlap and any-keyword share with
    bootstrap CIs, the chance level, and the paired difference identity - EK-FAC per query."""
    def ci(values) -> dict:
        return dict(zip(("mean", "low", "high"), mean_ci(values, seed=seed)))

    out = {}
    for model, group in per_query.groupby("model", sort=False):
        record = {}
        for strategy, part in group.groupby("strategy", sort=False):
            record[strategy] = {"keyword_overlap": ci(part["keyword_overlap"]), "any_keyword": ci(part["any_keyword"]),
                                "queries": int(part["keyword_overlap"].notna().sum())}
        record["chance"] = ci(group.drop_duplicates("query_id")["chance_overlap"])
        wide = group.pivot(index="query_id", columns="strategy", values="keyword_overlap")
        if set(STRATEGIES) <= set(wide.columns):
            record["difference"] = ci(wide["identity"] - wide["ekfac"])
        out[model] = record
    return out


def verdicts(statistics: Mapping) -> list:
    """The paper's appendix finding, checked per model size: the gradient dot product's top documents share more of
    the query's keywords than EK-FAC's. v2: the paired per-query difference identity − EK-FAC (``difference``,
    bootstrap over queries) above 0."""
    models = statistics["models"]
    claim = ("The gradient dot product's top sequences are dominated by token overlap with the query more than "
             "EK-FAC's.")
    if not statistics.get("measured", True):
        return [finding("Keyword overlap", claim, "more overlap for gradient dot product",
                        statistics.get("note", "not measured"), {})]

    def value(stats, strategy):
        return stats.get(strategy, {}).get("keyword_overlap", {}).get("mean", float("nan"))

    k = statistics["top_k"]
    measured = f"mean share of the query's keywords in its top-{k} (gradient dot product / EK-FAC / chance): " + \
        "; ".join(f"{m} {value(v, 'identity'):.2f} / {value(v, 'ekfac'):.2f} / {v['chance']['mean']:.2f}"
                  for m, v in models.items())
    checks = {f"{m}: gradient dot product's keyword overlap above EK-FAC's": value(v, "identity") > value(v, "ekfac")
              for m, v in models.items()}
    interval_checks = [interval_check(
        f"{m}: keyword overlap gradient dot product − EK-FAC > 0 (paired, bootstrap over "
        f"{v.get('identity', {}).get('queries', 0)} queries)", v.get("difference"), 0.0, "above")
        for m, v in models.items()]
    statistic = (f"mean per-query difference of the top-{k} keyword overlap, gradient dot product − EK-FAC [95% CI]: "
                 + "; ".join(f"{m} {describe_interval(v.get('difference'), '{:.3f}')}" for m, v in models.items()))
    evidence = Evidence(statistic, "EK-FAC's top documents of the same query (chance: mean overlap of all training "
                                   "documents, in the measured column)", interval_checks)
    return [finding("Keyword overlap", claim, "more overlap for gradient dot product", measured, checks, evidence)]
