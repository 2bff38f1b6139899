"""A tiny GPT-2 shared by the analysis tests that need a real model (float64, one layer)."""

import torch
import transformers

from influence_study.corpus.tokenizer import train_tokenizer
from influence_study.models.build import build_model, build_model_config

VOCAB = 30  # the tiny model's vocabulary; token 0 is the padding id


def tiny_gpt2(vocab: int = VOCAB) -> transformers.GPT2LMHeadModel:
    """One layer, n_embd 8, n_inner 12 (c_fc's gradient is [12, 8+1], c_proj's [8, 12+1]); seed it before calling."""
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2, n_inner=12,
                                     bos_token_id=0, eos_token_id=0, initializer_range=0.3)
    return transformers.GPT2LMHeadModel(config).double().eval()


def seeded_tiny_gpt2(vocab: int = VOCAB) -> tuple[transformers.GPT2LMHeadModel, torch.Generator]:
    """:func:`tiny_gpt2` initialised from torch seed 0, and a generator seeded 1 for the test's data."""
    torch.manual_seed(0)
    return tiny_gpt2(vocab), torch.Generator().manual_seed(1)


def random_sequences(lengths, generator: torch.Generator, vocab: int = VOCAB) -> list[list[int]]:
    """One sequence of token ids in [1, vocab) per length (no padding id), drawn from ``generator``."""
    return [torch.randint(1, vocab, (int(n),), generator=generator).tolist() for n in lengths]


def save_tiny_neox(path, texts):
    """A tiny GPT-NeoX checkpoint with its own BPE tokenizer trained on ``texts`` x 10, saved to ``path`` with
    ``save_pretrained`` (as a user's model would be); returns ``path``."""
    tokenizer = train_tokenizer(list(texts) * 10, vocab_size=280, progress=False)
    entry = {"architecture": "gpt_neox", "n_layer": 1, "d_model": 16, "n_head": 2}
    build_model(build_model_config(entry, len(tokenizer), 256, tokenizer.eos_token_id), seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
