"""The layers analysis against hand-computed profiles, a sampled depth integral, and tiny tables with known top
documents under each depth restriction."""

import json

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses.common import top_k
from influence_study.analyses.layers import (centre_of_mass, kind_shares, score_array, layer_columns, layer_shares,
                                             model_layer_tables, restricted_score, third_weights, top_documents,
                                             verdicts)
from influence_study.study.io import write_parquet


@pytest.mark.parametrize("n_layers", [1, 2, 3, 4, 5, 7])
def test_third_weights_match_a_sampled_depth_integral(n_layers):
    depth = (np.arange(300_000) + 0.5) / 300_000  # uniform points of [0, 1]
    layer, third = (depth * n_layers).astype(int), (depth * 3).astype(int)
    counts = np.zeros((n_layers, 3))
    np.add.at(counts, (layer, third), 1.0)
    expected = counts / counts.sum(axis=1, keepdims=True)
    assert third_weights(n_layers) == pytest.approx(expected, abs=1e-4)


def test_third_weights_by_hand():
    assert third_weights(3) == pytest.approx(np.eye(3))
    assert third_weights(2) == pytest.approx(np.array([[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]]))
    with pytest.raises(ValueError, match="n_layers"):
        third_weights(0)


def test_centre_of_mass_by_hand():
    assert centre_of_mass(np.array([[0, 0, 1.0]])) == pytest.approx([5 / 6])  # all in the top of 3 layers
    assert centre_of_mass(np.array([[1.0, 0]])) == pytest.approx([0.25])
    assert centre_of_mass(np.array([[0.25] * 4])) == pytest.approx([0.5])
    assert centre_of_mass(np.array([[0.5, 0, 0, 0.5], [0, 1.0, 0, 0]])) == pytest.approx([0.5, 0.375])


def test_layer_shares_average_each_documents_share_of_absolute_influence():
    values = np.array([[[3.0, -1.0], [0.0, 2.0]],  # a: (3/4, 1/4) and (0, 1) -> (3/8, 5/8)
                       [[1.0, 1.0], [0.0, 0.0]]])  # b: (1/2, 1/2) and an all-zero document that is skipped
    assert layer_shares(values) == pytest.approx(np.array([[0.375, 0.625], [0.5, 0.5]]))


def test_top_documents_agree_with_the_shared_top_k():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"query_id": np.repeat([f"q{i}" for i in range(7)], 40),
                          "doc_id": np.tile([f"d{j:02d}" for j in range(40)], 7),
                          "layer_0": rng.normal(size=280), "layer_1": rng.normal(size=280)})
    frame = frame.sample(frac=1.0, random_state=1).iloc[:-3]  # shuffled, three pairs missing
    query_ids, doc_ids, values = score_array(frame, ["layer_0", "layer_1"])
    chosen, valid = top_documents(values.sum(axis=2), 5)
    assert valid.all()
    mine = [(q, doc_ids[c]) for q, row in zip(query_ids, chosen) for c in row]
    reference = top_k(frame.assign(score=frame["layer_0"] + frame["layer_1"]), 5)
    assert mine == list(zip(reference["query_id"], reference["doc_id"]))


def test_top_documents_mark_missing_scores_invalid():
    scores = np.array([[1.0, np.nan, 3.0], [np.nan, np.nan, 2.0]])
    chosen, valid = top_documents(scores, 5)
    assert chosen[0].tolist() == [2, 0, 1] and valid[0].tolist() == [True, True, False]
    assert chosen[1, 0] == 2 and valid[1].tolist() == [True, False, False]


def test_layer_columns_are_ordered_and_checked():
    frame = pd.DataFrame(columns=["query_id", "layer_10", "layer_2", "score"] + [f"layer_{i}" for i in (0, 1, 3, 4,
                                                                                                       5, 6, 7, 8, 9)])
    assert layer_columns(frame) == [f"layer_{i}" for i in range(11)]
    with pytest.raises(ValueError, match="layer_0..layer_1"):
        layer_columns(pd.DataFrame(columns=["layer_0", "layer_2"]))
    with pytest.raises(ValueError, match="no layer"):
        layer_columns(pd.DataFrame(columns=["score"]))


def test_restricted_score_of_four_layers():
    layers = np.array([[1.0, 10.0, 100.0, 1000.0]])
    # layers cover [0,.25], [.25,.5], [.5,.75], [.75,1]: the middle third [1/3, 2/3] holds 2/3 of layers 1 and 2
    assert restricted_score(layers, "middle") == pytest.approx([2 / 3 * 10 + 2 / 3 * 100])
    assert restricted_score(layers, "lower") == pytest.approx([1 + 10 / 3])
    assert restricted_score(layers, "all") == pytest.approx([1111.0])
    with pytest.raises(ValueError, match="third"):
        restricted_score(layers, "top")


def test_kind_shares_count_meaning_and_token_relations():
    relations = pd.DataFrame({"query_id": ["a", "a", "a", "b"], "doc_id": ["d1", "d2", "d3", "d1"],
                              "relation": ["same_fact", "lexical_overlap", "exact_copy", "same_schema"]})
    top = pd.DataFrame({"query_id": ["a"] * 4 + ["b"] * 2, "doc_id": ["d1", "d2", "d3", "d4", "d1", "d2"]})
    shares = kind_shares(top, relations)
    assert shares.loc["a"].to_dict() == {"meaning_share": 0.25, "token_share": 0.25}  # exact_copy counts in neither
    assert shares.loc["b"].to_dict() == {"meaning_share": 0.5, "token_share": 0.0}


def _three_layer_table():
    """One query, 4 documents, 3 layers: each restriction has its own best document."""
    layers = {"d_low": [9, 0, 0], "d_mid": [0, 8, 0], "d_up": [0, 0, 7], "d_flat": [4, 4, 4]}
    frame = pd.DataFrame([{"query_id": "q", "doc_id": d, **{f"layer_{i}": float(v) for i, v in enumerate(vs)}}
                          for d, vs in layers.items()])
    queries = pd.DataFrame({"query_id": ["q"], "analysis": ["facts"]})
    relations = pd.DataFrame({"query_id": ["q", "q"], "doc_id": ["d_mid", "d_low"],
                              "relation": ["same_fact", "lexical_overlap"]})
    return frame, queries, relations


def test_model_layer_tables_pick_each_restrictions_top_document():
    frame, queries, relations = _three_layer_table()
    profile, long, restricted = model_layer_tables(frame, "m", queries, relations, k=1)
    shares = restricted.set_index("restriction")[["meaning_share", "token_share"]]
    # all: d_flat (12) is the top; lower: d_low (token-only); middle: d_mid (same fact); upper: d_up (unrelated)
    assert shares.loc["all"].tolist() == [0.0, 0.0]
    assert shares.loc["lower"].tolist() == [0.0, 1.0]
    assert shares.loc["middle"].tolist() == [1.0, 0.0]
    assert shares.loc["upper"].tolist() == [0.0, 0.0]
    # the profile of the overall top document (d_flat) is even: a third each, centre of mass 1/2
    row = profile.iloc[0]
    assert [row.share_lower, row.share_middle, row.share_upper] == pytest.approx([1 / 3] * 3)
    assert row.centre_of_mass == pytest.approx(0.5) and row.analysis == "facts" and row.n_layers == 3
    assert sorted(long["depth"]) == pytest.approx([1 / 6, 1 / 2, 5 / 6])
    assert restricted["has_meaning"].all()


def _statistics(com_facts, middle_share, thirds=(0.3, 0.33, 0.37), n_layers=3):
    families = {"facts": com_facts, "quotes": com_facts, "math": 0.5, "code": 0.5, "translation": 0.5}
    shares = {"all": 0.4, "lower": 0.3, "middle": middle_share, "upper": 0.35}
    return {"n_layers": n_layers,
            "thirds": {t: {"mean": v} for t, v in zip(("lower", "middle", "upper"), thirds)},
            "centre_of_mass": {f: {"mean": v} for f, v in families.items()},
            "restricted": {r: {"meaning": {"mean": v}} for r, v in shares.items()}}


def test_verdicts_follow_the_fixed_checks():
    statistics = {"models": {"small": _statistics(0.6, 0.5), "large": _statistics(0.4, 0.2, thirds=(0.1, 0.2, 0.7))}}
    even, families, abstract = verdicts(statistics)
    assert even.verdict == families.verdict == abstract.verdict == "mixed"
    assert even.checks == {"small: every third's share in [20%, 47%]": True,
                           "large: every third's share in [20%, 47%]": False}
    shallow = {"models": {"one": _statistics(0.6, 0.5, n_layers=1), "two": _statistics(0.6, 0.2, n_layers=2)}}
    even, families, abstract = verdicts(shallow)
    assert list(even.checks) == ["two: every third's share in [20%, 47%]"]  # a 1-layer model has no profile
    assert abstract.verdict == "not measured" and "fewer than 3 layers" in abstract.measured


def test_run_orders_models_by_size_and_writes_the_summary(tmp_path):
    from influence_study.stages.layers import run

    frame, queries, _ = _three_layer_table()
    learning = pd.DataFrame({"model": ["big", "tiny"], "parameters": [2000, 1000]})
    write_parquet(learning, tmp_path / "learning.parquet")
    write_parquet(queries, tmp_path / "queries.parquet")
    write_parquet(pd.DataFrame({"query_id": ["q"], "doc_id": ["d_mid"], "relation": ["same_fact"]}),
                  tmp_path / "relations.parquet")
    paths = []
    for model in ("big", "tiny"):
        path = tmp_path / model / "ekfac" / "pairwise.parquet"
        write_parquet(frame.assign(score=frame.filter(like="layer_").sum(axis=1)), path, metadata={"model": model})
        paths.append(str(path))
    out = tmp_path / "out"
    run({"seed": 0, "analyses": {"layers": {"top_k": 2}}}, paths, str(tmp_path / "learning.parquet"),
        str(tmp_path / "queries.parquet"), str(tmp_path / "relations.parquet"), profile=str(out / "p.parquet"),
        layers=str(out / "l.parquet"), restricted=str(out / "r.parquet"), summary=str(out / "s.json"))
    summary = json.loads((out / "s.json").read_text())
    assert list(summary["statistics"]["models"]) == ["tiny", "big"]
    middle = summary["statistics"]["models"]["tiny"]["restricted"]["middle"]["meaning"]["mean"]
    assert middle == pytest.approx(0.5)  # top 2 under the middle third: d_mid (related) and d_flat
    assert [f["verdict"] for f in summary["findings"]][2] == "replicated"


def test_top_documents_break_ties_at_the_cut_by_the_lower_column():
    # small integers: many ties, also at the k-th place (a partition picked among them arbitrarily before)
    scores = np.random.default_rng(3).integers(0, 4, size=(30, 12)).astype(float)
    chosen, valid = top_documents(scores, 3)
    for row, picked in zip(scores, chosen):
        expected = sorted(range(len(row)), key=lambda c: (-row[c], c))[:3]
        assert list(picked) == expected
    assert valid.all()


def _interval_statistics(com_facts, middle_gain, thirds=(0.3, 0.33, 0.37), n_layers=6, half=0.03):
    """Statistics with intervals (± ``half``) for the v2 checks of the layer findings."""
    stats = _statistics(com_facts, 0.4 + middle_gain, thirds, n_layers)
    for node in (*stats["thirds"].values(), *stats["centre_of_mass"].values()):
        node.update(low=node["mean"] - half, high=node["mean"] + half)
    stats["middle_minus"] = {o: {"mean": middle_gain, "low": middle_gain - half,
                                               "high": middle_gain + half} for o in ("lower", "upper")}
    return stats


def test_v2_layer_checks_on_planted_statistics_and_shallow_models_left_out():
    paper_like = {"models": {"deep": _interval_statistics(0.8, 0.2), "flat": _interval_statistics(0.2, -0.2,
                                                                                                   n_layers=2)}}
    even, families, abstract = verdicts(paper_like)
    assert even.verdict_v2 == families.verdict_v2 == abstract.verdict_v2 == "replicated"
    assert "left out: flat" in even.baseline
    opposite = {"models": {"deep": _interval_statistics(0.2, -0.2, thirds=(0.1, 0.1, 0.8))}}
    assert [f.verdict_v2 for f in verdicts(opposite)] == ["not replicated"] * 3
    assert [f.verdict_v2 for f in verdicts({"models": {"flat": _interval_statistics(0.8, 0.2, n_layers=2)}})] \
        == ["not measured"] * 3
