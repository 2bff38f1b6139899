"""The model family: Hugging Face decoder-only configs built from the study config, or existing checkpoints."""

from __future__ import annotations

import os
from typing import Mapping

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPTNeoXConfig, LlamaConfig,
                          PretrainedConfig, PreTrainedModel)

ARCHITECTURES = ("gpt2", "gpt_neox", "llama")


def build_model_config(entry: Mapping, vocab_size: int, max_positions: int, eos_token_id: int) -> PretrainedConfig:
    """A ``transformers`` config for a from-scratch model entry (``architecture``, ``n_layer``, ``d_model``,
    ``n_head``, optional ``d_mlp``). Dropout is off: the models are meant to memorise and to be analysed."""
    arch = entry.get("architecture", "gpt2")
    d_model, n_layer, n_head = entry["d_model"], entry["n_layer"], entry["n_head"]
    d_mlp = entry.get("d_mlp") or 4 * d_model
    special = dict(bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=eos_token_id)
    if arch == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_positions=max_positions, n_embd=d_model, n_layer=n_layer,
                          n_head=n_head, n_inner=d_mlp, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                          **special)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, hidden_size=d_model,
                             num_hidden_layers=n_layer, num_attention_heads=n_head, intermediate_size=d_mlp,
                             hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False, **special)
    if arch == "llama":
        return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, hidden_size=d_model,
                           num_hidden_layers=n_layer, num_attention_heads=n_head, num_key_value_heads=n_head,
                           intermediate_size=d_mlp, tie_word_embeddings=True, **special)
    raise ValueError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def build_model(config: PretrainedConfig, seed: int) -> PreTrainedModel:
    """A randomly initialised causal LM for ``config``, initialised from ``seed``."""
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config)


def load_checkpoint(checkpoint: str | os.PathLike):
    """Load an existing causal-LM checkpoint and its tokenizer (local directory, or hub id where reachable).

    Returns ``(model, tokenizer)``; a missing pad token is set to the EOS token.
    """
    try:
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint))
        tokenizer = AutoTokenizer.from_pretrained(str(checkpoint))
    except OSError as err:
        raise OSError(f"could not load checkpoint {str(checkpoint)!r} (a local save_pretrained directory "
                      f"or a reachable hub id is expected): {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def context_length(model: torch.nn.Module) -> int:
    """The model's maximum sequence length (``n_positions`` or ``max_position_embeddings``)."""
    config = model.config
    length = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if not length:
        raise ValueError(f"{type(model).__name__}: its config names no maximum sequence length")
    return int(length)


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Total parameters and non-embedding parameters (token and position embeddings and a separate LM head
    excluded), counting tied weights once."""
    unique = {id(p): (name, p) for name, p in model.named_parameters()}
    total = sum(p.numel() for _, p in unique.values())
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    head = model.get_output_embeddings()
    if head is not None:
        embedding_ids.add(id(head.weight))
    embedding = sum(p.numel() for pid, (_, p) in unique.items() if pid in embedding_ids)
    return {"parameters": total, "non_embedding_parameters": total - embedding}
