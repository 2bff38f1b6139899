"""The memorisation control against hand-computed ranks of exact copies on tiny tables."""

import json

import numpy as np
import pandas as pd
import pytest
from relations_world import write_study

from influence_study.analyses.memorisation import copy_ranks, memorisation_table, summarise_memorisation, verdicts
from influence_study.analyses.relations import rank_documents
from influence_study.stages.memorisation import run


def test_copy_ranks_and_statistics_by_hand():
    # a: copies d0, d1, d3 (c = 3) ranked 1, 2, 4 -> top-3 share 2/3, median rank 2, worst 4
    # b: copy d5 ties with d2 at the top: d2 comes first by id -> copy at rank 2, top-1 share 0
    # n: no copies at all
    scores = {"a": [9, 8, 1, 6, 7, 0], "b": [0, 0, 5, 0, 0, 5], "n": [1, 2, 3, 4, 5, 6]}
    ranking = pd.DataFrame([(q, f"d{i}", float(s)) for q, v in scores.items() for i, s in enumerate(v)],
                           columns=["query_id", "doc_id", "score"])
    relations = pd.DataFrame([("a", "d0", "exact_copy"), ("a", "d1", "exact_copy"), ("a", "d3", "exact_copy"),
                              ("b", "d5", "exact_copy"), ("a", "d4", "same_fact")],
                             columns=["query_id", "doc_id", "relation"])
    ranked = rank_documents(ranking, list(scores), None).assign(model="x")
    copies = copy_ranks(ranked, relations, list(scores))
    assert sorted(copies.loc[copies["query_id"] == "a", "rank"]) == [1, 2, 4]
    table = memorisation_table(ranked, copies).set_index("query_id")
    assert table.loc["a", ["copies", "top1_is_copy", "top_c_share", "median_rank", "worst_rank"]].tolist() == \
        pytest.approx([3, 1.0, 2 / 3, 2.0, 4.0])
    assert table.loc["b", "top1_is_copy"] == 0.0 and table.loc["b", "top_c_share"] == 0.0
    assert table.loc["n", "copies"] == 0 and np.isnan(table.loc["n", "top_c_share"])
    stats = summarise_memorisation(table.reset_index(), copies)["x"]
    assert stats["queries"] == 3 and stats["queries_with_copies"] == 2
    assert stats["top1_copy_share"] == pytest.approx(0.5)
    assert stats["top_c_share"] == pytest.approx((2 / 3 + 0) / 2)
    assert stats["median_rank"] == pytest.approx(2.0)  # ranks 1, 2, 4 and 2
    assert stats["worst_rank"] == 4


def test_verdicts_use_the_90_percent_threshold():
    def model(top1, top_c):
        return {"queries_with_copies": 2, "top1_copy_share": top1, "top_c_share": top_c, "median_rank": 1.0,
                "worst_rank": 2, "documents": 10}
    assert verdicts({"models": {"s": model(1.0, 0.9), "l": model(1.0, 1.0)}})[0].verdict == "replicated"
    assert verdicts({"models": {"s": model(1.0, 0.89), "l": model(0.5, 1.0)}})[0].verdict == "mixed"
    assert verdicts({"models": {}})[0].verdict == "not measured"


def test_run_on_a_tiny_study(tmp_path):
    study = write_study(tmp_path)
    paths = study["paths"]
    run(study["config"], paths["pairwise"], paths["learning"], paths["queries"], paths["relations"],
        str(tmp_path / "copies.parquet"), str(tmp_path / "pq.parquet"), str(tmp_path / "mem.json"))
    summary = json.loads((tmp_path / "mem.json").read_text())
    models = summary["statistics"]["models"]
    # the one copy (d7) ranks first for the small model, second (behind d6) for the large one
    assert models["small"]["median_rank"] == 1 and models["large"]["median_rank"] == 2
    assert summary["findings"][0]["verdict"] == "mixed"


def test_v2_memorisation_needs_the_interval_above_the_threshold():
    """Planted controls: copies always at the top (replicated); copies in the top c for half the quotes (the
    interval falls below 90%: not replicated)."""
    from influence_study.analyses.memorisation import summarise_memorisation

    def stats(shares):
        table = pd.DataFrame({"model": "m", "query_id": [f"q{i}" for i in range(len(shares))], "n_docs": 100,
                              "copies": 4, "top1_is_copy": [float(s == 1) for s in shares], "top_c_share": shares})
        copies = pd.DataFrame({"model": "m", "rank": [1, 2, 3, 4]})
        return {"queries": len(shares), "models": summarise_memorisation(table, copies)}

    assert verdicts(stats([1.0] * 12))[0].verdict_v2 == "replicated"
    found = verdicts(stats([1.0, 0.25] * 6))[0]
    assert found.verdict_v2 == "not replicated" and "random ranking: m 4.0%" in found.baseline
