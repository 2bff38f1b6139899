"""A tiny GPT-2 shared by the analysis tests that need a real model (float64, one layer), and tiny GPT-2, GPT-NeoX
and Llama models with padded language-model batches for the conformance tests."""

import torch
import transformers
from transformers.pytorch_utils import Conv1D

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


#: the architectures :func:`tiny_causal_lm` builds
ARCHITECTURES = ("gpt2", "gpt_neox", "llama")


def tiny_causal_lm(architecture: str, vocab: int = 48, hidden: int = 32, layers: int = 2, seq_len: int = 32,
                   attn_implementation: str = "eager", seed: int = 0) -> transformers.PreTrainedModel:
    """A float32 causal LM of ``architecture`` (:data:`ARCHITECTURES`) with random weights from torch seed
    ``seed``, built from a transformers config (no download): ``layers`` layers of width ``hidden``, 4 heads, an
    MLP of width 2 x hidden, no dropout, in eval mode. GPT-2's MLP ``Conv1D`` modules are replaced by the same
    maps as ``nn.Linear`` (:func:`conv1d_to_linear`), since kronfluence tracks only ``nn.Linear``; GPT-2 and
    GPT-NeoX have MLP biases, Llama none."""
    common = dict(vocab_size=vocab, bos_token_id=0, eos_token_id=0, attn_implementation=attn_implementation,
                  initializer_range=0.1)
    if architecture == "gpt2":
        config = transformers.GPT2Config(n_positions=seq_len, n_embd=hidden, n_layer=layers, n_head=4,
                                         n_inner=2 * hidden, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                         **common)
        model_class = transformers.GPT2LMHeadModel
    elif architecture == "gpt_neox":
        config = transformers.GPTNeoXConfig(max_position_embeddings=seq_len, hidden_size=hidden,
                                            num_hidden_layers=layers, num_attention_heads=4,
                                            intermediate_size=2 * hidden, hidden_dropout=0.0, attention_dropout=0.0,
                                            **common)
        model_class = transformers.GPTNeoXForCausalLM
    elif architecture == "llama":
        config = transformers.LlamaConfig(max_position_embeddings=seq_len, hidden_size=hidden,
                                          num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                                          intermediate_size=2 * hidden, **common)
        model_class = transformers.LlamaForCausalLM
    else:
        raise ValueError(f"architecture: expected one of {ARCHITECTURES}, got {architecture!r}")
    torch.manual_seed(seed)
    model = model_class(config)
    conv1d_to_linear(model)
    return model.eval()


def conv1d_to_linear(model: torch.nn.Module) -> torch.nn.Module:
    """Replace every MLP ``Conv1D`` of ``model`` (weight ``[in, out]``) by an ``nn.Linear`` computing the same
    map (weight ``[out, in]``), in place; returns ``model``."""
    for name, module in list(model.named_modules()):
        if not (isinstance(module, Conv1D) and ".mlp." in f".{name}"):
            continue
        n_in, n_out = module.weight.shape
        linear = torch.nn.Linear(n_in, n_out, bias=module.bias is not None, dtype=module.weight.dtype)
        with torch.no_grad():
            linear.weight.copy_(module.weight.T)
            if module.bias is not None:
                linear.bias.copy_(module.bias)
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, linear)
    return model


def lm_batches(lengths, generator: torch.Generator, seq_len: int, batch_size: int, vocab: int = 48,
               prompt: int = 0) -> list[dict[str, torch.Tensor]]:
    """Right-padded language-model batches of random sequences of the given lengths (token ids in [1, vocab),
    padding id 0 with ``attention_mask`` 0), all ``seq_len`` wide. ``labels`` are the ids, -100 at padding and on
    the first ``prompt`` tokens of each sequence (a query's prompt)."""
    rows = []
    for ids in random_sequences(lengths, generator, vocab):
        input_ids = torch.zeros(seq_len, dtype=torch.long)
        input_ids[:len(ids)] = torch.tensor(ids)
        mask = (torch.arange(seq_len) < len(ids)).long()
        labels = torch.where(mask.bool(), input_ids, torch.full_like(input_ids, -100))
        labels[:prompt] = -100
        rows.append((input_ids, mask, labels))
    return [{"input_ids": torch.stack([r[0] for r in rows[i:i + batch_size]]),
             "attention_mask": torch.stack([r[1] for r in rows[i:i + batch_size]]),
             "labels": torch.stack([r[2] for r in rows[i:i + batch_size]])} for i in range(0, len(rows), batch_size)]
