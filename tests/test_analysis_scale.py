"""The v2 evidence of scale findings: the size trend against a brute-force bootstrap, the models left out, and
planted positive and negative controls: a family whose larger models rank meaning-related documents higher must be
judged *replicated*, a family without that trend (or one that only matches tokens, like BM25) must not."""

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses import abstraction, math_code, roleplay
from influence_study.analyses.common import scale_models, size_trend
from influence_study.analyses.relations import rank_documents
from influence_study.analyses.scale import BM25, scale_evidence, scale_numbers
from influence_study.findings import REPLICATED, verdict_v2

SIZES = {"xs": 1e4, "s": 1e5, "m": 1e6}


def brute_force_trend(values: pd.DataFrame, sizes: dict, resamples: int, seed: int) -> tuple[float, float, float]:
    """The same cluster bootstrap written as a plain loop over draws (the reference for :func:`size_trend`)."""
    queries = sorted(values["query_id"].unique())
    x = np.log10([sizes[m] for m in sizes])

    def slope(frame: pd.DataFrame) -> float:
        means = [frame.loc[frame["model"] == m, "value"].mean() for m in sizes]
        keep = np.isfinite(means)
        return float(np.polyfit(x[keep], np.asarray(means)[keep], 1)[0])

    draws = np.random.default_rng(seed).integers(0, len(queries), size=(resamples, len(queries)))
    slopes = []
    for row in draws:
        picked = pd.concat([values[values["query_id"] == queries[i]] for i in row])
        slopes.append(slope(picked))
    low, high = np.percentile(slopes, [2.5, 97.5])
    return slope(values), float(low), float(high)


def test_size_trend_matches_a_brute_force_bootstrap_with_missing_values():
    rng = np.random.default_rng(3)
    rows = [(m, f"q{q}", 0.2 * np.log10(size) + rng.normal(0, 0.3)) for m, size in SIZES.items() for q in range(12)]
    values = pd.DataFrame(rows, columns=["model", "query_id", "value"])
    values.loc[[1, 14, 30], "value"] = np.nan  # models miss different queries
    values = values.dropna()
    got = size_trend(values, SIZES, resamples=300, seed=5)
    expected = brute_force_trend(values, SIZES, resamples=300, seed=5)
    assert got["slope"] == pytest.approx(expected[0], abs=1e-12)
    assert (got["low"], got["high"]) == pytest.approx(expected[1:], abs=1e-12)
    assert got["queries"] == 12 and got["models"] == list(SIZES)


def test_size_trend_of_an_exact_line_has_a_zero_width_interval():
    values = pd.DataFrame([(m, f"q{q}", 1.0 + 0.5 * np.log10(size)) for m, size in SIZES.items() for q in range(5)],
                          columns=["model", "query_id", "value"])
    trend = size_trend(values, SIZES, resamples=50)
    assert trend["slope"] == pytest.approx(0.5) and trend["low"] == pytest.approx(0.5)
    assert np.isnan(size_trend(values[values["model"] == "s"], SIZES)["slope"])  # one model: no trend


def test_scale_models_leave_out_a_model_that_answers_nothing():
    learning = pd.DataFrame({"model": ["m", "xs", "s"], "parameters": [1e6, 1e4, 1e5],
                             "accuracy_facts": [0.4, 0.0, 0.1], "accuracy_math": [0.0, np.nan, 0.0]})
    assert scale_models(learning) == (["s", "m"], ["xs"])


def planted_world(n_queries: int = 30, meaning: int = 5, tokens: int = 5, unrelated: int = 30):
    """Queries each with ``meaning`` meaning-related, ``tokens`` token-only and ``unrelated`` other documents."""
    docs, relations = [], []
    for q in range(n_queries):
        for kind, n in (("same_fact", meaning), ("lexical_overlap", tokens), ("unrelated", unrelated)):
            for i in range(n):
                doc = f"d{q}-{kind}-{i}"
                docs.append((doc, kind))
                if kind != "unrelated":
                    relations.append((f"q{q}", doc, kind))
    return (pd.DataFrame(docs, columns=["doc_id", "kind"]),
            pd.DataFrame(relations, columns=["query_id", "doc_id", "relation"]))


def planted_scores(docs: pd.DataFrame, n_queries: int, meaning_weight: dict, seed: int = 0) -> dict:
    """Per model, scores of every (query, document): a query's own meaning documents get ``meaning_weight[model]``,
    its token documents ``1 - meaning_weight[model]``, plus unit noise (documents of other queries: noise only)."""
    rng = np.random.default_rng(seed)
    tables = {}
    for model, weight in meaning_weight.items():
        rows = []
        for q in range(n_queries):
            own = docs["doc_id"].str.startswith(f"d{q}-")
            signal = np.where(own & (docs["kind"] == "same_fact"), weight,
                              np.where(own & (docs["kind"] == "lexical_overlap"), 1 - weight, 0.0))
            rows.append(pd.DataFrame({"query_id": f"q{q}", "doc_id": docs["doc_id"],
                                      "score": 4 * signal + rng.normal(0, 1, len(docs))}))
        tables[model] = pd.concat(rows, ignore_index=True)
    return tables


def planted_abstraction(meaning_weight: dict, bm25_weight: float = 0.0) -> dict:
    n_queries = 30
    docs, relations = planted_world(n_queries)
    documents = docs.assign(family="facts", theme=None)
    queries = pd.DataFrame({"query_id": [f"q{q}" for q in range(n_queries)], "analysis": "facts"})
    eligible = abstraction.eligible_queries(relations, queries)
    scores = planted_scores(docs, n_queries, {**meaning_weight, BM25: bm25_weight})
    ranked = {m: rank_documents(t, eligible["query_id"], 10).assign(model=m) for m, t in scores.items()}
    family = abstraction.abstraction_table(pd.concat([ranked[m] for m in meaning_weight]), relations, eligible,
                                           documents)
    bm25 = abstraction.abstraction_table(ranked[BM25], relations, eligible, documents)
    learning = pd.DataFrame({"model": list(SIZES), "parameters": list(SIZES.values()), "accuracy_facts": 0.5})
    correct = pd.DataFrame({"model": np.repeat(list(SIZES), n_queries),
                            "query_id": [f"q{q}" for q in range(n_queries)] * len(SIZES), "correct": True})
    return scale_numbers(family, bm25, "abstraction_index", learning, correct, chance="chance_abstraction_index",
                         resamples=500)


def test_planted_abstraction_with_scale_is_replicated():
    numbers = planted_abstraction({"xs": 0.1, "s": 0.5, "m": 0.9})
    evidence = scale_evidence(numbers, "abstraction index")
    assert numbers["query_set"] == "correct" and numbers["chance"] == pytest.approx(0.5)
    assert verdict_v2(evidence.checks) == REPLICATED


@pytest.mark.parametrize("weights", [{"xs": 0.5, "s": 0.5, "m": 0.5}, {"xs": 0.9, "s": 0.5, "m": 0.1}])
def test_no_trend_or_a_falling_one_is_not_replicated(weights):
    numbers = planted_abstraction(weights)
    assert verdict_v2(scale_evidence(numbers, "abstraction index").checks) != REPLICATED


def test_a_large_model_that_only_matches_bm25_fails_the_baseline_check():
    # the trend is planted, but BM25 already ranks meaning documents as well as the largest model does
    numbers = planted_abstraction({"xs": 0.1, "s": 0.5, "m": 0.9}, bm25_weight=0.9)
    checks = scale_evidence(numbers, "abstraction index").checks
    assert checks[0].status == "supported" and checks[1].status != "supported"


def test_verdict_functions_use_the_scale_evidence():
    numbers = planted_abstraction({"xs": 0.1, "s": 0.5, "m": 0.9})
    empty = {"k": 10, "queries": 0, "models": {}}
    found = abstraction.verdicts({**empty, "scale": numbers})[0]
    assert found.verdict_v2 == REPLICATED and "BM25 ranking" in found.baseline
    assert roleplay.verdicts({**empty, "scale": numbers})[0].verdict_v2 == REPLICATED
    groups = {"k": 10, "queries": {math_code.MATH: 30}, "models": {}, "scale": {math_code.MATH: numbers}}
    assert math_code.verdicts(groups)[0].verdict_v2 == REPLICATED
