"""The v2 evidence of a scale finding: a trend with model size read against its baselines.

A scale finding of the paper says that a per-query statistic (an abstraction index, a same-schema share, a survival
share...) rises from small to large models. Its v2 evidence (rules fixed before the v2 numbers were seen):

- the models compared are those that answer some query correctly (:func:`common.scale_models`); the others are named
  and left out;
- the queries are, per model, those the model answers correctly (top-1 on every completion token), when at least two
  models answer at least :data:`MIN_CORRECT_QUERIES` of them; otherwise every query (and the text says so); the
  other query set's value is reported beside;
- check 1: the slope of the per-model mean on log10(parameters) is above 0 (bootstrap interval over queries,
  :func:`common.size_trend`);
- check 2: the largest model's statistic is above the same statistic computed on the BM25 ranking of the training
  documents (paired over queries), i.e. the large model's ranking is not what token overlap alone gives;
- the chance level (the statistic of a random ranking) is reported beside.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.findings import Evidence, IntervalCheck
from influence_study.study.io import require_columns
from influence_study.analyses.common import mean_ci, model_sizes, scale_models, size_trend

BM25 = "bm25"  # the name the BM25 ranking takes in the model column of per-query tables
MIN_CORRECT_QUERIES = 5
# Fewer queries than this give no interval worth reading (one query: a zero-width bootstrap): not measured.
MIN_INTERVAL_QUERIES = 3


def bm25_ranked(candidates: pd.DataFrame, query_ids: Sequence[str], k: int) -> pd.DataFrame:
    """Each query's top-``k`` training documents under BM25 (the candidates table ``candidates/{corpus}/bm25.parquet``:
    ``query_id, doc_id, rank, bm25``), shaped like :func:`~influence_study.stages.tables.ranked_documents` output with
    ``model = "bm25"`` (``n_docs`` is missing: the candidates table does not say how many documents were scored)."""
    require_columns(candidates, ["query_id", "doc_id", "rank", "bm25"], "BM25 candidates table")
    table = candidates.astype({"query_id": str, "doc_id": str})
    top = table[table["query_id"].isin(set(map(str, query_ids))) & (table["rank"] <= k)]
    top = top.sort_values(["query_id", "rank"], kind="stable")
    return pd.DataFrame({"model": BM25, "query_id": top["query_id"].to_numpy(), "doc_id": top["doc_id"].to_numpy(),
                         "score": top["bm25"].to_numpy(dtype=np.float64), "rank": top["rank"].to_numpy(),
                         "n_docs": np.nan})


def _fmt(value: float, fmt: str) -> str:
    return "nan" if not np.isfinite(value) else fmt.format(value)


def scale_numbers(per_query: pd.DataFrame, bm25: pd.DataFrame | None, column: str,
                  learning: pd.DataFrame, correct: pd.DataFrame, chance: str | None = None,
                  seed: int = 0, resamples: int = 2000) -> dict:
    """The numbers behind the v2 evidence that ``column`` rises with model size (see the module docstring), for an
    analysis's JSON summary; :func:`scale_evidence` turns them into the finding's evidence.

    ``per_query``: long table ``model, query_id, <column>`` of the family; ``bm25``: the same table computed on the
    BM25 ranking (:func:`bm25_ranked`); ``learning``: the learning table; ``correct``: ``model, query_id, correct``
    (:func:`influence_study.stages.tables.correct_answers`); ``chance``: a column of ``per_query``
    with each query's value under a random ranking (its mean over the scale models' queries is the chance level).
    Without a BM25 ranking (``bm25=None``, e.g. a statistic of a fixed set of documents) the second check compares
    the largest model with the chance column instead, paired over its queries.
    """
    require_columns(per_query, ["model", "query_id", column], "per-query table")
    if bm25 is None and chance is None:
        raise ValueError("scale_numbers: give a BM25 per-query table or a chance column to compare with")
    if bm25 is not None:
        require_columns(bm25, ["query_id", column], "BM25 per-query table")
    models, left_out = scale_models(learning)
    sizes = model_sizes(learning)
    scored = [m for m in models if m in set(per_query["model"])]
    rows = per_query[per_query["model"].isin(scored)].astype({"query_id": str})
    right = correct[correct["correct"].astype(bool)][["model", "query_id"]].astype(str)
    restricted = rows.merge(right, on=["model", "query_id"])
    counts = restricted.dropna(subset=[column]).groupby("model").size()
    use_restricted = int((counts >= MIN_CORRECT_QUERIES).sum()) >= 2
    trend_sizes = {m: float(sizes[m]) for m in scored}
    trends = {name: size_trend(frame, trend_sizes, column, resamples=resamples, seed=seed)
              for name, frame in (("correct", restricted), ("all", rows))}
    for trend in trends.values():
        if trend["queries"] < MIN_INTERVAL_QUERIES:
            trend.update(low=float("nan"), high=float("nan"))
    chosen = restricted if use_restricted else rows
    largest = scored[-1] if scored else None
    if bm25 is not None:
        mine = chosen[chosen["model"] == largest][["query_id", column]]
        paired = mine.merge(bm25[["query_id", column]].astype({"query_id": str}), on="query_id",
                            suffixes=("", "_bm25")).dropna()
    else:
        mine = chosen[chosen["model"] == largest]
        paired = pd.DataFrame({column: mine[column], f"{column}_bm25": mine[chance]}).dropna()
    difference = mean_ci(paired[column] - paired[f"{column}_bm25"], resamples=resamples, seed=seed)
    if len(paired) < MIN_INTERVAL_QUERIES:
        difference = (difference[0], float("nan"), float("nan"))
    bm25_value = mean_ci(paired[f"{column}_bm25"], resamples=resamples, seed=seed)
    chance_value = float(rows[chance].mean()) if chance is not None and len(rows) else float("nan")
    return {"models": scored, "left_out": left_out, "largest": largest,
            "query_set": "correct" if use_restricted else "all",
            "correct_queries": {m: int(counts.get(m, 0)) for m in scored},
            "trend": {name: {k: v for k, v in t.items() if k != "models"} for name, t in trends.items()},
            "versus": "BM25 ranking" if bm25 is not None else "chance",
            "largest_minus_bm25": dict(zip(("mean", "low", "high"), difference)),
            "bm25": dict(zip(("mean", "low", "high"), bm25_value)), "chance": chance_value}


def _interval(node: Mapping, fmt: str, keys: Sequence[str] = ("mean", "low", "high")) -> str:
    value, low, high = (float(node[k]) for k in keys)
    return f"{_fmt(value, fmt)} [{_fmt(low, fmt)}, {_fmt(high, fmt)}]"


def scale_evidence(numbers: Mapping, what: str, fmt: str = "{:.2f}") -> Evidence:
    """The :class:`findings.Evidence` of a scale finding from :func:`scale_numbers` output: the two checks of the
    module docstring, the statistic (model means, the slope on the chosen query set and on the other one) and the
    baseline (BM25 ranking, chance, the models left out). ``what`` names the statistic (and prefixes the checks)."""
    primary = numbers["query_set"]
    trend, other = numbers["trend"][primary], numbers["trend"]["all" if primary == "correct" else "correct"]
    query_set = "correctly answered queries" if primary == "correct" else "all queries"
    checks = [
        IntervalCheck(f"{what}: slope per decade of parameters ({query_set})", trend["slope"], trend["low"],
                      trend["high"], 0.0, "above"),
        IntervalCheck(f"{what}: largest model ({numbers['largest']}) minus the "
                      f"{numbers.get('versus', 'BM25 ranking')}, paired over queries",
                      *(numbers["largest_minus_bm25"][k] for k in ("mean", "low", "high")), 0.0, "above"),
    ]
    means = ", ".join(f"{m} {_fmt(v, fmt)}" for m, v in trend["means"].items())
    slope = "{:+.3f}"
    why = "" if primary == "correct" else f" (fewer than two models answer {MIN_CORRECT_QUERIES} correctly)"
    statistic = (f"{what}: {means or 'no model answers'}; slope "
                 f"{_interval(trend, slope, ('slope', 'low', 'high'))} per decade on {query_set}{why}; "
                 f"{'all queries' if primary == 'correct' else 'correctly answered only'}: slope "
                 f"{_interval(other, slope, ('slope', 'low', 'high'))}; correct queries per model: "
                 + (", ".join(f"{m} {n}" for m, n in numbers["correct_queries"].items()) or "none"))
    bm25 = (f"BM25 ranking {_interval(numbers['bm25'], fmt)} on the same queries; "
            if numbers.get("versus", "BM25 ranking") == "BM25 ranking" else "")
    baseline = (f"{bm25}chance (random ranking) {_fmt(numbers['chance'], fmt)}"
                + (f"; left out (answer no query): {', '.join(numbers['left_out'])}" if numbers["left_out"] else ""))
    return Evidence(statistic, baseline, checks)


def combined_evidence(parts: Sequence[Evidence]) -> Evidence | None:
    """One :class:`findings.Evidence` from several (e.g. one per query group): texts joined, checks pooled; None
    without parts."""
    if not parts:
        return None
    return Evidence("; ".join(p.statistic for p in parts), "; ".join(p.baseline for p in parts),
                    [c for p in parts for c in p.checks])
