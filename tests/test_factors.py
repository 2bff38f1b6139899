"""Curvature factors (identity, diagonal, K-FAC, EK-FAC) against references built without the engine.

Every expected value here comes from explicit math on tiny float64 models: covariances from our own forward
hooks and ``retain_grad``, per-sequence gradients from one ``backward`` per sequence (or ``torch.func``), dense
curvature matrices built with ``torch.kron`` and inverted with ``torch.linalg.solve``. The engine is only ever
the thing being checked.

Tolerances: the models and factors are float64, so the engine and the reference differ only by summation order
and the float64 eigendecomposition: relative errors are ~1e-13. ``TIGHT`` leaves three orders of margin and still
catches any real mistake (a transposed factor, a missing bias column, the wrong token count), each of which is
an O(1) relative error.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap
from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                          LlamaForCausalLM)
from transformers.pytorch_utils import Conv1D

from influence_study import (DAMPING_FACTOR, ClassificationTask, FactorArguments, Factors, LanguageModelingTask, Task,
                             fit_factors, model_fingerprint,
                             pairwise_scores, select_modules)

F64 = torch.float64
VOCAB = 40
C_FC, C_PROJ = "transformer.h.0.mlp.c_fc", "transformer.h.0.mlp.c_proj"
NEOX_UP, NEOX_DOWN = "gpt_neox.layers.0.mlp.dense_h_to_4h", "gpt_neox.layers.0.mlp.dense_4h_to_h"
TIGHT = dict(rtol=1e-10, atol=1e-12)  # float64 everywhere; see the module docstring


# --- tiny models and data -------------------------------------------------------------------------------------


def gpt2(seed: int = 0, n_layer: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    # n_inner=12 != n_embd=8 so that a transposed Conv1D weight or a misplaced bias column changes shapes.
    # initializer_range=0.3 makes the MLP clearly nonlinear and the logits far from uniform.
    config = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=8, n_layer=n_layer, n_head=2, n_inner=12,
                        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        initializer_range=0.3)
    return GPT2LMHeadModel(config).double().eval()


def neox(seed: int = 0, n_layer: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    config = GPTNeoXConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=n_layer, num_attention_heads=2,
                           intermediate_size=12, max_position_embeddings=16, hidden_dropout=0.0,
                           attention_dropout=0.0, initializer_range=0.3)
    return GPTNeoXForCausalLM(config).double().eval()


def llama(seed: int = 0, n_layer: int = 2) -> nn.Module:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=8, num_hidden_layers=n_layer, num_attention_heads=2,
                         num_key_value_heads=2, intermediate_size=12, max_position_embeddings=16)
    return LlamaForCausalLM(config).double().eval()


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)).double().eval()


def lm_batch(lengths, width: int, seed: int, prompt: int = 0) -> dict:
    """Right-padded sequences (pad id 0, attention_mask 0, label -100); the first ``prompt`` labels are -100."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), width), generator=g)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids * mask
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompt] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def lm_loader() -> list[dict]:
    # two batches of different widths, each with padding: 31 real tokens, 7 sequences
    return [lm_batch([7, 3, 5], 7, seed=1), lm_batch([5, 2, 4, 5], 5, seed=2)]


def cls_loader(seed: int = 3, sizes=(6, 5, 4)) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [{"inputs": torch.randn(n, 5, generator=g, dtype=F64), "labels": torch.randint(0, 4, (n,), generator=g)}
            for n in sizes]


# --- references (no engine code) --------------------------------------------------------------------------------


def lm_loss(model, batch):
    """Summed next-token cross-entropy on the labelled positions (our own, not the task's)."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), batch["labels"][:, 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")


def lm_logp(model, batch):
    return -lm_loss(model, batch)


def cls_loss(model, batch):
    return F.cross_entropy(model(batch["inputs"]), batch["labels"], reduction="sum")


def lm_real(batch):
    return batch["attention_mask"].bool()


def all_real(batch):
    return torch.ones(len(batch["inputs"]), 1, dtype=torch.bool)


LM = (LanguageModelingTask(), lm_loss, lm_real)
CLS = (ClassificationTask(), cls_loss, all_real)


def module_of(model, name):
    return dict(model.named_modules())[name]


def grad_matrix(module, weight_grad, bias_grad):
    """[out, in(+1)]: the weight gradient in Linear orientation, the bias gradient as last column."""
    w = weight_grad.T if isinstance(module, Conv1D) else weight_grad
    return w if bias_grad is None else torch.cat([w, bias_grad[:, None]], dim=1)


def per_sequence_gradients(model, loss_fn, loader, names) -> dict[str, torch.Tensor]:
    """{name: [n, out, in(+1)]}: one backward per sequence, run on that sequence alone."""
    out = {n: [] for n in names}
    for batch in loader:
        for b in range(len(next(iter(batch.values())))):
            one = {k: v[b:b + 1] for k, v in batch.items()}
            model.zero_grad()
            loss_fn(model, one).backward()
            for n in names:
                m = module_of(model, n)
                out[n].append(grad_matrix(m, m.weight.grad, None if m.bias is None else m.bias.grad))
    model.zero_grad()
    return {n: torch.stack(v) for n, v in out.items()}


def reference_covariances(model, loss_fn, loader, name, real) -> tuple[torch.Tensor, torch.Tensor]:
    """A = mean over real tokens of a_bar a_bar^T; S = sum over all tokens of s s^T / n_sequences,
    with a = the module's input (our forward hook) and s = d(summed loss)/d(module output) (retain_grad)."""
    module = module_of(model, name)
    a_sum = s_sum = 0
    n_tokens = n_seq = 0
    for batch in loader:
        seen = {}

        def hook(mod, args, output):
            seen["a"] = args[0].detach()
            output.retain_grad()
            seen["out"] = output

        handle = module.register_forward_hook(hook)
        try:
            loss_fn(model, batch).backward()
        finally:
            handle.remove()
        a, s = seen["a"], seen["out"].grad
        if a.dim() == 2:  # no token dimension
            a, s = a[:, None], s[:, None]
        if module.bias is not None:
            a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
        mask = real(batch)
        assert torch.all(s[~mask] == 0), "padding must get no output gradient (reference sanity)"
        a_real = a[mask]
        a_sum = a_sum + a_real.T @ a_real
        s_flat = s.reshape(-1, s.shape[-1])
        s_sum = s_sum + s_flat.T @ s_flat
        n_tokens += int(mask.sum())
        n_seq += a.shape[0]
    model.zero_grad()
    return a_sum / n_tokens, s_sum / n_seq


def rotated_squares(dw, q_s, q_a):
    """mean over sequences of (Q_S^T DW Q_A)^2."""
    return ((q_s.T @ dw @ q_a) ** 2).mean(0)


def dense_solve(h, v, damping):
    """(H + damping I)^-1 vec(V) for every V in [k, out, in], with row-major vec."""
    k, n_out, n_in = v.shape
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    return torch.linalg.solve(h + damping * eye, v.reshape(k, -1).T).T.reshape(k, n_out, n_in)


def eigenbasis_matrix(q_s, q_a, lam):
    """Q diag(vec(Lambda)) Q^T with Q = kron(Q_S, Q_A) (row-major vec)."""
    q = torch.kron(q_s, q_a)
    return q @ torch.diag(lam.reshape(-1)) @ q.T


def dense_factors(factors, name):
    q_a, q_s = factors.eigenvectors(name)
    return torch.block_diag(*q_s), torch.block_diag(*q_a)


def random_vectors(factors, seed=5, k=3):
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn(k, d["out"], d["in"] + d["bias"], generator=g, dtype=F64)
            for n, d in factors.metadata["modules"].items()}


def fit(model, task, loader, strategy, **kw):
    kw.setdefault("sampled_labels", False)
    return fit_factors(model, task, loader, strategy=strategy, dtype=F64, progress=False, **kw)


def assert_close(actual, expected, **tol):
    torch.testing.assert_close(actual, expected, **(tol or TIGHT))


# --- 1. K-FAC covariances -----------------------------------------------------------------------------------------

CASES = {
    "gpt2-conv1d": (gpt2, LM, lm_loader, [C_FC, C_PROJ]),
    "neox-linear": (neox, LM, lm_loader, [NEOX_UP, NEOX_DOWN]),
    "mlp-linear": (mlp, CLS, cls_loader, ["0", "2"]),
}


def fit_case(case: str, strategy: str):
    """A fresh model and loader of ``CASES[case]`` and their factors on the case's modules: ``model, loader,
    factors, names, loss_fn, real``."""
    make, (task, loss_fn, real), loader_fn, names = CASES[case]
    model, loader = make(), loader_fn()
    return model, loader, fit(model, task, loader, strategy, modules=names), names, loss_fn, real


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("strategy", ["kfac", "ekfac"])
def test_covariances_equal_token_averages(case, strategy):
    model, loader, factors, names, loss_fn, real = fit_case(case, strategy)
    assert factors.module_names == names
    for name in names:
        a_ref, s_ref = reference_covariances(model, loss_fn, loader, name, real)
        a, s = factors.covariances(name)
        module = module_of(model, name)
        n_in = module.weight.shape[0] if isinstance(module, Conv1D) else module.in_features
        assert a.shape == (n_in + 1, n_in + 1)  # every module here has a bias: homogeneous coordinate
        assert_close(a, a_ref)
        assert_close(s, s_ref)
        assert a[-1, -1].item() == pytest.approx(1.0)  # the appended 1 averages to exactly 1
    real_tokens = sum(int(real(b).sum()) for b in loader)
    assert factors.metadata["counts"]["tokens"] == real_tokens
    assert factors.metadata["counts"]["sequences"] == sum(len(next(iter(b.values()))) for b in loader)


def test_covariances_ignore_padding_content():
    """Changing the ids and hidden states at padded positions changes nothing."""
    model, loader = gpt2(), lm_loader()
    other = [dict(b) for b in loader]
    for b in other:
        b["input_ids"] = b["input_ids"].masked_fill(b["attention_mask"] == 0, 17)
    f1 = fit(model, LanguageModelingTask(), loader, "kfac", modules=[C_FC])
    f2 = fit(model, LanguageModelingTask(), other, "kfac", modules=[C_FC])
    for x, y in zip(f1.covariances(C_FC), f2.covariances(C_FC)):
        assert_close(x, y)


# --- 2. EK-FAC eigenvalue correction --------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gpt2-conv1d", "mlp-linear"])
def test_ekfac_eigenvalues_are_projected_per_sequence_gradients(case):
    model, loader, factors, names, loss_fn, real = fit_case(case, "ekfac")
    dw = per_sequence_gradients(model, loss_fn, loader, names)
    for name in names:
        a_ref, s_ref = reference_covariances(model, loss_fn, loader, name, real)
        q_s, q_a = dense_factors(factors, name)
        # the stored eigenvectors are orthonormal eigenvectors of the reference covariances
        for q, m in ((q_a, a_ref), (q_s, s_ref)):
            assert_close(q.T @ q, torch.eye(q.shape[0], dtype=F64))
            rotated = q.T @ m @ q
            off = rotated - torch.diag(torch.diagonal(rotated))
            assert off.abs().max() <= 1e-10 * m.abs().max()
        lam_ref = rotated_squares(dw[name], q_s, q_a)
        assert_close(factors.eigenvalues(name), lam_ref)
        # and it differs from the K-FAC product, so the test would notice a correction that was skipped
        kfac_lam = torch.outer(torch.diagonal(q_s.T @ s_ref @ q_s), torch.diagonal(q_a.T @ a_ref @ q_a))
        assert not torch.allclose(lam_ref, kfac_lam, rtol=1e-3)


def test_kfac_eigenvalues_are_products_of_factor_eigenvalues():
    model, loader = gpt2(), lm_loader()
    factors = fit(model, LanguageModelingTask(), loader, "kfac", modules=[C_FC])
    a_ref, s_ref = reference_covariances(model, lm_loss, loader, C_FC, lm_real)
    q_s, q_a = dense_factors(factors, C_FC)
    expected = torch.outer(torch.diagonal(q_s.T @ s_ref @ q_s), torch.diagonal(q_a.T @ a_ref @ q_a)).clamp(min=0)
    # eigenvalues near zero carry absolute error ~eps * largest eigenvalue
    assert_close(factors.eigenvalues(C_FC), expected, rtol=1e-9, atol=1e-12 * expected.max().item())


# --- 3. inverse-Hessian-vector products against dense solves -----------------------------------------------------


@pytest.mark.parametrize("case", ["gpt2-conv1d", "mlp-linear"])
def test_kfac_ihvp_equals_dense_kronecker_solve(case):
    model, loader, factors, names, loss_fn, real = fit_case(case, "kfac")
    vectors = random_vectors(factors)
    dense, damping = {}, {}
    for name in names:
        a_ref, s_ref = reference_covariances(model, loss_fn, loader, name, real)
        dense[name] = torch.kron(s_ref, a_ref)
        damping[name] = 0.05 * torch.trace(dense[name]).item() / dense[name].shape[0]
    out = factors.precondition(vectors, damping)
    for name in names:
        assert_close(out[name], dense_solve(dense[name], vectors[name], damping[name]), rtol=1e-8, atol=1e-10)
    # default damping: 0.1 x mean eigenvalue of kron(S, A) = 0.1 x trace / dimension
    defaults = factors.default_damping()
    out = factors.precondition(vectors)
    for name in names:
        expected_damping = 0.1 * torch.trace(dense[name]).item() / dense[name].shape[0]
        assert defaults[name] == pytest.approx(expected_damping, rel=1e-10)
        # tolerance: the solve has condition number up to ~(1 + 10 x largest/mean eigenvalue); 1e-8 is ample
        assert_close(out[name], dense_solve(dense[name], vectors[name], expected_damping), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("case", ["gpt2-conv1d", "mlp-linear"])
def test_ekfac_ihvp_equals_dense_eigenbasis_solve(case):
    model, loader, factors, names, loss_fn, _ = fit_case(case, "ekfac")
    dw = per_sequence_gradients(model, loss_fn, loader, names)
    vectors = random_vectors(factors)
    out_default = factors.precondition(vectors)
    defaults = factors.default_damping()
    for name in names:
        q_s, q_a = dense_factors(factors, name)
        lam = rotated_squares(dw[name], q_s, q_a)
        h = eigenbasis_matrix(q_s, q_a, lam)
        expected_damping = 0.1 * lam.mean().item()
        assert defaults[name] == pytest.approx(expected_damping, rel=1e-10)
        assert_close(out_default[name], dense_solve(h, vectors[name], expected_damping), rtol=1e-8, atol=1e-10)
        for damping in (1e-3 * lam.mean().item(), 3.0):
            out = factors.precondition(vectors, {name: damping})
            assert_close(out[name], dense_solve(h, vectors[name], damping), rtol=1e-8, atol=1e-10)


def test_precondition_accepts_a_single_matrix_batch():
    model, loader = mlp(), cls_loader()
    factors = fit(model, ClassificationTask(), loader, "ekfac")
    vectors = random_vectors(factors, k=1)
    both = factors.precondition(vectors, 0.5)
    for name in factors.module_names:
        alone = factors.precondition({n: v for n, v in vectors.items()}, 0.5)[name]
        assert both[name].shape == vectors[name].shape == alone.shape


# --- 4. a model whose Kronecker factorisation is exact ------------------------------------------------------------


class LinearLossTask(Task):
    """loss = sum_b c_b . output_b: the output gradient is s_b = c_b, whatever the input."""

    required_keys = ("inputs", "coef")

    def outputs(self, model, batch):
        return model(batch["inputs"])

    def train_loss(self, outputs, batch, sample=False, generator=None):
        return (outputs * batch["coef"]).sum()

    def measurement(self, outputs, batch):
        return -(outputs * batch["coef"]).sum()


def test_kfac_and_ekfac_are_exact_for_a_product_design():
    """Single linear layer, single-token examples, loss linear in the output, and a dataset that is the full grid
    {(x_j, c_i)}: then DW = c a_bar^T and G = mean_{i,j} (c_i c_i^T) kron (a_j a_j^T)
    = (mean_i c_i c_i^T) kron (mean_j a_j a_j^T) = S kron A exactly, and the EK-FAC eigenvalues equal the K-FAC ones.
    Both IHVPs must therefore equal the dense damped solve of the TRUE curvature."""
    g = torch.Generator().manual_seed(11)
    xs = torch.randn(6, 4, generator=g, dtype=F64)
    cs = torch.randn(4, 3, generator=g, dtype=F64)
    inputs = xs.repeat(len(cs), 1)
    coef = cs.repeat_interleave(len(xs), 0)
    batches = [{"inputs": inputs[i:i + 5], "coef": coef[i:i + 5]} for i in range(0, len(inputs), 5)]
    torch.manual_seed(0)
    model = nn.Linear(4, 3).double()

    # true curvature from torch.func per-example gradients
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, x, c):
        return (functional_call(model, p, (x[None],))[0] * c).sum()

    per_ex = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, inputs, coef)
    dw = torch.cat([per_ex["weight"], per_ex["bias"][..., None]], dim=-1)  # [n, out, in+1]
    flat = dw.reshape(len(dw), -1)
    g_true = flat.T @ flat / len(dw)
    # sanity of the construction (not of the engine): the true curvature is a Kronecker product
    a_bar = torch.cat([xs, torch.ones(len(xs), 1, dtype=F64)], 1)
    assert_close(g_true, torch.kron(cs.T @ cs / len(cs), a_bar.T @ a_bar / len(xs)))

    task = LinearLossTask()
    vectors = {"": None}
    v = torch.randn(2, 3, 5, generator=g, dtype=F64)
    for strategy in ("kfac", "ekfac"):
        factors = fit(model, task, batches, strategy, modules=None)
        (name,) = factors.module_names
        vectors = {name: v}
        for damping in (1e-3, 0.1, 2.0):
            out = factors.precondition(vectors, damping)[name]
            # the condition number is at most (largest eigenvalue + damping) / damping ~ 1e4: 1e-8 is ample
            assert_close(out, dense_solve(g_true, v, damping), rtol=1e-8, atol=1e-10)
        lam = torch.linalg.eigvalsh(g_true)
        assert factors.default_damping()[name] == pytest.approx(0.1 * lam.mean().item(), rel=1e-10)


# --- 5. block-diagonal split ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["kfac", "ekfac"])
def test_block_diagonal_factors(strategy):
    model, loader = gpt2(), lm_loader()
    names = [C_FC, C_PROJ]
    factors = fit(model, LanguageModelingTask(), loader, strategy, modules=names, blocks=2)
    assert factors.metadata["blocks"] == 2
    dw = per_sequence_gradients(model, lm_loss, loader, names) if strategy == "ekfac" else None
    vectors = random_vectors(factors)
    damping = {}
    dense = {}
    for name in names:
        a_ref, s_ref = reference_covariances(model, lm_loss, loader, name, lm_real)
        block_mats = {}
        for key, full in (("A", a_ref), ("S", s_ref)):
            blocks = [factors.tensors[name][f"{key}_covariance.{k}"] for k in range(2)]
            sizes = [b.shape[0] for b in blocks]
            assert sum(sizes) == full.shape[0] and abs(sizes[0] - sizes[1]) <= 1
            lo = sizes[0]
            assert_close(blocks[0], full[:lo, :lo])
            assert_close(blocks[1], full[lo:, lo:])
            masked = full.clone()
            masked[:lo, lo:] = 0
            masked[lo:, :lo] = 0
            block_mats[key] = masked
        a_bd, s_bd = factors.covariances(name)
        assert_close(a_bd, block_mats["A"])
        assert_close(s_bd, block_mats["S"])
        q_s, q_a = dense_factors(factors, name)
        for q, m in ((q_a, a_bd), (q_s, s_bd)):
            rotated = q.T @ m @ q
            assert (rotated - torch.diag(torch.diagonal(rotated))).abs().max() <= 1e-10 * m.abs().max()
        if strategy == "kfac":
            dense[name] = torch.kron(s_bd, a_bd)
        else:
            lam = rotated_squares(dw[name], q_s, q_a)
            assert_close(factors.eigenvalues(name), lam)
            dense[name] = eigenbasis_matrix(q_s, q_a, lam)
        damping[name] = 0.02 * torch.trace(dense[name]).item() / dense[name].shape[0]
    out = factors.precondition(vectors, damping)
    for name in names:
        assert_close(out[name], dense_solve(dense[name], vectors[name], damping[name]), rtol=1e-8, atol=1e-10)


def test_blocks_beyond_factor_size_are_refused():
    with pytest.raises(ValueError, match="blocks"):
        fit(mlp(), ClassificationTask(), cls_loader(), "kfac", blocks=5)  # module "2" has S of size 4
    with pytest.raises(ValueError, match="blocks"):
        fit(mlp(), ClassificationTask(), cls_loader(), "diagonal", blocks=2)


# --- 6. diagonal and identity --------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["gpt2-conv1d", "mlp-linear"])
def test_diagonal_is_mean_squared_per_sequence_gradient(case):
    model, loader, factors, names, loss_fn, _ = fit_case(case, "diagonal")
    dw = per_sequence_gradients(model, loss_fn, loader, names)
    vectors = random_vectors(factors)
    out = factors.precondition(vectors, 0.25)
    defaults = factors.default_damping()
    for name in names:
        diag = (dw[name] ** 2).mean(0)
        assert_close(factors.tensors[name]["diagonal"], diag)
        assert_close(out[name], vectors[name] / (diag + 0.25))
        assert defaults[name] == pytest.approx(0.1 * diag.mean().item(), rel=1e-10)


def test_identity_returns_the_raw_gradient_and_scores_are_dot_products():
    model = gpt2()
    factors = fit(model, LanguageModelingTask(), lm_loader(), "identity", modules=[C_FC, C_PROJ])
    vectors = random_vectors(factors)
    for damping in (None, 0.3):
        out = factors.precondition(vectors, damping)
        for name in factors.module_names:
            assert torch.equal(out[name], vectors[name])
    queries = [lm_batch([6, 4], 6, seed=7, prompt=3)]
    train = lm_loader()
    scores = pairwise_scores(model, LanguageModelingTask(), factors, queries, train, dtype=F64, progress=False)
    names = factors.module_names
    gq = per_sequence_gradients(model, lm_logp, queries, names)  # measurement = log p(completion | prompt)
    gt = per_sequence_gradients(model, lm_logp, train, names)
    expected = sum(torch.einsum("qij,mij->qm", gq[n], gt[n]) for n in names)
    assert_close(scores.scores.to(F64), expected, rtol=1e-9, atol=1e-10)


# --- 7. save / load ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["ekfac", "diagonal"])
def test_save_load_round_trip(tmp_path, strategy):
    model, loader = gpt2(), lm_loader()
    kw = {"blocks": 2} if strategy == "ekfac" else {}
    factors = fit(model, LanguageModelingTask(), loader, strategy, modules=[C_FC, C_PROJ], **kw)
    directory = factors.save(tmp_path / "factors")
    assert sorted(p.name for p in directory.iterdir()) == ["factors.safetensors", "metadata.json"]
    loaded = Factors.load(directory, model=model)
    assert loaded.strategy == strategy
    assert loaded.module_names == factors.module_names
    assert loaded.metadata == json.loads(json.dumps(factors.metadata))  # JSON round trip of the same dict
    assert set(loaded.tensors) == set(factors.tensors)
    for name in factors.tensors:
        assert set(loaded.tensors[name]) == set(factors.tensors[name])
        for key, tensor in factors.tensors[name].items():
            assert loaded.tensors[name][key].dtype == tensor.dtype
            assert torch.equal(loaded.tensors[name][key], tensor)
    vectors = random_vectors(factors)
    expected = factors.precondition(vectors)
    for name, out in loaded.precondition(vectors).items():
        # equal tensors, but the loaded ones are contiguous where eigh's are not: matmul may round differently
        assert_close(out, expected[name])

    with pytest.raises(ValueError, match="another model|fingerprint"):
        Factors.load(directory, model=gpt2(seed=1))
    with pytest.raises(ValueError, match="another model"):
        Factors.load(directory, model=mlp())  # the tracked modules do not even exist


def test_load_keeps_module_order_and_fingerprint_when_names_are_not_alphabetical(tmp_path):
    """GPT-NeoX tracks dense_h_to_4h before dense_4h_to_h: the saved metadata must not reorder the modules, and
    the fingerprint must not depend on their order (a reordering once made every NeoX factor look foreign)."""
    from collections import OrderedDict

    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict([("z_in", nn.Linear(5, 7)), ("act", nn.Tanh()),
                                       ("a_out", nn.Linear(7, 4))])).double().eval()
    factors = fit(model, ClassificationTask(), cls_loader(), "ekfac", modules=["z_in", "a_out"])
    assert factors.module_names == ["z_in", "a_out"]
    loaded = Factors.load(factors.save(tmp_path / "factors"), model=model)
    assert loaded.module_names == ["z_in", "a_out"]
    assert model_fingerprint(model, ["a_out", "z_in"]) == model_fingerprint(model, ["z_in", "a_out"])


@pytest.mark.parametrize("missing", ["factors.safetensors", "metadata.json"])
def test_load_missing_file(tmp_path, missing):
    factors = fit(mlp(), ClassificationTask(), cls_loader(), "kfac")
    directory = factors.save(tmp_path / "f")
    (directory / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        Factors.load(directory)
    with pytest.raises(FileNotFoundError):
        Factors.load(tmp_path / "never-written")


# --- 8. bad input ------------------------------------------------------------------------------------------------


def test_no_module_matched():
    with pytest.raises(ValueError, match="no module .*matched 'nonexistent'"):
        fit(gpt2(), LanguageModelingTask(), lm_loader(), "kfac", modules=["nonexistent"])
    with pytest.raises(ValueError, match="no module"):
        select_modules(mlp(), ["*.c_fc"])


@pytest.mark.parametrize("name", ["transformer.wte", "transformer.h.0.ln_1"])
def test_untrackable_module(name):
    with pytest.raises(TypeError, match="cannot be tracked"):
        fit(gpt2(), LanguageModelingTask(), lm_loader(), "ekfac", modules=[name])


@pytest.mark.parametrize("strategy", ["diagonal", "kfac", "ekfac"])
def test_nan_weights_name_the_module(strategy):
    model = gpt2()
    with torch.no_grad():
        module_of(model, C_PROJ).weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=f"NaN or Inf.*{C_PROJ}"):
        fit(model, LanguageModelingTask(), lm_loader(), strategy, modules=[C_PROJ])


def test_nan_in_first_layer_names_a_module_of_the_mlp():
    model = mlp()
    with torch.no_grad():
        model[0].bias[1] = float("nan")
    with pytest.raises(FloatingPointError, match="module '[02]'"):
        fit(model, ClassificationTask(), cls_loader(), "ekfac")


@pytest.mark.parametrize("damping", [0, -1, 0.0, float("nan"), float("inf")])
def test_nonpositive_damping_is_refused(damping):
    model = mlp()
    factors = fit(model, ClassificationTask(), cls_loader(), "ekfac")
    with pytest.raises(ValueError, match="damping"):
        pairwise_scores(model, ClassificationTask(), factors, cls_loader(sizes=(2,)), cls_loader(), damping=damping,
                        progress=False)
    with pytest.raises(ValueError, match="damping"):
        factors.precondition(random_vectors(factors), {"2": damping})


@pytest.mark.parametrize("missing", ["attention_mask", "labels"])
def test_loader_with_missing_keys(missing):
    model = gpt2()
    good = lm_loader()
    bad = [{k: v for k, v in b.items() if k != missing} for b in good]
    with pytest.raises(KeyError, match=missing):
        fit(model, LanguageModelingTask(), bad, "kfac")
    factors = fit(model, LanguageModelingTask(), good, "identity")
    with pytest.raises(KeyError, match=missing):
        pairwise_scores(model, LanguageModelingTask(), factors, bad, good, progress=False)
    with pytest.raises(KeyError, match=missing):
        pairwise_scores(model, LanguageModelingTask(), factors, good, bad, progress=False)


def test_factors_of_another_model_are_refused_when_scoring():
    factors = fit(gpt2(seed=0), LanguageModelingTask(), lm_loader(), "ekfac")
    with pytest.raises(ValueError, match="another model"):
        pairwise_scores(gpt2(seed=1), LanguageModelingTask(), factors, lm_loader(), lm_loader(), progress=False)


def test_unknown_strategy():
    with pytest.raises(ValueError, match="strategy.*'kfca'"):
        fit(mlp(), ClassificationTask(), cls_loader(), "kfca")
    with pytest.raises(ValueError, match="strategy"):
        Factors("lissa", {}, {"modules": {}})


def test_options_as_dataclass_keywords_or_both_fit_the_same_factors():
    """``fit_factors`` takes a FactorArguments, keyword overrides of its fields, a strategy name in its place, or an
    instance with overrides on top; all give the same tensors and the same metadata."""
    model, loader = mlp(), cls_loader()
    task = ClassificationTask()
    fits = [fit_factors(model, task, loader, strategy="ekfac", blocks=2, dtype=F64, seed=3, progress=False),
            fit_factors(model, task, loader, FactorArguments(strategy="ekfac", blocks=2, dtype=F64, seed=3,
                                                             progress=False)),
            fit_factors(model, task, loader, FactorArguments(blocks=2, dtype=F64), seed=3, progress=False),
            fit_factors(model, task, loader, "ekfac", blocks=2, dtype=F64, seed=3, progress=False)]
    first = fits[0]
    assert first.metadata["blocks"] == 2 and first.metadata["seed"] == 3 and first.metadata["dtype"] == "float64"
    for other in fits[1:]:
        assert {k: v for k, v in other.metadata.items() if k != "seconds"} == \
            {k: v for k, v in first.metadata.items() if k != "seconds"}
        for name in first.module_names:
            assert first.tensors[name].keys() == other.tensors[name].keys()
            assert all(torch.equal(first.tensors[name][k], other.tensors[name][k]) for k in first.tensors[name])
    # the options are documented fields, each with its one default
    assert FactorArguments().strategy == "ekfac" and FactorArguments().blocks == 1
    assert all(f.metadata["help"] for f in dataclasses.fields(FactorArguments))


@pytest.mark.parametrize("call, error, match", [
    (dict(strategy="ekfac", bloks=2), TypeError, r"unexpected option.*\['bloks'\]"),
    (dict(strategy="ekfac", depth=10), TypeError, r"unexpected option.*\['depth'\] for strategy 'ekfac'"),
    (dict(options=FactorArguments(strategy="kfac", epsilon=0.1)), TypeError, r"\['epsilon'\] for strategy 'kfac'"),
    (dict(strategy="lissa", steps=3), TypeError, r"\['steps'\] for strategy 'lissa'; it takes \['depth', 'scale'\]"),
    (dict(options="kfac", strategy="ekfac"), TypeError, "strategy given twice"),
    (dict(options={"strategy": "kfac"}), TypeError, "FactorArguments"),
    (dict(strategy="diagonal", blocks=2), ValueError, "blocks"),
    (dict(strategy="ekfac", dtype=torch.float16), ValueError, "dtype"),
])
def test_bad_options_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        fit_factors(mlp(), ClassificationTask(), cls_loader(), progress=False, **call)


@pytest.mark.parametrize("strategy", ["diagonal", "kfac", "ekfac"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_default_damping_is_the_papers_rule_bit_for_bit(strategy, dtype):
    """0.1 × the mean of the diagonal or of Λ, averaged in float64: exactly the arithmetic of the study's numbers."""
    model, loader = mlp(), cls_loader()
    factors = fit_factors(model, ClassificationTask(), loader, strategy=strategy, dtype=dtype, progress=False)
    key = "diagonal" if strategy == "diagonal" else "eigenvalues"
    assert DAMPING_FACTOR == 0.1
    for name, value in factors.default_damping().items():
        assert value == 0.1 * factors.tensors[name][key].double().mean().item()


# --- 9. default module selection ---------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "sequential"])
def test_default_selection_is_the_mlp(arch):
    if arch == "gpt2":
        model = gpt2(n_layer=2)
        expected = [f"transformer.h.{i}.mlp.{m}" for i in range(2) for m in ("c_fc", "c_proj")]
    elif arch == "gpt_neox":
        model = neox(n_layer=2)
        expected = [f"gpt_neox.layers.{i}.mlp.{m}" for i in range(2) for m in ("dense_h_to_4h", "dense_4h_to_h")]
    elif arch == "llama":
        model = llama(n_layer=2)
        expected = [f"model.layers.{i}.mlp.{m}" for i in range(2) for m in ("gate_proj", "up_proj", "down_proj")]
    else:
        model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4), nn.Linear(4, 4), nn.Tanh(),
                              nn.Linear(4, 2))
        expected = ["0", "3", "5"]
    assert list(select_modules(model)) == expected
    if arch == "gpt2":
        factors = fit(model, LanguageModelingTask(), lm_loader(), "identity")
        assert factors.module_names == expected


# --- 10. sampled labels ------------------------------------------------------------------------------------------


def test_sampled_labels_are_seeded():
    model, loader = gpt2(), lm_loader()
    kw = dict(modules=[C_PROJ], sampled_labels=True)
    s = {seed: fit(model, LanguageModelingTask(), loader, "kfac", seed=seed, **kw).covariances(C_PROJ)
         for seed in (0, 1)}
    again = fit(model, LanguageModelingTask(), loader, "kfac", seed=0, **kw).covariances(C_PROJ)
    assert torch.equal(again[1], s[0][1])
    assert not torch.allclose(s[0][1], s[1][1], rtol=1e-3)
    assert torch.equal(s[0][0], s[1][0])  # A does not depend on the labels
    true_labels = fit(model, LanguageModelingTask(), loader, "kfac", modules=[C_PROJ]).covariances(C_PROJ)
    assert not torch.allclose(s[0][1], true_labels[1], rtol=1e-3)
    default = fit_factors(model, LanguageModelingTask(), loader, strategy="kfac", modules=[C_PROJ], dtype=F64,
                          progress=False)
    assert default.metadata["sampled_labels"] is True
    assert torch.equal(default.covariances(C_PROJ)[1], s[0][1])  # None = sampled, the paper's default


def test_sampled_labels_approach_the_expected_fisher():
    """For the logits layer, s = softmax(z) - e_y, and E_y~p[s s^T] = diag(p) - p p^T exactly."""
    model = mlp()
    base = cls_loader(sizes=(10, 10))
    repeats = 200
    factors = fit(model, ClassificationTask(), base * repeats, "kfac", modules=["2"], sampled_labels=True)
    with torch.no_grad():
        p = torch.softmax(torch.cat([model(b["inputs"]) for b in base]), dim=-1)
    expected = (torch.diag_embed(p) - p[:, :, None] * p[:, None, :]).mean(0)
    # 4000 samples: each entry's Monte Carlo standard error is < 0.25 / sqrt(4000) ~ 0.004; 0.02 is ~5 sigma
    assert_close(factors.covariances("2")[1], expected, rtol=0, atol=0.02)
    # and the true-label (empirical) S is measurably different from the expected Fisher here
    empirical = fit(model, ClassificationTask(), base, "kfac", modules=["2"]).covariances("2")[1]
    assert (empirical - expected).abs().max() > 0.05


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_check_finite_finds_one_bad_element_and_names_its_module(bad):
    from influence_study.engine.passes import check_finite

    tensors = {"fine": torch.randn(3, 4), "bad": torch.randn(5, 6)}
    check_finite(tensors, "test tensors")  # finite: no error
    tensors["bad"][4, 5] = bad
    with pytest.raises(FloatingPointError, match="NaN or Inf in the test tensors of module 'bad'"):
        check_finite(tensors, "test tensors")
    # an infinity and its opposite sum to NaN: still found
    tensors["bad"][0, 0] = -tensors["bad"][4, 5] if bad == bad else bad
    with pytest.raises(FloatingPointError, match="module 'bad'"):
        check_finite(tensors, "test tensors")


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    from influence_study.engine.passes import check_finite

    big = torch.full((4,), 3.0e38)  # each finite in float32, their sum is not
    assert not torch.isfinite(big.sum())
    check_finite({"big": big, "integers": torch.arange(3)}, "test tensors")
