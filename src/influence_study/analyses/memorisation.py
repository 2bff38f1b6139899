"""Memorisation control (Grosse et al. 2023): famous quotes retrieve their exact copies at the top.

Each quote query (the opening of a quote; completion: its end and attribution) has c verbatim copies in the training
corpus (relation ``exact_copy``). For each model size, every document is ranked by raw EK-FAC score (ties broken by
``doc_id``) and the rank of each copy is recorded; per query: whether the top-ranked document is a copy, the share of
the top c that are copies, and the median and worst rank of the copies.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.relations import label_relations, summarise
from influence_study.findings import Evidence, IntervalCheck, finding

COPY = "exact_copy"
TOP_C_THRESHOLD = 0.9  # ours: "at the top" read as at least 90% of the top c being copies (the paper gives no number)


def copy_ranks(ranked: pd.DataFrame, relations: pd.DataFrame, query_ids: Sequence[str]) -> pd.DataFrame:
    """The rank of every exact copy of each quote query in each model's full ranking ``ranked``: ``model,
    query_id, doc_id, score, rank, n_docs, copies`` (``copies``: the query's copies in the ground truth)."""
    ranked = ranked[ranked["query_id"].isin(set(query_ids))]
    labelled = label_relations(ranked, relations)
    copies = labelled[labelled["relation"] == COPY].drop(columns="relation")
    counts = relations[relations["relation"] == COPY].groupby(relations["query_id"].astype(str)).size()
    return copies.assign(copies=copies["query_id"].map(counts).astype(int)).reset_index(drop=True)


def memorisation_table(ranked: pd.DataFrame, copies: pd.DataFrame) -> pd.DataFrame:
    """One row per model and quote query of ``ranked`` (full rankings): ``copies`` (c), ``top1_is_copy``,
    ``top_c_share`` (copies among the top c), ``median_rank`` and ``worst_rank`` of the copies (NaN for a query
    without copies)."""
    queries = ranked.groupby(["model", "query_id"], sort=False)["n_docs"].first().reset_index()
    by_query = copies.assign(in_top_c=copies["rank"] <= copies["copies"]).groupby(["model", "query_id"], sort=False)
    stats = pd.DataFrame({
        "copies": by_query["copies"].first(),
        "top1_is_copy": by_query["rank"].min() == 1,
        "top_c_share": by_query["in_top_c"].sum() / by_query["copies"].first(),
        "median_rank": by_query["rank"].median(),
        "worst_rank": by_query["rank"].max(),
    }).reset_index() if len(copies) else pd.DataFrame(columns=["model", "query_id", "copies", "top1_is_copy",
                                                                 "top_c_share", "median_rank", "worst_rank"])
    table = queries.merge(stats, on=["model", "query_id"], how="left")
    table["copies"] = table["copies"].fillna(0).astype(int)
    table["top1_is_copy"] = table["top1_is_copy"].astype(float).where(table["copies"] > 0)
    return table


def summarise_memorisation(per_query: pd.DataFrame, copies: pd.DataFrame, seed: int = 0) -> dict:
    """Statistics per model: quote queries, those with copies, share whose top document is a copy, mean share of
    copies in the top c (with its bootstrap interval), and the median and worst rank of all copies."""
    intervals = summarise(per_query.assign(top1_is_copy=per_query["top1_is_copy"].astype(float)),
                          ["top_c_share", "top1_is_copy"], by=("model",), seed=seed)
    top1 = intervals[intervals["measure"] == "top1_is_copy"].set_index("model")
    intervals = intervals[intervals["measure"] == "top_c_share"].set_index("model")
    out = {}
    for model, group in per_query.groupby("model", sort=False):
        ranks = copies.loc[copies["model"] == model, "rank"].to_numpy()
        measured = group.dropna(subset=["top_c_share"])
        out[model] = {
            "queries": int(len(group)), "queries_with_copies": int(len(measured)),
            "copies": int(ranks.size),
            "top1_copy_share": float(measured["top1_is_copy"].mean()) if len(measured) else float("nan"),
            "top_c_share": float(intervals.loc[model, "mean"]),
            "top_c_share_low": float(intervals.loc[model, "low"]),
            "top_c_share_high": float(intervals.loc[model, "high"]),
            "top1_copy_share_low": float(top1.loc[model, "low"]),
            "top1_copy_share_high": float(top1.loc[model, "high"]),
            # a random ranking's share of copies in the top c: c / documents, averaged over the quote queries
            "chance_top_c_share": float((measured["copies"] / measured["n_docs"]).mean()) if len(measured)
            else float("nan"),
            "median_rank": float(np.median(ranks)) if ranks.size else float("nan"),
            "worst_rank": int(ranks.max()) if ranks.size else None,
            "documents": int(group["n_docs"].max()),
        }
    return out


def verdicts(statistics: Mapping) -> list:
    """The paper's memorisation control, checked per model size: every quote query's top document is one of its
    copies, and at least 90% (our threshold) of its top c are copies (c = number of copies)."""
    models = {m: v for m, v in statistics["models"].items() if v["queries_with_copies"] > 0}
    measured = "; ".join(
        f"{m}: top document a copy for {v['top1_copy_share']:.0%} of {v['queries_with_copies']} queries, "
        f"copies in the top c {v['top_c_share']:.0%}, median rank of copies {v['median_rank']:g} "
        f"(worst {v['worst_rank']} of {v['documents']})" for m, v in models.items())
    checks = {}
    for model, values in models.items():
        checks[f"{model}: every quote query's top document is a copy"] = values["top1_copy_share"] == 1.0
        checks[f"{model}: ≥ {TOP_C_THRESHOLD:.0%} of the top c are copies"] = values["top_c_share"] >= TOP_C_THRESHOLD
    return [finding("Memorisation", "Famous quotes retrieve their exact copies at the top.",
                    "qualitative: the copies rank first", measured or "no quote query with copies", checks,
                    _evidence(models))]


def _evidence(models: Mapping):
    """v2: per model, the share of copies in each quote query's top c (bootstrap over quote queries) above
    :data:`TOP_C_THRESHOLD`, read against a random ranking's share (c / documents)."""
    models = {m: v for m, v in models.items() if "top_c_share_low" in v}  # v1 summaries have no intervals
    checks = [IntervalCheck(f"{m}: share of copies in the top c", v["top_c_share"], v["top_c_share_low"],
                            v["top_c_share_high"], TOP_C_THRESHOLD, "above") for m, v in models.items()]
    statistic = "; ".join(
        f"{m}: copies in the top c {v['top_c_share']:.0%} [{v['top_c_share_low']:.0%}, {v['top_c_share_high']:.0%}], "
        f"top document a copy {v['top1_copy_share']:.0%} [{v.get('top1_copy_share_low', float('nan')):.0%}, "
        f"{v.get('top1_copy_share_high', float('nan')):.0%}] ({v['queries_with_copies']} quote queries)"
        for m, v in models.items())
    baseline = "random ranking: " + ", ".join(f"{m} {v.get('chance_top_c_share', float('nan')):.1%}"
                                              for m, v in models.items())
    return Evidence(statistic or "no quote query with copies", baseline, checks)
