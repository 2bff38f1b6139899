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
