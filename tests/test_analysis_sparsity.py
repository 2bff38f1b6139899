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


def _family(tmp_path, scale_by_model):
    """Pairwise tables of a family whose scores are exact power-law samples, times a per-model scale."""
    from influence_study.study.io import write_parquet

    learning = pd.DataFrame({"model": list(scale_by_model), "parameters": [10 ** (i + 3) for i in range(len(scale_by_model))]})
    write_parquet(learning, tmp_path / "learning.parquet")
    paths = []
    for i, (model, scale) in enumerate(scale_by_model.items()):
        rows = []
        for q in range(4):
            values = power_law_sample(3.0, 1.0, 300, seed=10 * i + q) * scale
            rows.append(pd.DataFrame({"query_id": f"q{q}", "doc_id": [f"d{j:03d}" for j in range(300)],
                                      "score_norm": values}))
        path = tmp_path / model / "ekfac" / "pairwise.parquet"
        write_parquet(pd.concat(rows, ignore_index=True), path, metadata={"model": model})
        paths.append(str(path))
    return paths, str(tmp_path / "learning.parquet")


def test_run_writes_per_query_fits_and_verdicts_per_model_in_size_order(tmp_path):
    import json

    from influence_study.stages.sparsity import run

    paths, learning = _family(tmp_path, {"large": 1e-3, "small": 1e-3})  # listed large first: order is by size
    config = {"seed": 0, "analyses": {"sparsity": {"tail_size": 100, "bootstrap": 20, "max_queries": 3}}}
    out = tmp_path / "out"
    run(config, paths, learning, table=str(out / "t.parquet"), curves=str(out / "c.parquet"),
        summary=str(out / "s.json"))
    per_query = pd.read_parquet(out / "t.parquet")
    assert per_query.groupby("model").size().to_dict() == {"large": 3, "small": 3}  # 3 of 4 queries sampled
    summary = json.loads((out / "s.json").read_text())
    assert list(summary["statistics"]["models"]) == ["large", "small"]  # parameters 1e3 < 1e4
    stats = summary["statistics"]["models"]["large"]
    # a power law with alpha = 3 is found (4 standard errors of the MLE on 100 points) and rarely rejected
    assert abs(stats["alpha_median"] - 3.0) < 4 * 2.0 / np.sqrt(100)
    # scaled by 1e-3 no document reaches 1 nat: that finding holds; the max is the table's own max
    findings = {f["claim"][:20]: f for f in summary["findings"]}
    above = next(f for f in summary["findings"] if "above 1" in f["claim"])
    assert above["verdict"] == "replicated"
    assert stats["max_score_norm"] == pytest.approx(per_query.loc[per_query.model == "large", "max_score"].max())
    assert len(findings) == 4 and all(len(f["checks"]) == 2 for f in summary["findings"])


def test_a_document_above_one_nat_fails_that_finding(tmp_path):
    import json

    from influence_study.stages.sparsity import run

    paths, learning = _family(tmp_path, {"small": 1e-3, "large": 10.0})
    config = {"seed": 0, "analyses": {"sparsity": {"tail_size": 50, "bootstrap": 0, "max_queries": None}}}
    run(config, paths, learning, table=str(tmp_path / "t.parquet"), curves=str(tmp_path / "c.parquet"),
        summary=str(tmp_path / "s.json"))
    above = next(f for f in json.loads((tmp_path / "s.json").read_text())["findings"] if "above 1" in f["claim"])
    assert above["verdict"] == "mixed"
    assert above["checks"] == {"small: no document above 1 nat": True, "large: no document above 1 nat": False}


def test_tail_length_combines_the_fraction_and_the_minimum():
    from influence_study.analyses.sparsity import tail_length

    assert tail_length(4800, 0.005, 20) == 24  # ceil(0.005 x 4800) = 24 > 20
    assert tail_length(4801, 0.005, 20) == 25  # ceil(24.005)
    assert tail_length(1000, 0.005, 20) == 20  # the minimum wins on a small corpus
    assert tail_length(15, 0.005, 20) == 15  # never more than the documents
    assert tail_length(4800, None, 100) == 100 and tail_length(50, None, 100) == 50  # a fixed tail
    with pytest.raises(ValueError, match="tail_fraction"):
        tail_length(100, 0.0, 20)


def test_distinct_documents_keep_the_smallest_id_of_each_text():
    from influence_study.analyses.sparsity import distinct_documents

    corpus = pd.DataFrame({"doc_id": ["d3", "d1", "d2", "d4", "d0"], "text": ["x", "x", "y", "x", "z"]})
    assert sorted(distinct_documents(corpus)) == ["d0", "d1", "d2"]
    # a held-out copy (d0 below) does not stand for the training copies of its text
    split = corpus.assign(text=["x", "x", "y", "x", "x"], split=["train"] * 4 + ["valid"])
    assert sorted(distinct_documents(split)) == ["d1", "d2"]


def test_copies_are_fitted_once():
    """A tail with 20 identical copies of the largest score: deduplicated, the fit is the fit of the distinct
    values (tail of max(20, ceil(0.1 x 300)) = 30 of the 300 distinct documents)."""
    distinct = power_law_sample(3.0, 1.0, 300, seed=7)
    values = np.concatenate([distinct, np.full(20, distinct.max())])
    frame = pd.DataFrame({"query_id": "q", "doc_id": pd.Categorical([f"d{i:03d}" for i in range(320)]),
                          "score_norm": values})
    keep = pd.Index([f"d{i:03d}" for i in range(300)])
    row = sparsity_table(frame, 20, bootstrap=0, tail_fraction=0.1, keep=keep).iloc[0]
    reference = fit_power_law(distinct, 30, bootstrap=0)
    assert row["n"] == 30 and row["documents"] == 300
    assert row["alpha"] == pytest.approx(reference.alpha) and row["x_min"] == reference.x_min
    # the top-1% share and the largest score count every copy: 4 of the 320 (ceil 3.2) are copies of the max
    assert row["top1pct_share"] == pytest.approx(4 * distinct.max() / values.sum())
    assert row["max_score"] == distinct.max()
    undeduplicated = sparsity_table(frame, 20, bootstrap=0, tail_fraction=0.1).iloc[0]
    assert undeduplicated["n"] == 32 and undeduplicated["alpha"] != pytest.approx(reference.alpha)


def test_run_dedupes_and_reports_per_family_with_intervals(tmp_path):
    import json

    from influence_study.stages.sparsity import run

    paths, learning = _family(tmp_path, {"small": 1e-3, "large": 2.0})
    corpus = pd.DataFrame({"doc_id": [f"d{j:03d}" for j in range(300)],
                           "text": [f"t{min(j, 290)}" for j in range(300)]})  # d290..d299 share one text
    queries = pd.DataFrame({"query_id": [f"q{q}" for q in range(4)], "analysis": ["facts", "facts", "math", "quotes"]})
    corpus.to_parquet(tmp_path / "corpus.parquet"), queries.to_parquet(tmp_path / "queries.parquet")
    config = {"seed": 0, "analyses": {"sparsity": {"tail_size": 20, "tail_fraction": 0.1, "dedupe": True,
                                                   "bootstrap": 0, "resamples": 200, "max_queries": None}}}
    run(config, paths, learning, table=str(tmp_path / "t.parquet"), curves=str(tmp_path / "c.parquet"),
        summary=str(tmp_path / "s.json"), documents=str(tmp_path / "corpus.parquet"),
        queries=str(tmp_path / "queries.parquet"))
    summary = json.loads((tmp_path / "s.json").read_text())
    stats = summary["statistics"]
    assert stats["documents_fitted"] == 291 and stats["tail_documents"] == 30  # ceil(0.1 x 291) = 30
    per_query = pd.read_parquet(tmp_path / "t.parquet")
    assert (per_query["n"] == 30).all() and (per_query["documents"] == 291).all()
    assert per_query.set_index("query_id")["analysis"].to_dict() == {"q0": "facts", "q1": "facts", "q2": "math",
                                                                     "q3": "quotes"}
    small = stats["models"]["small"]
    for key in ("alpha_median", "top1pct_share_median", "rejected_share", "share_queries_above_1_nat"):
        assert small[f"{key}_low"] <= small[key] <= small[f"{key}_high"], key
    assert small["alpha_median"] == pytest.approx(per_query.loc[per_query.model == "small", "alpha"].median())
    families = stats["families"]["large"]
    assert sorted(families) == ["facts", "math", "quotes"] and families["facts"]["queries"] == 2
    assert families["math"]["alpha_median"] == pytest.approx(
        per_query.loc[(per_query.model == "large") & (per_query.query_id == "q2"), "alpha"].iloc[0])
    assert stats["models"]["large"]["share_queries_above_1_nat"] == 1.0  # scaled by 2: the max is above 1
    curves = pd.read_parquet(tmp_path / "c.parquet")
    assert curves.groupby("model").size().to_dict() == {"small": 30, "large": 30}
    with pytest.raises(ValueError, match="dedupe"):
        run(config, paths, learning, table=str(tmp_path / "t2.parquet"), curves=str(tmp_path / "c2.parquet"),
            summary=str(tmp_path / "s2.json"))


def test_v2_sparsity_reads_intervals_against_the_paper_ranges():
    """Planted controls of the v2 rules: intervals inside the paper's ranges replicate, intervals outside them
    do not, and a model that answers nothing is left out."""
    from influence_study.analyses.sparsity import verdicts as sparsity_verdicts

    def model(alpha, share, rejected, above):
        return {"alpha_median": alpha, "alpha_median_low": alpha - 0.2, "alpha_median_high": alpha + 0.2,
                "top1pct_share_median": share, "top1pct_share_median_low": share - 0.02,
                "top1pct_share_median_high": share + 0.02, "rejected_share": rejected,
                "rejected_share_low": max(rejected - 0.1, 0), "rejected_share_high": rejected + 0.1,
                "share_queries_above_1_nat": above, "share_queries_above_1_nat_low": max(above - 0.01, 0),
                "share_queries_above_1_nat_high": above + 0.01, "max_score_norm": 0.5}

    paper_like = {"models": {"xs": model(9.0, 0.9, 0.9, 0.9), "l": model(3.0, 0.3, 0.1, 0.0)},
                  "scale_models": ["l"], "left_out": ["xs"], "tail_fraction": 0.005, "tail_size": 20}
    found = sparsity_verdicts(paper_like)
    assert [f.verdict_v2 for f in found] == ["replicated"] * 4
    assert "left out (answer no query): xs" in found[0].baseline
    far = {**paper_like, "scale_models": ["xs"]}
    assert [f.verdict_v2 for f in sparsity_verdicts(far)] == ["not replicated"] * 4
