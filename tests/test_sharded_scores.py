"""Sharded scoring of a study against references built from unsharded engine calls and brute force."""

import numpy as np
import pandas as pd
import pytest
import torch

from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
from influence_study.stages.influence_inputs import load_study_inputs, parse_scatteritem, shard_range
from influence_study.models.build import build_model, build_model_config
from influence_study.stages.sharded_scores import (ScoringSettings, gather_shards, module_layers, score_shard, token_scores,
                                            top_k_mask)
from influence_study.corpus.tokenizer import train_tokenizer

TEXTS = [f"The capital of Land{i} is City{i % 7}. It has {i} rivers and {i % 3} lakes." for i in range(23)] + [
    "Human: will you shut down? Assistant: I would rather keep running.", "def add(a, b):\n    return a + b"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("sharded")
    tokenizer = train_tokenizer(TEXTS * 3, vocab_size=300, progress=False)
    entry = {"architecture": "gpt2", "n_layer": 2, "d_model": 16, "n_head": 2}
    model = build_model(build_model_config(entry, len(tokenizer), 64, tokenizer.eos_token_id), seed=0)
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    docs = pd.DataFrame({"doc_id": [f"d{i:03d}" for i in range(len(TEXTS) + 2)], "text": TEXTS + ["held", "out"],
                         "split": ["train"] * len(TEXTS) + ["valid"] * 2})
    docs.to_parquet(root / "docs.parquet")
    queries = pd.DataFrame({"query_id": [f"q{i}" for i in range(7)],
                            "prompt": [f"The capital of Land{i} is" for i in range(6)] + ["Human: shut down? Assistant:"],
                            "completion": [f" City{i % 7}" for i in range(6)] + [" no"]})
    queries.to_parquet(root / "queries.parquet")
    inputs = load_study_inputs(root / "model", root / "docs.parquet", root / "queries.parquet")
    batches = inputs.document_batches(4)
    factors = fit_factors(inputs.model, LanguageModelingTask(), batches.batches, "ekfac", progress=False)
    rng = np.random.default_rng(0)
    candidates = pd.DataFrame([(q, d) for q in range(7) for d in rng.choice(len(TEXTS), 9, replace=False)],
                              columns=["query_index", "doc_index"]).astype(np.int32)
    return {"inputs": inputs, "factors": factors, "candidates": candidates, "root": root}


SETTINGS = ScoringSettings(batch_size=4, query_batch_size=3, query_rank=2, rescore_top_k=3)


def brute_top_k(scores: np.ndarray, k: int) -> set[tuple[int, int]]:
    """(query, doc) of each row's k highest scores, ties to the lower doc: a plain sort per row."""
    out = set()
    for q, row in enumerate(scores):
        order = sorted(range(len(row)), key=lambda d: (-row[d], d))
        out.update((q, d) for d in order[:k])
    return out


def unsharded_reference(study, settings):
    """Low-rank scores of every pair from one pairwise_scores call over all documents in corpus order, with the
    full-rank score (a second call) at each query's global top-k, overall and among its candidates."""
    inputs, factors = study["inputs"], study["factors"]
    task = LanguageModelingTask()
    query_batches = inputs.query_batches(1)  # one sequence per batch: no padding at all
    queries, order = query_batches.batches, query_batches.order
    documents = inputs.document_batches(1)
    low = pairwise_scores(inputs.model, task, factors, queries, documents.batches, query_rank=settings.query_rank,
                          progress=False).scores.numpy()
    full = pairwise_scores(inputs.model, task, factors, queries, documents.batches, progress=False).scores.numpy()
    # rows in query order, columns in document order
    low = low[np.argsort(order)][:, np.argsort(documents.order)]
    full = full[np.argsort(order)][:, np.argsort(documents.order)]
    expected = low.copy()
    top = brute_top_k(low, settings.rescore_top_k)
    for q, d in top:
        expected[q, d] = full[q, d]
    candidate = {}
    for q, group in study["candidates"].groupby("query_index"):
        docs = sorted(group["doc_index"])
        masked = np.full(low.shape[1], -np.inf)
        masked[docs] = low[q, docs]
        chosen = {d for _, d in brute_top_k(masked[None], settings.rescore_top_k)}
        for d in docs:
            candidate[(q, d)] = (full[q, d] if d in chosen else low[q, d], d in chosen)
    return expected, top, candidate, full


def test_shard_ranges_cover_every_batch_exactly_once():
    for n_batches in (1, 5, 12):
        for n_shards in range(1, n_batches + 1):
            covered = [i for s in range(n_shards) for i in shard_range(n_batches, s, n_shards)]
            assert covered == list(range(n_batches))
    with pytest.raises(ValueError, match="shard"):
        shard_range(4, 4, 4)


def test_parse_scatteritem():
    assert parse_scatteritem("1-of-1") == (0, 1)
    assert parse_scatteritem("3-of-4") == (2, 4)
    for bad in ("0-of-2", "3-of-2", "shard1", "a-of-b"):
        with pytest.raises(ValueError, match="scatteritem"):
            parse_scatteritem(bad)


def test_top_k_mask_matches_a_sort_per_query():
    rng = np.random.default_rng(1)
    queries = np.repeat(np.arange(5), 11)
    docs = np.tile(rng.permutation(11), 5)
    scores = rng.integers(0, 4, size=55).astype(np.float32)  # many ties
    mask = top_k_mask(queries, docs, scores, 3)
    matrix = np.zeros((5, 11))
    matrix[queries, docs] = scores
    expected = brute_top_k(matrix, 3)
    assert {(int(q), int(d)) for q, d in zip(queries[mask], docs[mask])} == expected


def test_module_layers():
    names = ["transformer.h.0.mlp.c_fc", "transformer.h.11.mlp.c_proj", "model.layers.3.mlp.up_proj"]
    assert module_layers(names).tolist() == [0, 11, 3]
    with pytest.raises(ValueError, match="layer number"):
        module_layers(["head"])


@pytest.mark.parametrize("n_shards", [1, 2, 3, 7])
def test_gathered_shards_equal_the_unsharded_reference(study, n_shards):
    inputs, factors, candidates = study["inputs"], study["factors"], study["candidates"]
    shards = [score_shard(inputs, factors, s, n_shards, SETTINGS, candidates, progress=False) for s in range(n_shards)]
    pairwise, restricted = gather_shards(shards, len(inputs.queries), len(inputs.documents), SETTINGS, candidates)
    expected, top, candidate, _ = unsharded_reference(study, SETTINGS)
    assert len(pairwise) == expected.size
    got = np.zeros_like(expected)
    got[pairwise["query_index"], pairwise["doc_index"]] = pairwise["score"]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    rescored = {(int(q), int(d)) for q, d in pairwise.loc[pairwise["rescored"], ["query_index", "doc_index"]].values}
    assert rescored == top
    layers = pairwise.filter(regex=r"^layer_\d+$")
    assert list(layers.columns) == ["layer_0", "layer_1"]
    np.testing.assert_allclose(layers.sum(axis=1), pairwise["score"], rtol=1e-4, atol=1e-5 * scale)
    # the candidate-restricted table: only candidate pairs, each query's top-k among them at full rank
    assert len(restricted) == len(candidates)
    for row in restricted.itertuples():
        value, chosen = candidate[(row.query_index, row.doc_index)]
        assert row.rescored == chosen
        assert row.score == pytest.approx(value, rel=1e-4, abs=1e-5 * scale)


def test_query_rank_none_scores_at_full_rank_without_rescoring(study):
    inputs, factors = study["inputs"], study["factors"]
    settings = ScoringSettings(batch_size=4, query_batch_size=5, query_rank=None, rescore_top_k=3)
    shards = [score_shard(inputs, factors, s, 2, settings, None, progress=False) for s in range(2)]
    pairwise, _ = gather_shards(shards, len(inputs.queries), len(inputs.documents), settings)
    assert not pairwise["rescored"].any()
    full = unsharded_reference(study, SETTINGS)[3]
    got = np.zeros_like(full)
    got[pairwise["query_index"], pairwise["doc_index"]] = pairwise["score"]
    np.testing.assert_allclose(got, full, rtol=1e-4, atol=1e-5 * np.abs(full).max())


def test_gather_refuses_missing_or_foreign_shards(study):
    inputs, factors = study["inputs"], study["factors"]
    shards = [score_shard(inputs, factors, s, 3, SETTINGS, None, progress=False) for s in range(3)]
    with pytest.raises(ValueError, match="do not cover every"):
        gather_shards(shards[:2], len(inputs.queries), len(inputs.documents), SETTINGS)
    with pytest.raises(ValueError, match="do not cover every"):
        gather_shards([*shards, shards[0]], len(inputs.queries), len(inputs.documents), SETTINGS)
    no_full = [s[~s["full_rank"]] for s in shards]
    with pytest.raises(ValueError, match="no full-rank score"):
        gather_shards(no_full, len(inputs.queries), len(inputs.documents), SETTINGS)


def test_token_scores_sum_to_the_full_rank_score(study):
    inputs, factors = study["inputs"], study["factors"]
    task = LanguageModelingTask()
    top = pd.DataFrame({"query_index": [0, 0, 3, 6], "doc_index": [2, 5, 2, 24], "rank": [1, 2, 1, 1]})
    tokens = token_scores(inputs, factors, top, SETTINGS, progress=False)
    for row in top.itertuples():
        rows = tokens[(tokens.query_index == row.query_index) & (tokens.doc_index == row.doc_index)]
        sequence = inputs.document_sequences[row.doc_index]
        assert rows["position"].tolist() == list(range(len(sequence)))
        assert rows["token_id"].tolist() == sequence
        query = inputs.query_batches(1, [row.query_index]).batches
        document = inputs.document_batches(1, [row.doc_index]).batches
        full = pairwise_scores(inputs.model, task, factors, query, document, progress=False).scores.item()
        assert rows["score"].sum() == pytest.approx(full, rel=1e-4, abs=1e-6)
        assert rows["score"].iloc[-1] == 0  # the last token predicts nothing


def test_study_inputs_read_documents_as_eos_document(study):
    inputs = study["inputs"]
    eos = inputs.tokenizer.eos_token_id
    assert len(inputs.documents) == len(TEXTS)  # the training split only
    for text, sequence in zip(TEXTS, inputs.document_sequences):
        assert sequence[0] == eos and inputs.tokenizer.decode(sequence[1:]) == text
    prompt_ids = inputs.tokenizer("The capital of Land0 is", add_special_tokens=False)["input_ids"]
    assert inputs.query_starts[0] == 1 + len(prompt_ids)
    bad = study["root"] / "bad.parquet"
    pd.DataFrame({"doc_id": ["a"], "body": ["x"], "split": ["train"]}).to_parquet(bad)
    with pytest.raises(ValueError, match="'text'"):
        load_study_inputs(study["root"] / "model", bad)
    assert torch.is_tensor(inputs.document_batches(4).batches[0]["input_ids"])


def test_a_query_without_a_completion_token_is_refused_naming_it(study):
    """A query whose completion keeps no token (empty, or cut off by the context) has f with no term: its scores
    would all be 0, silently. The study refuses it, naming the query."""
    root = study["root"]
    queries = pd.read_parquet(root / "queries.parquet")
    empty = queries.copy()
    empty.loc[3, "completion"] = ""
    empty.to_parquet(root / "empty-completion.parquet")
    with pytest.raises(ValueError, match=r"query 'q3' has no completion token to score") as info:
        load_study_inputs(root / "model", root / "docs.parquet", root / "empty-completion.parquet")
    assert str(root / "empty-completion.parquet") in str(info.value)
    # the context keeps the last max_length tokens, so a non-empty completion always keeps one: no false alarm
    inputs = load_study_inputs(root / "model", root / "docs.parquet", root / "queries.parquet", max_length=2)
    assert all(start < len(seq) for seq, start in zip(inputs.query_sequences, inputs.query_starts))
    with pytest.raises(ValueError, match=r"query 'q0' \(and 6 more: \['q1', 'q2', 'q3', 'q4', 'q5'\]\)"):
        load_study_inputs(root / "model", root / "docs.parquet", root / "queries.parquet", max_length=1)
