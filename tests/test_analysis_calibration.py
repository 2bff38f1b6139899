"""Magnitude calibration against hand-computed values: the targets and the control chosen from small score tables,
predicted and measured changes, ratios with their noise interval, the pooled Pearson and slope (numpy's), the NLL
shares; the step on a linear world (measured = predicted exactly); and a real tiny retrain with added copies of a
document, which must raise that document's own log-likelihood more than the control's copies do (a positive control
of the instrument), while the unmodified retrain reproduces the model trained by hand."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from influence_study.analyses.calibration import (
    CONTROL, TARGET, UNMODIFIED, calibration_points, choose_control, choose_targets, nll_table, plan_table, pooled_fit,
    retrain_names, share_table, summarise_shares, target_table, verdicts)
from influence_study.stages.calibration import make_plan, retrain_with_copies, run
from influence_study.study.config import validate_config
from influence_study.findings import MIXED, NOT_MEASURED, NOT_REPLICATED, REPLICATED
from influence_study.study.io import write_parquet


def long(scores: dict) -> pd.DataFrame:
    """{query: {doc: score_norm}} -> a long pairwise table."""
    return pd.DataFrame([{"query_id": q, "doc_id": d, "score_norm": v} for q, row in scores.items()
                         for d, v in row.items()])


SCORES = {  # top-1: q0 -> a, q1 -> a (again), q2 -> none positive, q3 -> c
    "q0": {"a": 0.3, "b": 0.1, "c": -0.2},
    "q1": {"a": 0.5, "b": 0.05, "c": 0.1},
    "q2": {"a": -0.1, "b": -0.3, "c": -0.2},
    "q3": {"a": 0.0, "b": 0.01, "c": 0.2},
}


def test_targets_are_distinct_positive_top_documents_and_too_many_is_an_error():
    targets = choose_targets(long(SCORES), ["q0", "q1", "q2", "q3"], 2, seed=0)
    assert sorted(targets["doc_id"]) == ["a", "c"]
    assert list(targets["target"]) == [0, 1]
    for row in targets.itertuples():  # each target is its query's top document, with its score
        assert row.score_norm == SCORES[row.query_id][row.doc_id] == max(SCORES[row.query_id].values())
    assert set(targets["query_id"]) <= {"q0", "q1", "q3"}
    pd.testing.assert_frame_equal(targets, choose_targets(long(SCORES), ["q3", "q2", "q1", "q0"], 2, seed=0))
    with pytest.raises(ValueError, match="analyses.calibration.targets"):
        choose_targets(long(SCORES), ["q0", "q1", "q2", "q3"], 3, seed=0)


def test_control_is_the_document_with_the_smallest_largest_absolute_score():
    # largest |score|: a 0.5, b 0.3, c 0.2 -> c; without c (a target) -> b
    assert choose_control(long(SCORES), exclude=[], seed=0) == "c"
    assert choose_control(long(SCORES), exclude=["c"], seed=0) == "b"
    with pytest.raises(ValueError, match="control"):
        choose_control(long(SCORES), exclude=["a", "b", "c"], seed=0)


def test_plan_and_retrain_names():
    targets = pd.DataFrame({"target": [0, 1], "query_id": ["q0", "q3"], "doc_id": ["a", "c"],
                            "score_norm": [0.3, 0.2]})
    plan = plan_table(targets, "b", copies=5)
    assert list(plan["retrain"]) == retrain_names(2) == [UNMODIFIED, CONTROL, "target-0", "target-1"]
    assert list(plan["copies"]) == [0, 5, 5, 5] and list(plan["doc_id"].iloc[1:]) == ["b", "a", "c"]
    assert pd.isna(plan["doc_id"].iloc[0]) and pd.isna(plan["query_id"].iloc[1])
    assert list(plan["kind"]) == [UNMODIFIED, CONTROL, TARGET, TARGET]


def hand_world():
    """Two queries, one target (doc a, query q0), control b, 2 copies. Scores: q0 (a 0.3, b 0.05), q1 (a -0.1,
    b 0.0); log p: unmodified (-2, -1), control (-2.1, -1.2), target-0 (-1.6, -1.5)."""
    plan = plan_table(pd.DataFrame({"target": [0], "query_id": ["q0"], "doc_id": ["a"], "score_norm": [0.3]}),
                      "b", copies=2)
    pairwise = long({"q0": {"a": 0.3, "b": 0.05, "z": 9.0}, "q1": {"a": -0.1, "b": 0.0, "z": 9.0}})
    measurements = pd.DataFrame({"retrain": ["unmodified"] * 2 + ["control"] * 2 + ["target-0"] * 2,
                                 "query_id": ["q0", "q1"] * 3, "logprob": [-2.0, -1.0, -2.1, -1.2, -1.6, -1.5]})
    return plan, pairwise, measurements


def test_points_by_hand():
    plan, pairwise, measurements = hand_world()
    points = calibration_points(plan, measurements, pairwise).set_index("query_id")
    # predicted = 2 x (s[q, a] - s[q, b]); measured = target - control; vs unmodified = target - unmodified
    assert points.loc["q0", "predicted"] == pytest.approx(2 * (0.3 - 0.05))
    assert points.loc["q1", "predicted"] == pytest.approx(2 * (-0.1 - 0.0))
    assert points.loc["q0", "measured"] == pytest.approx(-1.6 + 2.1)
    assert points.loc["q1", "measured"] == pytest.approx(-1.5 + 1.2)
    assert points.loc["q0", "measured_vs_unmodified"] == pytest.approx(0.4)
    assert points["own"].to_dict() == {"q0": True, "q1": False}
    assert (points["target_doc"] == "a").all() and (points["retrain"] == "target-0").all()


def test_target_ratio_and_noise_interval_by_hand():
    # own query: predicted 0.5, measured 0.4 -> ratio 0.8; residuals of the others: 0.1, -0.1, 0.3 -> sd 0.2
    points = pd.DataFrame({"retrain": "target-0", "target_doc": "a", "query_id": ["q0", "q1", "q2", "q3"],
                           "own": [True, False, False, False], "copies": 5,
                           "predicted": [0.5, 0.0, 0.1, 0.2], "measured": [0.4, 0.1, 0.0, 0.5]})
    row = target_table(points).iloc[0]
    assert row["ratio"] == pytest.approx(0.8) and row["noise_sd"] == pytest.approx(0.2)
    z = 1.959963984540054
    assert row["ratio_low"] == pytest.approx((0.4 - z * 0.2) / 0.5)
    assert row["ratio_high"] == pytest.approx((0.4 + z * 0.2) / 0.5)
    assert row["per_copy_predicted"] == pytest.approx(0.1) and row["per_copy_measured"] == pytest.approx(0.08)


def test_pooled_pearson_and_slope_match_numpy_and_an_exact_line_has_a_zero_width_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=60)
    y = 0.7 * x + rng.normal(scale=0.5, size=60)
    points = pd.DataFrame({"query_id": [f"q{i % 20}" for i in range(60)], "predicted": x, "measured": y})
    fit = pooled_fit(points, resamples=500)
    assert fit["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], rel=1e-10)
    assert fit["slope"] == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-10)
    assert fit["pairs"] == 60 and fit["queries"] == 20
    assert fit["pearson_low"] < fit["pearson"] < fit["pearson_high"]
    assert fit["slope_low"] < 0.7 < fit["slope_high"]
    line = pooled_fit(points.assign(measured=2.0 * x + 1.0), resamples=200)
    assert line["slope"] == pytest.approx(2.0) and line["pearson"] == pytest.approx(1.0)
    assert line["slope_low"] == pytest.approx(2.0) and line["slope_high"] == pytest.approx(2.0)


def test_nll_shares_by_hand():
    # model m: q0 top 0.8 > NLL 0.5 (exceeds); q1 top 0.2 < NLL 3; q2 top 1.5 > 1 nat but < NLL 4
    pairwise = {"m": long({"q0": {"a": 0.8, "b": 0.1}, "q1": {"a": 0.2, "b": -1.0}, "q2": {"a": 0.0, "b": 1.5}})}
    evaluations = {"m": pd.DataFrame({"model": "m", "query_id": ["q0", "q1", "q2"], "logprob": [-0.5, -3.0, -4.0]})}
    families = pd.Series({"q0": "facts", "q1": "facts", "q2": "math"})
    table = nll_table(pairwise, evaluations, families).set_index("query_id")
    assert table["top_doc"].to_dict() == {"q0": "a", "q1": "a", "q2": "b"}
    assert table["exceeds_nll"].to_dict() == {"q0": True, "q1": False, "q2": False}
    assert table["above_1_nat"].to_dict() == {"q0": False, "q1": False, "q2": True}
    assert table.loc["q0", "top_to_nll"] == pytest.approx(1.6) and table.loc["q2", "nll"] == pytest.approx(4.0)
    shares = summarise_shares(share_table(table.reset_index(), resamples=200))["m"]
    assert shares["all"]["share_exceeds_nll"] == pytest.approx(1 / 3) and shares["all"]["queries"] == 3
    assert shares["facts"]["share_exceeds_nll"] == pytest.approx(0.5)
    assert shares["math"]["share_above_1_nat"] == pytest.approx(1.0)
    assert shares["all"]["top_to_nll_median"] == pytest.approx(0.375)  # median of 1.6, 0.2/3, 0.375
    assert shares["all"]["share_exceeds_nll_low"] <= 1 / 3 <= shares["all"]["share_exceeds_nll_high"]
    with pytest.raises(ValueError, match="no evaluation table"):
        nll_table(pairwise, {}, families)


def statistics_with(ratio, slope, shares):
    return {"model": "m", "targets": 4, "copies": 5, "ratio_median": ratio, "ratio_median_low": ratio,
            "ratio_median_high": ratio, "slope": slope, "slope_low": slope, "slope_high": slope, "pearson": 0.5,
            "pearson_low": 0.4, "pearson_high": 0.6, "pairs": 40, "control_change_sd": 0.1,
            "reproduction_max_abs_diff": 0.0,
            "nll_share": {m: {"all": {"share_exceeds_nll": v, "share_exceeds_nll_low": v,
                                      "share_exceeds_nll_high": v}} for m, v in shares.items()}}


def test_verdicts_follow_the_fixed_checks():
    calibrated, possible = verdicts(statistics_with(1.2, 0.9, {"s": 0.0, "l": 0.0}))
    assert calibrated.verdict == REPLICATED and possible.verdict == REPLICATED
    calibrated, possible = verdicts(statistics_with(0.1, 0.9, {"s": 0.0, "l": 0.7}))
    assert calibrated.verdict == MIXED and possible.verdict == MIXED
    calibrated, possible = verdicts(statistics_with(3.0, 0.05, {"l": 0.7}))
    assert calibrated.verdict == NOT_REPLICATED and possible.verdict == NOT_REPLICATED
    calibrated, possible = verdicts(statistics_with(float("nan"), float("nan"), {}))
    assert calibrated.verdict == NOT_MEASURED and possible.verdict == NOT_MEASURED


def test_v2_verdicts_need_the_intervals_inside_the_bounds():
    calibrated, possible = verdicts(statistics_with(1.2, 0.9, {"s": 0.0, "l": 0.01}))
    assert calibrated.verdict_v2 == REPLICATED and possible.verdict_v2 == REPLICATED
    wide = statistics_with(1.2, 0.9, {"l": 0.7})
    wide.update(ratio_median_low=0.2, ratio_median_high=4.0)  # an interval wider than the band decides nothing
    calibrated, possible = verdicts(wide)
    assert calibrated.verdict_v2 == MIXED and possible.verdict_v2 == NOT_REPLICATED


def test_run_on_a_linear_world(tmp_path):
    """Measured changes that are exactly copies x score_norm differences: ratio 1, slope 1, Pearson 1; the
    unmodified retrain equal to the evaluation: reproduction 0; the NLL share of every model by hand."""
    rng = np.random.default_rng(3)
    queries = pd.DataFrame({"query_id": [f"q{i}" for i in range(12)], "analysis": ["facts"] * 8 + ["math"] * 4,
                            "prompt": "p", "completion": "c"})
    docs = [f"d{j}" for j in range(30)]
    learning = pd.DataFrame({"model": ["small", "large"], "parameters": [100, 1000]})
    write_parquet(learning, tmp_path / "learning.parquet")
    write_parquet(queries, tmp_path / "queries.parquet")
    scores, evaluations, pairwise_paths, evaluation_paths = {}, {}, [], []
    for model in ("small", "large"):
        matrix = rng.normal(scale=0.05, size=(12, 30))
        matrix[np.arange(12), np.arange(12)] = 0.5 + 0.1 * np.arange(12)  # q_i's top document is d_i
        scores[model] = matrix
        frame = pd.DataFrame({"query_id": np.repeat(queries["query_id"], 30).to_numpy(),
                              "doc_id": np.tile(docs, 12), "score_norm": matrix.ravel()})
        path = tmp_path / "scores" / model / "ekfac" / "pairwise.parquet"
        write_parquet(frame, path, metadata={"model": model, "strategy": "ekfac"})
        pairwise_paths.append(str(path))
        # NLL 1.0 for every query: queries with top score above 1 exceed it (none for small; large scaled below)
        evaluations[model] = pd.DataFrame({"model": model, "query_id": queries["query_id"], "logprob": -1.0})
        path = tmp_path / "evaluation" / model / "queries.parquet"
        write_parquet(evaluations[model], path)
        evaluation_paths.append(str(path))
    config = validate_config({"seed": 0, "models": [{"name": "small"}, {"name": "large"}],
                              "analyses": {"calibration": {"targets": 3, "copies": 5, "resamples": 200}}})
    plan = make_plan(config, pairwise_paths[0], str(tmp_path / "queries.parquet"), str(tmp_path / "plan.parquet"),
                     targets=3, copies=5, family="facts")
    assert list(plan["retrain"]) == retrain_names(3)
    assert plan.loc[plan["kind"] == TARGET, "query_id"].isin([f"q{i}" for i in range(8)]).all()
    target_docs = plan.loc[plan["kind"] == TARGET, "doc_id"].tolist()
    assert [f"d{int(q[1:])}" for q in plan.loc[plan["kind"] == TARGET, "query_id"]] == target_docs
    control = plan.loc[plan["kind"] == CONTROL, "doc_id"].iloc[0]
    assert control not in target_docs

    s = pd.DataFrame(scores["small"], index=queries["query_id"], columns=docs)
    base = pd.Series(-1.0, index=queries["query_id"])
    measured_paths, doc_paths = [], []
    for row in plan.itertuples():
        logprob = base.copy()
        if row.kind == CONTROL:
            logprob = base + 0.01  # a common shift that the target-minus-control difference removes
        elif row.kind == TARGET:
            logprob = base + 0.01 + 5 * (s[row.doc_id] - s[control])
        meta = {"retrain": row.retrain, "seconds": 2.0, "documents": 30 + row.copies, "settings": {"steps": 7},
                "valid_loss": 3.0}
        path = tmp_path / "calibration" / row.retrain / "measurements.parquet"
        write_parquet(pd.DataFrame({"retrain": row.retrain, "query_id": base.index, "logprob": logprob.to_numpy()}),
                      path, metadata=meta)
        measured_paths.append(str(path))
        gain = 2.0 if row.kind == TARGET else 0.0
        path = tmp_path / "calibration" / row.retrain / "documents.parquet"
        planned = plan["doc_id"].dropna().tolist()
        write_parquet(pd.DataFrame({"retrain": row.retrain, "doc_id": planned,
                                    "logprob": [-10.0 + (gain if d == row.doc_id else 0.0) for d in planned],
                                    "n_tokens": 5}), path, metadata=meta)
        doc_paths.append(str(path))
    names = {k: str(tmp_path / "out" / f"{k}.parquet") for k in ("points", "targets", "retrains", "nll", "shares")}
    run(config, str(tmp_path / "plan.parquet"), measured_paths, doc_paths, pairwise_paths[::-1], evaluation_paths,
        str(tmp_path / "learning.parquet"), str(tmp_path / "queries.parquet"), **names,
        summary=str(tmp_path / "out" / "calibration.json"))
    summary = json.loads((tmp_path / "out" / "calibration.json").read_text())
    stats = summary["statistics"]
    assert stats["model"] == "small" and stats["targets"] == 3 and stats["copies"] == 5
    assert stats["ratio_median"] == pytest.approx(1.0) and stats["slope"] == pytest.approx(1.0)
    assert stats["pearson"] == pytest.approx(1.0) and stats["pairs"] == 3 * 12
    assert stats["reproduction_max_abs_diff"] == 0.0
    assert stats["control_change_mean"] == pytest.approx(0.01) and stats["control_change_sd"] == pytest.approx(0.0)
    assert stats["self_logprob_gain_median"] == pytest.approx(2.0)
    assert stats["retrain_seconds_total"] == pytest.approx(2.0 * 5)
    assert list(stats["nll_share"]) == ["small", "large"]  # ordered by size
    top = {m: scores[m].max(axis=1) for m in scores}
    for model in ("small", "large"):
        assert stats["nll_share"][model]["all"]["share_exceeds_nll"] == pytest.approx(np.mean(top[model] > 1.0))
        assert stats["nll_share"][model]["facts"]["queries"] == 8
    assert [f["verdict"] for f in summary["findings"]][0] == REPLICATED
    per_target = pd.read_parquet(names["targets"])
    np.testing.assert_allclose(per_target["ratio"], 1.0)
    assert set(pd.read_parquet(names["points"])["analysis"]) == {"facts", "math"}


TEXTS = [f"The capital of Land{i} is City{i % 7}. It is a quiet place." for i in range(40)]
TARGET_TEXT = "Zorblat quixes the vendral moon with seven grey lanterns."
CONTROL_TEXT = "Pemberly hums under a copper sky near the old harbour gate."


def test_added_copies_raise_the_documents_own_likelihood_and_the_unmodified_retrain_reproduces(tmp_path):
    """Positive control of the instrument: a tiny model retrained with 20 added copies of a document gives that
    document a higher log-likelihood than the control retrain (20 copies of another document) does, and vice
    versa; the unmodified retrain equals the model trained by hand on the same documents."""
    from transformers import AutoTokenizer

    from influence_study.stages.retrain import query_logprobs
    from influence_study.study.config import training_settings
    from influence_study.stages.models import train_from_scratch
    from influence_study.corpus.tokenizer import save_tokenizer, train_tokenizer

    config = validate_config({
        "seed": 0, "device": "cpu", "models": [{"name": "tiny", "architecture": "gpt2", "n_layer": 1,
                                                "d_model": 16, "n_head": 2}],
        "training": {"seq_len": 32, "batch_size": 4, "steps": 30, "warmup_steps": 2, "eval_every": 10,
                     "learning_rate": 1e-2}})
    texts = TEXTS[:34] + [TARGET_TEXT, CONTROL_TEXT] + TEXTS[34:]
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts,
                         "split": ["train"] * 36 + ["valid"] * 6})
    queries = pd.DataFrame({"query_id": ["a", "b"], "prompt": ["The capital of Land3 is", "Zorblat quixes the"],
                            "completion": [" City3.", " vendral moon"], "analysis": "facts"})
    plan = plan_table(pd.DataFrame({"target": [0], "query_id": ["b"], "doc_id": ["d34"], "score_norm": [0.1]}),
                      "d35", copies=20)
    paths = {name: str(tmp_path / f"{name}.parquet") for name in ("documents", "queries", "plan")}
    docs.to_parquet(paths["documents"]), queries.to_parquet(paths["queries"]), plan.to_parquet(paths["plan"])
    tokenizer_dir = tmp_path / "tokenizer"
    save_tokenizer(train_tokenizer(texts, vocab_size=300, progress=False), tokenizer_dir)

    torch.set_num_threads(1)
    out = {}
    for retrain in (UNMODIFIED, CONTROL, "target-0"):
        retrain_with_copies(config, "tiny", retrain, paths["documents"], str(tokenizer_dir), paths["queries"],
                            paths["plan"], str(tmp_path / retrain / "m.parquet"), str(tmp_path / retrain / "d.parquet"),
                            progress=False)
        out[retrain] = pd.read_parquet(tmp_path / retrain / "d.parquet").set_index("doc_id")["logprob"]
    assert list(out[CONTROL].index) == ["d35", "d34"]  # the planned documents, control first
    target_gain = out["target-0"]["d34"] - out[CONTROL]["d34"]
    control_gain = out[CONTROL]["d35"] - out["target-0"]["d35"]
    assert target_gain > 1.0 and control_gain > 1.0  # nats: 20 extra copies are learned
    # ... and each retrain raises its own document above the unmodified model, which has seen one copy
    assert out["target-0"]["d34"] > out[UNMODIFIED]["d34"] and out[CONTROL]["d35"] > out[UNMODIFIED]["d35"]

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    settings = training_settings(config, "tiny")
    model, _, _ = train_from_scratch(config, "tiny", docs, tokenizer, settings, "cpu", progress=False)
    reference = query_logprobs(config, model, tokenizer, queries, "cpu")
    stored = pd.read_parquet(tmp_path / UNMODIFIED / "m.parquet")
    assert list(stored["retrain"]) == [UNMODIFIED] * 2
    np.testing.assert_array_equal(stored["logprob"].to_numpy(), reference["logprob"].to_numpy())
    # with training.epochs, the copies do not add steps: the retrain takes the original model's step count
    by_epochs = validate_config({**{k: config[k] for k in ("seed", "device", "models")},
                                 "training": {**config["training"], "epochs": 2}})
    retrain_with_copies(by_epochs, "tiny", "target-0", paths["documents"], str(tokenizer_dir), paths["queries"],
                        paths["plan"], str(tmp_path / "e.parquet"), str(tmp_path / "f.parquet"), progress=False)
    from influence_study.study.io import read_parquet_metadata
    from influence_study.corpus.tokenizer import encode_documents
    from influence_study.models.training import steps_for

    original = steps_for(training_settings(by_epochs, "tiny"),
                         encode_documents(tokenizer, docs.loc[docs["split"] == "train", "text"]))
    assert read_parquet_metadata(tmp_path / "e.parquet")["settings"]["steps"] == original
    with pytest.raises(ValueError, match="not in"):
        retrain_with_copies(config, "tiny", "target-5", paths["documents"], str(tokenizer_dir), paths["queries"],
                            paths["plan"], str(tmp_path / "x.parquet"), str(tmp_path / "y.parquet"), progress=False)
