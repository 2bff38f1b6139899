"""The sparsity analysis against scipy's Pareto fit, a brute-force KS distance, and samples of known shape."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from influence_study.analyses.sparsity import _ks, fit_power_law, sparsity_table, top_share


def power_law_sample(alpha: float, x_min: float, n: int, seed: int) -> np.ndarray:
    return stats.pareto(alpha - 1.0, scale=x_min).rvs(size=n, random_state=seed)


def test_exponent_is_the_maximum_likelihood_pareto_fit():
    tail_plus_noise = np.concatenate([power_law_sample(3.0, 2.0, 300, seed=1), np.full(50, 0.5)])
    fit = fit_power_law(tail_plus_noise, tail_size=300, bootstrap=0)
    tail = np.sort(tail_plus_noise)[-300:]
    b, _, _ = stats.pareto.fit(tail, floc=0, fscale=tail.min())  # scipy's MLE with the scale fixed at x_min
    assert fit.x_min == tail.min() and fit.n == 300
    assert fit.alpha == pytest.approx(b + 1.0, rel=1e-6)


@pytest.mark.parametrize("alpha", [2.0, 3.5])
def test_exponent_is_recovered_from_a_power_law(alpha):
    sample = power_law_sample(alpha, 1.0, 4000, seed=2)
    fit = fit_power_law(sample, tail_size=4000, bootstrap=0)
    sigma = (alpha - 1.0) / np.sqrt(4000)  # the MLE's standard error
    assert abs(fit.alpha - alpha) < 4 * sigma


def test_ks_distance_matches_brute_force():
    sample = np.sort(power_law_sample(2.5, 1.5, 200, seed=3))
    alpha, x_min = 2.4, sample[0]
    cdf = 1.0 - (sample / x_min) ** (1.0 - alpha)
    n = len(sample)
    brute = max(max(abs(cdf[i] - (i + 1) / n), abs(cdf[i] - i / n)) for i in range(n))
    assert _ks(sample, alpha, x_min) == pytest.approx(brute, rel=1e-12)


def test_bootstrap_p_value_is_calibrated_and_rejects_an_exponential_tail():
    """Under a true power law the p-value is uniform: about 10% of samples are rejected at p <= 0.1. An
    tail that is bounded (uniform) is rejected nearly always. (An exponential tail of 200 points is rejected only
    about 60% of the time at this bootstrap size: the test's power, not its calibration.)"""
    power = [fit_power_law(power_law_sample(2.5, 1.0, 200, seed=s), 200, bootstrap=50, seed=s).rejected
             for s in range(40)]
    assert np.mean(power) <= 0.25  # 10% expected; P(more than 10 of 40 at 10%) < 1%
    bounded = [fit_power_law(stats.uniform(1.0, 1.0).rvs(size=200, random_state=100 + s), 200, bootstrap=50,
                             seed=s).rejected for s in range(10)]
    assert np.mean(bounded) >= 0.9


def test_top_share_by_hand():
    values = np.array([10.0, 5.0, -3.0, 2.0, 1.0] + [0.0] * 95)  # 100 values: the top 1% is the single 10
    assert top_share(values) == pytest.approx(10.0 / 18.0)
    assert top_share(values, fraction=0.03) == pytest.approx(17.0 / 18.0)
    assert np.isnan(top_share(-np.ones(10)))
    with pytest.raises(ValueError, match="fraction"):
        top_share(values, fraction=0)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="at least 10"):
        fit_power_law(np.arange(1, 100), tail_size=5)
    with pytest.raises(ValueError, match="non-positive"):
        fit_power_law(np.linspace(-1, 1, 50), tail_size=40)
    with pytest.raises(ValueError, match="fewer than tail_size"):
        fit_power_law(np.arange(1, 10), tail_size=20)


def test_sparsity_table_one_row_per_query():
    frame = pd.DataFrame({
        "query_id": ["a"] * 300 + ["b"] * 300,
        "score_norm": np.concatenate([power_law_sample(3.0, 0.1, 300, seed=6), np.linspace(-1, 0.2, 300)]),
    })
    table = sparsity_table(frame, tail_size=100, bootstrap=20)
    assert list(table["query_id"]) == ["a", "b"]
    assert np.isfinite(table.loc[0, "alpha"]) and np.isnan(table.loc[1, "alpha"])
    assert "non-positive" in table.loc[1, "note"]
    assert table.loc[1, "max_score"] == pytest.approx(0.2)
