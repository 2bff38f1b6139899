"""The word-order analysis: each probe's score against pairwise_scores on a one-query, one-document loader computed
separately, the probes' tokenisation against the training documents', the group statistics and ratios on
hand-made numbers, and the verdicts on hand-made statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
from influence_study.analyses.word_order import (FACT_CONTRASTS, FACT_GROUPS, TRANSLATION_CONTRASTS, _similar,
                                                 group_statistics, probes_in_training, summarise, verdicts)
from influence_study.stages.word_order import probe_scores, score_model
from influence_study.stages.influence_inputs import StudyInputs, document_batches, make_batches

transformers = pytest.importorskip("transformers")
from tiny_models import random_sequences, seeded_tiny_gpt2  # noqa: E402
TASK = LanguageModelingTask()


@pytest.fixture(scope="module")
def tiny(one_thread):
    model, gen = seeded_tiny_gpt2()  # n_inner 12: c_fc's gradient is [12, 8+1], c_proj's [8, 12+1]

    def sequences(lengths):
        return random_sequences(lengths, gen)

    train = sequences(torch.randint(3, 9, (8,), generator=gen))
    factors = fit_factors(model, TASK, document_batches(train, 0, 4).batches, strategy="ekfac",
                          dtype=torch.float64, progress=False)
    return model, factors, sequences


def test_probe_scores_match_one_pair_at_a_time(tiny):
    model, factors, sequences = tiny
    queries, starts = sequences([5, 7, 4, 6]), [2, 3, 1, 2]
    probes = sequences([3, 8, 5, 6, 4, 7, 2])
    probe_query = [3, 0, 0, 2, 3, 0, 2]  # query 1 has no probe: it is left out of the query batches
    used = sorted(set(probe_query))
    batches = make_batches(queries, starts, 0, 2, subset=used)
    scores = probe_scores(model, factors, batches, probes, probe_query, pad_id=0, batch_size=3)
    expected = []
    for probe, q in zip(probes, probe_query):
        one_query = make_batches([queries[q]], [starts[q]], 0, 1).batches
        one_probe = document_batches([probe], 0, 1).batches
        expected.append(pairwise_scores(model, TASK, factors, one_query, one_probe, dtype=torch.float64,
                                        progress=False).scores[0, 0].item())
    # the one-pair loaders have no padding and another batch composition: float32 round-off only
    assert scores == pytest.approx(expected, rel=1e-4, abs=1e-6 * max(map(abs, expected)))
    assert len(set(np.round(scores, 6))) == len(scores)  # distinct values: a permutation would be caught
    with pytest.raises(ValueError, match="not in query_batches"):
        probe_scores(model, factors, batches, probes[:1], [1], pad_id=0, batch_size=3)


def test_probes_are_tokenised_as_training_documents():
    from influence_study.corpus.tokenizer import train_tokenizer

    texts = ["the red fox jumps over the dog", "a dog sleeps", "the fox was first"] * 3
    tokenizer = train_tokenizer(texts, vocab_size=300, min_frequency=1, progress=False)
    inputs = StudyInputs(model=None, tokenizer=tokenizer, documents=pd.DataFrame(), queries=pd.DataFrame(),
                         document_sequences=[], query_sequences=[], query_starts=[], max_length=4)
    encoded = inputs.encode_documents(["the red fox jumps over the dog", "a dog"])
    for text, ids in zip(["the red fox jumps over the dog", "a dog"], encoded):
        expected = [tokenizer.eos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]][:4]
        assert ids == expected
    assert len(encoded[0]) == 4  # truncated to the model's context


def test_empty_probe_table_gives_an_empty_score_table(tmp_path):
    probes = tmp_path / "probes.parquet"
    pd.DataFrame({"query_id": pd.Series(dtype=str)}).to_parquet(probes)
    out = tmp_path / "scores.parquet"
    score_model({"seed": 0}, "m", "no-model", "no-factors", "no-docs", "no-queries", str(probes), str(out))
    frame = pd.read_parquet(out)
    assert frame.empty and {"probe_id", "group", "score_norm"} <= set(frame.columns)


def hand_scores() -> pd.DataFrame:
    rows = []
    values = {"reworded_name_after": [2.0, 4.0], "name_removed": [0.1, -0.1], "semantic_change": [1.0, 2.0],
              "irrelevant": [0.0, 0.2], "flipped": [0.5, 0.3], "flipped_relation_removed": [0.4, 0.6, 0.5],
              "same_order": [3.0, 5.0], "flipped_order": [0.5, 0.3]}
    for model, scale in (("small", 1.0), ("large", 10.0)):
        for group, numbers in values.items():
            probe_set = "translation" if "order" in group else "fact"
            for i, v in enumerate(numbers):
                rows.append({"model": model, "probe_id": f"{group}-{i}", "query_id": "q", "probe_set": probe_set,
                             "group": group, "score_norm": v * scale})
    return pd.DataFrame(rows)


def test_group_statistics_by_hand():
    stats = group_statistics(hand_scores(), ["small", "large"], resamples=200).set_index(["model", "group"])
    assert list(stats.index.get_level_values(0)[:2]) == ["small", "small"]
    row = stats.loc[("large", "flipped_relation_removed")]
    assert row["n"] == 3 and row["mean"] == pytest.approx(5.0) and row["ratio"] == pytest.approx(5.0 / 30.0)
    assert row["ci_low"] <= row["mean"] <= row["ci_high"] and row["ci_low"] >= 4.0 and row["ci_high"] <= 6.0
    assert stats.loc[("small", "flipped_order"), "ratio"] == pytest.approx(0.4 / 4.0)
    assert stats.loc[("small", "reworded_name_after"), "ratio"] == 1.0
    partial = group_statistics(hand_scores().query("group != 'irrelevant'"), ["small"], resamples=200)
    missing = partial.set_index("group").loc["irrelevant"]
    assert missing["n"] == 0 and np.isnan(missing["mean"])


def test_verdicts_on_hand_made_statistics():
    stats = group_statistics(hand_scores(), ["small", "large"], resamples=200)
    statistics = {"models": summarise(stats, {"small": 10, "large": 100})}
    found = verdicts(statistics)
    assert len(found) == 7 and all(f.verdict == "replicated" for f in found), [(f.claim, f.checks) for f in found]
    # the small model's flipped probes as influential as the rewordings: only that check fails
    scores = hand_scores()
    scores.loc[(scores["model"] == "small") & (scores["group"] == "flipped"), "score_norm"] = 3.0
    stats = group_statistics(scores, ["small", "large"], resamples=200)
    results = verdicts({"models": summarise(stats, {"small": 10, "large": 100})})
    flipped = next(f for f in results if f.claim.startswith("Flipping"))
    assert flipped.verdict == "mixed" and flipped.checks == {"small: flipped ≤ 0.33 × reworded": False,
                                                             "large: flipped ≤ 0.33 × reworded": True}
    # no probes at all: nothing measured
    empty = group_statistics(scores.iloc[:0], [], resamples=200)
    assert {f.verdict for f in verdicts({"models": summarise(empty, {})})} == {"not measured"}
    assert set(FACT_GROUPS) <= set(stats["group"])


def test_probes_in_training_counts_verbatim_training_documents():
    probes = pd.DataFrame({"text": ["a b", "c d", "e f"]})
    documents = pd.DataFrame({"text": ["a b", "e f", "x"], "split": ["train", "valid", "train"]})
    assert probes_in_training(probes, documents) == 1  # "e f" is only a validation document


def test_similar_means():
    assert _similar(0.5, 0.3, reference=10.0)         # both ≈ 0 next to the rewordings
    assert _similar(4.0, 3.0, reference=10.0)         # within a factor 2
    assert not _similar(4.0, 1.5, reference=10.0)     # a factor 2.7
    assert not _similar(-4.0, 3.0, reference=10.0)    # opposite signs


def _planted_probes(means: dict, probe_set: str, n_queries: int = 12, noise: float = 0.02, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = [{"model": "m", "probe_id": f"{probe_set}-{q}-{g}-{i}", "query_id": f"q{q}", "probe_set": probe_set,
             "group": g, "score_norm": mean + rng.normal(0, noise)}
            for q in range(n_queries) for g, mean in means.items() for i in range(2)]
    return pd.DataFrame(rows)


def test_contrast_bootstrap_matches_a_loop_over_query_draws():
    from influence_study.analyses.word_order import group_mean_draws

    probes = _planted_probes({"same_order": 1.0, "flipped_order": 0.2}, "translation", n_queries=5)
    point, draws = group_mean_draws(probes, ["same_order", "flipped_order"], resamples=50, seed=3)
    picks = np.random.default_rng(3).integers(0, 5, size=(50, 5))
    queries = sorted(probes["query_id"].unique())
    for r in (0, 17, 49):
        chosen = pd.concat([probes[probes["query_id"] == queries[i]] for i in picks[r]])
        expected = chosen[chosen["group"] == "flipped_order"]["score_norm"].mean()
        assert draws["flipped_order"][r] == pytest.approx(expected)
    assert point["same_order"] == pytest.approx(probes[probes["group"] == "same_order"]["score_norm"].mean())


@pytest.mark.parametrize("flipped, target, expected", [(0.05, 0.02, "replicated"), (0.75, 0.75, "mixed"),
                                                       (0.9, 0.2, "not replicated")])
def test_translation_v2_reads_flipped_order_against_the_target_only_control(flipped, target, expected):
    """Planted controls: flipped order much lower (replicated); flipped like the target sentence alone, both high
    (the order-dependent part is 0 but the raw ratio is not low: mixed); flipped high above the control (not)."""
    from influence_study.analyses.word_order import contrast_evidence, contrast_statistics
    from influence_study.findings import verdict_v2

    probes = _planted_probes({"same_order": 1.0, "flipped_order": flipped, "target_only": target}, "translation")
    contrasts = contrast_statistics(probes, ["m"], resamples=300)
    evidence = contrast_evidence(contrasts, "translation", list(TRANSLATION_CONTRASTS), ["m"])
    assert verdict_v2(evidence.checks) == expected
    assert "target-only probe / same order: m" in evidence.baseline


def test_fact_v2_contrasts_on_planted_groups():
    from influence_study.analyses.word_order import contrast_evidence, contrast_statistics
    from influence_study.findings import verdict_v2

    paper_like = {"reworded_name_after": 1.0, "name_removed": 0.0, "semantic_change": 0.5, "irrelevant": 0.01,
                  "flipped": 0.1, "flipped_relation_removed": 0.12}
    contrasts = contrast_statistics(_planted_probes(paper_like, "fact"), ["m"], resamples=300)
    assert verdict_v2(contrast_evidence(contrasts, "fact", list(FACT_CONTRASTS), ["m"]).checks) == "replicated"
    order_blind = {**paper_like, "flipped": 0.9, "name_removed": 0.6}
    contrasts = contrast_statistics(_planted_probes(order_blind, "fact"), ["m"], resamples=300)
    statuses = {c.name: c.status for c in contrast_evidence(contrasts, "fact", list(FACT_CONTRASTS), ["m"]).checks}
    assert statuses["m: flipped / reworded"] == "contradicted"
    assert statuses["m: name_removed / reworded"] == "contradicted"
