"""Interval records for the v2 checks of the findings: ``{mean, low, high, n}`` of a mean, a paired difference,
any statistic, a two-sample difference or an exact number, each with a 95% percentile bootstrap interval, and the
:class:`~influence_study.findings.IntervalCheck` of a record; also stratified bootstrap intervals of AUCs
(:func:`auc_intervals`) and of paired differences of Pearson correlations (:func:`pearson_contrast`)."""

from __future__ import annotations

from typing import Mapping, Sequence

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


# --- bootstrap AUCs and paired correlation contrasts (DataInf, memorisation and sign) ----------------------------


def _percentiles(draws: np.ndarray, estimate: float) -> dict:
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(estimate) or draws.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"mean": float(estimate), "low": float(low), "high": float(high)}


def bootstrap_aucs(labels, scores, resamples: int = 2000, seed: int = 0, chunk: int = 100) -> tuple:
    """AUCs of each row of ``scores`` (``[k, n]``, larger = more likely positive, ties count 1/2) against the boolean
    ``labels``, and their bootstrap draws (``[resamples, k]``): each draw resamples the positives and the negatives
    with replacement, separately (stratified, so every draw has both), the SAME examples for every row (paired).
    Returns ``(auc [k], draws [resamples, k])``; NaNs without both classes."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    k = scores.shape[0]
    pos, neg = scores[:, labels], scores[:, ~labels]
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return np.full(k, np.nan), np.full((resamples, k), np.nan)
    rng = np.random.default_rng(seed)
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    # per row: negatives sorted, and each positive's number of negatives below it (lo) and at or below it (hi)
    orders = [np.argsort(neg[i], kind="stable") for i in range(k)]
    lo = [np.searchsorted(neg[i][orders[i]], pos[i], side="left") for i in range(k)]
    hi = [np.searchsorted(neg[i][orders[i]], pos[i], side="right") for i in range(k)]

    def aucs(pos_counts: np.ndarray, neg_counts: np.ndarray) -> np.ndarray:
        out = np.empty((len(pos_counts), k))
        for i in range(k):
            cumulative = np.concatenate([np.zeros((len(neg_counts), 1)), np.cumsum(neg_counts[:, orders[i]], 1)], 1)
            below, upto = cumulative[:, lo[i]], cumulative[:, hi[i]]
            wins = (pos_counts * (below + 0.5 * (upto - below))).sum(1)
            out[:, i] = wins / (pos_counts.sum(1) * neg_counts.sum(1))
        return out

    point = aucs(np.ones((1, n_pos)), np.ones((1, n_neg)))[0]
    draws = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws.append(aucs(rng.multinomial(n_pos, np.full(n_pos, 1 / n_pos), size=size).astype(np.float64),
                          rng.multinomial(n_neg, np.full(n_neg, 1 / n_neg), size=size).astype(np.float64)))
    return point, np.concatenate(draws)


def auc_intervals(labels, scores: Mapping[str, np.ndarray], versus: Sequence[tuple[str, str]] = (),
                  resamples: int = 2000, seed: int = 0) -> dict:
    """``{name: {mean, low, high, n}}``: the AUC of each of ``scores`` (larger = positive) against ``labels`` with
    its stratified bootstrap interval over the examples, and for each ``(a, b)`` of ``versus`` the paired difference
    ``"a_minus_b"`` (the same resampled examples)."""
    names = list(scores)
    if not names:
        return {}
    point, draws = bootstrap_aucs(labels, np.stack([np.asarray(scores[n], np.float64) for n in names]), resamples,
                                  seed)
    n = int(len(np.asarray(labels)))
    out = {name: {**_percentiles(draws[:, i], point[i]), "n": n} for i, name in enumerate(names)}
    for a, b in versus:
        if a in names and b in names:
            i, j = names.index(a), names.index(b)
            out[f"{a}_minus_{b}"] = {**_percentiles(draws[:, i] - draws[:, j], point[i] - point[j]), "n": n}
    return out


def pearson_contrast(tasks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], resamples: int = 2000,
                     seed: int = 0) -> dict:
    """Mean over ``tasks`` of Pearson(x1, y1) − Pearson(x2, y2), each task's four vectors over the same examples,
    with a bootstrap interval that resamples each task's examples (the same draw for both correlations: paired).
    ``{mean, low, high, n}`` (``n``: examples of the smallest task); NaNs without tasks."""
    if not tasks:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)

    def weighted_pearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        total = w.sum(1)
        mx, my = (w @ x) / total, (w @ y) / total
        cov = (w @ (x * y)) / total - mx * my
        vx, vy = (w @ (x * x)) / total - mx ** 2, (w @ (y * y)) / total - my ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(vx * vy)

    estimate, draws = [], []
    for x1, y1, x2, y2 in tasks:
        x1, y1, x2, y2 = (np.asarray(v, np.float64) for v in (x1, y1, x2, y2))
        n = len(x1)
        ones = np.ones((1, n))
        estimate.append(float(weighted_pearson(ones, x1, y1)[0] - weighted_pearson(ones, x2, y2)[0]))
        w = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
        draws.append(weighted_pearson(w, x1, y1) - weighted_pearson(w, x2, y2))
    return {**_percentiles(np.mean(draws, axis=0), float(np.mean(estimate))),
            "n": int(min(len(t[0]) for t in tasks))}
