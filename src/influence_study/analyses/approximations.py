"""Approximation checks (Grosse et al. 2023, "Making it affordable"): how much do the two memory savings of the
paper change the scores?

- Query batching: each module's preconditioned query gradient is stored as its best rank-r approximation (the paper
  uses r = 32 and reports Pearson 0.995 against full rank on one query, ranks 8-128 compared). Here every query of
  a seeded sample is scored against a seeded sample of training documents at each rank and at full rank, and the
  Pearson correlation over the documents is taken per query. A rank at or above a module's smaller dimension
  (``min(out, in + bias)``) IS full rank for that module: the table says how many modules each rank approximates.
- Block-diagonal factors: A and S keep only O diagonal blocks (the paper used O = 2 at 52B and gives no accuracy
  number). Factors with O = 2, 4 are fitted on the same documents, labels and seed as the study's (O = 1) factors,
  and each query's scores are correlated with the O = 1 scores; the memory of the stored factors is counted.

Everything is computed on one model (``analyses.approximations.model``, by default the largest of the family), by
:func:`influence_study.stages.approximations.run`; the functions here turn its score matrices and byte counts into
tables, statistics and findings.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import row_pearson
from influence_study.analyses.intervals import (NAN_INTERVAL, describe_interval, exact_interval, interval_check,
                                                paired_interval, statistic_interval)
from influence_study.findings import Evidence, finding

# The checks, fixed before the numbers were seen (the paper's statements turned into thresholds).
PAPER_RANK = 32
PAPER_RANK_PEARSON = 0.995
RANK_PEARSON_MIN = 0.99       # rank-32 median per-query correlation (the paper: 0.995 on one query)
MONOTONE_TOLERANCE = 1e-3     # median correlation may not fall by more than this from one rank to the next
BLOCK_PEARSON_MIN = 0.9       # our threshold (the paper gives none): O = 2 vs O = 1, median per query
MEMORY_RATIO_TOLERANCE = 0.05  # factor memory ratio x O within 5% of 1


# -- pure functions ----------------------------------------------------------------------------------------------
def per_query_pearson(reference, approximation) -> np.ndarray:
    """Pearson correlation of each row of ``approximation`` [Q, M] with the same row of ``reference`` (NaN for a
    row without spread)."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(approximation, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two [queries, documents] matrices of one shape, got {x.shape} and {y.shape}")
    return row_pearson(y, x)


def approximated_modules(min_dims: Mapping[str, int], rank: int) -> int:
    """How many tracked modules a rank-``rank`` query approximates (the others keep full rank); ``min_dims``: each
    module's smaller gradient dimension (:func:`influence_study.stages.approximations.module_min_dims`)."""
    return sum(rank < dim for dim in min_dims.values())


def rank_table(scores: Mapping, query_ids: Sequence[str], min_dims: Mapping[str, int]) -> pd.DataFrame:
    """One row per query and rank: ``query_id, rank, pearson`` (with the full-rank scores of ``scores[None]``;
    ``scores``: rank -> ``[Q, M]`` score matrix), ``modules_approximated`` (of ``modules``, the tracked modules of
    ``min_dims``) and ``full_rank`` (no module approximated)."""
    reference = scores[None]
    n_modules = len(min_dims)
    frames = []
    for rank, values in scores.items():
        if rank is None:
            continue
        approximated = approximated_modules(min_dims, rank)
        frames.append(pd.DataFrame({"query_id": list(query_ids), "rank": int(rank),
                                    "pearson": per_query_pearson(reference, values),
                                    "modules_approximated": approximated, "modules": n_modules,
                                    "full_rank": approximated == 0}))
    return pd.concat(frames, ignore_index=True)


def block_table(reference, by_blocks: Mapping, query_ids: Sequence[str]) -> pd.DataFrame:
    """One row per query and block count O: ``query_id, blocks, pearson`` against the O = 1 ``reference``."""
    frames = [pd.DataFrame({"query_id": list(query_ids), "blocks": int(blocks),
                            "pearson": per_query_pearson(reference, values)}) for blocks, values in by_blocks.items()]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame({"query_id": pd.Series(dtype=str), "blocks": pd.Series(dtype=int),
                               "pearson": pd.Series(dtype=float)}))


def memory_table(memory: Mapping[int, Mapping[str, int]]) -> pd.DataFrame:
    """One row per block count O (O = 1 included): the bytes of its factors (``memory[O]``:
    :func:`influence_study.stages.approximations.factor_memory`) and the ratios to O = 1."""
    rows = [{"blocks": int(blocks), **bytes_} for blocks, bytes_ in sorted(memory.items())]
    frame = pd.DataFrame(rows)
    base = frame.set_index("blocks").loc[1]
    frame["blocked_ratio"] = frame["blocked_bytes"] / base["blocked_bytes"]
    frame["total_ratio"] = frame["total_bytes"] / base["total_bytes"]
    return frame


def _quantiles(values: pd.Series) -> dict:
    values = values.dropna()
    if values.empty:
        return {"median": float("nan"), "q25": float("nan"), "min": float("nan"), "queries": 0}
    return {"median": float(values.median()), "q25": float(values.quantile(0.25)), "min": float(values.min()),
            "queries": int(len(values))}


def rank_gain(ranks: pd.DataFrame, seed: int = 0) -> dict:
    """Per query, the Pearson with full rank at the largest rank minus that at the smallest, paired; its mean over
    queries with a bootstrap interval (``{mean, low, high, n, from, to}``; NaNs with fewer than two ranks)."""
    present = sorted(int(r) for r in ranks["rank"].unique()) if len(ranks) else []
    if len(present) < 2:
        return {**NAN_INTERVAL, "from": None, "to": None}
    wide = ranks.pivot_table(index="query_id", columns="rank", values="pearson", aggfunc="first")
    return {**paired_interval(wide[present[-1]].to_numpy(), wide[present[0]].to_numpy(), seed=seed),
            "from": present[0], "to": present[-1]}


def summarise(ranks: pd.DataFrame, blocks: pd.DataFrame, memory: pd.DataFrame, seed: int = 0) -> dict:
    """Statistics of the three tables: per rank and per O the median (quartile, minimum) per-query Pearson with
    a bootstrap interval of the median over queries (``median_ci``), the modules each rank approximates, the
    memory per O, and the paired gain from the smallest to the largest rank (``rank_gain``)."""
    by_rank = {}
    for rank, group in ranks.groupby("rank", sort=True):
        by_rank[int(rank)] = {**_quantiles(group["pearson"]),
                              "median_ci": statistic_interval(group["pearson"], np.median, seed=seed),
                              "modules_approximated": int(group["modules_approximated"].iloc[0]),
                              "modules": int(group["modules"].iloc[0]), "full_rank": bool(group["full_rank"].iloc[0])}
    by_blocks = {}
    for o, group in blocks.groupby("blocks", sort=True):
        by_blocks[int(o)] = {**_quantiles(group["pearson"]),
                             "median_ci": statistic_interval(group["pearson"], np.median, seed=seed)}
    for row in memory.to_dict("records"):
        entry = by_blocks.setdefault(int(row["blocks"]), {})
        entry.update({k: int(row[k]) for k in ("blocked_bytes", "other_bytes", "total_bytes")})
        entry.update({k: float(row[k]) for k in ("blocked_ratio", "total_ratio", "fit_seconds") if k in row})
    return {"ranks": by_rank, "blocks": dict(sorted(by_blocks.items())), "rank_gain": rank_gain(ranks, seed)}


def verdicts(statistics: Mapping) -> list:
    """The paper's statements on query batching and block-diagonal factors, as checks on the statistics.

    v2: the median per-query Pearson at rank 32 above :data:`RANK_PEARSON_MIN` and at O = 2 above
    :data:`BLOCK_PEARSON_MIN` (bootstrap of the median over queries); the paired per-query gain from the smallest to
    the largest rank above 0; the memory ratio × O within :data:`MEMORY_RATIO_TOLERANCE` of 1 (exact byte counts,
    zero-width intervals)."""
    name = "Approximations"
    ranks = {int(k): v for k, v in statistics["ranks"].items()}
    blocks = {int(k): v for k, v in statistics["blocks"].items()}
    model = statistics.get("model", "?")
    full = [r for r, v in ranks.items() if v["full_rank"]]
    full_note = (f"; rank {', '.join(map(str, full))}: full rank for every module of {model} "
                 f"(smallest module dimension {statistics.get('min_module_dim')})") if full else ""
    medians = ", ".join(f"r={r}: {v['median']:.4f}" for r, v in sorted(ranks.items()))
    findings = []
    rank_checks = {}
    if PAPER_RANK in ranks and ranks[PAPER_RANK]["queries"]:
        rank_checks[f"median per-query Pearson at rank {PAPER_RANK} ≥ {RANK_PEARSON_MIN}"] = \
            ranks[PAPER_RANK]["median"] >= RANK_PEARSON_MIN
    at_rank = ranks.get(PAPER_RANK, {}).get("median_ci")
    n_queries = (at_rank or {}).get("n", 0)
    findings.append(finding(
        name, f"Storing each preconditioned query gradient at rank {PAPER_RANK} barely changes the scores.",
        f"Pearson {PAPER_RANK_PEARSON} (rank {PAPER_RANK} vs full, one query)",
        f"{model}: median per-query Pearson with full rank over {statistics.get('documents')} documents, "
        f"{statistics.get('queries')} queries: {medians}{full_note}", rank_checks,
        Evidence(f"{model}: median per-query Pearson of rank {PAPER_RANK} with full rank "
                 f"{describe_interval(at_rank, '{:.4f}')} (95% CI over {n_queries} queries){full_note}",
                 "the full-rank preconditioned query gradient (Pearson 1)",
                 [interval_check(f"median per-query Pearson at rank {PAPER_RANK} > {RANK_PEARSON_MIN} (ours, from the "
                                 f"paper's {PAPER_RANK_PEARSON} on one query; bootstrap over {n_queries} queries)",
                                 at_rank, RANK_PEARSON_MIN, "above")])))
    ordered = [ranks[r]["median"] for r in sorted(ranks) if ranks[r]["queries"]]
    monotone = {}
    if len(ordered) >= 2:
        monotone[f"median correlation non-decreasing with rank (tolerance {MONOTONE_TOLERANCE})"] = all(
            b >= a - MONOTONE_TOLERANCE for a, b in zip(ordered, ordered[1:]))
    gain = statistics.get("rank_gain") or {}
    gain_label = f"rank {gain.get('to')} − rank {gain.get('from')}"
    findings.append(finding(name, "The approximation improves with the query rank (ranks 8-128 compared).",
                            "ranks 8–128 compared", medians + full_note, monotone,
                            Evidence(f"mean per-query gain in Pearson with full rank, {gain_label}: "
                                     f"{describe_interval(gain, '{:.4f}')} (95% CI over {gain.get('n', 0)} queries)",
                                     f"the smallest rank compared (rank {gain.get('from')})",
                                     [interval_check(f"Pearson {gain_label} > 0 (paired, bootstrap over "
                                                     f"{gain.get('n', 0)} queries)", gain, 0.0, "above")])))
    split = {o: v for o, v in blocks.items() if o > 1}
    block_checks = {}
    if 2 in split and split[2].get("queries"):
        block_checks[f"median per-query Pearson O=2 vs O=1 ≥ {BLOCK_PEARSON_MIN} (our threshold)"] = \
            split[2]["median"] >= BLOCK_PEARSON_MIN
    two = split.get(2, {}).get("median_ci")
    findings.append(finding(
        name, "Block-diagonal factors (O = 2) leave the scores nearly unchanged.",
        "O = 2 used at 52B (no accuracy number given)",
        f"{model}: median per-query Pearson with O = 1: "
        + ", ".join(f"O={o}: {v.get('median', float('nan')):.4f}" for o, v in sorted(split.items())), block_checks,
        Evidence(f"{model}: median per-query Pearson of O = 2 with O = 1 {describe_interval(two, '{:.4f}')} (95% CI "
                 f"over {(two or {}).get('n', 0)} queries)", "the full (O = 1) factors (Pearson 1)",
                 [interval_check(f"median per-query Pearson O=2 vs O=1 > {BLOCK_PEARSON_MIN} (our threshold; "
                                 f"bootstrap over {(two or {}).get('n', 0)} queries)", two, BLOCK_PEARSON_MIN,
                                 "above")])))
    memory_checks = {f"O={o}: factor memory ratio within {MEMORY_RATIO_TOLERANCE:.0%} of 1/{o}":
                     abs(v["blocked_ratio"] * o - 1) <= MEMORY_RATIO_TOLERANCE
                     for o, v in sorted(split.items()) if "blocked_ratio" in v}
    memory_intervals = [interval_check(f"O={o}: A, S bytes ratio × O within {MEMORY_RATIO_TOLERANCE:.0%} of 1 "
                                       f"(counted bytes, exact: zero-width interval)",
                                       exact_interval(v["blocked_ratio"] * o),
                                       (1 - MEMORY_RATIO_TOLERANCE, 1 + MEMORY_RATIO_TOLERANCE), "within")
                        for o, v in sorted(split.items()) if "blocked_ratio" in v]
    findings.append(finding(
        name, "Splitting A and S into O diagonal blocks divides their memory by about O.", "saves memory (O = 2)",
        "A, S (covariances, eigenvectors) bytes relative to O = 1: "
        + ", ".join(f"O={o}: {v['blocked_ratio']:.3f}" for o, v in sorted(split.items()) if "blocked_ratio" in v)
        + "; all stored factors incl. eigenvalues: "
        + ", ".join(f"O={o}: {v['total_ratio']:.3f}" for o, v in sorted(split.items()) if "total_ratio" in v),
        memory_checks,
        Evidence("A, S bytes relative to O = 1, times O (exact counts): "
                 + (", ".join(f"O={o}: {v['blocked_ratio'] * o:.3f}" for o, v in sorted(split.items())
                              if "blocked_ratio" in v) or "not measured"),
                 "the O = 1 factors' bytes", memory_intervals)))
    return findings
