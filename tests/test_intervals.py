"""Interval records of the v2 checks, against plain loops over the same bootstrap draws."""

import numpy as np
import pytest

from influence_study.analyses.intervals import (describe_interval, exact_interval, interval_check,
                                                statistic_interval, two_sample_interval)


def test_statistic_interval_is_the_percentile_interval_of_the_resampled_statistic():
    values = np.random.default_rng(0).exponential(size=25)
    got = statistic_interval(values, np.median, seed=4, resamples=400)
    draws = np.random.default_rng(4).integers(0, 25, size=(400, 25))
    boot = [np.median(values[row]) for row in draws]
    assert got["mean"] == pytest.approx(np.median(values))
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(boot, [2.5, 97.5])))
    assert statistic_interval([np.nan, 2.0])["low"] == 2.0 and np.isnan(statistic_interval([])["mean"])


def test_two_sample_interval_resamples_each_sample_on_its_own():
    a, b = np.arange(10.0), np.arange(6.0) + 3
    got = two_sample_interval(a, b, seed=1, resamples=300)
    rng = np.random.default_rng(1)
    boot_a = a[rng.integers(0, 10, size=(300, 10))].mean(axis=1)
    boot_b = b[rng.integers(0, 6, size=(300, 6))].mean(axis=1)
    assert got["mean"] == pytest.approx(a.mean() - b.mean()) and got["n"] == 6
    assert (got["low"], got["high"]) == pytest.approx(tuple(np.percentile(boot_a - boot_b, [2.5, 97.5])))


def test_records_become_checks_and_text():
    assert interval_check("x", exact_interval(3.0), 2.0).status == "supported"
    assert interval_check("x", None, 2.0).status == "not measured"
    assert describe_interval(exact_interval(0.5), "{:.1f}") == "0.5 [0.5, 0.5]"
    assert describe_interval(None) == "not measured"
