"""The cross-lingual analysis on hand-made tables: translations whose scores are known multiples of the English
query's, documents restricted to English, the scale-free percentile, examples and verdicts."""

import json

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses.cross_lingual import (choose_examples, english_top_documents, fact_ratios,
                                                    summarise, translated_percentiles, translated_scores,
                                                    translation_pairs, verdicts)
from influence_study.study.io import write_parquet

DOCS = [f"d{i}" for i in range(6)]
LANGUAGE = {"d0": "en", "d1": "en", "d2": "en", "d3": "fr", "d4": "en", "d5": "en"}
ENGLISH_SCORES = [5.0, 4.0, 3.0, 10.0, -1.0, 0.5]  # d3 is French: excluded from the English top


def _queries():
    return pd.DataFrame({
        "query_id": ["q-en", "q-fr", "q-de", "q-other"],
        "analysis": ["facts", "cross_lingual", "cross_lingual", "math"],
        "language": ["en", "fr", "de", "en"],
        "translation_of": [None, "q-en", "q-en", None],
        "fact_id": ["f", "f", "f", None],
        "fact_group": ["multilingual", "multilingual", "multilingual", None],
        "exposures": pd.array([3, 2, 0, pd.NA], dtype="Int64"),
    })


def _pairwise(fr_factor=0.5, de_factor=0.0):
    english = np.array(ENGLISH_SCORES)
    rows = {"q-en": english, "q-fr": fr_factor * english, "q-de": de_factor * english + np.arange(6) * 0.01,
            "q-other": -english}
    return pd.DataFrame([{"query_id": q, "doc_id": d, "score": s} for q, v in rows.items() for d, s in zip(DOCS, v)])


def test_pairs_are_the_translations_of_english_facts_queries():
    pairs = translation_pairs(_queries())
    assert pairs[["query_id", "english_id", "language"]].values.tolist() == [["q-de", "q-en", "de"],
                                                                             ["q-fr", "q-en", "fr"]]
    assert pairs["seen_in_language"].tolist() == [False, True]  # de: no training document in German


def test_half_the_english_scores_give_a_ratio_of_one_half():
    pairs = translation_pairs(_queries())
    english_docs = [d for d in DOCS if LANGUAGE[d] == "en"]
    top = english_top_documents(_pairwise(), ["q-en"], english_docs, k=3)
    assert top["doc_id"].tolist() == ["d0", "d1", "d2"] and top["rank"].tolist() == [1, 2, 3]
    long = translated_scores(_pairwise(), top, pairs)
    ratios = fact_ratios(long, pairs).set_index("language")["ratio"]
    assert ratios["fr"] == pytest.approx(0.5)
    assert ratios["de"] == pytest.approx((0.00 + 0.01 + 0.02) / 12.0)  # the small offsets over 5 + 4 + 3
    fr = long[long["language"] == "fr"].sort_values("rank")
    assert fr["normalised"].tolist() == pytest.approx([0.5, 0.4, 0.3])  # divided by the English top score 5
    english = long[long["language"] == "en"].sort_values("rank")
    assert english["normalised"].tolist() == pytest.approx([1.0, 0.8, 0.6])


def test_every_document_competes_when_not_restricted_to_english():
    top = english_top_documents(_pairwise(), ["q-en"], None, k=2)
    assert top["doc_id"].tolist() == ["d3", "d0"]


def test_percentile_is_the_rank_in_the_translated_querys_own_ranking():
    pairs = translation_pairs(_queries())
    english_docs = [d for d in DOCS if LANGUAGE[d] == "en"]
    top = english_top_documents(_pairwise(), ["q-en"], english_docs, k=2)  # d0, d1
    percentile = translated_percentiles(_pairwise(), top, pairs, english_docs)
    # fr keeps the English order: d0, d1 are its top 2 of 5 English documents -> (5/5 + 4/5) / 2
    assert percentile["q-fr"] == pytest.approx(0.9)
    # de ranks by the offsets 0.01 * i: d0 is its lowest (1/5), d1 the second lowest (2/5)
    assert percentile["q-de"] == pytest.approx(0.3)


def test_a_missing_score_is_an_error():
    pairs = translation_pairs(_queries())
    pairwise = _pairwise()
    top = english_top_documents(pairwise, ["q-en"], None, k=2)
    with pytest.raises(ValueError, match="lacks 1"):
        translated_scores(pairwise[~((pairwise.query_id == "q-fr") & (pairwise.doc_id == "d3"))], top, pairs)


def test_examples_alternate_between_seen_and_english_only_facts():
    pairs = pd.DataFrame({"english_id": ["a", "a", "b", "c", "d"], "seen_in_language": [True, False, True, False,
                                                                                          False]})
    chosen = choose_examples(pairs, 3, seed=1)
    seen = {"a", "b"}
    assert len(chosen) == 3 and chosen[0] in seen and chosen[1] not in seen and chosen[2] in seen
    assert choose_examples(pairs, 10) and len(choose_examples(pairs, 10)) == 4


def _ratios(means_by_model):
    rows = []
    for model, mean in means_by_model.items():
        for i, noise in enumerate(np.linspace(-0.05, 0.05, 11)):
            for language in ("fr", "de"):
                rows.append({"model": model, "language": language, "ratio": mean + noise,
                             "seen_in_language": i % 2 == 0})
    return pd.DataFrame(rows)


def test_verdicts_growing_ratio_replicates_a_flat_one_does_not():
    grows = verdicts({"top_k": 10, "models": summarise(_ratios({"s": 0.0, "m": 0.3, "l": 0.6}))})[0]
    assert grows.verdict == "replicated" and len(grows.checks) == 4
    flat = verdicts({"top_k": 10, "models": summarise(_ratios({"s": 0.5, "m": 0.5, "l": 0.5}))})[0]
    assert flat.verdict == "not replicated"
    stats = summarise(_ratios({"s": 0.0}))["s"]["fr"]
    assert stats["all"]["mean"] == pytest.approx(0.0, abs=1e-12) and stats["seen_in_language"]["facts"] == 6


def test_run_on_a_tiny_family(tmp_path):
    from influence_study.stages.cross_lingual import run

    write_parquet(_queries(), tmp_path / "queries.parquet")
    write_parquet(pd.DataFrame({"doc_id": DOCS, "language": [LANGUAGE[d] for d in DOCS], "split": "train"}),
                  tmp_path / "documents.parquet")
    write_parquet(pd.DataFrame({"model": ["s", "l"], "parameters": [1, 2]}), tmp_path / "learning.parquet")
    paths = []
    for model, factor in (("l", 0.9), ("s", 0.1)):
        path = tmp_path / model / "ekfac" / "pairwise.parquet"
        write_parquet(_pairwise(fr_factor=factor), path, metadata={"model": model})
        paths.append(str(path))
    evaluations = []
    for model in ("s", "l"):
        evaluations.append(str(tmp_path / "evaluation" / model / "queries.parquet"))
        write_parquet(pd.DataFrame({"query_id": ["q-en"], "correct": [True]}), evaluations[-1])
    config = {"seed": 0, "analyses": {"cross_lingual": {"top_k": 3, "english_documents_only": True, "examples": 1}}}
    run(config, paths, str(tmp_path / "learning.parquet"), str(tmp_path / "queries.parquet"),
        str(tmp_path / "documents.parquet"), evaluations, scores=str(tmp_path / "scores.parquet"),
        ratios=str(tmp_path / "ratios.parquet"), summary=str(tmp_path / "s.json"))
    summary = json.loads((tmp_path / "s.json").read_text())
    models = summary["statistics"]["models"]
    assert list(models) == ["s", "l"]
    assert models["s"]["fr"]["all"]["mean"] == pytest.approx(0.1)
    assert models["l"]["fr"]["all"]["mean"] == pytest.approx(0.9)
    assert summary["statistics"]["examples"] == ["q-en"]
    assert pd.read_parquet(tmp_path / "scores.parquet")["example"].all()


def test_planted_percentile_growth_is_replicated_and_a_flat_one_is_not(tmp_path):
    """Positive and negative controls of the v2 rule: the percentile of the English top documents in the
    translated query's ranking rises from chance (0.5) with size, or stays at chance."""
    from influence_study.analyses.cross_lingual import percentile_scale
    from influence_study.stages.tables import correct_answers

    learning = pd.DataFrame({"model": ["s", "m", "l"], "parameters": [1e4, 1e5, 1e6], "accuracy_facts": 0.5})
    rng = np.random.default_rng(0)

    def ratios(means):
        return pd.DataFrame([{"model": m, "query_id": f"q{i}-fr", "english_id": f"q{i}", "language": "fr",
                              "percentile": float(np.clip(mean + rng.normal(0, 0.05), 0, 1))}
                             for m, mean in means.items() for i in range(20)])

    def verdict_of(means, tmp):
        evaluations = []
        for m in means:
            evaluations.append(str(tmp / m / "queries.parquet"))
            write_parquet(pd.DataFrame({"query_id": [f"q{i}" for i in range(20)], "correct": True}), evaluations[-1])
        scale = percentile_scale(ratios(means), learning, correct_answers(evaluations))
        assert scale["fr"]["query_set"] == "correct"
        return verdicts({"top_k": 10, "models": {}, "scale": scale})[0].verdict_v2

    assert verdict_of({"s": 0.5, "m": 0.7, "l": 0.9}, tmp_path / "grows") == "replicated"
    assert verdict_of({"s": 0.5, "m": 0.5, "l": 0.5}, tmp_path / "flat") != "replicated"
