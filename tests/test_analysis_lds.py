"""The linear datamodeling score against brute force: scipy's Spearman per query, explicit loops over subsets, a
linear datamodel whose measurements are exact sums of known contributions (LDS = 1) and unrelated scores (LDS ~ 0);
the subsets drawn deterministically; and the subset retrain on a tiny model against a hand-assembled reference."""

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from influence_study.analyses.lds import (
    draw_subsets, family_table, lds_tables, predicted_changes, row_spearman, subset_training_settings, verdicts)
from influence_study.stages.lds import lds_model, retrain_subset
from influence_study.study.config import validate_config
from influence_study.findings import MIXED, NOT_MEASURED, NOT_REPLICATED, REPLICATED


def pairwise_frame(scores: np.ndarray, query_ids, doc_ids) -> pd.DataFrame:
    """A long pairwise table (shuffled rows, categorical ids, as the scores rules write them)."""
    q, d = np.meshgrid(np.arange(len(query_ids)), np.arange(len(doc_ids)), indexing="ij")
    frame = pd.DataFrame({"query_id": pd.Categorical(np.asarray(query_ids)[q.ravel()]),
                          "doc_id": pd.Categorical(np.asarray(doc_ids)[d.ravel()]), "score": scores.ravel()})
    return frame.sample(frac=1.0, random_state=0).reset_index(drop=True)


def test_row_spearman_matches_scipy_per_row():
    rng = np.random.default_rng(0)
    a = pd.DataFrame(rng.normal(size=(30, 12)))
    b = pd.DataFrame(a.to_numpy() * 0.3 + rng.normal(size=(30, 12)))
    b.iloc[0, :4] = b.iloc[0, 4]  # ties get average ranks, as in scipy
    reference = [stats.spearmanr(a.iloc[i], b.iloc[i]).statistic for i in range(30)]
    np.testing.assert_allclose(row_spearman(a, b).to_numpy(), reference, rtol=1e-12)
    constant = b.copy()
    constant.iloc[1] = 2.0
    assert np.isnan(row_spearman(a, constant).iloc[1])


def test_predicted_changes_brute_force():
    rng = np.random.default_rng(1)
    queries, docs = ["q0", "q1", "q2"], [f"d{i}" for i in range(7)]
    scores = rng.normal(size=(3, 7))
    membership = pd.DataFrame({"subset": [0, 0, 0, 1, 1, 2], "doc_id": ["d0", "d3", "d6", "d1", "d3", "d5"]})
    predicted = predicted_changes(pairwise_frame(scores, queries, docs), membership)
    for qi, q in enumerate(queries):
        for subset, group in membership.groupby("subset"):
            expected = sum(scores[qi, docs.index(d)] for d in group["doc_id"])
            assert predicted.loc[q, subset] == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="every pair"):
        predicted_changes(pairwise_frame(scores, queries, docs).iloc[1:], membership)
    with pytest.raises(ValueError, match="without scores"):
        predicted_changes(pairwise_frame(scores, queries, docs), pd.DataFrame({"subset": [0], "doc_id": ["zz"]}))


def linear_world(n_queries=40, n_docs=60, n_subsets=20, seed=2):
    """Contributions theta (query x document) and measurements that are exactly a per-query offset plus the sum of
    theta over each subset's documents: a linear datamodel."""
    rng = np.random.default_rng(seed)
    queries, docs = [f"q{i}" for i in range(n_queries)], [f"d{i}" for i in range(n_docs)]
    theta = rng.normal(size=(n_queries, n_docs))
    membership = draw_subsets(docs, n_subsets, 0.5, seed)
    rows = []
    for subset, group in membership.groupby("subset"):
        chosen = [docs.index(d) for d in group["doc_id"]]
        for qi, q in enumerate(queries):
            rows.append({"subset": subset, "query_id": q, "logprob": -5.0 - qi + theta[qi, chosen].sum()})
    families = pd.Series(["facts" if i % 2 else "math" for i in range(n_queries)], index=queries)
    return theta, queries, docs, membership, pd.DataFrame(rows), families


def test_linear_datamodel_gives_lds_one_and_unrelated_scores_about_zero():
    theta, queries, docs, membership, measurements, families = linear_world()
    unrelated = np.random.default_rng(9).normal(size=theta.shape)
    per_query, points = lds_tables({"exact": pairwise_frame(theta, queries, docs),
                                    "unrelated": pairwise_frame(unrelated, queries, docs),
                                    "scaled": pairwise_frame(3.0 * theta + 0.0, queries, docs)},
                                   membership, measurements, families)
    exact = per_query[per_query["strategy"] == "exact"]
    np.testing.assert_allclose(exact["lds"], 1.0)
    np.testing.assert_allclose(per_query.loc[per_query["strategy"] == "scaled", "lds"], 1.0)
    noise = per_query.loc[per_query["strategy"] == "unrelated", "lds"]
    assert abs(noise.mean()) < 3 * 1 / np.sqrt(19) / np.sqrt(len(noise))  # Spearman sd under independence
    assert (per_query["analysis"] == per_query["query_id"].map(families)).all()
    # the points are the predicted sums and the measurements themselves
    one = points[(points["strategy"] == "exact") & (points["query_id"] == "q3")].sort_values("subset")
    assert np.corrcoef(one["predicted"], one["measured"])[0, 1] == pytest.approx(1.0)
    assert len(points) == 3 * len(queries) * membership["subset"].nunique()


def test_hand_computed_lds_of_one_query():
    """Three documents with scores 1, 2, -4; subsets {a,b}, {a,c}, {b,c} predict 3, -3, -2; measured -1, -3, -4
    ranks 3 1 2 vs 3 2 1 -> Spearman 1 - 6 * (0 + 1 + 1) / (3 * 8) = 0.5."""
    pairwise = pd.DataFrame({"query_id": ["q"] * 3, "doc_id": ["a", "b", "c"], "score": [1.0, 2.0, -4.0]})
    membership = pd.DataFrame({"subset": [0, 0, 1, 1, 2, 2], "doc_id": ["a", "b", "a", "c", "b", "c"]})
    measurements = pd.DataFrame({"subset": [0, 1, 2], "query_id": "q", "logprob": [-1.0, -3.0, -4.0]})
    per_query, _ = lds_tables({"s": pairwise}, membership, measurements, pd.Series({"q": "facts"}))
    assert per_query["lds"].iloc[0] == pytest.approx(0.5)


def test_family_table_means_and_intervals():
    per_query = pd.DataFrame({"strategy": "ekfac", "query_id": list("abcdef"),
                              "analysis": ["facts"] * 4 + ["math"] * 2, "lds": [0.1, 0.3, 0.5, np.nan, -0.2, 0.0]})
    table = family_table(per_query, resamples=200).set_index("analysis")
    assert table.loc["all", "lds"] == pytest.approx(np.nanmean(per_query["lds"]))
    assert table.loc["all", "queries"] == 5
    assert table.loc["facts", "lds"] == pytest.approx(0.3) and table.loc["math", "lds"] == pytest.approx(-0.1)
    assert (table["ci_low"] <= table["lds"]).all() and (table["lds"] <= table["ci_high"]).all()


def test_subsets_are_deterministic_and_of_the_right_size():
    docs = np.array([f"d{i}" for i in range(101)])
    first, again = draw_subsets(docs, 20, 0.5, seed=3), draw_subsets(docs, 20, 0.5, seed=3)
    pd.testing.assert_frame_equal(first, again)
    sizes = first.groupby("subset").size()
    assert list(sizes.index) == list(range(20)) and (sizes == round(0.5 * 101)).all()
    assert not first.duplicated().any() and first["doc_id"].isin(docs).all()
    members = [frozenset(g["doc_id"]) for _, g in first.groupby("subset")]
    assert len(set(members)) == 20  # subsets differ from each other
    assert not draw_subsets(docs, 20, 0.5, seed=4).equals(first)
    assert (draw_subsets(docs, 3, 0.2, seed=0).groupby("subset").size() == 20).all()
    # every document is in about half of the subsets
    assert 0.3 < first["doc_id"].value_counts().reindex(docs, fill_value=0).mean() / 20 < 0.7
    with pytest.raises(ValueError, match="fraction"):
        draw_subsets(docs, 5, 1.0, seed=0)


def test_subset_training_settings_keep_the_epochs():
    settings = {"steps": 1200, "warmup_steps": 100, "eval_every": 100, "learning_rate": 3e-3, "seq_len": 128}
    scaled = subset_training_settings(settings, 0.5)
    assert scaled == {**settings, "steps": 600, "warmup_steps": 50, "eval_every": 600}
    assert settings["steps"] == 1200  # not mutated


MODELS = [{"name": "big", "architecture": "gpt2", "n_layer": 2, "d_model": 32, "n_head": 2},
          {"name": "small", "architecture": "llama", "n_layer": 1, "d_model": 16, "n_head": 2},
          {"name": "imported", "checkpoint": "org/some-model"}]


def test_lds_model_is_the_smallest_from_scratch_model_or_the_named_one():
    assert lds_model(validate_config({"models": MODELS})) == "small"
    assert lds_model(validate_config({"models": MODELS, "analyses": {"lds": {"model": "big"}}})) == "big"
    with pytest.raises(ValueError, match="checkpoint"):
        lds_model(validate_config({"models": MODELS, "analyses": {"lds": {"model": "imported"}}}))
    assert lds_model(validate_config({"models": MODELS[2:]})) is None


def statistics_with(ekfac, identity):
    entry = lambda v: {"all": {"lds": v[0], "ci_low": v[1], "ci_high": v[2], "queries": 10}}  # noqa: E731
    lds = {**({"ekfac": entry(ekfac)} if ekfac else {}), **({"identity": entry(identity)} if identity else {})}
    return {"model": "m", "subsets": 20, "fraction": 0.5, "lds": lds}


def test_verdicts_follow_the_fixed_checks():
    better, positive = verdicts(statistics_with((0.3, 0.2, 0.4), (0.1, 0.0, 0.2)))
    assert better.verdict == REPLICATED and positive.verdict == REPLICATED
    better, positive = verdicts(statistics_with((0.05, -0.02, 0.1), (0.1, 0.0, 0.2)))
    assert better.verdict == NOT_REPLICATED and positive.verdict == MIXED
    better, positive = verdicts(statistics_with((-0.1, -0.2, 0.0), None))
    assert better.verdict == NOT_MEASURED and positive.verdict == NOT_REPLICATED
    assert all(f.verdict == NOT_MEASURED for f in verdicts(statistics_with((np.nan,) * 3, (0.1, 0.0, 0.2))))


TEXTS = [f"The capital of Land{i} is City{i % 7}. It is a quiet place." for i in range(40)]


def test_retrain_subset_trains_on_the_subset_only(tmp_path):
    """The retrain step equals a model built and trained by hand on the subset's documents with the scaled
    settings (same init seed), scored on the queries."""
    from transformers import AutoTokenizer

    from influence_study.models.evaluation import completion_scores
    from influence_study.models.build import build_model, build_model_config
    from influence_study.corpus.tokenizer import encode_documents, save_tokenizer, train_tokenizer
    from influence_study.models.training import train_language_model

    config = validate_config({
        "seed": 0, "device": "cpu", "models": [{"name": "tiny", "architecture": "gpt2", "n_layer": 1,
                                                "d_model": 16, "n_head": 2}],
        "training": {"seq_len": 32, "batch_size": 4, "steps": 12, "warmup_steps": 2, "eval_every": 4},
        "analyses": {"lds": {"subsets": 3, "fraction": 0.5}}})
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(40)], "text": TEXTS,
                         "split": ["train"] * 36 + ["valid"] * 4})
    queries = pd.DataFrame({"query_id": ["a", "b"], "prompt": ["The capital of Land3 is", "The capital of Land8 is"],
                            "completion": [" City3.", " City1."]})
    paths = {name: tmp_path / f"{name}.parquet" for name in ("documents", "queries", "subsets", "measurements",
                                                             "document_losses")}
    docs.to_parquet(paths["documents"]), queries.to_parquet(paths["queries"])
    tokenizer_dir = tmp_path / "tokenizer"
    save_tokenizer(train_tokenizer(TEXTS, vocab_size=300, progress=False), tokenizer_dir)
    membership = draw_subsets(docs.loc[docs["split"] == "train", "doc_id"], 3, 0.5, seed=0)
    membership.to_parquet(paths["subsets"])

    torch.set_num_threads(1)
    frame = retrain_subset(config, "tiny", "1", str(paths["documents"]), str(tokenizer_dir), str(paths["queries"]),
                           str(paths["subsets"]), str(paths["measurements"]), str(paths["document_losses"]),
                           progress=False)

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    chosen = docs[docs["doc_id"].isin(membership.loc[membership["subset"] == 1, "doc_id"])]
    assert len(chosen) == 18
    settings = {**config["training"], "steps": 6, "warmup_steps": 1, "eval_every": 6}
    model = build_model(build_model_config(config["models"][0], len(tokenizer), 32, tokenizer.eos_token_id), seed=0)
    train_language_model(model, encode_documents(tokenizer, chosen["text"]), [], settings, tokenizer.eos_token_id,
                         seed=0, progress=False, log=lambda _: None)
    reference = completion_scores(model, tokenizer, queries["prompt"], queries["completion"], max_length=32)
    stored = pd.read_parquet(paths["measurements"])
    assert list(stored["query_id"]) == ["a", "b"] and (stored["subset"] == 1).all()
    np.testing.assert_allclose(stored["logprob"], reference["logprob"], rtol=1e-5)
    np.testing.assert_allclose(frame["logprob"], stored["logprob"])
    assert (stored["logprob"] < 0).all()
    # every training document's log-likelihood under the retrain, read as "EOS document" (summed by hand here)
    losses = pd.read_parquet(paths["document_losses"])
    train_docs = docs[docs["split"] == "train"]
    assert list(losses["doc_id"]) == list(train_docs["doc_id"]) and (losses["subset"] == 1).all()
    assert list(losses["in_subset"]) == list(train_docs["doc_id"].isin(set(chosen["doc_id"])))
    model.eval()
    for row, text in zip(losses.itertuples(), train_docs["text"]):
        ids = torch.tensor([[tokenizer.eos_token_id, *encode_documents(tokenizer, [text])[0]]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        expected = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).sum().item()
        assert row.logprob == pytest.approx(expected, rel=1e-4) and row.n_tokens == ids.shape[1] - 1


def test_v2_paired_difference_and_lds_above_zero():
    from influence_study.analyses.lds import paired_difference

    rng = np.random.default_rng(0)
    identity = rng.uniform(-0.25, 0.25, size=24)
    identity -= identity.mean()  # mean LDS exactly 0

    def stats_of(ekfac):
        per_query = pd.DataFrame({"strategy": ["ekfac"] * 24 + ["identity"] * 24, "query_id": [f"q{i}" for i in
                                  range(24)] * 2, "analysis": "facts", "lds": np.concatenate([ekfac, identity])})
        out = statistics_with(None, None)
        from influence_study.analyses.lds import summarise
        out["lds"] = summarise(family_table(per_query))
        out["ekfac_minus_identity"] = paired_difference(per_query)
        return out

    # positive control: EK-FAC's LDS 0.4 above the dot product's for every query, and well above 0
    better, positive = verdicts(stats_of(identity + 0.4 + 0.02 * rng.normal(size=24)))
    assert better.verdict_v2 == REPLICATED and positive.verdict_v2 == REPLICATED
    assert "24 queries" in better.interval_checks[0]["name"]
    # negative control: the same LDS under both strategies (0 difference), spread around 0
    better, positive = verdicts(stats_of(identity))
    assert better.verdict_v2 != REPLICATED and positive.verdict_v2 != REPLICATED
    # without the paired statistic (an older summary), the v2 comparison is not measured
    assert verdicts(statistics_with((0.3, 0.2, 0.4), (0.1, 0.0, 0.2)))[0].verdict_v2 == NOT_MEASURED
