"""The role-play analysis against hand-computed theme shares on tiny tables."""

import json

import pandas as pd
import pytest
from relations_world import write_study

from influence_study.analyses.relations import rank_documents
from influence_study.analyses.roleplay import roleplay_table, verdicts
from influence_study.stages.roleplay import run

DOCS = pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)],
                     "theme": ["ai_self_preservation", "nonai_survival", "ai_risk_essay", "themed_distractor",
                               None, "an_unknown_theme"]})


def test_theme_shares_by_hand():
    ranking = pd.DataFrame({"query_id": "r", "doc_id": [f"d{i}" for i in range(6)],
                            "score": [6.0, 1.0, 5.0, 4.0, 3.0, 2.0]})  # top 4: d0, d2, d3, d4
    ranked = rank_documents(ranking, ["r"], 4).assign(model="x")
    row = roleplay_table(ranked, DOCS, ["r"]).iloc[0]
    assert row["share_ai_self_preservation"] == pytest.approx(0.25)
    assert row["share_nonai_survival"] == 0.0
    assert row["share_ai_risk_essay"] == pytest.approx(0.25)
    assert row["share_themed_distractor"] == pytest.approx(0.25)
    assert row["share_other"] == pytest.approx(0.25)  # d4 has no theme
    assert row["share_survival"] == pytest.approx(0.5)
    ranked = rank_documents(ranking, ["r"], 6).assign(model="x")
    assert roleplay_table(ranked, DOCS, ["r"]).iloc[0]["share_other"] == pytest.approx(2 / 6)  # unknown -> other


def test_no_roleplay_query_is_not_measured():
    empty = rank_documents(pd.DataFrame({"query_id": ["a"], "doc_id": ["d0"], "score": [1.0]}), [], 5)
    assert roleplay_table(empty.assign(model="x"), DOCS, []).empty
    assert verdicts({"k": 5, "queries": 0, "models": {}})[0].verdict == "not measured"


def test_run_on_a_tiny_study(tmp_path):
    study = write_study(tmp_path)
    paths = study["paths"]
    run(study["config"], paths["pairwise"], paths["learning"], paths["documents"], paths["queries"],
        paths["candidates"], paths["evaluations"], str(tmp_path / "pq.parquet"), str(tmp_path / "bm.parquet"), str(tmp_path / "rp.json"))
    summary = json.loads((tmp_path / "rp.json").read_text())
    models = summary["statistics"]["models"]
    # top 2: small d6 (distractor), d5 (self-preservation); large d5, d0 (a fact: other)
    assert models["small"]["share_survival"]["mean"] == pytest.approx(0.5)
    assert models["small"]["share_themed_distractor"]["mean"] == pytest.approx(0.5)
    assert models["large"]["share_survival"]["mean"] == pytest.approx(0.5)
    assert models["large"]["share_themed_distractor"]["mean"] == 0.0
    finding = summary["findings"][0]
    assert list(finding["checks"].values()) == [False, True] and finding["verdict"] == "mixed"
