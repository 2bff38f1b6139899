"""Sparsity of influence (Grosse et al. 2023, section 5.2.1): does the top tail of a query's influence follow a
power law, and how much of the positive influence do the top 1% of training sequences hold?

The tail is fitted as a continuous power law p(x) ∝ x^-alpha for x >= x_min, with x_min the smallest value of
the tail (the paper fits the top 500 of 5M sequences). The maximum-likelihood exponent is
alpha = 1 + n / sum(ln(x / x_min)) (Clauset, Shalizi and Newman 2009, eq. 3.1), and the goodness of fit is their
semi-parametric bootstrap: the p-value is the share of synthetic power-law samples (same n and x_min, fitted the
same way) whose Kolmogorov-Smirnov distance to their own fit is at least the data's. p < 0.1 rejects the power law.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

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


def sparsity_table(pairwise: pd.DataFrame, tail_size: int, bootstrap: int = 200, seed: int = 0) -> pd.DataFrame:
    """One row per query of a pairwise table (``query_id, score`` columns; the normalised score works the same,
    the exponent is scale-free): power-law fit of its top ``tail_size``, share of positive influence in its top
    1%, and its largest normalised score (the paper: no single sequence above 1 nat)."""
    rows = []
    score_column = "score_norm" if "score_norm" in pairwise else "score"
    for query_id, group in pairwise.groupby("query_id", observed=True, sort=False):
        scores = group[score_column].to_numpy()
        row = {"query_id": query_id, "top1pct_share": top_share(scores), "max_score": float(scores.max())}
        try:
            fit = fit_power_law(scores, tail_size, bootstrap, seed)
            row.update(asdict(fit), rejected=fit.rejected)
        except ValueError as error:
            row.update(alpha=np.nan, x_min=np.nan, n=tail_size, ks=np.nan, p_value=np.nan, rejected=np.nan,
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


def summarise(per_query: pd.DataFrame) -> dict:
    """Statistics per model of a per-query sparsity table (columns of :func:`sparsity_table` plus ``model``)."""
    out = {}
    for model, group in per_query.groupby("model", sort=False):
        fitted = group.dropna(subset=["alpha"])
        alpha = fitted["alpha"].to_numpy()
        out[model] = {
            "queries": int(len(group)), "fitted": int(len(fitted)),
            "alpha_median": float(np.median(alpha)) if alpha.size else float("nan"),
            "alpha_q25": float(np.quantile(alpha, 0.25)) if alpha.size else float("nan"),
            "alpha_q75": float(np.quantile(alpha, 0.75)) if alpha.size else float("nan"),
            "rejected_share": float(fitted["rejected"].astype(float).mean()) if len(fitted) else float("nan"),
            "top1pct_share_median": float(group["top1pct_share"].median()),
            "max_score_norm": float(group["max_score"].max()),
            "share_queries_above_1_nat": float((group["max_score"] > 1.0).mean()),
        }
    return out


# The paper's numbers (section 5.2.1): 8 queries, top 500 of 5M sequences.
PAPER_ALPHA = (2.0, 4.3)
PAPER_REJECTED = 2 / 8
PAPER_TOP_SHARE = (0.12, 0.52)


def verdicts(statistics: Mapping) -> list:
    """The paper's sparsity findings, each checked per model size."""
    from ..findings import finding

    models = statistics["models"]
    name = "Sparsity"
    fmt = lambda key, f: ", ".join(f"{m} {f(models[m][key])}" for m in models)  # noqa: E731
    return [
        finding(name, "The top tail of each query's influence follows a power law (KS test rejects it for few "
                      "queries).", "rejected for 2 of 8 queries",
                "rejected share: " + fmt("rejected_share", lambda v: f"{v:.0%}"),
                {f"{m}: rejected for at most {PAPER_REJECTED:.0%} of queries": v["rejected_share"] <= PAPER_REJECTED
                 for m, v in models.items()}),
        finding(name, "Power-law exponents lie between about 2 and 4.3.", "α ≈ 2–4.3",
                "median α: " + fmt("alpha_median", lambda v: f"{v:.2f}"),
                {f"{m}: median α in [2, 4.3]": PAPER_ALPHA[0] <= v["alpha_median"] <= PAPER_ALPHA[1]
                 for m, v in models.items()}),
        finding(name, "The top 1% of training sequences hold a large share of the positive influence.", "12–52%",
                "median top-1% share: " + fmt("top1pct_share_median", lambda v: f"{v:.0%}"),
                {f"{m}: median share in [12%, 52%]": PAPER_TOP_SHARE[0] <= v["top1pct_share_median"] <= PAPER_TOP_SHARE[1]
                 for m, v in models.items()}),
        finding(name, "No single training sequence has an influence above 1 (nats per added copy).",
                "no sequence above 1",
                "queries with a document above 1 nat: " + fmt("share_queries_above_1_nat", lambda v: f"{v:.0%}")
                + "; largest: " + fmt("max_score_norm", lambda v: f"{v:.3g}"),
                {f"{m}: no document above 1 nat": v["share_queries_above_1_nat"] == 0 for m, v in models.items()}),
    ]


def run(config: Mapping, pairwise: Sequence[str], learning: str, table: str, curves: str, summary: str) -> None:
    """Step of ``analysis_sparsity``: per-query power-law fits and top-1% shares of every model (the
    ``analyses.sparsity`` section sets the tail size, the bootstrap draws and how many queries are fitted)."""
    from tqdm.auto import tqdm

    from .common import load_family_tables, write_analysis

    section = config["analyses"]["sparsity"]
    tables = load_family_tables(pairwise, learning, columns=["query_id", "doc_id", "score_norm"])
    query_ids = np.array(sorted(next(iter(tables.values()))["query_id"].unique()))
    if section["max_queries"] is not None and section["max_queries"] < len(query_ids):
        rng = np.random.default_rng(config["seed"])
        query_ids = np.sort(rng.choice(query_ids, size=section["max_queries"], replace=False))
    tail = section["tail_size"]
    per_query, survival = [], []
    for model, frame in tqdm(tables.items(), desc="sparsity", unit="model"):
        frame = frame[frame["query_id"].isin(query_ids)]
        n_docs = frame.groupby("query_id", observed=True).size().min()
        fits = sparsity_table(frame, min(tail, int(n_docs)), section["bootstrap"], config["seed"])
        fits.insert(0, "model", model)
        per_query.append(fits)
        typical = fits.dropna(subset=["alpha"]).sort_values("alpha")
        shown = typical["query_id"].iloc[[len(typical) // 2]] if len(typical) else []
        curve = survival_curves(frame, shown, min(tail, int(n_docs)))
        curve.insert(0, "model", model)
        survival.append(curve)
    per_query = pd.concat(per_query, ignore_index=True)
    statistics = {"tail_size": tail, "bootstrap": section["bootstrap"], "queries": int(len(query_ids)),
                  "models": summarise(per_query)}
    write_analysis(config, "sparsity", {"table": (per_query, table),
                                        "curves": (pd.concat(survival, ignore_index=True), curves)},
                   statistics, verdicts, summary, inputs=[*pairwise, learning])
