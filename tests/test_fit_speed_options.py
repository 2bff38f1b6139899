"""The fitting options of issue #17 (``activation_cache``, ``token_rotation``, ``eigh_dtype``) and the tracker's
streaming consumers, against the default fit.

``activation_cache`` must not change a single bit of the factors (it only skips recomputing what the covariance
pass captured); ``token_rotation`` computes the same eigenvalue correction in another order (float64 here:
agreement to ~1e-13); ``eigh_dtype=float32`` is a precision choice, checked loosely.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel

from influence_study import ClassificationTask, LanguageModelingTask, fit_factors, pairwise_scores
from influence_study.engine.curvature import rotate, squared_rotation_sum, token_rotation_is_cheaper
from influence_study.engine.tracking import ModuleTracker, select_modules

VOCAB = 40


def gpt2(dtype=torch.float32) -> nn.Module:
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=2, n_head=2, n_inner=24,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        initializer_range=0.3)
    return GPT2LMHeadModel(config).to(dtype).eval()


def batches(n_batches=3, size=4, width=12, seed=0) -> list[dict]:
    """Right-padded LM batches (the first sequence of each batch is 3 tokens short)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(1, VOCAB, (size, width), generator=g)
        mask = torch.ones_like(ids)
        mask[0, -3:] = 0
        ids = ids * mask
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def same_tensors(a, b) -> bool:
    return all(torch.equal(a.tensors[m][k], b.tensors[m][k]) for m in a.tensors for k in a.tensors[m])


def batch_bytes(model, batch) -> int:
    """Bytes the activation cache holds for one batch (inputs without the bias column, output gradients)."""
    tokens = batch["input_ids"].numel()
    sizes = [m.weight.shape for m in select_modules(model).values()]  # Conv1D: [in, out]
    return sum(tokens * (n_in + n_out) * 4 for n_in, n_out in sizes)


@pytest.mark.parametrize("sampled", [False, True], ids=["true-labels", "sampled-labels"])
@pytest.mark.parametrize("cached", ["all", "first", "none"])
def test_the_activation_cache_leaves_the_factors_bit_identical(sampled, cached):
    model, loader, task = gpt2(), batches(), LanguageModelingTask()
    budget = {"all": 2 ** 40, "first": batch_bytes(model, loader[0]) + 1, "none": 1}[cached]
    reference = fit_factors(model, task, loader, strategy="ekfac", sampled_labels=sampled, seed=3, progress=False)
    fitted = fit_factors(model, task, loader, strategy="ekfac", sampled_labels=sampled, seed=3, progress=False,
                         activation_cache=budget)
    assert same_tensors(fitted, reference)
    assert fitted.metadata["counts"] == reference.metadata["counts"]
    assert fitted.metadata["activation_cache"] == budget


def test_the_cache_and_the_other_options_combine_bit_identically():
    model, loader, task = gpt2(), batches(), LanguageModelingTask()
    options = dict(strategy="ekfac", token_rotation=True, eigh_dtype=torch.float32, progress=False)
    assert same_tensors(fit_factors(model, task, loader, activation_cache=2 ** 40, **options),
                        fit_factors(model, task, loader, **options))


@pytest.mark.parametrize("blocks", [1, 2])
def test_token_rotation_gives_the_same_eigenvalues(blocks):
    model, loader, task = gpt2(torch.float64), batches(), LanguageModelingTask()
    options = dict(strategy="ekfac", blocks=blocks, dtype=torch.float64, progress=False)
    reference = fit_factors(model, task, loader, **options)
    rotated = fit_factors(model, task, loader, token_rotation=True, **options)
    assert rotated.metadata["token_rotation"] and not reference.metadata["token_rotation"]
    for name in reference.module_names:
        torch.testing.assert_close(rotated.eigenvalues(name), reference.eigenvalues(name), rtol=1e-10, atol=1e-14)


def test_both_rotation_orders_of_the_correction_agree():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, 9, generator=g, dtype=torch.float64)
    s = torch.randn(3, 3, 4, generator=g, dtype=torch.float64)
    q_s = [torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))[0] for k in (1, 3)]
    q_a = [torch.linalg.qr(torch.randn(9, 9, generator=g, dtype=torch.float64))[0]]
    expected = (rotate(torch.bmm(s.transpose(1, 2), a), q_s, q_a) ** 2).sum(0)
    assert token_rotation_is_cheaper(3, q_s, q_a)  # so that both orders are exercised
    for token_rotation in (False, True):
        torch.testing.assert_close(squared_rotation_sum(a, s, q_s, q_a, token_rotation), expected,
                                   rtol=1e-12, atol=1e-14)


def test_the_cost_model_prefers_the_gradient_rotation_for_long_sequences():
    q = [torch.empty(64, 64)]
    assert token_rotation_is_cheaper(8, q, q) and not token_rotation_is_cheaper(4096, q, q)


def test_a_float32_eigendecomposition_changes_the_scores_only_slightly():
    model, loader, task = gpt2(), batches(), LanguageModelingTask()
    queries = batches(1, 3, seed=9)
    scores = {dtype: pairwise_scores(model, task, fit_factors(model, task, loader, strategy="ekfac",
                                                              eigh_dtype=dtype, progress=False),
                                     queries, loader, progress=False).scores
              for dtype in (torch.float64, torch.float32)}
    a, b = scores[torch.float32].flatten().double(), scores[torch.float64].flatten().double()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.9999


@pytest.mark.parametrize("options, message", [(dict(activation_cache=-1), "activation_cache"),
                                              (dict(activation_cache=1.5), "activation_cache"),
                                              (dict(eigh_dtype=torch.float16), "eigh_dtype")])
def test_invalid_speed_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        fit_factors(gpt2(), LanguageModelingTask(), batches(), strategy="ekfac", progress=False, **options)


class InPlaceInput(nn.Module):
    """A model that scales its input in place after its first layer has read it."""

    def __init__(self):
        super().__init__()
        self.first, self.second = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        h = self.first(x)
        x.mul_(2.0)
        return self.second(torch.tanh(h))


def test_an_input_changed_in_place_after_the_module_read_it_is_refused():
    torch.manual_seed(0)
    batch = {"inputs": torch.randn(4, 3), "labels": torch.tensor([0, 1, 0, 1])}
    with pytest.raises(RuntimeError, match="modified in place"):
        # the covariance pass reads the input in the forward hook; the eigenvalue correction after the backward
        fit_factors(InPlaceInput(), ClassificationTask(), [batch], strategy="ekfac", modules=["first"], progress=False)


def test_the_lowest_module_starts_the_graph_and_its_input_gradient_is_not_computed():
    model, (batch,) = gpt2(), batches(1)
    tracker = ModuleTracker(model, select_modules(model))
    with tracker.track():
        logits = LanguageModelingTask().outputs(model, batch)
        visited, stack = {}, [logits.grad_fn]
        while stack:  # every function of the graph, once
            node = stack.pop()
            if node is None or id(node) in visited:
                continue
            visited[id(node)] = type(node).__name__
            stack.extend(n for n, _ in node.next_functions)
        seen = list(visited.values())
    # the graph starts at a leaf copy of the output of h.0.mlp.c_fc (the lowest tracked module): of the 8 Conv1D
    # (addmm) of the two blocks it holds h.0.mlp.c_proj and the 4 of block 1, not h.0's attention nor h.0.mlp.c_fc
    assert "AccumulateGrad" in seen and "CloneBackward0" in seen
    assert seen.count("AddmmBackward0") == 5
