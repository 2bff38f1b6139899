"""The DataInf part: generated fine-tuning tasks, LoRA fine-tuning through peft, and influence on the LoRA
parameters by every method, checked against references built here (per-example gradients one example at a time
with ``torch.autograd.grad``, dense solves, the closed forms written out)."""

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from influence_study import LanguageModelingTask, fit_factors, pairwise_scores
from influence_study.models.evaluation import padded_batches
from influence_study.finetune import datasets
from influence_study.finetune.influence import lora_influence
from influence_study.finetune.lora import LORA_MODULES, add_lora, completion_loss, train_lora, Examples

SETTINGS = {"noisy_sentiment": {"n_train": 50, "n_test": 10, "flip_fraction": 0.2},
            "sentence_transform": {"classes": 10, "per_class": 12, "test_per_class": 2},
            "math_no_reason": {"classes": 10, "per_class": 5, "test_per_class": 1},
            "math_with_reason": {"classes": 4, "per_class": 5, "test_per_class": 1}}


pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------------------------
# Generated tasks
# ---------------------------------------------------------------------------------------------------------------

def test_tasks_have_the_requested_classes_splits_and_flips():
    table = datasets.generate_tasks(SETTINGS, seed=3)
    assert list(table.columns) == datasets.COLUMNS
    assert table["example_id"].is_unique
    sentiment = table[table["task"] == "noisy_sentiment"]
    train = sentiment[sentiment["split"] == "train"]
    assert len(train) == 50 and (sentiment["split"] == "test").sum() == 10
    assert train["flipped"].sum() == 10  # exactly 20 % of the training labels
    assert not sentiment.loc[sentiment["split"] == "test", "flipped"].any()
    flipped = train[train["flipped"]]
    answers = {"positive": " up", "negative": " down"}
    assert (flipped["completion"] != flipped["class"].map(answers)).all()
    assert (flipped["clean_completion"] == flipped["class"].map(answers)).all()
    kept = train[~train["flipped"]]
    assert (kept["completion"] == kept["class"].map(answers)).all()
    for task, section in SETTINGS.items():
        if task == "noisy_sentiment":
            continue
        rows = table[table["task"] == task]
        counts = rows.groupby(["class", "split"]).size().unstack()
        assert len(counts) == section["classes"]
        assert (counts["test"] == section["test_per_class"]).all()
        assert (counts["train"] == section["per_class"] - section["test_per_class"]).all()
        assert rows["prompt"].is_unique
    assert table.equals(datasets.generate_tasks(SETTINGS, seed=3))
    assert not table.equals(datasets.generate_tasks(SETTINGS, seed=4))


def test_sentence_transformations_on_a_known_sentence():
    words = "the old farmer carries a small boat near the river".split()
    expected = {  # written out by hand
        "reverse_words": "river the near boat small a carries farmer old the",
        "capitals": "THE OLD FARMER CARRIES A SMALL BOAT NEAR THE RIVER",
        "first_letters": "t o f c a s b n t r",
        "sort_words": "a boat carries farmer near old river small the the",
        "double_words": "the the old old farmer farmer carries carries a a small small boat boat near near the the "
                        "river river",
        "every_other": "the farmer a boat the",
        "last_first": "river the old farmer carries a small boat near the",
        "drop_ends": "old farmer carries a small boat near the",
        "count_words": "10",
        "join_dashes": "the-old-farmer-carries-a-small-boat-near-the-river",
    }
    assert set(expected) == set(datasets.TRANSFORMS)
    for name, (_, apply) in datasets.TRANSFORMS.items():
        assert apply(words) == expected[name], name


def test_math_answers_are_consistent_with_and_without_reasons():
    table = datasets.generate_tasks({"math_with_reason": {"classes": 10, "per_class": 6, "test_per_class": 1}}, 0)
    for completion in table["completion"]:
        for step in completion.split(". "):  # every written step "a op b = c" is exact arithmetic
            if "=" in step:
                left, right = step.split("=")
                numbers = [int(t) for t in left.split() if t.isdigit()]
                op = next(t for t in left.split() if t in "+-*/")
                a, b = numbers[-2:]
                assert {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == int(right.split()[0])
    bare = datasets.generate_tasks({"math_no_reason": {"classes": 10, "per_class": 6, "test_per_class": 1}}, 0)
    assert bare["completion"].str.fullmatch(r" -?\d+").all()


def test_task_settings_are_checked():
    with pytest.raises(ValueError, match="finetune.tasks: unknown"):
        datasets.generate_tasks({"poetry": {}}, 0)
    with pytest.raises(ValueError, match="sentence_transform.classes"):
        datasets.generate_tasks({"sentence_transform": {"classes": 11, "per_class": 5, "test_per_class": 1}}, 0)
    with pytest.raises(ValueError, match="test_per_class"):
        datasets.generate_tasks({"math_no_reason": {"classes": 2, "per_class": 5, "test_per_class": 5}}, 0)
    with pytest.raises(ValueError, match="flip_fraction"):
        datasets.generate_tasks({"noisy_sentiment": {"n_train": 10, "n_test": 2, "flip_fraction": 0.5}}, 0)


# ---------------------------------------------------------------------------------------------------------------
# LoRA fine-tuning and influence on the LoRA parameters
# ---------------------------------------------------------------------------------------------------------------

def tiny_lora(rank=2, seed=0):
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=24, n_positions=16, n_embd=8, n_layer=2, n_head=2, n_inner=16, bos_token_id=0,
                        eos_token_id=0, pad_token_id=0, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    model = add_lora(GPT2LMHeadModel(config).double().eval(), rank=rank, alpha=None, targets=None, seed=seed)
    with torch.no_grad():  # peft starts B at zero (and so every gradient of A at zero): move it off, as training does
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.3)
    return model


def tiny_examples(n, seed):
    rng = np.random.default_rng(seed)
    sequences, starts = [], []
    for _ in range(n):
        prompt = rng.integers(1, 24, rng.integers(2, 6)).tolist()
        completion = rng.integers(1, 24, rng.integers(1, 4)).tolist()
        sequences.append([0, *prompt, *completion])
        starts.append(1 + len(prompt))
    return Examples(sequences, starts, pad_id=0)


def reference_gradients(model, examples):
    """``[n, P]``: d(-loss)/d(LoRA matrices) of each example alone, modules in model order (A then B)."""
    params = [p for name, p in model.named_parameters() if "lora_" in name]
    rows = []
    for seq, start in zip(examples.sequences, examples.starts):
        (_, batch), = padded_batches([seq], [start], 0, 1)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[0, :-1]
        labels = batch["labels"][0, 1:]
        kept = labels != -100
        loss = torch.nn.functional.cross_entropy(logits[kept], labels[kept], reduction="sum")
        rows.append(torch.cat([g.flatten() for g in torch.autograd.grad(-loss, params)]))
    return torch.stack(rows).double(), [p.numel() for p in params]


def test_lora_wraps_only_the_attention_projection_and_training_lowers_the_loss():
    model = tiny_lora(rank=2)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "c_attn" in n for n in trainable)
    assert len(trainable) == 4  # A and B in 2 layers
    examples = tiny_examples(24, seed=1)
    batches, _ = examples.batches(8)
    before = sum(completion_loss(model, b).item() for b in batches)
    history = train_lora(model, examples, range(24), {"epochs": 5, "batch_size": 8, "learning_rate": 0.05,
                                                      "weight_decay": 0.0}, seed=0, progress=False)
    assert list(history["epoch"]) == [1, 2, 3, 4, 5]
    after = sum(completion_loss(model, b).item() for b in batches)
    assert after < before
    with pytest.raises(ValueError, match="target_modules"):
        add_lora(GPT2LMHeadModel(GPT2Config(n_embd=8, n_layer=1, n_head=2)), 2, None, ["q_proj"], 0)


LISSA_DEPTH, LISSA_SCALE = 40, 5.0


def test_lora_influence_of_every_method_against_dense_references():
    model = tiny_lora(rank=2, seed=3)
    train_examples, test_examples = tiny_examples(14, seed=5), tiny_examples(4, seed=6)
    train_batches, train_order = train_examples.batches(5)
    test_batches, test_order = test_examples.batches(3)
    result = lora_influence(model, train_batches, test_batches,
                            lissa={"depth": LISSA_DEPTH, "scale": LISSA_SCALE, "batches": 1}, seed=0,
                            dtype=torch.float64)
    g_train, sizes = reference_gradients(model, train_examples)
    g_test, _ = reference_gradients(model, test_examples)
    g_train, g_test = g_train[train_order], g_test[test_order]  # loader order
    bounds = np.cumsum([0, *sizes])
    blocks = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])]
    # DataInf's damping: 0.1 x mean squared entry of each module's training gradients
    lams = [0.1 * (g_train[:, s] ** 2).mean().item() for s in blocks]
    assert sorted(result.damping.values()) == pytest.approx(sorted(lams), rel=1e-9)

    def close(actual, expected, tol):
        assert np.linalg.norm(actual - expected) <= tol * np.linalg.norm(expected)

    # gradient dot product
    close(result.methods["identity"].pairwise, (g_test @ g_train.T).numpy(), 1e-9)
    # exact: the damped empirical Fisher per module, solved densely
    exact = torch.zeros_like(g_test)
    for s, lam in zip(blocks, lams):
        fisher = g_train[:, s].T @ g_train[:, s] / len(g_train)
        exact[:, s] = torch.linalg.solve(fisher + lam * torch.eye(fisher.shape[0], dtype=fisher.dtype), g_test[:, s].T).T
    close(result.methods["exact"].pairwise, (exact @ g_train.T).numpy(), 1e-8)
    # DataInf's closed form, written out per example
    datainf = torch.zeros_like(g_test)
    for s, lam in zip(blocks, lams):
        for g in g_train[:, s]:
            datainf[:, s] += g_test[:, s] - ((g_test[:, s] @ g) / (lam + g @ g))[:, None] * g[None]
        datainf[:, s] /= len(g_train) * lam
    close(result.methods["datainf"].pairwise, (datainf @ g_train.T).numpy(), 1e-8)
    # EK-FAC on true labels: the engine's own pairwise scores with the same damping
    task = LanguageModelingTask()
    factors = fit_factors(model, task, train_batches, strategy="ekfac", modules=list(LORA_MODULES),
                          sampled_labels=False, dtype=torch.float64, progress=False)
    engine = pairwise_scores(model, task, factors, test_batches, train_batches, damping=result.damping,
                             dtype=torch.float64, progress=False).scores.numpy()
    close(result.methods["ekfac"].pairwise, engine, 1e-6)
    # totals are column sums; LiSSA has only the total, which converges to the damped Gauss-Newton solve
    for method in ("identity", "exact", "datainf", "ekfac"):
        close(result.methods[method].total, result.methods[method].pairwise.sum(0), 1e-12)
    assert result.methods["lissa"].pairwise is None
    # LiSSA: the truncated Neumann series of the Gauss-Newton matrix of the batches it cycles over (here the first
    # one), for the summed test gradient, computed densely from the engine's exact Gauss-Newton matrix
    ggn = fit_factors(model, task, train_batches[:1], strategy="exact", modules=list(LORA_MODULES), progress=False)
    lam = torch.cat([torch.full((s.stop - s.start,), result.damping[n]) for s, n in zip(blocks, ggn.module_names)])
    damped = ggn.matrix + torch.diag(lam.double())
    v = g_test.sum(0)
    h = v.clone()
    for _ in range(LISSA_DEPTH):
        h = v + h - damped @ h / LISSA_SCALE
    close(result.methods["lissa"].total, (h / LISSA_SCALE @ g_train.T).numpy(), 1e-8)
    for method in result.methods.values():
        assert method.fit_seconds >= 0 and method.solve_seconds >= 0


def test_per_test_lissa_solves_each_test_example():
    # With one batch and a fixed scale, LiSSA is a fixed linear map of the test gradient, so the per-test solves
    # sum to the summed solve; each row is checked against the dense series of its own test gradient.
    model = tiny_lora(rank=2, seed=3)
    train_examples, test_examples = tiny_examples(10, seed=5), tiny_examples(3, seed=6)
    train_batches, train_order = train_examples.batches(5)
    test_batches, test_order = test_examples.batches(3)
    options = {"depth": 15, "scale": LISSA_SCALE, "batches": 1}
    summed = lora_influence(model, train_batches, test_batches, methods=["exact", "lissa"], lissa=options,
                            dtype=torch.float64).methods["lissa"]
    per_test = lora_influence(model, train_batches, test_batches, methods=["exact", "lissa"],
                              lissa={**options, "per_test": True}, dtype=torch.float64)
    lissa = per_test.methods["lissa"]
    assert summed.pairwise is None and lissa.pairwise.shape == (3, 10)
    np.testing.assert_allclose(lissa.total, summed.total, rtol=1e-9, atol=1e-12 * np.abs(summed.total).max())
    np.testing.assert_allclose(lissa.total, lissa.pairwise.sum(0), rtol=1e-12)
    g_train, sizes = reference_gradients(model, train_examples)
    g_test, _ = reference_gradients(model, test_examples)
    g_train, g_test = g_train[train_order], g_test[test_order]
    task = LanguageModelingTask()
    ggn = fit_factors(model, task, train_batches[:1], strategy="exact", modules=list(LORA_MODULES), progress=False)
    lam = torch.cat([torch.full((size,), per_test.damping[n]) for size, n in zip(sizes, ggn.module_names)])
    damped = ggn.matrix + torch.diag(lam.double())
    for t in range(3):
        h = g_test[t].clone()
        for _ in range(15):
            h = g_test[t] + h - damped @ h / LISSA_SCALE
        expected = (h / LISSA_SCALE @ g_train.T).numpy()
        assert np.linalg.norm(lissa.pairwise[t] - expected) <= 1e-8 * np.linalg.norm(expected)


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="finetune.methods"):
        lora_influence(tiny_lora(), [], [], methods=["trak"])
