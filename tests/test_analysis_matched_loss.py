"""The comparison at matched held-out loss (analyses.matched_loss): the paired differences against a direct
computation, the query-set rule, and planted controls: a matched checkpoint that ranks meaning-related documents
higher than the reference must be judged *replicated*; one that ranks them like the reference must not, even when
the final checkpoint (the fixed-epoch comparison) does."""

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses import abstraction
from influence_study.analyses.matched_loss import (final_valid_loss, matched_finding, matched_name, matched_numbers,
                                                   trajectory_difference)
from influence_study.analyses.relations import rank_documents
from influence_study.findings import NOT_MEASURED, REPLICATED, SUPPORTED
from test_analysis_scale import planted_scores, planted_world

N_QUERIES = 30
CHECKPOINT = {"measured": True, "reference": "s", "model": "l", "matched": "l@matched-loss", "target_loss": 3.2,
              "final_loss": 2.9, "valid_loss": 3.18, "step": 300, "steps": 520, "reached": True}


def planted_table(weights: dict) -> pd.DataFrame:
    """Per-query abstraction rows of the models in ``weights`` (meaning weight per model, see planted_scores)."""
    docs, relations = planted_world(N_QUERIES)
    documents = docs.assign(family="facts", theme=None)
    queries = pd.DataFrame({"query_id": [f"q{q}" for q in range(N_QUERIES)], "analysis": "facts"})
    eligible = abstraction.eligible_queries(relations, queries)
    scores = planted_scores(docs, N_QUERIES, weights)
    ranked = pd.concat([rank_documents(t, eligible["query_id"], 10).assign(model=m) for m, t in scores.items()])
    return abstraction.abstraction_table(ranked, relations, eligible, documents)


def all_correct(models, n=N_QUERIES) -> pd.DataFrame:
    return pd.DataFrame({"model": np.repeat(models, n), "query_id": [f"q{q}" for q in range(n)] * len(models),
                         "correct": True})


def numbers_for(reference: float, matched: float, final: float, correct: pd.DataFrame | None = None) -> dict:
    table = planted_table({"s": reference, matched_name("l"): matched, "l": final})
    correct = all_correct(["s", matched_name("l"), "l"]) if correct is None else correct
    return matched_numbers(table, "abstraction_index", "s", "l", correct, chance="chance_abstraction_index",
                           resamples=500)


def test_the_differences_are_paired_over_queries():
    table = planted_table({"s": 0.3, matched_name("l"): 0.6, "l": 0.8})
    numbers = matched_numbers(table, "abstraction_index", "s", "l", all_correct(["s", matched_name("l"), "l"]),
                              resamples=300)
    wide = table.pivot(index="query_id", columns="model", values="abstraction_index")
    for key, (first, second) in {"matched_minus_reference": (matched_name("l"), "s"),
                                 "final_minus_reference": ("l", "s"),
                                 "final_minus_matched": ("l", matched_name("l"))}.items():
        difference = (wide[first] - wide[second]).dropna()
        node = numbers["correct"][key]
        assert node["mean"] == pytest.approx(difference.mean(), abs=1e-12)
        assert node["queries"] == len(difference) and node["low"] <= node["mean"] <= node["high"]
    assert numbers["query_set"] == "correct" and numbers["correct_queries"] == N_QUERIES
    assert numbers["correct"]["means"]["s"] == pytest.approx(wide["s"].mean())


def test_queries_both_answer_correctly_are_used_when_there_are_enough():
    few = all_correct(["s", matched_name("l")], n=3)  # 3 < MIN_CORRECT_QUERIES: every query instead
    assert numbers_for(0.3, 0.6, 0.8, few)["query_set"] == "all"
    some = pd.concat([all_correct(["s"], n=12), all_correct([matched_name("l")], n=8)])  # both: q0..q7
    numbers = numbers_for(0.3, 0.6, 0.8, some)
    assert numbers["query_set"] == "correct" and numbers["correct_queries"] == 8
    assert numbers["correct"]["matched_minus_reference"]["queries"] == 8
    assert numbers["all"]["matched_minus_reference"]["queries"] == N_QUERIES


def test_planted_abstraction_at_matched_loss_is_replicated():
    found = matched_finding(numbers_for(0.2, 0.8, 0.9), CHECKPOINT, "abstraction index", "Abstraction")
    assert found.verdict_v2 == REPLICATED and found.verdict == REPLICATED
    assert "stopped at step 300 of 520" in found.statistic and "fixed-epoch" in found.baseline


def test_a_rise_that_only_the_longer_training_gives_is_not_replicated():
    numbers = numbers_for(0.3, 0.3, 0.9)  # the final checkpoint abstracts more, the matched one does not
    found = matched_finding(numbers, CHECKPOINT, "abstraction index", "Abstraction")
    assert found.verdict_v2 != REPLICATED
    chosen = numbers[numbers["query_set"]]
    assert chosen["final_minus_reference"]["low"] > 0 and chosen["final_minus_matched"]["low"] > 0
    assert found.interval_checks[0]["status"] != SUPPORTED


def test_a_comparison_that_could_not_be_made_is_not_measured():
    found = matched_finding(None, {"measured": False, "reason": "fewer than two models"}, "abstraction index",
                            "Abstraction")
    assert found.verdict_v2 == NOT_MEASURED and "fewer than two models" in found.measured


def test_losses_and_trajectories():
    history = pd.DataFrame({"step": [10, 20, 30], "valid_loss": [4.0, 3.5, np.nan]})
    assert final_valid_loss(history, "h") == 3.5
    with pytest.raises(ValueError, match="no finite validation loss"):
        final_valid_loss(history.assign(valid_loss=np.nan), "h")
    retrained = pd.DataFrame({"step": [10, 20], "valid_loss": [4.0, 3.25]})
    assert trajectory_difference(history, retrained) == pytest.approx(0.25)
    assert np.isnan(trajectory_difference(history, retrained.assign(step=[5, 15])))
