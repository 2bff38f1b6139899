"""Scoring (pairwise_scores, self_scores) against references built without the code under test.

Every reference here is computed from scratch: per-example gradients come from one ``torch.autograd.grad`` call
per UNPADDED sequence on my own log-likelihood (so they also check that padding changes nothing), the
preconditioner is a dense ``[out*in, out*in]`` matrix assembled from the factors' stored tensors and solved
with ``torch.linalg.solve``, token activations are captured with my own hooks, and the low-rank queries use my
own SVD. Models are tiny float64 transformers, so tolerances are set by float64 round-off: a few hundred
operations on numbers of order one, well under 1e-9 relative to the largest score.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from influence_study import (LanguageModelingTask, ScoreArguments, fit_factors, pairwise_scores, query_gradients,
                             self_scores)
from influence_study.engine.scoring import Scores

transformers = pytest.importorskip("transformers")

VOCAB = 40
# Relative tolerance for float64 comparisons: the references use other summation orders (dense kron solves vs
# eigenbasis rotations), which differ at ~1e-13 relative; 1e-9 leaves room without hiding any real error.
RTOL = 1e-9
TASK = LanguageModelingTask()


# --------------------------------------------------------------------------------------------------------------
# tiny models and data
# --------------------------------------------------------------------------------------------------------------
def tiny_model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    if arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=8, n_layer=2, n_head=2, n_inner=8,
                                         bos_token_id=0, eos_token_id=0, initializer_range=0.3)
        model = transformers.GPT2LMHeadModel(config)
    elif arch == "gpt_neox":
        config = transformers.GPTNeoXConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=1,
                                            num_attention_heads=2, intermediate_size=12, max_position_embeddings=32,
                                            bos_token_id=0, eos_token_id=0, initializer_range=0.3)
        model = transformers.GPTNeoXForCausalLM(config)
    elif arch == "llama":
        config = transformers.LlamaConfig(vocab_size=VOCAB, hidden_size=8, intermediate_size=12, num_hidden_layers=1,
                                          num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                                          bos_token_id=0, eos_token_id=0, initializer_range=0.3)
        model = transformers.LlamaForCausalLM(config)
    else:  # pragma: no cover
        raise ValueError(arch)
    return model.double().eval()


def random_sequences(n: int, lo: int, hi: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(lo, hi + 1, (n,), generator=gen)
    return [torch.randint(1, VOCAB, (int(k),), generator=gen) for k in lengths]


def lm_batch(seqs, prompt_lens=None, width=None) -> dict:
    """Right-padded batch; labels -100 at padding and (for queries) at prompt positions."""
    width = width or max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
        labels[i, :len(s)] = s
        if prompt_lens is not None:
            labels[i, :prompt_lens[i]] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def loader(seqs, batch_size, prompt_lens=None, extra_padding=0) -> list[dict]:
    out = []
    for lo in range(0, len(seqs), batch_size):
        chunk = seqs[lo:lo + batch_size]
        prompts = None if prompt_lens is None else prompt_lens[lo:lo + batch_size]
        out.append(lm_batch(chunk, prompts, max(len(s) for s in chunk) + extra_padding))
    return out


TRAIN = random_sequences(12, 3, 9, seed=1)           # batches of 4 -> 3 batches with different widths
QUERY = random_sequences(3, 4, 7, seed=2)
PROMPTS = [2, 3, 2]                                   # prompt tokens are labelled -100 in queries
N_TRAIN = len(TRAIN)


# --------------------------------------------------------------------------------------------------------------
# references (no code of influence_study below this line, except reading stored factor tensors)
# --------------------------------------------------------------------------------------------------------------
def module_of(model, name):
    return dict(model.named_modules())[name]


def as_matrix(module, weight, bias):
    """[out, in(+1)] with Linear orientation (transformers' Conv1D stores [in, out]); bias as last column."""
    w = weight if isinstance(module, nn.Linear) else weight.T
    return w if bias is None else torch.cat([w, bias[:, None]], dim=1)


def log_prob(model, ids: torch.Tensor, n_prompt: int = 0) -> torch.Tensor:
    """sum_{t >= max(n_prompt, 1)} log p(ids[t] | ids[:t]) on the unpadded sequence, by hand."""
    logits = model(input_ids=ids[None]).logits[0]
    token_logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[1:, None])[:, 0]  # entry t-1 = token t
    return token_logp[max(n_prompt, 1) - 1:].sum()


def brute_gradients(model, names, seqs, prompts=None) -> dict[str, torch.Tensor]:
    """{module: [n, out, in(+1)]}: one autograd.grad per example of log p(z) (train) or f (query)."""
    modules = [module_of(model, n) for n in names]
    params = [p for m in modules for p in ([m.weight] + ([m.bias] if m.bias is not None else []))]
    out = {n: [] for n in names}
    for i, s in enumerate(seqs):
        grads = list(torch.autograd.grad(log_prob(model, s, 0 if prompts is None else prompts[i]), params))
        for n, m in zip(names, modules):
            w = grads.pop(0)
            b = grads.pop(0) if m.bias is not None else None
            out[n].append(as_matrix(m, w, b))
    return {n: torch.stack(v) for n, v in out.items()}


def dense_curvature(factors, name) -> tuple[torch.Tensor, float]:
    """(H, default damping) of one module as an explicit [out*in, out*in] matrix acting on row-major vec(V)."""
    shape = factors.metadata["modules"][name]
    dim = shape["out"] * (shape["in"] + int(shape["bias"]))
    tensors = factors.tensors[name]
    if factors.strategy == "identity":
        return torch.eye(dim, dtype=torch.float64), 0.0
    if factors.strategy == "diagonal":
        diag = tensors["diagonal"].double()
        return torch.diag(diag.flatten()), 0.1 * diag.mean().item()
    if factors.strategy == "kfac":
        a = torch.block_diag(*[tensors[f"A_covariance.{k}"] for k in range(factors.metadata["blocks"])]).double()
        s = torch.block_diag(*[tensors[f"S_covariance.{k}"] for k in range(factors.metadata["blocks"])]).double()
        # (S ⊗ A) vec_row(V) = vec_row(S V A^T); mean of λ_S λ_A^T = (tr S / out)(tr A / in)
        return torch.kron(s, a), 0.1 * (torch.trace(s) / s.shape[0] * torch.trace(a) / a.shape[0]).item()
    assert factors.strategy == "ekfac"
    q_a = torch.block_diag(*[tensors[f"A_eigenvectors.{k}"] for k in range(factors.metadata["blocks"])]).double()
    q_s = torch.block_diag(*[tensors[f"S_eigenvectors.{k}"] for k in range(factors.metadata["blocks"])]).double()
    lam = tensors["eigenvalues"].double()
    basis = torch.kron(q_s, q_a)  # (Q_S^T V Q_A)_ij = (basis^T vec_row V)_(i,j)
    return basis @ torch.diag(lam.flatten()) @ basis.T, 0.1 * lam.mean().item()


def dense_precondition(factors, grads: dict[str, torch.Tensor], damping=None) -> dict[str, torch.Tensor]:
    """(H + λI)^-1 g per module by a dense solve; λ the paper's default unless given."""
    out = {}
    for name, g in grads.items():
        h, default = dense_curvature(factors, name)
        lam = default if damping is None else damping
        system = h + lam * torch.eye(h.shape[0], dtype=torch.float64)
        flat = g.reshape(g.shape[0], -1).T
        out[name] = torch.linalg.solve(system, flat).T.reshape(g.shape)
    return out


def dot_scores(left: dict, right: dict) -> torch.Tensor:
    """[modules, Q, M] of <left_q, right_m> per module."""
    return torch.stack([left[n].flatten(1) @ right[n].flatten(1).T for n in left])


def truncate(p: torch.Tensor, rank: int) -> torch.Tensor:
    u, sv, vh = torch.linalg.svd(p, full_matrices=False)
    return u[..., :rank] @ torch.diag_embed(sv[..., :rank]) @ vh[..., :rank, :]


def token_scores(model, names, batches, preconditioned) -> torch.Tensor:
    """[Q, M, width] of sum_modules s_t^T P_q a_t, with a and s captured by my own hooks on padded batches."""
    modules = {n: module_of(model, n) for n in names}
    parts = []
    for batch in batches:
        caught = {}

        def hook(name):
            def forward(module, args, output):
                caught[name] = {"a": args[0].detach()}
                output.register_hook(lambda g: caught[name].__setitem__("s", g.detach()))
            return forward

        handles = [m.register_forward_hook(hook(n)) for n, m in modules.items()]
        try:
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            labels = batch["labels"][:, 1:]
            logp = torch.log_softmax(logits[:, :-1], -1).gather(2, labels.clamp(min=0)[..., None])[..., 0]
            (logp * (labels != -100)).sum().backward()
        finally:
            for h in handles:
                h.remove()
        total = 0
        for n, m in modules.items():
            a = caught[n]["a"]
            if m.bias is not None:
                a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
            total = total + torch.einsum("bto,qoi,bti->qbt", caught[n]["s"], preconditioned[n], a)
        parts.append(total)
    model.zero_grad(set_to_none=True)
    width = max(p.shape[-1] for p in parts)
    return torch.cat([F.pad(p, (0, width - p.shape[-1])) for p in parts], dim=1)


def assert_close(actual, expected, rtol=RTOL):
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp(min=1e-30)
    err = (actual - expected).abs().max()
    assert err <= rtol * scale, f"max error {err:.3e} vs scale {scale:.3e}"


# --------------------------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------------------------
STRATEGIES = [("identity", 1), ("diagonal", 1), ("kfac", 1), ("ekfac", 1), ("ekfac", 2)]


class Setup:
    def __init__(self, arch: str, strategies=STRATEGIES):
        self.model = tiny_model(arch)
        self.train = loader(TRAIN, 4)
        self.queries = loader(QUERY, 2, PROMPTS)
        self.factors = {}
        for strategy, blocks in strategies:
            self.factors[strategy, blocks] = fit_factors(self.model, TASK, self.train, strategy=strategy,
                                                         blocks=blocks, dtype=torch.float64, progress=False)
        names = next(iter(self.factors.values())).module_names
        self.names = names
        self.g_train = brute_gradients(self.model, names, TRAIN)
        self.g_query = brute_gradients(self.model, names, QUERY, PROMPTS)
        self.model.zero_grad(set_to_none=True)

    def scores(self, key=("ekfac", 1), **kwargs) -> Scores:
        kwargs.setdefault("dtype", torch.float64)
        return pairwise_scores(self.model, TASK, self.factors[key], self.queries, self.train, progress=False, **kwargs)

    def reference(self, key=("ekfac", 1), damping=None) -> torch.Tensor:
        """[modules, Q, M] reference scores."""
        return dot_scores(dense_precondition(self.factors[key], self.g_query, damping), self.g_train)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # the models are tiny: intra-op threads only add synchronisation cost (on a busy 2-core machine a 3-token
    # layer_norm took 10 ms with 2 OpenMP threads vs microseconds with 1), so run this module single-threaded
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def gpt2(one_thread) -> Setup:
    return Setup("gpt2")


# --------------------------------------------------------------------------------------------------------------
# 1. pairwise scores against a brute-force dense reference
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", STRATEGIES, ids=[f"{s}-blocks{b}" for s, b in STRATEGIES])
def test_pairwise_matches_dense_reference(gpt2, key):
    result = gpt2.scores(key, per_module=True)
    expected = gpt2.reference(key)
    assert result.scores.shape == (len(QUERY), N_TRAIN)
    assert result.module_names == gpt2.names
    assert torch.equal(result.train_indices, torch.arange(N_TRAIN))
    assert_close(result.scores, expected.sum(0))
    # 2. per-module scores: each equals its module's reference and they add up to the total
    assert_close(result.per_module, expected)
    assert_close(result.per_module.sum(0), result.scores)


def test_tracked_modules_are_the_mlp_matrices(gpt2):
    assert gpt2.names == ["transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj",
                          "transformer.h.1.mlp.c_fc", "transformer.h.1.mlp.c_proj"]


def test_identity_is_plain_gradient_dot_product(gpt2):
    # with identity the score must be the dot product of full tracked-parameter gradients (no damping)
    flat_q = torch.cat([gpt2.g_query[n].flatten(1) for n in gpt2.names], 1)
    flat_m = torch.cat([gpt2.g_train[n].flatten(1) for n in gpt2.names], 1)
    assert_close(gpt2.scores(("identity", 1)).scores, flat_q @ flat_m.T)


def test_explicit_damping(gpt2):
    for damping in (0.5, {name: 0.01 * (i + 1) for i, name in enumerate(gpt2.names)}):
        result = gpt2.scores(("ekfac", 1), damping=damping, per_module=True)
        expected = torch.stack([
            dot_scores(dense_precondition(gpt2.factors["ekfac", 1], {n: gpt2.g_query[n]},
                                          damping if isinstance(damping, float) else damping[n]),
                       {n: gpt2.g_train[n]})[0]
            for n in gpt2.names])
        assert_close(result.per_module, expected)


def test_sum_queries_is_the_sum_of_the_dense_reference_rows(gpt2):
    # one query whose gradient is the sum of the queries' gradients: linear in the queries, so the reference rows add
    result = gpt2.scores(("ekfac", 1), sum_queries=True, per_module=True)
    expected = gpt2.reference(("ekfac", 1))  # [modules, queries, train]
    assert result.scores.shape == (1, N_TRAIN)
    assert_close(result.scores[0], expected.sum((0, 1)))
    assert_close(result.per_module[:, 0], expected.sum(1))


def test_float32_scores_close_to_float64(gpt2):
    # float32 compute: round-off ~1e-7 relative per operation, accumulated over ~100 terms -> 1e-4
    result = gpt2.scores(("ekfac", 1), dtype=torch.float32)
    assert_close(result.scores, gpt2.reference(("ekfac", 1)).sum(0), rtol=1e-4)


# --------------------------------------------------------------------------------------------------------------
# 2. per-token scores
# --------------------------------------------------------------------------------------------------------------
def test_per_token_scores(gpt2):
    key = ("ekfac", 1)
    result = gpt2.scores(key, per_token=True)
    width = max(b["input_ids"].shape[1] for b in gpt2.train)
    assert result.per_token.shape == (len(QUERY), N_TRAIN, width)
    expected_mask = torch.cat([F.pad(b["attention_mask"], (0, width - b["attention_mask"].shape[1]))
                               for b in gpt2.train]).bool()
    assert torch.equal(result.token_mask.bool(), expected_mask)
    # the tokens add up to the example's score
    assert_close(result.per_token.sum(-1), result.scores)
    assert_close(result.scores, gpt2.reference(key).sum(0))
    # padding contributes nothing: right padding, causal attention and masked labels give s_t = 0 exactly
    assert (result.per_token[:, ~expected_mask] == 0).all()
    # each token: s_t^T P a_t with my own captured activations and my dense preconditioned query gradients
    preconditioned = dense_precondition(gpt2.factors[key], gpt2.g_query)
    assert_close(result.per_token, token_scores(gpt2.model, gpt2.names, gpt2.train, preconditioned))


# --------------------------------------------------------------------------------------------------------------
# 3. low-rank query batching and top-k re-scoring
# --------------------------------------------------------------------------------------------------------------
def test_query_rank_at_least_full_rank_is_exact(gpt2):
    full = gpt2.scores(per_module=True)
    for rank in (8, 9, 100):  # min(out, in+1) = 8 for every tracked module
        assert_close(gpt2.scores(query_rank=rank).scores, full.scores)


@pytest.mark.parametrize("rank, dense_limit", [(1, None), (2, None), (5, None), (5, 0)])
def test_query_rank_matches_own_truncated_svd(gpt2, rank, dense_limit, monkeypatch):
    # rank 1 takes the token-by-token low-rank path of the engine, larger ranks materialise U V^T, unless the
    # dense form is over the memory limit (here 0 bytes): every path checked
    if dense_limit is not None:
        monkeypatch.setattr("influence_study.engine.scoring.DENSE_QUERY_LIMIT_BYTES", dense_limit)
    key = ("ekfac", 1)
    preconditioned = dense_precondition(gpt2.factors[key], gpt2.g_query)
    low = {n: truncate(p, rank) for n, p in preconditioned.items()}
    expected = dot_scores(low, gpt2.g_train)
    result = gpt2.scores(key, query_rank=rank, per_module=True, per_token=True)
    assert_close(result.per_module, expected)
    assert_close(result.scores, expected.sum(0))
    assert_close(result.per_token.sum(-1), result.scores)
    assert_close(result.per_token, token_scores(gpt2.model, gpt2.names, gpt2.train, low))
    # a real approximation: rank 1 differs from full rank (else this test could not tell them apart)
    if rank == 1:
        assert not torch.allclose(result.scores, gpt2.reference(key).sum(0), rtol=1e-3)


@pytest.mark.parametrize("k, rank", [(1, 1), (3, 1), (3, 5)])  # rank 1: factored queries; 5: U V^T materialised
def test_rescore_top_k(gpt2, k, rank):
    key = ("ekfac", 1)
    full = gpt2.reference(key).sum(0)
    low = gpt2.scores(key, query_rank=rank).scores
    result = gpt2.scores(key, query_rank=rank, rescore_top_k=k, per_module=True, per_token=True)
    top = torch.topk(low, k, dim=1).indices            # each query's top-k under the rank-1 scores
    rescored = torch.zeros(N_TRAIN, dtype=torch.bool)
    rescored[top.flatten()] = True
    assert_close(result.scores[:, rescored], full[:, rescored])
    assert_close(result.scores[:, ~rescored], low[:, ~rescored])
    for q in range(len(QUERY)):
        assert_close(result.scores[q, top[q]], full[q, top[q]])
    assert_close(result.per_module.sum(0), result.scores)
    assert_close(result.per_token.sum(-1), result.scores)
    assert (result.per_token[:, ~result.token_mask.bool()] == 0).all()


# --------------------------------------------------------------------------------------------------------------
# 4. slices of the training set
# --------------------------------------------------------------------------------------------------------------
def test_train_slices_concatenate_to_full(gpt2):
    key = ("ekfac", 1)
    full = gpt2.scores(key, per_module=True, per_token=True)
    # batches are [0,4), [4,8), [8,12): these slices cut through the middle of batches
    parts = [gpt2.scores(key, train_slice=s, per_module=True, per_token=True)
             for s in [(0, 5), (5, 9), (9, N_TRAIN)]]
    for part, (lo, hi) in zip(parts, [(0, 5), (5, 9), (9, N_TRAIN)]):
        assert torch.equal(part.train_indices, torch.arange(lo, hi))
        assert_close(part.per_token.sum(-1), part.scores)
        width = part.per_token.shape[-1]
        assert_close(part.per_token, full.per_token[:, lo:hi, :width])
        assert not full.per_token[:, lo:hi, width:].any()
    assert_close(torch.cat([p.scores for p in parts], 1), full.scores)
    assert_close(torch.cat([p.per_module for p in parts], 2), full.per_module)
    assert_close(full.scores, gpt2.reference(key).sum(0))


def test_train_slice_forms(gpt2):
    full = gpt2.scores()
    for spec, (lo, hi) in [(slice(3, 7), (3, 7)), ((6, None), (6, N_TRAIN)), (slice(None, 2), (0, 2)),
                           ((2, 100), (2, N_TRAIN)), ((5, 6), (5, 6))]:
        part = gpt2.scores(train_slice=spec)
        assert torch.equal(part.train_indices, torch.arange(lo, hi)), spec
        assert_close(part.scores, full.scores[:, lo:hi])


def test_train_slice_with_low_rank_and_rescoring(gpt2):
    full = gpt2.scores(query_rank=1, rescore_top_k=2)
    parts = [gpt2.scores(query_rank=1, rescore_top_k=2, train_slice=s) for s in [(0, 5), (5, 9), (9, N_TRAIN)]]
    low = gpt2.scores(query_rank=1).scores
    exact = gpt2.reference().sum(0)
    for part, (lo, hi) in zip(parts, [(0, 5), (5, 9), (9, N_TRAIN)]):
        # the top-k of a shard is taken within the shard
        top = torch.topk(low[:, lo:hi], 2, dim=1).indices.flatten() + lo
        assert_close(part.scores[:, top - lo], exact[:, top])
    assert full.scores.shape == (len(QUERY), N_TRAIN)


# --------------------------------------------------------------------------------------------------------------
# 5. self-influence
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("key", [("identity", 1), ("diagonal", 1), ("kfac", 1), ("ekfac", 1), ("ekfac", 2)],
                         ids=lambda k: f"{k[0]}-blocks{k[1]}" if isinstance(k, tuple) else str(k))
def test_self_scores(gpt2, key):
    result = self_scores(gpt2.model, TASK, gpt2.factors[key], gpt2.train, per_module=True, dtype=torch.float64,
                         progress=False)
    pre = dense_precondition(gpt2.factors[key], gpt2.g_train)
    expected = torch.stack([(pre[n] * gpt2.g_train[n]).sum((1, 2)) for n in gpt2.names])
    assert result.scores.shape == (N_TRAIN,)
    assert torch.equal(result.train_indices, torch.arange(N_TRAIN))
    assert_close(result.per_module, expected)
    assert_close(result.scores, expected.sum(0))
    assert (result.scores >= 0).all()
    part = self_scores(gpt2.model, TASK, gpt2.factors[key], gpt2.train, train_slice=(3, 10), dtype=torch.float64,
                       progress=False)
    assert torch.equal(part.train_indices, torch.arange(3, 10))
    assert_close(part.scores, expected.sum(0)[3:10])


def test_self_scores_equal_diagonal_of_pairwise(gpt2):
    # using the training sequences as queries (labels on every token): f = log p(z), so pairwise[m, m] = self[m]
    key = ("ekfac", 1)
    pair = pairwise_scores(gpt2.model, TASK, gpt2.factors[key], gpt2.train, gpt2.train, dtype=torch.float64,
                           progress=False)
    own = self_scores(gpt2.model, TASK, gpt2.factors[key], gpt2.train, dtype=torch.float64, progress=False)
    assert_close(torch.diagonal(pair.scores), own.scores)
    assert_close(pair.scores, pair.scores.T)  # symmetric: the preconditioner is symmetric


# --------------------------------------------------------------------------------------------------------------
# 6. architectures and padding invariance
# --------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama"])
def test_architectures_padding_invariance(arch):
    setup = Setup(arch, strategies=[("identity", 1), ("ekfac", 1)])
    assert setup.names and all(("mlp" in n) for n in setup.names)
    for key in setup.factors:
        base = setup.scores(key, per_token=True)
        assert base.scores.shape == (len(QUERY), N_TRAIN)
        assert torch.isfinite(base.scores).all()
        # same sequences padded with 5 more positions, in train and query batches (right padding)
        padded = pairwise_scores(setup.model, TASK, setup.factors[key], loader(QUERY, 2, PROMPTS, extra_padding=5),
                                 loader(TRAIN, 4, extra_padding=5), per_token=True, dtype=torch.float64,
                                 progress=False)
        assert_close(padded.scores, base.scores)
        width = base.per_token.shape[-1]
        assert padded.per_token.shape[-1] == width + 5
        assert_close(padded.per_token[..., :width], base.per_token)
        assert (padded.per_token[..., width:] == 0).all()
        # the brute-force reference uses unpadded sequences one at a time
        assert_close(base.scores, setup.reference(key).sum(0))


# --------------------------------------------------------------------------------------------------------------
# 7. LoRA via peft
# --------------------------------------------------------------------------------------------------------------
def test_lora_modules():
    peft = pytest.importorskip("peft")
    base = tiny_model("gpt2")
    config = peft.LoraConfig(target_modules=["c_fc"], r=2, lora_dropout=0.0, init_lora_weights=False,
                             fan_in_fan_out=True)  # random A and B: with B = 0 the A gradients would vanish
    model = peft.get_peft_model(base, config).double().eval()
    train, queries = loader(TRAIN, 4), loader(QUERY, 2, PROMPTS)
    identity = fit_factors(model, TASK, train, strategy="identity", modules=["*lora_A*", "*lora_B*"],
                           dtype=torch.float64, progress=False)
    names = identity.module_names
    assert names == [f"base_model.model.transformer.h.{i}.mlp.c_fc.lora_{ab}.default"
                     for i in range(2) for ab in "AB"]
    g_train = brute_gradients(model, names, TRAIN)
    g_query = brute_gradients(model, names, QUERY, PROMPTS)
    # the LoRA parameters are exactly the tracked ones: compare with the dot product of their full gradients
    lora_params = [p for n, p in model.named_parameters() if "lora_" in n]
    assert len(lora_params) == 4 and sum(g[0].numel() for g in g_train.values()) == sum(p.numel() for p in lora_params)
    flat_q = torch.cat([g_query[n].flatten(1) for n in names], 1)
    flat_m = torch.cat([g_train[n].flatten(1) for n in names], 1)
    result = pairwise_scores(model, TASK, identity, queries, train, dtype=torch.float64, progress=False)
    assert_close(result.scores, flat_q @ flat_m.T)
    ekfac = fit_factors(model, TASK, train, strategy="ekfac", modules=["*lora_A*", "*lora_B*"], dtype=torch.float64,
                        progress=False)
    result = pairwise_scores(model, TASK, ekfac, queries, train, dtype=torch.float64, progress=False)
    assert_close(result.scores, dot_scores(dense_precondition(ekfac, g_query), g_train).sum(0))


# --------------------------------------------------------------------------------------------------------------
# 8. normalisation and argument errors
# --------------------------------------------------------------------------------------------------------------
def test_normalised(gpt2):
    result = gpt2.scores()
    assert_close(result.normalised(N_TRAIN), result.scores / N_TRAIN)
    assert_close(result.normalised(N_TRAIN) * N_TRAIN, gpt2.reference().sum(0))
    with pytest.raises(ValueError, match="n_train"):
        result.normalised(0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(query_rank=0), "query_rank"),
    (dict(query_rank=-2), "query_rank"),
    (dict(query_rank=1.5), "query_rank"),
    (dict(query_rank=1, rescore_top_k=0), "rescore_top_k"),
    (dict(query_rank=1, rescore_top_k=-1), "rescore_top_k"),
    (dict(train_slice=(-1, 4)), "train_slice"),
    (dict(train_slice=(6, 2)), "train_slice"),
    (dict(train_slice=slice(0, 10, 2)), "train_slice"),
    (dict(train_slice=(N_TRAIN, N_TRAIN + 3)), "slice"),
])
def test_bad_arguments(gpt2, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gpt2.scores(**kwargs)


def test_bad_self_scores_slice(gpt2):
    with pytest.raises(ValueError, match="train_slice"):
        self_scores(gpt2.model, TASK, gpt2.factors["identity", 1], gpt2.train, train_slice=(5, 1), progress=False)


# --------------------------------------------------------------------------------------------------------------
# 9. options: a ScoreArguments, keyword overrides of its fields, or both
# --------------------------------------------------------------------------------------------------------------
def test_score_options_as_dataclass_keywords_or_both(gpt2):
    factors = gpt2.factors["ekfac", 1]
    keywords = pairwise_scores(gpt2.model, TASK, factors, gpt2.queries, gpt2.train, query_rank=2, rescore_top_k=2,
                               per_module=True, damping=1e-3, dtype=torch.float64, progress=False)
    options = ScoreArguments(query_rank=2, rescore_top_k=2, per_module=True, damping=1e-3, dtype=torch.float64,
                             progress=False)
    as_options = pairwise_scores(gpt2.model, TASK, factors, gpt2.queries, gpt2.train, options)
    both = pairwise_scores(gpt2.model, TASK, factors, gpt2.queries, gpt2.train, ScoreArguments(query_rank=2),
                           rescore_top_k=2, per_module=True, damping=1e-3, dtype=torch.float64, progress=False)
    for other in (as_options, both):
        assert torch.equal(other.scores, keywords.scores) and torch.equal(other.per_module, keywords.per_module)
        assert {k: v for k, v in other.metadata.items() if k != "seconds"} == \
            {k: v for k, v in keywords.metadata.items() if k != "seconds"}
    own = self_scores(gpt2.model, TASK, factors, gpt2.train, ScoreArguments(dtype=torch.float64, progress=False))
    assert torch.equal(own.scores, self_scores(gpt2.model, TASK, factors, gpt2.train, dtype=torch.float64,
                                               progress=False).scores)
    # the former positional dtype of query_gradients still works
    positional = query_gradients(gpt2.model, TASK, factors.module_names, gpt2.queries, torch.float64)
    keyword = query_gradients(gpt2.model, TASK, factors.module_names, gpt2.queries, dtype=torch.float64,
                              progress=False)
    assert all(torch.equal(positional[n], keyword[n]) and keyword[n].dtype == torch.float64 for n in keyword)
    assert all(f.metadata["help"] for f in dataclasses.fields(ScoreArguments))


@pytest.mark.parametrize("function, call, error, match", [
    ("pairwise", dict(query_rnak=2), TypeError, r"pairwise_scores: unexpected option.*\['query_rnak'\]"),
    ("pairwise", dict(options={"query_rank": 2}), TypeError, "ScoreArguments"),
    ("self", dict(query_rank=2), TypeError, r"self_scores: unexpected option.*\['query_rank'\]"),
    ("self", dict(options=ScoreArguments(per_token=True)), ValueError, r"self_scores.*\['per_token'\]"),
    ("query", dict(damping=1.0), TypeError, r"query_gradients: unexpected option.*\['damping'\]"),
])
def test_bad_score_options_name_the_key(gpt2, function, call, error, match):
    factors = gpt2.factors["identity", 1]
    with pytest.raises(error, match=match):
        if function == "pairwise":
            pairwise_scores(gpt2.model, TASK, factors, gpt2.queries, gpt2.train, **call)
        elif function == "self":
            self_scores(gpt2.model, TASK, factors, gpt2.train, **call)
        else:
            query_gradients(gpt2.model, TASK, factors.module_names, gpt2.queries, **call)


@pytest.mark.parametrize("damping, checks", [(0.5, 1), (None, 0), ("mapping", "one per module")])
def test_damping_is_validated_once_per_call(gpt2, damping, checks, monkeypatch):
    """The damping is resolved and checked once per call, not again for each batch that is preconditioned."""
    import influence_study.engine.preconditioner as preconditioner

    factors = gpt2.factors["ekfac", 1]
    if damping == "mapping":
        damping = {name: 0.5 for name in factors.module_names}
        checks = len(factors.module_names)
    calls = []
    original = preconditioner.check_damping
    monkeypatch.setattr(preconditioner, "check_damping", lambda value: calls.append(value) or original(value))
    assert len(gpt2.train) > 1  # several batches
    pairwise_scores(gpt2.model, TASK, factors, gpt2.queries, gpt2.train, damping=damping, progress=False)
    assert len(calls) == checks
    calls.clear()
    self_scores(gpt2.model, TASK, factors, gpt2.train, damping=damping, progress=False)
    assert len(calls) == checks

