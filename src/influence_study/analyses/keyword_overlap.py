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

from influence_study.study.io import require_columns

TOKEN_PATTERN = re.compile(r"(?u)\b\w\w+\b")  # scikit-learn's default token pattern
STRATEGIES = ("identity", "ekfac")  # gradient dot product, EK-FAC


def keywords(text: str, min_length: int = 3) -> list[str]:
    """The distinct content words of ``text`` in order of first appearance: lowercased tokens of at least
    ``min_length`` characters that are not English stop words (scikit-learn's list)."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    words = TOKEN_PATTERN.findall(text.lower())
    return list(dict.fromkeys(w for w in words if len(w) >= min_length and w not in ENGLISH_STOP_WORDS))


def overlap_matrix(query_keywords: Sequence[Sequence[str]], texts: Sequence[str]) -> np.ndarray:
    """``[n_queries, n_texts]``: the fraction of each query's keywords that occur (as whole lowercased tokens) in
    each text; NaN for a query without keywords."""
    from sklearn.feature_extraction.text import CountVectorizer

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
    from scipy import sparse

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
    from influence_study.analyses.common import mean_ci

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
    from influence_study.findings import Evidence, finding
    from influence_study.analyses.intervals import describe_interval, interval_check

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


def run(config: Mapping, learning: str, queries: str, documents: str, table: str, summary: str,
        identity: Sequence[str] = (), ekfac: Sequence[str] = ()) -> None:
    """Step of ``analysis_keyword_overlap``: keyword overlap of each query's top-k documents under the gradient dot
    product (``identity``) and EK-FAC, per model. ``identity`` is empty when the study has no identity scores: the
    finding is then "not measured"."""
    from tqdm.auto import tqdm

    from influence_study.analyses.common import load_family_tables, write_analysis
    from influence_study.analyses.layers import score_array, top_documents

    section = config["analyses"]["keyword_overlap"]
    k = section["top_k"]
    query_table = pd.read_parquet(queries, columns=["query_id", "prompt", "completion"])
    corpus = pd.read_parquet(documents, columns=["doc_id", "text", "split"])
    require_columns(corpus, ["doc_id", "text", "split"], "corpus table")
    corpus = corpus[corpus["split"] == "train"]
    query_ids = query_table["query_id"].astype(str).tolist()
    words = [keywords(p + c, section["min_length"]) for p, c in zip(query_table["prompt"], query_table["completion"])]
    overlap = overlap_matrix(words, corpus["text"].tolist())
    with np.errstate(invalid="ignore"):
        chance = pd.Series(np.nanmean(overlap, axis=1) if overlap.size else np.nan, index=query_ids)
    statistics = {"top_k": k, "min_length": section["min_length"], "queries": len(query_ids),
                  "keywords_per_query": float(np.mean([len(w) for w in words])) if words else float("nan")}
    rows = []
    if identity:
        families = {"identity": load_family_tables(identity, learning, columns=["query_id", "doc_id", "score"]),
                    "ekfac": load_family_tables(ekfac, learning, columns=["query_id", "doc_id", "score"])}
        for model in tqdm(list(families["ekfac"]), desc="keyword overlap", unit="model"):
            for strategy in STRATEGIES:
                frame = families[strategy].pop(model, None)
                if frame is None:
                    continue
                ranked_queries, ranked_docs, scores = score_array(frame, ["score"])
                chosen, valid = top_documents(scores[:, :, 0], k)
                top = pd.DataFrame({"query_id": np.broadcast_to(ranked_queries[:, None], chosen.shape)[valid],
                                    "doc_id": ranked_docs[chosen][valid]})
                part = top_overlap(top, overlap, query_ids, corpus["doc_id"].tolist()).reset_index()
                part.insert(0, "strategy", strategy)
                part.insert(0, "model", model)
                part["chance_overlap"] = chance.reindex(part["query_id"]).to_numpy()
                part["keywords"] = part["query_id"].map(dict(zip(query_ids, map(len, words))))
                rows.append(part)
    per_query = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["model", "strategy", "query_id", "keyword_overlap", "any_keyword", "chance_overlap", "keywords"])
    statistics["measured"] = bool(rows)
    if not rows:
        statistics["note"] = "not measured: the study computes no gradient dot product (identity) scores"
    statistics["models"] = summarise(per_query, seed=config["seed"]) if rows else {}
    inputs = [*identity, *ekfac, learning, queries, documents]
    write_analysis(config, "keyword_overlap", {"table": (per_query, table)}, statistics, verdicts, summary, inputs)
