"""A tiny GPT-2 shared by the analysis tests that need a real model (float64, one layer)."""

import transformers


def tiny_gpt2(vocab: int = 30) -> transformers.GPT2LMHeadModel:
    """One layer, n_embd 8, n_inner 12 (c_fc's gradient is [12, 8+1], c_proj's [8, 12+1]); seed it before calling."""
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=16, n_embd=8, n_layer=1, n_head=2, n_inner=12,
                                     bos_token_id=0, eos_token_id=0, initializer_range=0.3)
    return transformers.GPT2LMHeadModel(config).double().eval()
