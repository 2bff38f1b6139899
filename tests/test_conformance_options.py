"""Each known pitfall of influence scores is an explicit option, changes the scores the way it should, and is
recorded in the factors' and the scores' ``metadata["conventions"]``: the attention kernel, TF32, prompt-token
masking, the mean or sum over tokens and over queries, bias terms, true or empirical Fisher, division by N.

Tiny GPT-2 (MLP biases) and Llama (none) models from transformers configs (random weights); float64 where a test
asserts an exact relation, float32 where it is about kernels. The references are brute force: ``torch.autograd``
gradients of explicitly selected tokens' log-probabilities, preconditioned by the same factors.
"""

from __future__ import annotations

import pytest
import torch

from influence_study import Factors, LanguageModelingTask, fit_factors, pairwise_scores, self_scores
from influence_study.engine.conventions import numerics_state
from influence_study.engine.tracking import module_params
from tiny_models import lm_batches, tiny_causal_lm

SEQ = 16


def problem(architecture="gpt2", dtype=torch.float64, attn_implementation="eager"):
    """A model, 16 padded training sequences (8 to 16 tokens) and 4 queries with 6-token prompts."""
    generator = torch.Generator().manual_seed(2)
    model = tiny_causal_lm(architecture, seq_len=SEQ, attn_implementation=attn_implementation).to(dtype)
    lengths = torch.randint(8, SEQ + 1, (16,), generator=generator).tolist()
    return model, lm_batches(lengths, generator, SEQ, 4), lm_batches([16, 12, 14, 10], generator, SEQ, 4, prompt=6)


def ekfac(model, train, task=None, **options):
    return fit_factors(model, task or LanguageModelingTask(), train, strategy="ekfac", dtype=torch.float64,
                       progress=False, **{"sampled_labels": False, **options})


def scores_of(model, factors, queries, train, task=None, **options):
    return pairwise_scores(model, task or LanguageModelingTask(), factors, queries, train, dtype=torch.float64,
                           progress=False, **options)


def pearson(a, b):
    a, b = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def relative(a, b):
    return float((a - b).abs().max() / b.abs().max())


# -- brute-force references ----------------------------------------------------------------------------------
def completion(row):
    return row["labels"][0, 1:] != -100


def every_real_token(row):
    return row["attention_mask"][0, 1:].bool()


def log_prob(model, batch, i, positions):
    """log p of the tokens that ``positions(row)`` selects in example ``i`` of ``batch`` (one forward per row)."""
    row = {k: v[i:i + 1] for k, v in batch.items()}
    logits = model(input_ids=row["input_ids"], attention_mask=row["attention_mask"]).logits[0, :-1]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, row["input_ids"][0, 1:, None])[:, 0]
    return logp[positions(row)].sum()


def gradient_matrices(model, modules, value, bias=True):
    """``{module: [out, in(+1)]}``: the autograd gradient of ``value``, the bias gradient as the last column."""
    named = dict(model.named_modules())
    grads = iter(torch.autograd.grad(value, [p for n in modules for p in module_params(named[n])]))
    out = {}
    for name in modules:
        weight = next(grads)
        out[name] = weight
        if named[name].bias is not None:
            bias_grad = next(grads)
            out[name] = torch.cat([weight, bias_grad[:, None]], dim=-1) if bias else weight
    return out


def reference_scores(model, factors, queries, train, query_positions, bias=True):
    """``grad f_q^T P grad log p(z_m)`` with brute-force gradients and the factors' preconditioner ``P``."""
    modules = factors.module_names

    def stacked(batches, positions):
        rows = [gradient_matrices(model, modules, log_prob(model, b, i, positions), bias)
                for b in batches for i in range(len(b["input_ids"]))]
        return {n: torch.stack([r[n] for r in rows]) for n in modules}

    preconditioned = factors.precondition(stacked(queries, query_positions))
    train_grads = stacked(train, completion)
    return sum(preconditioned[n].flatten(1) @ train_grads[n].flatten(1).T for n in modules)


def predicted_tokens(batches):
    return torch.cat([(b["labels"][:, 1:] != -100).sum(-1) for b in batches]).double()


# -- the pitfalls --------------------------------------------------------------------------------------------
def test_prompt_masking_matches_a_brute_force_reference():
    model, train, queries = problem()
    factors = ekfac(model, train)
    masked = scores_of(model, factors, queries, train)
    unmasked = scores_of(model, factors, queries, train, task=LanguageModelingTask(mask_prompt=False))
    assert relative(masked.scores, reference_scores(model, factors, queries, train, completion)) < 1e-9
    assert relative(unmasked.scores, reference_scores(model, factors, queries, train, every_real_token)) < 1e-9
    assert relative(masked.scores, unmasked.scores) > 0.05  # the prompt's tokens are a large part of f
    assert masked.metadata["conventions"]["mask_prompt"] is True
    assert unmasked.metadata["conventions"]["mask_prompt"] is False
    assert factors.metadata["conventions"]["mask_prompt"] is True


def test_mean_over_tokens_divides_each_score_by_both_token_counts():
    """Same factors: the mean measurement divides query q's gradient by its T_q, the mean loss example m's by T_m."""
    model, train, queries = problem()
    factors = ekfac(model, train)
    summed = scores_of(model, factors, queries, train)
    mean = scores_of(model, factors, queries, train, task=LanguageModelingTask(token_reduction="mean"))
    expected = summed.scores / predicted_tokens(queries)[:, None] / predicted_tokens(train)[None, :]
    torch.testing.assert_close(mean.scores, expected, rtol=1e-10, atol=0)
    assert mean.metadata["conventions"]["token_reduction"] == "mean"
    assert mean.metadata["conventions"]["factors"]["token_reduction"] == "sum"  # the factors' own convention
    assert summed.metadata["conventions"]["token_reduction"] == "sum"
    refit = ekfac(model, train, task=LanguageModelingTask(token_reduction="mean"))
    assert refit.metadata["conventions"]["token_reduction"] == "mean"
    with pytest.raises(ValueError, match="token_reduction"):
        LanguageModelingTask(token_reduction="average")


def test_sum_and_mean_over_queries():
    model, train, queries = problem()
    factors = ekfac(model, train)
    each = scores_of(model, factors, queries, train)
    summed = scores_of(model, factors, queries, train, sum_queries=True)
    mean = scores_of(model, factors, queries, train, mean_queries=True)
    torch.testing.assert_close(summed.scores, each.scores.sum(0, keepdim=True), rtol=1e-10, atol=0)
    torch.testing.assert_close(mean.scores, each.scores.mean(0, keepdim=True), rtol=1e-10, atol=0)
    assert [s.metadata["conventions"]["query_reduction"] for s in (each, summed, mean)] == ["none", "sum", "mean"]
    with pytest.raises(ValueError, match="mean_queries and sum_queries"):
        scores_of(model, factors, queries, train, sum_queries=True, mean_queries=True)


def test_division_by_n_scales_every_score_by_n():
    model, train, queries = problem()
    factors = ekfac(model, train)
    raw = scores_of(model, factors, queries, train, per_module=True, per_token=True)
    divided = scores_of(model, factors, queries, train, per_module=True, per_token=True, n_train=16)
    assert torch.equal(divided.scores, raw.normalised(16))
    assert torch.equal(divided.per_module, raw.per_module / 16)
    assert torch.equal(divided.per_token, raw.per_token / 16)
    assert (raw.metadata["normalisation"], raw.metadata["conventions"]["n_train"]) == ("raw", None)
    assert "N = 16" in divided.metadata["normalisation"] and divided.metadata["conventions"]["n_train"] == 16
    self_raw = self_scores(model, LanguageModelingTask(), factors, train, progress=False)
    self_divided = self_scores(model, LanguageModelingTask(), factors, train, n_train=16, progress=False)
    assert torch.equal(self_divided.scores, self_raw.scores / 16)
    with pytest.raises(ValueError, match="n_train"):
        scores_of(model, factors, queries, train, n_train=0)


def test_bias_tracked_or_not():
    model, train, queries = problem()
    with_bias = ekfac(model, train)
    weights = ekfac(model, train, track_bias=False)
    name = weights.module_names[0]
    n_in = model.get_submodule(name).in_features
    assert weights.eigenvectors(name)[0][0].shape[0] == n_in and with_bias.eigenvectors(name)[0][0].shape[0] == n_in + 1
    assert all(not shape["bias"] for shape in weights.metadata["modules"].values())
    assert (weights.metadata["conventions"]["track_bias"], with_bias.metadata["conventions"]["track_bias"]) == (
        False, True)
    scores_w, scores_b = (scores_of(model, f, queries, train) for f in (weights, with_bias))
    # the weights-only scores are the brute-force ones without the bias gradients; they differ from the full ones
    assert relative(scores_w.scores, reference_scores(model, weights, queries, train, completion, bias=False)) < 1e-9
    assert relative(scores_w.scores, scores_b.scores) > 1e-3
    assert (pearson(scores_w.scores, scores_b.scores) > 0.5).all()
    assert scores_w.metadata["conventions"]["track_bias"] is False
    assert self_scores(model, LanguageModelingTask(), weights, train, progress=False).scores.min() > 0
    with pytest.raises(ValueError, match="track_bias"):
        fit_factors(model, LanguageModelingTask(), train, strategy="lissa", track_bias=False, progress=False)
    # Llama's MLP has no biases: the option changes nothing
    llama, train, queries = problem("llama")
    plain, weights_only = (scores_of(llama, ekfac(llama, train, track_bias=b), queries, train) for b in (True, False))
    torch.testing.assert_close(weights_only.scores, plain.scores, rtol=1e-12, atol=0)


def test_true_and_empirical_fisher_differ_but_correlate(tmp_path):
    model, train, queries = problem()
    empirical = ekfac(model, train)
    sampled = ekfac(model, train, sampled_labels=True, seed=3)
    again = ekfac(model, train, sampled_labels=True, seed=3)
    name = empirical.module_names[0]
    assert torch.equal(sampled.eigenvalues(name), again.eigenvalues(name))  # the seed fixes the draws
    # the labels change the output gradients only: A is the same matrix, S is not
    (a_emp, s_emp_cov), (a_true, s_true_cov) = empirical.covariances(name), sampled.covariances(name)
    assert torch.equal(a_emp, a_true) and relative(s_true_cov, s_emp_cov) > 1e-2
    s_emp, s_true = scores_of(model, empirical, queries, train), scores_of(model, sampled, queries, train)
    assert relative(s_true.scores, s_emp.scores) > 1e-3
    # correlated (0.82 to 0.96 per query on these 16 sequences of an untrained model; 0.996 on the bench's trained one)
    assert (pearson(s_true.scores, s_emp.scores) > 0.7).all()
    assert (empirical.metadata["conventions"]["fisher"], sampled.metadata["conventions"]["fisher"]) == (
        "empirical", "true (sampled labels)")
    assert (s_emp.metadata["conventions"]["sampled_labels"], s_true.metadata["conventions"]["sampled_labels"]) == (
        False, True)
    loaded = Factors.load(sampled.save(tmp_path / "factors"), model=model)  # the record survives the JSON file
    assert loaded.metadata["conventions"] == sampled.metadata["conventions"]


def test_attention_kernel_is_recorded_and_can_be_forced():
    """A float32 GPT-2 configured with fused SDPA: ``attention_kernel`` forces the eager or the math kernel for
    one call (restored after); the kernels agree to float32 round-off, and each record says which ran."""
    model, train, queries = problem(dtype=torch.float32, attn_implementation="sdpa")
    task = LanguageModelingTask()
    fused = fit_factors(model, task, train, strategy="ekfac", progress=False)
    eager = fit_factors(model, task, train, strategy="ekfac", attention_kernel="eager", progress=False)
    assert model.config._attn_implementation == "sdpa"
    assert fused.metadata["conventions"]["attention_implementation"] == "sdpa"
    assert eager.metadata["conventions"]["attention_implementation"] == "eager"
    backends = numerics_state(model)["sdpa_backends"]
    runs = {kernel: pairwise_scores(model, task, eager, queries, train, attention_kernel=kernel, progress=False)
            for kernel in (None, "eager", "math")}
    assert numerics_state(model)["sdpa_backends"] == backends  # restored
    assert runs[None].metadata["conventions"]["attention_implementation"] == "sdpa"
    assert runs["eager"].metadata["conventions"]["attention_implementation"] == "eager"
    assert runs["math"].metadata["conventions"]["sdpa_backends"] == ["math"]
    assert runs[None].metadata["conventions"]["sdpa_backends"] == backends
    for kernel in ("eager", "math"):
        assert relative(runs[kernel].scores, runs[None].scores) < 1e-4  # float32 round-off, not a convention
    with pytest.raises(ValueError, match="attention_kernel"):
        pairwise_scores(model, task, eager, queries, train, attention_kernel="flash", progress=False)


def test_tf32_is_recorded_and_can_be_forced_off():
    """TF32 is a CUDA matmul format: on CPU the scores are the same bits either way; what matters here is that
    the global setting is recorded as it was, that ``tf32=False`` forces full float32 for the call, and that the
    setting is restored after."""
    model, train, queries = problem(dtype=torch.float32)
    task = LanguageModelingTask()
    new_api = hasattr(torch.backends.cuda.matmul, "fp32_precision")
    before = numerics_state(model)
    if new_api:
        saved = torch.backends.cuda.matmul.fp32_precision
        torch.backends.cuda.matmul.fp32_precision = "tf32"
    else:  # pragma: no cover - torch < 2.9
        saved = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("high")
    try:
        allowed = fit_factors(model, task, train, strategy="ekfac", progress=False)
        forced = fit_factors(model, task, train, strategy="ekfac", tf32=False, progress=False)
        during = numerics_state(model)
        scores = pairwise_scores(model, task, forced, queries, train, tf32=False, progress=False)
    finally:
        if new_api:
            torch.backends.cuda.matmul.fp32_precision = saved
        else:  # pragma: no cover
            torch.set_float32_matmul_precision(saved)
    assert numerics_state(model) == before
    recorded, off = allowed.metadata["conventions"], forced.metadata["conventions"]
    assert {k: recorded[k] for k in during} == during  # tf32=None: the global state, as it was
    if new_api:
        assert recorded["fp32_precision"]["cuda.matmul"] == "tf32"
        assert off["fp32_precision"]["cuda.matmul"] == "ieee"
    assert off["cuda_matmul_allow_tf32"] is False and off["float32_matmul_precision"] == "highest"
    assert scores.metadata["conventions"]["cuda_matmul_allow_tf32"] is False
    name = forced.module_names[0]
    if not torch.cuda.is_available():
        assert torch.equal(allowed.eigenvalues(name), forced.eigenvalues(name))
