"""What every analysis shares: the model family ordered by size, each query's top documents, correlations, confidence
intervals and trends with model size.

An analysis module ``influence_study.analyses.<name>`` holds pure functions from tables to statistics and a
``verdicts(statistics) -> list[Finding]`` whose checks are fixed in code; the stage module
``influence_study.stages.<name>`` reads the rule's files and the config, calls them and writes the outputs
(:func:`influence_study.stages.tables.write_analysis`).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import pandas as pd
from scipy import stats

from influence_study.study.io import require_columns


def model_sizes(learning: pd.DataFrame) -> pd.Series:
    """Parameter count per model (index: model name), smallest first, from the learning table
    (``tables/learning.parquet``)."""
    require_columns(learning, ["model", "parameters"], "learning table")
    return learning.set_index("model")["parameters"].sort_values(kind="stable")


def top_k(pairwise: pd.DataFrame, k: int, score: str = "score") -> pd.DataFrame:
    """Each query's ``k`` highest-scoring rows (ties broken by ``doc_id``), with a 1-based ``rank`` column."""
    ordered = pairwise.sort_values(["query_id", score, "doc_id"], ascending=[True, False, True], kind="stable")
    top = ordered.groupby("query_id", sort=False, observed=True).head(k).copy()
    top["rank"] = top.groupby("query_id", sort=False, observed=True).cumcount() + 1
    return top.reset_index(drop=True)


def row_pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (``[n, m]``), over the entries finite in
    both; NaN for a row with fewer than two such entries or without variance in either."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    valid = np.isfinite(a) & np.isfinite(b)
    count = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a_mean = np.where(valid, a, 0.0).sum(axis=1) / count
        b_mean = np.where(valid, b, 0.0).sum(axis=1) / count
        a_centred = np.where(valid, a - a_mean[:, None], 0.0)
        b_centred = np.where(valid, b - b_mean[:, None], 0.0)
        covariance = (a_centred * b_centred).sum(axis=1)
        scale = np.sqrt((a_centred ** 2).sum(axis=1) * (b_centred ** 2).sum(axis=1))
        r = np.where((count >= 2) & (scale > 0), covariance / scale, np.nan)
    return np.clip(r, -1.0, 1.0)


def mean_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (NaNs dropped) with a percentile bootstrap confidence interval (scipy.stats.bootstrap);
    (nan, nan, nan) without values, and a zero-width interval with one value."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    if values.size == 1 or np.all(values == values[0]):
        return mean, mean, mean
    result = stats.bootstrap((values,), np.mean, confidence_level=level, n_resamples=resamples,
                             method="percentile", random_state=np.random.default_rng(seed))
    return mean, float(result.confidence_interval.low), float(result.confidence_interval.high)


def bootstrap_statistic(values: np.ndarray, statistic: Callable = np.median, level: float = 0.95,
                        resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """``statistic`` of ``values`` (already cleaned of missing values) with a percentile bootstrap interval
    (``resamples`` draws of the values with replacement; ``statistic`` must take ``axis``, like ``np.median``);
    (nan, nan, nan) without values, and a zero-width interval with one value or identical values."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    estimate = float(statistic(values))
    if values.size == 1 or np.all(values == values[0]):
        return estimate, estimate, estimate
    draws = values[np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))]
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(statistic(draws, axis=1), [tail, 100 - tail])
    return estimate, float(low), float(high)


def median_ci(values, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median of ``values`` (NaNs dropped) with a percentile bootstrap interval (:func:`bootstrap_statistic`),
    widened if needed to contain the median."""
    values = np.asarray(values, dtype=np.float64)
    median, low, high = bootstrap_statistic(values[~np.isnan(values)], np.median, level, resamples, seed)
    return median, min(low, median), max(high, median)


def scale_models(learning: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The models that take part in scale comparisons and those left out, each smallest first.

    A model is left out (and reported separately) when it answers no query of any family correctly: every
    ``accuracy_<family>`` column of the learning table is 0 or missing. Such a model learned nothing the scale
    trends could compare, so a trend through it would measure training failure, not size (a rule fixed before the
    v2 numbers were seen).
    """
    require_columns(learning, ["model", "parameters"], "learning table")
    table = learning.sort_values("parameters", kind="stable")
    accuracy = table[[c for c in table.columns if c.startswith("accuracy_")]].astype(float)
    answers = (accuracy.fillna(0.0) > 0).any(axis=1).to_numpy() if accuracy.shape[1] else np.ones(len(table), bool)
    models = table["model"].astype(str).to_numpy()
    return list(models[answers]), list(models[~answers])


def size_trend(values: pd.DataFrame, sizes: Mapping[str, float], column: str = "value", level: float = 0.95,
               resamples: int = 2000, seed: int = 0) -> dict:
    """Slope of the per-model mean of ``column`` on log10(parameters), with a bootstrap interval over queries.

    ``values``: long table ``model, query_id, <column>`` (NaN values are ignored); ``sizes``: parameters per model
    (models absent from ``sizes`` are ignored). The bootstrap resamples query ids with replacement, the same draw
    for every model (a paired design when models share queries; a model keeps the drawn ids it has), recomputes each
    model's mean and refits the least-squares slope; the interval is the percentile interval of the slopes.
    Returns ``slope, low, high`` (per decade of parameters), ``models`` (those with a value), ``queries`` (distinct
    query ids), ``means`` (model -> mean); NaNs where fewer than two models have values.
    """
    frame = values[values["model"].isin(list(sizes))].dropna(subset=[column])
    models = [m for m in sizes if m in set(frame["model"])]
    empty = {"slope": float("nan"), "low": float("nan"), "high": float("nan"), "models": models,
             "queries": int(frame["query_id"].nunique()), "means": {}}
    if frame.empty:
        return empty
    matrix = frame.pivot_table(index="query_id", columns="model", values=column, aggfunc="mean", observed=True)
    matrix = matrix.reindex(columns=models)
    present = matrix.notna().to_numpy(dtype=np.float64)
    filled = np.nan_to_num(matrix.to_numpy(dtype=np.float64))
    means = filled.sum(axis=0) / present.sum(axis=0)
    empty["means"] = {m: float(v) for m, v in zip(models, means)}
    if len(models) < 2:
        return empty
    x = np.log10(np.array([float(sizes[m]) for m in models]))

    def slopes(mean_rows: np.ndarray) -> np.ndarray:
        """Least-squares slope of each row of ``mean_rows`` ([draws, models], NaN = model without a drawn value)."""
        valid = np.isfinite(mean_rows)
        n = valid.sum(axis=1)
        xs = np.where(valid, x, 0.0)
        x_mean = xs.sum(axis=1) / n
        y_mean = np.where(valid, mean_rows, 0.0).sum(axis=1) / n
        dx = np.where(valid, x - x_mean[:, None], 0.0)
        dy = np.where(valid, mean_rows - y_mean[:, None], 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (dx * dy).sum(axis=1) / (dx ** 2).sum(axis=1)
        return np.where(n >= 2, out, np.nan)

    slope = float(slopes(means[None, :])[0])
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(matrix), size=(resamples, len(matrix)))
    counts = np.zeros((resamples, len(matrix)))
    np.add.at(counts, (np.arange(resamples)[:, None], draws), 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        boot = (counts @ filled) / (counts @ present)
    boot_slopes = slopes(boot)
    boot_slopes = boot_slopes[np.isfinite(boot_slopes)]
    if boot_slopes.size == 0:
        return {**empty, "slope": slope}
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(boot_slopes, [tail, 100 - tail])
    return {**empty, "slope": slope, "low": float(low), "high": float(high)}
