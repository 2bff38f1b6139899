"""The math-and-code analysis against hand-computed shares on tiny tables."""

import json

import numpy as np
import pandas as pd
import pytest
from relations_world import write_study

from influence_study.analyses.math_code import (CODE_OBFUSCATED, CODE_PLAIN, MATH, math_code_table, query_groups,
                                                verdicts)
from influence_study.analyses.relations import rank_documents
from influence_study.stages.math_code import run

QUERIES = pd.DataFrame({"query_id": ["m", "cp", "co", "f"], "analysis": ["math", "code", "code", "facts"],
                        "obfuscated": pd.array([None, False, True, None], dtype="boolean")})
DOCS = pd.DataFrame({"doc_id": [f"d{i}" for i in range(6)],
                     "obfuscated": pd.array([None, None, False, True, False, None], dtype="boolean")})
RELATIONS = pd.DataFrame([("m", "d0", "same_schema"), ("m", "d1", "lexical_overlap"),
                          ("cp", "d2", "same_schema"), ("cp", "d3", "same_schema"),
                          ("co", "d3", "same_schema"), ("co", "d4", "same_schema")],
                         columns=["query_id", "doc_id", "relation"])


def scores(by_query: dict) -> pd.DataFrame:
    rows = [(q, f"d{i}", float(s)) for q, values in by_query.items() for i, s in enumerate(values)]
    return pd.DataFrame(rows, columns=["query_id", "doc_id", "score"])


def test_query_groups():
    groups = query_groups(QUERIES).set_index("query_id")["group"]
    assert groups.to_dict() == {"m": MATH, "cp": CODE_PLAIN, "co": CODE_OBFUSCATED}


def test_same_schema_shares_by_hand():
    ranking = scores({"m": [9, 8, 7, 0, 0, 0],     # top 3: d0 same schema, d1 token-only, d2 other
                      "cp": [0, 0, 9, 8, 7, 0],    # d2 (plain doc), d3 (obfuscated doc), d4 other
                      "co": [5, 0, 0, 9, 8, 5]})   # d3 (obfuscated, same naming), d4 (plain); d0/d5 tie: d0 enters
    ranked = rank_documents(ranking, ["m", "cp", "co"], 3).assign(model="x")
    table = math_code_table(ranked, RELATIONS, DOCS, query_groups(QUERIES)).set_index("query_id")
    assert table.loc["m", ["share_same_schema", "share_lexical_overlap", "share_other"]].tolist() == \
        pytest.approx([1 / 3, 1 / 3, 1 / 3])
    assert np.isnan(table.loc["m", "share_same_schema_other_naming"])
    assert table.loc["cp", "share_same_schema"] == pytest.approx(2 / 3)
    assert table.loc["cp", "share_same_schema_other_naming"] == pytest.approx(1 / 3)  # d3 is obfuscated
    assert table.loc["co", "share_same_schema"] == pytest.approx(2 / 3)
    assert table.loc["co", "share_same_schema_other_naming"] == pytest.approx(1 / 3)  # d4 has plain names
    assert table.loc["co", "share_other"] == pytest.approx(1 / 3)
    assert table.loc["co", "chance_same_schema"] == pytest.approx(2 / 6)
    assert "f" not in table.index


def test_verdicts_check_each_group_present():
    def node(v):
        return {"share_same_schema": {"mean": v, "low": v, "high": v, "queries": 4}}
    stats = {"k": 10, "queries": {MATH: 4, CODE_PLAIN: 4, CODE_OBFUSCATED: 0},
             "models": {"s": {MATH: node(0.2), CODE_PLAIN: node(0.5)}, "l": {MATH: node(0.6), CODE_PLAIN: node(0.4)}}}
    finding = verdicts(stats)[0]
    assert finding.checks == {f"{MATH}: same-schema share increases with model size": True,
                              f"{CODE_PLAIN}: same-schema share increases with model size": False}
    assert finding.verdict == "mixed"


def test_run_on_a_tiny_study(tmp_path):
    study = write_study(tmp_path)
    paths = study["paths"]
    run(study["config"], paths["pairwise"], paths["learning"], paths["documents"], paths["queries"],
        paths["relations"], paths["candidates"], paths["evaluations"],
        str(tmp_path / "pq.parquet"), str(tmp_path / "bm.parquet"), str(tmp_path / "mc.json"))
    summary = json.loads((tmp_path / "mc.json").read_text())
    models = summary["statistics"]["models"]
    # the obfuscated code query's top 2: small d3 (same schema), d7 (quote); large d4 (plain names), d3
    assert models["small"][CODE_OBFUSCATED]["share_same_schema"]["mean"] == pytest.approx(0.5)
    assert models["large"][CODE_OBFUSCATED]["share_same_schema"]["mean"] == pytest.approx(1.0)
    assert models["large"][CODE_OBFUSCATED]["share_same_schema_other_naming"]["mean"] == pytest.approx(0.5)
    assert summary["findings"][0]["verdict"] == "replicated"  # only the obfuscated-code group is present
