"""Verdicts from checks, the findings report, and the helpers every analysis shares (top-k, bootstrap CIs,
model order, the summary file)."""

import json

import numpy as np
import pandas as pd
import pytest

from influence_study.analyses.common import mean_ci, model_sizes, top_k
from influence_study.findings import (CONTRADICTED, INCONCLUSIVE, MIXED, NOT_MEASURED, NOT_REPLICATED, REPLICATED,
                                      SUPPORTED, Evidence, IntervalCheck, finding, findings_markdown, increasing,
                                      load_findings, render_findings, verdict, verdict_v2,
                                      write_findings_report)
from influence_study.run_notes import TINY_CAVEAT
from influence_study.stages.tables import load_family_tables, write_analysis
from influence_study.study.io import read_parquet_metadata, write_parquet


def test_verdict_follows_the_checks():
    assert verdict({"a": True, "b": True}) == REPLICATED
    assert verdict({"a": False, "b": False}) == NOT_REPLICATED
    assert verdict({"a": True, "b": False}) == MIXED
    assert verdict({}) == NOT_MEASURED
    assert finding("X", "claim", "paper", "measured", {"a": np.bool_(True)}).verdict == REPLICATED


@pytest.mark.parametrize("values, expected", [([1, 2, 3], True), ([1, 1, 2], True), ([3, 2, 1], False),
                                              ([1, 3, 2, 4], False), ([1], False), ([2, 2], False)])
def test_increasing(values, expected):
    assert increasing(values) is expected


def test_increasing_tolerates_a_small_dip_only_when_asked():
    assert not increasing([1.0, 2.0, 1.95, 3.0])
    assert increasing([1.0, 2.0, 1.95, 3.0], tolerance=0.1)


def test_report_lists_every_finding_under_its_analysis_and_escapes_pipes(tmp_path):
    items = [finding("Sparsity", "tail | power law", "2-4.3", "3.1", {"ok": True}),
             finding("Layers", "even", "—", "0.3", {"x": False, "y": True}),
             finding("Sparsity", "top 1%", "12-52%", "20%", {"z": False})]
    text = render_findings(items, title="T", preamble="P")
    assert text.index("## Sparsity") < text.index("## Layers")
    assert "tail \\| power law" in text
    assert "Verdicts (v1, point rules, for comparison): 1 replicated, 1 not replicated, 1 mixed." in text
    assert "Verdicts (v2, interval rules): 3 not measured." in text
    assert text.count("| **") == 6  # each finding in its analysis's table and in the v1 table
    assert "✓ x" not in text and "✗ x; ✓ y" in text
    assert "*mixed*" in findings_markdown([items[1].to_dict()])


@pytest.mark.parametrize("side, bound, low, high, expected", [
    ("above", 0.0, 0.1, 0.5, SUPPORTED), ("above", 0.0, -0.1, 0.5, INCONCLUSIVE), ("above", 0.0, -0.5, -0.1, CONTRADICTED),
    ("below", 1.0, 0.1, 0.9, SUPPORTED), ("below", 1.0, 0.5, 1.5, INCONCLUSIVE), ("below", 1.0, 1.1, 2.0, CONTRADICTED),
    ("within", (2.0, 4.3), 2.5, 4.0, SUPPORTED), ("within", (2.0, 4.3), 1.5, 3.0, INCONCLUSIVE),
    ("within", (2.0, 4.3), 4.5, 5.0, CONTRADICTED), ("within", (2.0, 4.3), 0.5, 1.9, CONTRADICTED),
    ("above", 0.0, float("nan"), 0.5, NOT_MEASURED)])
def test_interval_check_status_follows_where_the_interval_lies(side, bound, low, high, expected):
    estimate = (low + high) / 2 if np.isfinite(low) else 0.3
    check = IntervalCheck("c", estimate, low, high, bound, side)
    assert check.status == expected
    assert IntervalCheck.from_dict(check.to_dict()).status == expected


def test_interval_check_refuses_a_bad_side_or_reversed_interval():
    with pytest.raises(ValueError, match="side"):
        IntervalCheck("c", 0.0, -1.0, 1.0, 0.0, "higher")
    with pytest.raises(ValueError, match="low"):
        IntervalCheck("c", 0.0, 1.0, -1.0)


def test_verdict_v2_from_interval_statuses():
    up, straddle, down = (IntervalCheck("s", 1, 0.5, 1.5), IntervalCheck("i", 0, -1, 1), IntervalCheck("c", -1, -2, -0.5))
    missing = IntervalCheck("m", float("nan"), float("nan"), float("nan"))
    assert verdict_v2([up, up]) == REPLICATED
    assert verdict_v2([up, missing]) == REPLICATED
    assert verdict_v2([down, straddle]) == NOT_REPLICATED
    assert verdict_v2([straddle, straddle]) == INCONCLUSIVE
    assert verdict_v2([up, straddle]) == MIXED and verdict_v2([up, down]) == MIXED
    assert verdict_v2([missing]) == NOT_MEASURED and verdict_v2([]) == NOT_MEASURED


def test_a_finding_with_evidence_carries_both_verdicts_into_the_report():
    evidence = Evidence("slope 0.2 [0.1, 0.3]", "BM25 0.5", [IntervalCheck("slope > 0", 0.2, 0.1, 0.3)])
    item = finding("Abstraction", "rises", "qualitative", "0.2", {"increases": False}, evidence)
    assert (item.verdict, item.verdict_v2) == (NOT_REPLICATED, REPLICATED)
    text = render_findings([item])
    assert "slope 0.2 [0.1, 0.3] | BM25 0.5 | **replicated** | slope > 0: 0.2 [0.1, 0.3]" in text
    assert "| not replicated |" in text


def test_the_report_opens_with_a_caveat_only_when_given_one(tmp_path):
    """A tiny configuration's report opens with its caveat (the findings stage passes TINY_CAVEAT for ``tiny``),
    before any analysis; a full run's report has none."""
    item = finding("A", "claim", "paper", "measured", {"check": True})
    (tmp_path / "a.json").write_text(json.dumps({"findings": [item.to_dict()]}))
    write_findings_report([str(tmp_path / "a.json")], str(tmp_path / "tiny.md"), ["m"], caveat=TINY_CAVEAT)
    write_findings_report([str(tmp_path / "a.json")], str(tmp_path / "full.md"), ["m"])
    tiny, full = (tmp_path / "tiny.md").read_text(), (tmp_path / "full.md").read_text()
    assert f"**{TINY_CAVEAT}**" in tiny.split("## A")[0] and TINY_CAVEAT not in full
    assert tiny.replace(f"**{TINY_CAVEAT}**\n\n", "") == full


def test_summary_file_round_trips_findings_in_order(tmp_path):
    frame = pd.DataFrame({"model": ["b", "a"], "value": [1.0, 2.0]})
    stats = {"models": {"small": {"v": 1}, "large": {"v": 2}}}

    def verdicts(statistics):
        return [finding("A", "c", "p", "m", {name: s["v"] > 0 for name, s in statistics["models"].items()})]

    document = write_analysis({"seed": 0}, "a", {"table": (frame, tmp_path / "a.parquet")}, stats, verdicts,
                              str(tmp_path / "a.json"))
    stored = json.loads((tmp_path / "a.json").read_text())
    assert list(stored["statistics"]["models"]) == ["small", "large"]  # the order of sizes survives
    assert list(stored["findings"][0]["checks"]) == ["small", "large"]
    assert stored == json.loads(json.dumps(document, default=str))
    assert read_parquet_metadata(tmp_path / "a.parquet")["analysis"] == "a"
    assert load_findings([tmp_path / "a.json"])[0].verdict == REPLICATED


def test_top_k_matches_a_sort_per_query_with_ties_broken_by_document():
    rng = np.random.default_rng(0)
    pairs = pd.DataFrame({"query_id": np.repeat(["q1", "q2", "q3"], 20), "doc_id": [f"d{i:02d}" for i in range(20)] * 3,
                          "score": rng.integers(0, 5, 60).astype(float)})
    top = top_k(pairs, 4)
    for query, group in pairs.groupby("query_id"):
        expected = sorted(zip(-group["score"], group["doc_id"]))[:4]
        got = top[top.query_id == query]
        assert list(got["doc_id"]) == [d for _, d in expected]
        assert list(got["rank"]) == [1, 2, 3, 4]


def test_mean_ci_brackets_the_mean_and_shrinks_with_more_data():
    rng = np.random.default_rng(1)
    small, large = rng.normal(2.0, 1.0, 20), rng.normal(2.0, 1.0, 2000)
    m, lo, hi = mean_ci(np.append(small, np.nan))
    assert m == pytest.approx(small.mean()) and lo < m < hi
    _, lo2, hi2 = mean_ci(large)
    assert hi2 - lo2 < (hi - lo) / 4  # width ~ 1/sqrt(n): 10x the data -> ~1/10 the width
    assert lo2 < 2.0 < hi2
    assert all(np.isnan(mean_ci([])))
    assert mean_ci([3.0]) == (3.0, 3.0, 3.0)


def test_family_tables_are_ordered_by_size_and_must_be_in_the_learning_table(tmp_path):
    learning = pd.DataFrame({"model": ["big", "small"], "parameters": [100, 10]})
    paths = []
    for model in ("big", "small"):
        path = tmp_path / "scores" / model / "ekfac" / "pairwise.parquet"
        write_parquet(pd.DataFrame({"query_id": ["q"], "doc_id": ["d"], "score": [1.0]}), path,
                      metadata={"model": model})
        paths.append(path)
    assert list(model_sizes(learning).index) == ["small", "big"]
    assert list(load_family_tables(paths, learning, columns=["score"])) == ["small", "big"]
    with pytest.raises(ValueError, match=r"\['big'\] have scores but no row"):
        load_family_tables(paths, learning[learning.model == "small"])
