"""Influence on fewer parameters against references computed here with numpy and scipy on small hand-made tables."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from influence_study.analyses.fewer_parameters import (agreement_table, restricted_scores, restriction_layers,
                                                       row_pearson, summarise, top_k_overlap, verdicts)
from influence_study.stages.fewer_parameters import run
from influence_study.study.io import write_parquet


def _table(layers_by_query: dict, doc_ids=None) -> pd.DataFrame:
    """Long pairwise table from ``{query: [n_docs, L] layer scores}`` (``score`` = sum of the layers), rows shuffled
    so that nothing relies on the table's order."""
    rows = []
    for query, layers in layers_by_query.items():
        layers = np.asarray(layers, dtype=np.float64)
        ids = doc_ids or [f"d{i:02d}" for i in range(len(layers))]
        for doc, values in zip(ids, layers):
            rows.append({"query_id": query, "doc_id": doc, "score": values.sum(),
                         **{f"layer_{i}": v for i, v in enumerate(values)}})
    frame = pd.DataFrame(rows)
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def _reference_overlap(restricted, full, ids, k):
    """|top-k(restricted) ∩ top-k(full)| / k by Python sorting, ties broken by id."""
    def top(values):
        return {i for _, i in sorted(zip(-np.asarray(values), ids))[:k]}
    return len(top(restricted) & top(full)) / k


def test_restriction_layers_by_hand():
    assert restriction_layers(4, "last_layer") == [3]
    assert restriction_layers(4, "upper_half") == [2, 3]
    assert restriction_layers(5, "upper_half") == [2, 3, 4]
    assert restriction_layers(2, "upper_half") == [1]
    assert restriction_layers(3, "first_layer") == [0]
    with pytest.raises(ValueError, match="restriction"):
        restriction_layers(3, "middle")
    layers = np.arange(12.0).reshape(1, 3, 4)
    np.testing.assert_allclose(restricted_scores(layers, "upper_half"), [[2 + 3, 6 + 7, 10 + 11]])


def test_row_pearson_matches_scipy_and_handles_constant_and_missing_rows():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    b[1] = 3 * a[1] + 2  # perfectly correlated
    b[2] = -a[2]
    a[3] = 1.0  # constant: undefined
    a[4, :10] = np.nan  # missing entries are left out
    r = row_pearson(a, b)
    for row in (0, 1, 2):
        assert r[row] == pytest.approx(stats.pearsonr(a[row], b[row])[0])
    assert r[1] == pytest.approx(1.0) and r[2] == pytest.approx(-1.0)
    assert np.isnan(r[3])
    assert r[4] == pytest.approx(stats.pearsonr(a[4, 10:], b[4, 10:])[0])


def test_top_k_overlap_against_sorted_reference_with_ties():
    rng = np.random.default_rng(1)
    full = rng.integers(0, 6, size=(30, 25)).astype(float)  # many ties: they must fall by document order
    restricted = full + rng.integers(-2, 3, size=full.shape)
    ids = [f"d{i:02d}" for i in range(full.shape[1])]
    for k in (1, 3, 7):
        got = top_k_overlap(restricted, full, k)
        want = [_reference_overlap(restricted[q], full[q], ids, k) for q in range(full.shape[0])]
        np.testing.assert_allclose(got, want)


def test_ties_are_broken_by_doc_id():
    # full: d0 > (d1 = d2 = d3); restricted: every score tied -> its top 2 is d0, d1 by id
    full = np.array([[5.0, 1.0, 1.0, 1.0]])
    assert top_k_overlap(np.zeros_like(full), full, 2)[0] == pytest.approx(1.0)
    assert top_k_overlap(np.array([[0.0, 0.0, 1.0, 1.0]]), full, 2)[0] == pytest.approx(0.0)


def test_agreement_table_against_independent_references():
    rng = np.random.default_rng(2)
    n_docs, k = 12, 3
    same = np.zeros((n_docs, 3))
    same[:, 2] = rng.normal(size=n_docs)  # all influence in the last layer: the last layer *is* the full score
    mixed = rng.normal(size=(n_docs, 3))
    frame = _table({"q-same": same, "q-mixed": mixed})
    queries = pd.DataFrame({"query_id": ["q-same", "q-mixed"], "analysis": ["facts", "math"]})
    table = agreement_table(frame, "m", queries, k).set_index(["query_id", "restriction"])
    assert table.loc[("q-same", "last_layer"), "pearson"] == pytest.approx(1.0)
    assert table.loc[("q-same", "last_layer"), "overlap"] == pytest.approx(1.0)
    assert np.isnan(table.loc[("q-same", "first_layer"), "pearson"])  # layer 0 is all zeros: no correlation
    ids = [f"d{i:02d}" for i in range(n_docs)]
    full = mixed.sum(axis=1)
    for restriction, columns in (("last_layer", [2]), ("upper_half", [1, 2]), ("first_layer", [0])):
        part = mixed[:, columns].sum(axis=1)
        row = table.loc[("q-mixed", restriction)]
        assert row["pearson"] == pytest.approx(stats.pearsonr(part, full)[0])
        assert row["overlap"] == pytest.approx(_reference_overlap(part, full, ids, k))
        assert row["analysis"] == "math" and row["n_layers"] == 3 and row["n_docs"] == n_docs and row["k"] == k


def test_a_single_layer_model_is_not_measured():
    frame = _table({"q": np.arange(5.0)[:, None]})
    assert agreement_table(frame, "one", pd.DataFrame({"query_id": ["q"], "analysis": ["facts"]}), 2).empty
    statistics = {"models": summarise(pd.DataFrame(columns=["model", "query_id", "analysis", "restriction",
                                                            "pearson", "overlap"]), {"one": 1})}
    assert statistics["models"]["one"]["measured"] is False
    agree, breaks = verdicts(statistics)
    assert agree.verdict == breaks.verdict == "not measured"
    assert "single-layer models not measured: one" in agree.measured


def test_summarise_means_over_groups():
    per_query = pd.DataFrame({
        "model": "m", "query_id": ["a", "b", "c", "d"] * 3,
        "analysis": ["cross_lingual", "code", "facts", "roleplay"] * 3,
        "restriction": np.repeat(["last_layer", "upper_half", "first_layer"], 4),
        "pearson": np.linspace(0.1, 1.0, 12), "overlap": [0.2, 0.4, 0.9, 0.0] * 3})
    last = summarise(per_query, {"m": 2})["m"]["restrictions"]["last_layer"]
    assert last["layers"] == [1]
    assert last["overlap"]["all"]["mean"] == pytest.approx(np.mean([0.2, 0.4, 0.9, 0.0]))
    assert last["overlap"]["abstract"]["mean"] == pytest.approx(0.3)
    assert last["overlap"]["abstract"]["queries"] == 2
    assert last["overlap"]["concrete"]["mean"] == pytest.approx(0.9)
    assert last["pearson"]["all"]["mean"] == pytest.approx(np.linspace(0.1, 1.0, 12)[:4].mean())
    assert last["overlap"]["all"]["low"] <= last["overlap"]["all"]["mean"] <= last["overlap"]["all"]["high"]


def _model(pearson, overlap, abstract, concrete, n_layers=2):
    def interval(mean, queries=5):
        return {"mean": mean, "low": mean, "high": mean, "queries": queries}
    measures = {"pearson": {"all": interval(pearson), "abstract": interval(pearson), "concrete": interval(pearson)},
                "overlap": {"all": interval(overlap), "abstract": interval(abstract), "concrete": interval(concrete)}}
    return {"n_layers": n_layers, "measured": n_layers >= 2,
            "restrictions": {r: {"layers": [n_layers - 1], **measures}
                             for r in ("last_layer", "upper_half", "first_layer")}}


def test_verdicts_follow_the_fixed_checks():
    good = {"models": {"s": _model(0.95, 0.8, 0.5, 0.7), "l": _model(0.9, 0.5, 0.4, 0.6, n_layers=4)}}
    agree, breaks = verdicts(good)
    assert agree.verdict == "replicated" and breaks.verdict == "replicated"
    assert list(agree.checks) == ["s: mean last-layer Pearson ≥ 0.9", "s: mean last-layer top-k overlap ≥ 50%",
                                  "l: mean last-layer Pearson ≥ 0.9", "l: mean last-layer top-k overlap ≥ 50%"]
    bad = {"models": {"s": _model(0.89, 0.49, 0.7, 0.7), "l": _model(0.5, 0.2, 0.8, 0.1, n_layers=4)}}
    agree, breaks = verdicts(bad)
    assert agree.verdict == "not replicated" and breaks.verdict == "not replicated"  # equal overlaps: not lower
    mixed = {"models": {"s": _model(0.95, 0.3, 0.2, 0.3), "one": _model(1.0, 1.0, 1.0, 1.0, n_layers=1)}}
    agree, breaks = verdicts(mixed)
    assert agree.verdict == "mixed" and breaks.verdict == "replicated"
    assert all(not name.startswith("one:") for name in agree.checks)
    no_abstract = {"models": {"s": _model(0.95, 0.8, float("nan"), 0.7)}}
    assert verdicts(no_abstract)[1].verdict == "not measured"


def test_run_orders_models_by_size_and_writes_the_tables(tmp_path):
    rng = np.random.default_rng(4)
    n_docs = 8
    queries = pd.DataFrame({"query_id": ["q-math", "q-fact", "q-cross"],
                            "analysis": ["math", "facts", "cross_lingual"]})
    paths = []
    layers = {"big": 3, "tiny": 2, "flat": 1}
    for model, n_layers in layers.items():
        values = {q: rng.normal(size=(n_docs, n_layers)) for q in queries["query_id"]}
        if model == "tiny":
            values["q-fact"][:, 0] = 0.0  # the last layer is the full score: overlap 1 for the concrete query
        frame = _table(values).astype({"query_id": "category", "doc_id": "category"})
        frame["score_norm"], frame["rescored"] = frame["score"], False
        path = tmp_path / model / "ekfac" / "pairwise.parquet"
        write_parquet(frame, path, metadata={"model": model})
        paths.append(str(path))
    write_parquet(pd.DataFrame({"model": ["big", "tiny", "flat"], "parameters": [3000, 2000, 1000]}),
                  tmp_path / "learning.parquet")
    write_parquet(queries, tmp_path / "queries.parquet")
    out = tmp_path / "out"
    run({"seed": 0, "analyses": {"fewer_parameters": {"top_k": 2}}}, paths, str(tmp_path / "learning.parquet"),
        str(tmp_path / "queries.parquet"), per_query=str(out / "pq.parquet"), by_family=str(out / "bf.parquet"),
        summary=str(out / "s.json"))
    summary = json.loads((out / "s.json").read_text())
    models = summary["statistics"]["models"]
    assert list(models) == ["flat", "tiny", "big"]
    assert models["flat"]["measured"] is False and models["tiny"]["measured"] is True
    assert models["tiny"]["layer_sum_error"] < 1e-6
    per_query = pd.read_parquet(out / "pq.parquet")
    assert list(dict.fromkeys(per_query["model"])) == ["tiny", "big"]
    assert len(per_query) == 2 * 3 * 3
    row = per_query[(per_query["model"] == "tiny") & (per_query["query_id"] == "q-fact")
                    & (per_query["restriction"] == "last_layer")]
    assert row["overlap"].item() == 1.0 and row["pearson"].item() == pytest.approx(1.0)
    by_family = pd.read_parquet(out / "bf.parquet")
    assert len(by_family) == 2 * 3 * 3 * 2  # models x families x restrictions x measures
    assert [f["analysis"] for f in summary["findings"]] == ["Fewer parameters"] * 2
    checks = summary["findings"][0]["checks"]
    assert set(checks) == {f"{m}: mean last-layer {w}" for m in ("tiny", "big")
                           for w in ("Pearson ≥ 0.9", "top-k overlap ≥ 50%")}


def test_figure_draws_the_grid(tmp_path):
    from influence_study.plots.fewer_parameters import plot_fewer_parameters

    rows = [{"model": m, "analysis": f, "restriction": r, "measure": x, "mean": 0.7, "low": 0.6, "high": 0.8,
             "queries": 3} for m in ("s", "l") for f in ("facts", "math") for r in ("last_layer", "upper_half",
                                                                                     "first_layer")
            for x in ("pearson", "overlap")]
    fig = plot_fewer_parameters(pd.DataFrame(rows))
    assert len(fig.axes) == 6
    empty = plot_fewer_parameters(pd.DataFrame(columns=list(rows[0])))
    assert any("not measured" in t.get_text() for t in empty.axes[0].texts)


def _per_query_v2(pearson, overlap_abstract, overlap_concrete):
    n = len(pearson)
    families = ["math"] * (n // 2) + ["facts"] * (n - n // 2)
    overlap = np.concatenate([overlap_abstract, overlap_concrete])
    return pd.DataFrame({"model": "m", "query_id": [f"q{i}" for i in range(n)] * 3, "analysis": families * 3,
                         "restriction": np.repeat(["last_layer", "upper_half", "first_layer"], n),
                         "pearson": np.tile(pearson, 3), "overlap": np.tile(overlap, 3)})


def test_v2_intervals_over_queries_positive_and_negative_controls():
    rng = np.random.default_rng(0)
    # positive control: the last layer agrees closely; abstract queries share clearly less of the top k
    pearson = 0.97 + 0.01 * rng.normal(size=20)
    table = _per_query_v2(pearson, 0.6 + 0.05 * rng.normal(size=10), 0.9 + 0.03 * rng.normal(size=10))
    agree, breaks = verdicts({"models": summarise(table, {"m": 4})})
    assert agree.verdict_v2 == "replicated" and breaks.verdict_v2 == "replicated"
    assert len(agree.interval_checks) == 2 and "20 queries" in agree.interval_checks[0]["name"]
    assert breaks.interval_checks[0]["high"] < 0
    # negative control: agreement near the thresholds' other side, and the same overlap in both groups
    same = 0.4 + 0.05 * rng.normal(size=10)
    table = _per_query_v2(0.5 + 0.05 * rng.normal(size=20), same, same)
    agree, breaks = verdicts({"models": summarise(table, {"m": 4})})
    assert agree.verdict_v2 == "not replicated" and breaks.verdict_v2 == "inconclusive"
