"""Sparsity of influence (Grosse et al. 2023, section 5.2.1): does the top tail of a query's influence follow a
power law, and how much of the positive influence do the top 1% of training sequences hold?

The tail is fitted as a continuous power law p(x) ∝ x^-alpha for x >= x_min, with x_min the smallest value of
the tail (the paper fits the top 500 of 5M sequences). The maximum-likelihood exponent is
alpha = 1 + n / sum(ln(x / x_min)) (Clauset, Shalizi and Newman 2009, eq. 3.1), and the goodness of fit is their
semi-parametric bootstrap: the p-value is the share of synthetic power-law samples (same n and x_min, fitted the
same way) whose Kolmogorov-Smirnov distance to their own fit is at least the data's. p < 0.1 rejects the power law.

The tail is the top ``tail_fraction`` of each query's documents, with at least ``tail_size`` of them (a fit needs
points): max(tail_size, ceil(tail_fraction x n)) of n documents, capped at n (the realised size is reported). With
``dedupe``, documents of identical text (the quotes' copies, which have identical scores) count once in the fit and
its survival curve; the top-1% share and the largest score count every training sequence, as the paper's do.
Statistics are given per model over all fitted queries and per query family (the queries' ``analysis`` column),
medians and shares with bootstrap intervals over queries.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from influence_study.analyses.common import mean_ci, median_ci
from influence_study.findings import Evidence, IntervalCheck, finding
from influence_study.study.io import require_columns

REJECT_BELOW = 0.1  # Clauset et al.: the power law is ruled out when p <= 0.1


@dataclass
class PowerLawFit:
    """A continuous power-law fit of a tail: exponent, x_min, size, KS distance and bootstrap p-value."""

    alpha: float
    x_min: float
    n: int
    ks: float
    p_value: float

    @property
    def rejected(self) -> bool:
        return self.p_value <= REJECT_BELOW


def _mle(tail: np.ndarray, x_min: float) -> float:
    return 1.0 + len(tail) / np.log(tail / x_min).sum()


def _ks(tail: np.ndarray, alpha: float, x_min: float) -> float:
    """Kolmogorov-Smirnov distance between the tail and the power law's CDF 1 - (x / x_min)^(1 - alpha)."""
    return stats.kstest(tail, lambda x: 1.0 - (x / x_min) ** (1.0 - alpha)).statistic


def fit_power_law(values, tail_size: int, bootstrap: int = 200, seed: int = 0) -> PowerLawFit:
    """Fit a power law to the ``tail_size`` largest of ``values`` (all must be positive there).

    Raises ValueError when the tail has fewer than 10 values, a non-positive value, or no spread.
    """
    values = np.asarray(values, dtype=np.float64)
    if tail_size < 10:
        raise ValueError(f"tail_size: a power-law fit needs at least 10 values, got {tail_size}")
    if len(values) < tail_size:
        raise ValueError(f"values: {len(values)} values, fewer than tail_size = {tail_size}")
    tail = np.sort(values)[-tail_size:]
    x_min = float(tail[0])
    if x_min <= 0:
        raise ValueError(f"the top {tail_size} values include a non-positive one ({x_min}); a power law needs "
                         f"positive values: use a smaller tail")
    if tail[-1] == x_min:
        raise ValueError("the tail has no spread (all values equal)")
    alpha = _mle(tail, x_min)
    ks = _ks(tail, alpha, x_min)
    rng = np.random.default_rng(seed)
    exceed = 0
    for _ in range(bootstrap):
        synthetic = x_min * (1.0 - rng.random(tail_size)) ** (-1.0 / (alpha - 1.0))  # inverse-CDF sampling
        synthetic_min = synthetic.min()
        exceed += _ks(synthetic, _mle(synthetic, synthetic_min), synthetic_min) >= ks
    p_value = float(exceed / bootstrap) if bootstrap else float("nan")
    return PowerLawFit(float(alpha), x_min, int(tail_size), float(ks), p_value)


def top_share(values, fraction: float = 0.01) -> float:
    """Share of the total POSITIVE influence held by the top ``fraction`` of sequences (by score)."""
    values = np.asarray(values, dtype=np.float64)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected 0 < fraction <= 1, got {fraction}")
    positive = values[values > 0]
    if positive.size == 0:
        return float("nan")
    k = max(1, int(np.ceil(fraction * values.size)))
    top = np.sort(values)[-k:]
    return float(top[top > 0].sum() / positive.sum())


def tail_length(n_documents: int, tail_fraction: float | None, min_points: int) -> int:
    """Documents in the fitted tail: max(min_points, ceil(tail_fraction x n_documents)), at most n_documents;
    ``min(min_points, n_documents)`` when ``tail_fraction`` is None (a fixed tail)."""
    if tail_fraction is None:
        return int(min(min_points, n_documents))
    if not 0 < tail_fraction <= 1:
        raise ValueError(f"analyses.sparsity.tail_fraction: expected 0 < tail_fraction <= 1, got {tail_fraction}")
    return int(min(max(min_points, int(np.ceil(tail_fraction * n_documents))), n_documents))


def distinct_documents(documents: pd.DataFrame) -> pd.Index:
    """The ``doc_id`` of one training document per distinct ``text`` of a corpus table (the smallest ``doc_id`` of
    each group of identical texts; only rows of the ``train`` split when the table has a ``split`` column)."""
    require_columns(documents, ["doc_id", "text"], "corpus table")
    if "split" in documents:
        documents = documents[documents["split"] == "train"]
    ordered = documents.assign(doc_id=documents["doc_id"].astype(str)).sort_values("doc_id", kind="stable")
    return pd.Index(ordered.drop_duplicates("text")["doc_id"], name="doc_id")


def among(doc_ids: pd.Series, keep) -> np.ndarray:
    """Whether each of ``doc_ids`` (categorical or not) is in ``keep``, compared as strings."""
    keep = set(map(str, keep))
    if isinstance(doc_ids.dtype, pd.CategoricalDtype):
        inside = np.append(np.array([str(c) in keep for c in doc_ids.cat.categories], dtype=bool), False)
        return inside[doc_ids.cat.codes.to_numpy()]  # code -1 (missing) reads the final False
    return doc_ids.astype(str).isin(keep).to_numpy()


def sparsity_table(pairwise: pd.DataFrame, tail_size: int, bootstrap: int = 200, seed: int = 0,
                   tail_fraction: float | None = None, keep: pd.Index | None = None) -> pd.DataFrame:
    """One row per query of a pairwise table (``query_id, score`` columns; the normalised score works the same,
    the exponent is scale-free): share of positive influence in its top 1% and its largest normalised score (the
    paper: no single sequence above 1 nat), over every document; and the power-law fit of its top tail over the
    documents in ``keep`` (all when None; needs a ``doc_id`` column otherwise), of
    :func:`tail_length` (``tail_fraction``, at least ``tail_size``) documents: ``documents`` says how many
    documents the tail was taken from, ``n`` how many it holds."""
    rows = []
    score_column = "score_norm" if "score_norm" in pairwise else "score"
    fitted_rows = np.ones(len(pairwise), bool) if keep is None else among(pairwise["doc_id"], keep)
    for query_id, index in pairwise.groupby("query_id", observed=True, sort=False).indices.items():
        scores = pairwise[score_column].to_numpy()[index]
        pool = scores[fitted_rows[index]]
        size = tail_length(len(pool), tail_fraction, tail_size)
        row = {"query_id": query_id, "top1pct_share": top_share(scores), "max_score": float(scores.max()),
               "documents": int(len(pool))}
        try:
            fit = fit_power_law(pool, size, bootstrap, seed)
            row.update(asdict(fit), rejected=fit.rejected)
        except ValueError as error:
            row.update(alpha=np.nan, x_min=np.nan, n=size, ks=np.nan, p_value=np.nan, rejected=np.nan,
                       note=str(error))
        rows.append(row)
    return pd.DataFrame(rows)


def survival_curves(pairwise: pd.DataFrame, query_ids: Sequence[str], tail_size: int) -> pd.DataFrame:
    """The empirical survival function P(X >= x) of each chosen query's top ``tail_size`` normalised scores
    (columns ``query_id, score_norm, survival``), for the log-log plot."""
    rows = []
    column = "score_norm" if "score_norm" in pairwise else "score"
    chosen = pairwise[pairwise["query_id"].isin(list(query_ids))]
    for query_id, group in chosen.groupby("query_id", observed=True, sort=False):
        tail = np.sort(group[column].to_numpy())[-tail_size:][::-1]
        rows.append(pd.DataFrame({"query_id": query_id, "score_norm": tail,
                                  "survival": np.arange(1, len(tail) + 1) / len(tail)}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["query_id", "score_norm", "survival"])


def group_statistics(group: pd.DataFrame, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Statistics of the rows of a per-query sparsity table (one model, any set of queries): the median exponent
    with its quartiles, the share rejected, the median top-1% share, the largest score and the share of queries
    with a document above 1 nat; medians and shares with percentile bootstrap intervals over queries
    (``<key>_low``, ``<key>_high``), and the realised tail size (``tail_documents``, the median of ``n``)."""
    fitted = group.dropna(subset=["alpha"])
    alpha = fitted["alpha"].to_numpy()
    nan = float("nan")
    out = {
        "queries": int(len(group)), "fitted": int(len(fitted)),
        "alpha_median": float(np.median(alpha)) if alpha.size else nan,
        "alpha_q25": float(np.quantile(alpha, 0.25)) if alpha.size else nan,
        "alpha_q75": float(np.quantile(alpha, 0.75)) if alpha.size else nan,
        "rejected_share": float(fitted["rejected"].astype(float).mean()) if len(fitted) else nan,
        "top1pct_share_median": float(group["top1pct_share"].median()),
        "max_score_norm": float(group["max_score"].max()),
        "share_queries_above_1_nat": float((group["max_score"] > 1.0).mean()),
        "tail_documents": float(group["n"].median()) if "n" in group and len(group) else nan,
    }
    intervals = {
        "alpha_median": median_ci(alpha, level, resamples, seed),
        "rejected_share": mean_ci(fitted["rejected"].astype(float), level, resamples, seed),
        "top1pct_share_median": median_ci(group["top1pct_share"], level, resamples, seed),
        "share_queries_above_1_nat": mean_ci((group["max_score"] > 1.0).astype(float), level, resamples, seed),
    }
    for key, (_, low, high) in intervals.items():
        out[f"{key}_low"], out[f"{key}_high"] = low, high
    return out


def summarise(per_query: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> dict:
    """Statistics per model of a per-query sparsity table (columns of :func:`sparsity_table` plus ``model``):
    ``{model: group_statistics(...)}`` over all its queries."""
    return {model: group_statistics(group, resamples, seed)
            for model, group in per_query.groupby("model", sort=False)}


def summarise_families(per_query: pd.DataFrame, resamples: int = 2000, seed: int = 0) -> dict:
    """``{model: {family: group_statistics(...)}}`` per query family (the table's ``analysis`` column)."""
    if "analysis" not in per_query:
        return {}
    out = {}
    for model, group in per_query.groupby("model", sort=False):
        out[model] = {str(family): group_statistics(part, resamples, seed)
                      for family, part in group.dropna(subset=["analysis"]).groupby("analysis", sort=True)}
    return out


# The paper's numbers (section 5.2.1): 8 queries, top 500 of 5M sequences.
PAPER_ALPHA = (2.0, 4.3)
PAPER_REJECTED = 2 / 8
PAPER_TOP_SHARE = (0.12, 0.52)
# v2 bounds that are ours (the paper gives no number): "rejects it for few queries" = for fewer than half;
# "no sequence above 1 nat" = at most 5% of queries have one.
FEW_REJECTED = 0.5
ABOVE_1_NAT_AT_MOST = 0.05


def _evidence(statistics: Mapping, key: str, what: str, bound, side: str, fmt: str, baseline: str):
    """v2 evidence of one sparsity finding: ``key`` of each model that answers some query, with its interval
    over queries, against ``bound``."""
    models = statistics["models"]
    chosen = [m for m in statistics.get("scale_models", list(models)) if m in models]
    checks = [IntervalCheck(f"{m}: {what}", models[m][key], models[m].get(f"{key}_low", float("nan")),
                            models[m].get(f"{key}_high", float("nan")), bound, side) for m in chosen]
    text = "; ".join(f"{m} {fmt.format(models[m][key])} [{fmt.format(models[m].get(f'{key}_low', float('nan')))}, "
                     f"{fmt.format(models[m].get(f'{key}_high', float('nan')))}]" for m in chosen)
    left_out = statistics.get("left_out", [])
    tail = (f"tail: top {statistics.get('tail_fraction')} of each query's documents, at least "
            f"{statistics.get('tail_size')} ({statistics.get('tail_documents')} fitted), duplicates "
            f"{'collapsed' if statistics.get('dedupe') else 'kept'}")
    return Evidence(f"{what}: {text or 'no model'} ({tail})",
                    baseline + (f"; left out (answer no query): {', '.join(left_out)}" if left_out else ""), checks)


def verdicts(statistics: Mapping) -> list:
    """The paper's sparsity findings, each checked per model size."""
    models = statistics["models"]
    name = "Sparsity"
    fmt = lambda key, f: ", ".join(f"{m} {f(models[m][key])}" for m in models)  # noqa: E731
    return [
        finding(name, "The top tail of each query's influence follows a power law (KS test rejects it for few "
                      "queries).", "rejected for 2 of 8 queries",
                "rejected share: " + fmt("rejected_share", lambda v: f"{v:.0%}"),
                {f"{m}: rejected for at most {PAPER_REJECTED:.0%} of queries": v["rejected_share"] <= PAPER_REJECTED
                 for m, v in models.items()},
                _evidence(statistics, "rejected_share", f"share of tails rejected (bound {FEW_REJECTED:.0%}: ours)",
                          FEW_REJECTED, "below", "{:.0%}", "the paper: 2 of 8 queries rejected (p ≤ 0.1)")),
        finding(name, "Power-law exponents lie between about 2 and 4.3.", "α ≈ 2–4.3",
                "median α: " + fmt("alpha_median", lambda v: f"{v:.2f}"),
                {f"{m}: median α in [2, 4.3]": PAPER_ALPHA[0] <= v["alpha_median"] <= PAPER_ALPHA[1]
                 for m, v in models.items()},
                _evidence(statistics, "alpha_median", "median exponent α", PAPER_ALPHA, "within", "{:.2f}",
                          "the paper's range over 8 queries and 4 sizes")),
        finding(name, "The top 1% of training sequences hold a large share of the positive influence.", "12–52%",
                "median top-1% share: " + fmt("top1pct_share_median", lambda v: f"{v:.0%}"),
                {f"{m}: median share in [12%, 52%]": PAPER_TOP_SHARE[0] <= v["top1pct_share_median"] <= PAPER_TOP_SHARE[1]
                 for m, v in models.items()},
                _evidence(statistics, "top1pct_share_median", "median top-1% share of positive influence",
                          PAPER_TOP_SHARE, "within", "{:.0%}",
                          "an even spread gives 1%; the paper's range over its queries")),
        finding(name, "No single training sequence has an influence above 1 (nats per added copy).",
                "no sequence above 1",
                "queries with a document above 1 nat: " + fmt("share_queries_above_1_nat", lambda v: f"{v:.0%}")
                + "; largest: " + fmt("max_score_norm", lambda v: f"{v:.3g}"),
                {f"{m}: no document above 1 nat": v["share_queries_above_1_nat"] == 0 for m, v in models.items()},
                _evidence(statistics, "share_queries_above_1_nat",
                          f"share of queries with a document above 1 nat per copy (bound {ABOVE_1_NAT_AT_MOST:.0%}: "
                          "ours)", ABOVE_1_NAT_AT_MOST, "below", "{:.1%}",
                          "a linear extrapolation: the calibration analysis compares it with added-copy retrains "
                          "and counts the predictions above the query's own NLL")),
    ]
