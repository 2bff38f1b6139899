"""Interval records for the v2 checks of the findings: ``{mean, low, high, n}`` of a mean, a paired difference,
any statistic, a two-sample difference or an exact number, each with a 95% percentile bootstrap interval, and the
:class:`~influence_study.findings.IntervalCheck` of a record."""

from __future__ import annotations

from typing import Mapping

import numpy as np

from influence_study.findings import IntervalCheck
from influence_study.analyses.common import bootstrap_statistic, mean_ci

NAN_INTERVAL = {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}


def interval(values, seed: int = 0, resamples: int = 2000) -> dict:
    """``{mean, low, high, n}``: the mean of ``values`` (NaNs dropped) with its 95% percentile bootstrap interval
    (:func:`~influence_study.analyses.common.mean_ci`); ``n`` the number of finite values."""
    values = np.asarray(values, dtype=np.float64)
    mean, low, high = mean_ci(values, resamples=resamples, seed=seed)
    return {"mean": mean, "low": low, "high": high, "n": int(np.isfinite(values).sum())}


def paired_interval(a, b, seed: int = 0, resamples: int = 2000) -> dict:
    """:func:`interval` of the paired differences ``a - b`` (same units in the same order; pairs with a NaN
    dropped)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return interval(a - b, seed=seed, resamples=resamples)


def statistic_interval(values, statistic=np.median, seed: int = 0, resamples: int = 2000) -> dict:
    """``{mean, low, high, n}`` of any ``statistic`` (e.g. the median; stored under ``mean`` so that every interval
    reads alike) of the finite ``values``, with a 95% percentile bootstrap interval over them
    (:func:`~influence_study.analyses.common.bootstrap_statistic`); a zero-width interval with one value or
    identical values, NaNs without values."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return dict(NAN_INTERVAL)
    estimate, low, high = bootstrap_statistic(values, statistic, resamples=resamples, seed=seed)
    return {"mean": estimate, "low": low, "high": high, "n": int(values.size)}


def two_sample_interval(a, b, statistic=np.mean, seed: int = 0, resamples: int = 2000) -> dict:
    """``statistic(a) - statistic(b)`` of two independent samples (NaNs dropped), with a 95% percentile bootstrap
    interval that resamples each sample on its own (``n``: the size of the smaller); NaNs when either is empty."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0:
        return dict(NAN_INTERVAL)
    estimate = float(statistic(a) - statistic(b))
    rng = np.random.default_rng(seed)
    boot_a = np.apply_along_axis(statistic, 1, a[rng.integers(0, a.size, size=(resamples, a.size))])
    boot_b = np.apply_along_axis(statistic, 1, b[rng.integers(0, b.size, size=(resamples, b.size))])
    low, high = np.percentile(boot_a - boot_b, [2.5, 97.5])
    return {"mean": estimate, "low": float(low), "high": float(high), "n": int(min(a.size, b.size))}


def exact_interval(value) -> dict:
    """A zero-width interval: for numbers that are exact (counted bytes, not measured with noise)."""
    value = float(value) if value is not None else float("nan")
    return {"mean": value, "low": value, "high": value, "n": 1}


def interval_check(name: str, entry: Mapping | None, bound, side: str = "above"):
    """The :class:`~influence_study.findings.IntervalCheck` of an interval record ``{mean, low, high}`` (None or a
    missing record: not measured)."""
    entry = entry or NAN_INTERVAL
    return IntervalCheck(name, entry.get("mean", np.nan), entry.get("low", np.nan), entry.get("high", np.nan),
                         bound, side)


def describe_interval(entry: Mapping | None, fmt: str = "{:.3g}") -> str:
    """``"mean [low, high]"`` of an interval record, or ``"not measured"``."""
    if not entry or not np.isfinite(entry.get("mean", np.nan)):
        return "not measured"
    return f"{fmt.format(entry['mean'])} [{fmt.format(entry['low'])}, {fmt.format(entry['high'])}]"
