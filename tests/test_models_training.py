"""Model building, deterministic training, and evaluation checked against an unbatched reference."""

import pytest
import torch

from influence_study.models.evaluation import completion_scores, heldout_loss
from influence_study.models.build import build_model, build_model_config, count_parameters, load_checkpoint
from influence_study.corpus.tokenizer import encode_documents, train_tokenizer
from influence_study.models.training import packed_blocks, steps_for, train_language_model

TEXTS = [f"The capital of Land{i} is City{i % 7}. It is a quiet place." for i in range(30)]
SETTINGS = dict(seq_len=32, batch_size=4, steps=30, learning_rate=3e-3, warmup_steps=3, weight_decay=0.01,
                grad_clip=1.0, eval_every=10)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(TEXTS, vocab_size=300, progress=False)


@pytest.fixture(scope="module")
def documents(tokenizer):
    return encode_documents(tokenizer, TEXTS)


def tiny_model(tokenizer, arch="gpt2", seed=0, d_model=32):
    entry = {"architecture": arch, "n_layer": 2, "d_model": d_model, "n_head": 2}
    config = build_model_config(entry, len(tokenizer), 64, tokenizer.eos_token_id)
    return build_model(config, seed)


@pytest.mark.parametrize("arch, model_type", [("gpt2", "gpt2"), ("gpt_neox", "gpt_neox"), ("llama", "llama")])
def test_architectures_build_and_count(tokenizer, arch, model_type):
    model = tiny_model(tokenizer, arch)
    assert model.config.model_type == model_type
    counts = count_parameters(model)
    brute_total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    assert counts["parameters"] == brute_total
    assert 0 < counts["non_embedding_parameters"] < counts["parameters"]
    # a 4x wider model has many more non-embedding parameters (they grow ~ d_model^2)
    wide = count_parameters(tiny_model(tokenizer, arch, d_model=128))["non_embedding_parameters"]
    assert wide > 10 * counts["non_embedding_parameters"]


def test_packed_blocks_cover_each_document_once_per_epoch(documents):
    eos = 10_000
    total = sum(len(d) + 1 for d in documents)
    seq_len = 16
    stream = packed_blocks(documents, seq_len, eos, seed=3)
    epoch = torch.cat([next(stream) for _ in range(total // seq_len)]).tolist()
    assert all(len(b) == seq_len for b in [next(packed_blocks(documents, seq_len, eos, 3))])
    pieces, current = [], []
    for tok in epoch:
        if tok == eos:
            if current:
                pieces.append(tuple(current))
            current = []
        else:
            current.append(tok)
    expected = sorted(map(tuple, documents))
    # every complete document of the epoch's first part appears exactly as written
    assert all(p in set(expected) for p in pieces[:-1])
    assert len(set(pieces)) >= len(documents) - 2
    other = torch.cat([next(packed_blocks(documents, seq_len, eos, seed=4)) for _ in range(2)]).tolist()
    assert other != epoch[:2 * seq_len]


def test_training_is_deterministic_and_learns(tokenizer, documents):
    results, states = [], []
    for _ in range(2):
        model = tiny_model(tokenizer, seed=1)
        before = heldout_loss(model, documents[:8], tokenizer.eos_token_id)
        result = train_language_model(model, documents, documents[:8], SETTINGS, tokenizer.eos_token_id, seed=1,
                                      progress=False, log=lambda _: None)
        results.append(result)
        states.append(model.state_dict())
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    history = results[0].history
    assert list(history["step"]) == [10, 20, 30]
    assert history["valid_loss"].iloc[-1] < before - 1.0
    assert results[0].tokens == 30 * 4 * 32
    other = tiny_model(tokenizer, seed=1)
    train_language_model(other, documents, documents[:8], SETTINGS, tokenizer.eos_token_id, seed=2,
                         progress=False, log=lambda _: None)
    assert not torch.equal(other.state_dict()["lm_head.weight"], states[0]["lm_head.weight"])


def test_a_run_stopped_at_a_loss_is_the_full_runs_checkpoint_at_that_step(tokenizer, documents):
    def run(stop=None):
        model = tiny_model(tokenizer, seed=1)
        result = train_language_model(model, documents, documents[:8], SETTINGS, tokenizer.eos_token_id, seed=1,
                                      progress=False, log=lambda _: None, stop_at_valid_loss=stop)
        return model, result

    _, full = run()
    losses = list(full.history["valid_loss"])
    assert losses[1] < losses[0], "the test needs a loss that falls between the first two measurements"
    model, stopped = run(stop=losses[1])  # reached at the second measurement (step 20), not the first
    assert list(stopped.history["step"]) == [10, 20]
    # the same trajectory (the schedule is the full run's): the history is an exact prefix of the full run's
    assert list(stopped.history["valid_loss"]) == losses[:2]
    assert stopped.tokens == 20 * 4 * 32
    # the model returned is the step-20 checkpoint, not a later one
    assert heldout_loss(model, documents[:8], tokenizer.eos_token_id) == pytest.approx(losses[1], abs=1e-6)
    _, never = run(stop=min(losses) - 1.0)  # never reached: the whole run
    assert list(never.history["valid_loss"]) == losses and never.tokens == full.tokens
    # evaluating more often (as the matched-loss retrain does) leaves the trajectory as it was
    often = train_language_model(tiny_model(tokenizer, seed=1), documents, documents[:8], {**SETTINGS, "eval_every": 5},
                                 tokenizer.eos_token_id, seed=1, progress=False, log=lambda _: None).history
    assert list(often["step"]) == list(range(5, 31, 5))
    assert list(often.set_index("step").loc[[10, 20, 30], "valid_loss"]) == losses


def test_bfloat16_training_keeps_float32_weights_and_still_learns(tokenizer, documents):
    runs = {}
    for dtype in ("float32", "bfloat16"):
        model = tiny_model(tokenizer, seed=1)
        runs[dtype] = train_language_model(model, documents, documents[:8], SETTINGS, tokenizer.eos_token_id, seed=1,
                                           progress=False, log=lambda _: None, dtype=dtype).history
        assert all(p.dtype == torch.float32 for p in model.parameters())
    full, half = runs["float32"]["valid_loss"], runs["bfloat16"]["valid_loss"]
    assert not full.equals(half), "dtype=bfloat16 changed nothing"
    # bf16 keeps 8 bits of mantissa: over 30 steps the losses stay within a few percent of float32
    assert half.iloc[-1] == pytest.approx(full.iloc[-1], rel=0.05)


def _reference_logprob(model, ids, start):
    """log p(ids[start:] | ids[:start]) from one unpadded forward pass per sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits.double(), -1)
    return sum(logp[t - 1, ids[t]].item() for t in range(start, len(ids))), \
        all(logits[t - 1].argmax().item() == ids[t] for t in range(start, len(ids)))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_completion_scores_match_unbatched_reference(tokenizer, documents, arch):
    model = tiny_model(tokenizer, arch, seed=5)
    facts = encode_documents(tokenizer, [f"The capital of Land{i} is City{(3 * i) % 7}." for i in range(6)] * 5)
    long_run = {**SETTINGS, "steps": 250, "eval_every": 250}
    train_language_model(model, facts, facts[:2], long_run, tokenizer.eos_token_id, seed=0,
                         progress=False, log=lambda _: None)
    prompts = [f"The capital of Land{i} is" for i in range(6)] + ["It"]
    completions = [f" City{(3 * i) % 7}" for i in range(6)] + [" is a quiet place. The capital"]
    scores = completion_scores(model, tokenizer, prompts, completions, batch_size=3)
    for row, (prompt, completion) in enumerate(zip(prompts, completions)):
        p = encode_documents(tokenizer, [prompt])[0]
        c = encode_documents(tokenizer, [completion])[0]
        ref, ref_correct = _reference_logprob(model, [tokenizer.eos_token_id, *p, *c], 1 + len(p))
        assert scores.loc[row, "logprob"] == pytest.approx(ref, abs=1e-4)
        assert scores.loc[row, "n_tokens"] == len(c)
        assert bool(scores.loc[row, "correct"]) == ref_correct
    assert scores["correct"].iloc[:6].mean() >= 0.5  # it learned capitals it was trained on (untrained: 0)


def test_completion_scores_truncate_long_sequences_from_the_left(tokenizer):
    model = tiny_model(tokenizer, "gpt2", seed=6)
    prompt, completion = "The capital of Land1 is City3. " * 4, " It is a quiet place. The capital of Land2"
    p, c = encode_documents(tokenizer, [prompt])[0], encode_documents(tokenizer, [completion])[0]
    full = [tokenizer.eos_token_id, *p, *c]
    for max_length in (len(full), len(c) + 5, len(c) - 2):
        scores = completion_scores(model, tokenizer, [prompt], [completion], max_length=max_length)
        kept = full[-max_length:]
        start = max(len(kept) - len(c), 1)  # the completion's first kept position (position 0 is not predicted)
        ref, _ = _reference_logprob(model, kept, start)
        assert scores.loc[0, "logprob"] == pytest.approx(ref, abs=1e-4)
        assert scores.loc[0, "n_tokens"] == len(kept) - start
        assert bool(scores.loc[0, "truncated"]) == (max_length < len(full))


def test_heldout_loss_matches_transformers_loss(tokenizer, documents):
    model = tiny_model(tokenizer, "gpt2", seed=2)
    docs = documents[:5]
    total, count = 0.0, 0
    for doc in docs:
        ids = torch.tensor([[tokenizer.eos_token_id, *doc]])
        with torch.no_grad():
            total += model(input_ids=ids, labels=ids).loss.item() * len(doc)
        count += len(doc)
    assert heldout_loss(model, docs, tokenizer.eos_token_id, batch_size=2) == pytest.approx(total / count, rel=1e-5)


def test_load_checkpoint_from_local_directory(tmp_path, tokenizer):
    model = tiny_model(tokenizer, "gpt_neox", seed=4)
    model.save_pretrained(tmp_path / "ckpt")
    tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded, loaded_tokenizer = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config.model_type == "gpt_neox"
    ids = torch.tensor([encode_documents(tokenizer, ["The capital of Land3"])[0]])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, loaded(input_ids=ids).logits)
    assert loaded_tokenizer.pad_token is not None
    with pytest.raises(OSError, match="could not load checkpoint"):
        load_checkpoint(tmp_path / "missing")


def test_epochs_set_the_steps_from_the_corpus_size():
    documents = [[1] * 9] * 32  # 32 documents of 9 tokens + EOS = 320 tokens = 10 blocks of 32
    settings = {"steps": 7, "batch_size": 2, "seq_len": 16, "epochs": None}
    assert steps_for(settings, documents) == 7
    assert steps_for({**settings, "epochs": 1}, documents) == 10
    assert steps_for({**settings, "epochs": 2.5}, documents) == 25
    assert steps_for({**settings, "epochs": 2}, documents * 3) == 60  # three times the corpus, three times the steps
