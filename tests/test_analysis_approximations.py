"""The approximation checks against references built without the code under test: per-query Pearson against
numpy's corrcoef, the rank sweep against my own SVD truncation of the preconditioned query gradients dotted with
brute-force (one autograd call per sequence) training gradients, the factor memory against sizes computed from the
module shapes, the reuse rule of the study's factors, and the verdicts on hand-made statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from influence_study import LanguageModelingTask, fit_factors
from influence_study.analyses.approximations import (
    approximated_modules, block_table, memory_table, per_query_pearson, rank_table, summarise, verdicts)
from influence_study.stages.approximations import factor_memory, module_min_dims, rank_sweep, study_factors_match
from influence_study.stages.influence_inputs import document_batches, make_batches
from influence_study.stages.influence import factor_fit_documents
from influence_study.engine.scoring import query_gradients

transformers = pytest.importorskip("transformers")
from tiny_models import random_sequences, seeded_tiny_gpt2  # noqa: E402
TASK = LanguageModelingTask()


@pytest.fixture(scope="module")
def setup(one_thread):
    model, gen = seeded_tiny_gpt2()  # n_inner 12: c_fc's gradient is [12, 8+1], c_proj's [8, 12+1]
    train = random_sequences(torch.randint(3, 9, (10,), generator=gen), gen)
    queries = random_sequences((5, 6, 7), gen)
    train_batches = document_batches(train, 0, 4)
    query_batches = make_batches(queries, [2, 3, 2], 0, 2)
    factors = {o: fit_factors(model, TASK, train_batches.batches, strategy="ekfac", blocks=o, dtype=torch.float64,
                              progress=False) for o in (1, 2, 3)}
    return model, train, train_batches, query_batches, factors


def brute_training_gradients(model, names, sequences) -> dict[str, torch.Tensor]:
    """{module: [n, out, in+1]}: the gradient of log p(z) of each unpadded sequence, one autograd call each."""
    modules = dict(model.named_modules())
    params = [p for n in names for p in (modules[n].weight, modules[n].bias)]
    out = {n: [] for n in names}
    for seq in sequences:
        ids = torch.tensor(seq)
        logp = torch.log_softmax(model(input_ids=ids[None]).logits[0, :-1], -1).gather(1, ids[1:, None]).sum()
        grads = torch.autograd.grad(logp, params)
        for i, n in enumerate(names):  # Conv1D stores [in, out]
            out[n].append(torch.cat([grads[2 * i].T, grads[2 * i + 1][:, None]], dim=1))
    return {n: torch.stack(v) for n, v in out.items()}


def truncate(matrix: torch.Tensor, rank: int) -> torch.Tensor:
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return u[..., :rank] @ torch.diag_embed(s[..., :rank]) @ vh[..., :rank, :]


def test_per_query_pearson_is_numpys():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(4, 30)), rng.normal(size=(4, 30))
    y[1] = 3 * x[1] + 1
    expected = [np.corrcoef(a, b)[0, 1] for a, b in zip(x, y)]
    assert per_query_pearson(x, y) == pytest.approx(expected, rel=1e-12)
    assert per_query_pearson(x, y)[1] == pytest.approx(1.0)
    assert np.isnan(per_query_pearson(x, np.ones_like(x))).all()
    with pytest.raises(ValueError, match="shape"):
        per_query_pearson(x, y[:, :5])


def test_rank_sweep_matches_explicit_svd(setup):
    model, train, train_batches, query_batches, factors = setup
    f = factors[1]
    assert module_min_dims(f) == {"transformer.h.0.mlp.c_fc": 9, "transformer.h.0.mlp.c_proj": 8}
    ranks = [1, 3, 8, 9]
    scores = rank_sweep(model, f, query_batches.batches, train_batches.batches, ranks, dtype=torch.float64)
    preconditioned = f.precondition(query_gradients(model, TASK, f.module_names, query_batches.batches,
                                                    torch.float64))
    g_train = brute_training_gradients(model, f.module_names, [train[i] for i in train_batches.order])

    def explicit(rank):
        return sum((truncate(p, rank) if rank else p).flatten(1) @ g_train[n].flatten(1).T
                   for n, p in preconditioned.items())

    full = explicit(None)
    assert torch.allclose(scores[None], full, rtol=1e-9, atol=1e-12 * full.abs().max())
    table = rank_table(scores, ["a", "b", "c"], module_min_dims(f))
    for rank in ranks:
        low = explicit(rank)
        assert torch.allclose(scores[rank], low, rtol=1e-9, atol=1e-9 * low.abs().max())
        expected = [np.corrcoef(full[q].numpy(), low[q].numpy())[0, 1] for q in range(3)]
        rows = table[table["rank"] == rank]
        assert rows["pearson"].to_numpy() == pytest.approx(expected, rel=1e-9)
    approximated = table.groupby("rank")["modules_approximated"].first().to_dict()
    assert approximated == {1: 2, 3: 2, 8: 1, 9: 0}  # rank 8 is full rank for c_proj only, 9 for both
    assert table.loc[table["rank"] == 9, "pearson"].to_numpy() == pytest.approx(1.0, abs=1e-12)
    assert table.loc[table["rank"] == 1, "pearson"].min() < 0.9999  # a real approximation at rank 1
    assert approximated_modules(module_min_dims(f), 100) == 0


def test_block_memory_matches_module_shapes(setup):
    model, _, _, _, factors = setup
    modules = dict(model.named_modules())

    def block_sizes(d, o):
        return [d // o + (1 if k < d % o else 0) for k in range(o)]

    expected = {}
    for o, f in factors.items():
        blocked = other = 0
        for name in f.module_names:
            d_in, d_out = modules[name].weight.shape  # Conv1D: [in, out]
            a, s = d_in + 1, d_out
            # covariance and eigenvectors of A and S, each kept as O diagonal blocks, float64
            blocked += 8 * 2 * (sum(b * b for b in block_sizes(a, o)) + sum(b * b for b in block_sizes(s, o)))
            other += 8 * (a + s + s * a)  # λ_A, λ_S and the corrected eigenvalues Λ [out, in+1]
        assert factor_memory(f) == {"blocked_bytes": blocked, "other_bytes": other, "total_bytes": blocked + other}
        expected[o] = (blocked, blocked + other)
    table = memory_table({o: factor_memory(f) for o, f in factors.items()}).set_index("blocks")
    for o in (1, 2, 3):
        assert table.loc[o, "blocked_ratio"] == pytest.approx(expected[o][0] / expected[1][0])
        assert table.loc[o, "total_ratio"] == pytest.approx(expected[o][1] / expected[1][1])
        assert abs(table.loc[o, "blocked_ratio"] * o - 1) < 0.1  # about 1/O (unequal blocks of 9, 13, 12, 8)


def test_block_table_correlates_with_o1(setup):
    model, _, train_batches, query_batches, factors = setup
    from influence_study.engine.scoring import pairwise_scores

    scores = {o: pairwise_scores(model, TASK, f, query_batches.batches, train_batches.batches, dtype=torch.float64,
                                 progress=False).scores for o, f in factors.items()}
    table = block_table(scores[1], {2: scores[2], 3: scores[3]}, ["a", "b", "c"])
    for o in (2, 3):
        expected = [np.corrcoef(scores[1][q].numpy(), scores[o][q].numpy())[0, 1] for q in range(3)]
        assert table.loc[table["blocks"] == o, "pearson"].to_numpy() == pytest.approx(expected, rel=1e-9)
    assert not torch.allclose(scores[1], scores[2])  # the split changes the scores
    assert block_table(scores[1], {}, ["a", "b", "c"]).empty


def test_study_factors_are_reused_only_with_the_same_settings():
    config = {"seed": 3, "models": [{"name": "a"}, {"name": "b"}],
              "influence": {"fit_documents": 50, "sampled_labels": True}}
    subset, seed = factor_fit_documents(config, "b", 200)
    assert len(subset) == 50 and seed == 3 + 7919 * 2
    metadata = {"strategy": "ekfac", "blocks": 1, "sampled_labels": True, "modules": {"m1": {}, "m2": {}},
                "fit_documents": {"count": 50, "of": 200, "seed": seed}}
    assert study_factors_match(metadata, config, "b", 200, ["m1", "m2"])
    for change in ({"blocks": 2}, {"strategy": "kfac"}, {"sampled_labels": False},
                   {"fit_documents": {"count": 50, "of": 200, "seed": seed + 1}},
                   {"fit_documents": {"count": 40, "of": 200, "seed": seed}}):
        assert not study_factors_match({**metadata, **change}, config, "b", 200, ["m1", "m2"]), change
    assert not study_factors_match(metadata, config, "a", 200, ["m1", "m2"])  # another model's seed
    assert not study_factors_match(metadata, config, "b", 200, ["m1"])


def hand_statistics(rank_medians, block_median=0.95, ratio=0.5, full_rank=()):
    ranks = pd.DataFrame([{"query_id": q, "rank": r, "pearson": m + d, "modules": 2, "full_rank": r in full_rank,
                           "modules_approximated": 0 if r in full_rank else 2}
                          for r, m in rank_medians.items() for q, d in (("a", -0.001), ("b", 0.0), ("c", 0.001))])
    blocks = pd.DataFrame({"query_id": ["a", "b", "c"], "blocks": 2, "pearson": block_median})
    memory = pd.DataFrame({"blocks": [1, 2], "blocked_bytes": [1000, int(1000 * ratio)], "other_bytes": [10, 10],
                           "total_bytes": [1010, int(1000 * ratio) + 10], "blocked_ratio": [1.0, ratio],
                           "total_ratio": [1.0, (1000 * ratio + 10) / 1010]})
    return {"model": "m", "queries": 3, "documents": 10, "min_module_dim": 64, **summarise(ranks, blocks, memory)}


def test_verdicts_on_hand_made_statistics():
    good = verdicts(hand_statistics({8: 0.95, 16: 0.98, 32: 0.995, 64: 0.999, 128: 1.0}, full_rank=(128,)))
    assert [f.verdict for f in good] == ["replicated"] * 4
    assert "rank 128: full rank" in good[0].measured
    bad = verdicts(hand_statistics({8: 0.95, 16: 0.99, 32: 0.98, 64: 0.97}, block_median=0.5, ratio=0.7))
    assert [f.verdict for f in bad] == ["not replicated"] * 4
    tolerated = verdicts(hand_statistics({8: 0.9, 32: 0.9995, 128: 0.9990}))  # a 5e-4 dip is round-off
    assert tolerated[1].verdict == "replicated"
    missing = verdicts(hand_statistics({8: 0.9, 16: 0.95}))
    assert missing[0].verdict == "not measured"


def test_v2_interval_checks_positive_and_negative_controls():
    # positive control: rank 32 within 0.003 of full rank for every query, better than rank 8; O = 2 close to O = 1;
    # memory halved
    good = verdicts(hand_statistics({8: 0.95, 32: 0.997, 128: 1.0}, block_median=0.95, ratio=0.5))
    assert [f.verdict_v2 for f in good] == ["replicated"] * 4
    assert good[0].interval_checks[0]["low"] >= 0.996 and "3 queries" in good[0].interval_checks[0]["name"]
    assert good[3].interval_checks[0]["low"] == good[3].interval_checks[0]["high"] == 1.0  # exact bytes
    # negative control: every rank equally far from full rank (no gain), O = 2 far from O = 1, memory not halved
    bad = verdicts(hand_statistics({8: 0.98, 32: 0.98, 128: 0.98}, block_median=0.5, ratio=0.7))
    assert [f.verdict_v2 for f in bad] == ["not replicated", "inconclusive", "not replicated", "not replicated"]
    assert "replicated" not in [f.verdict_v2 for f in bad]
