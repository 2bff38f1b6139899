"""Byte-level BPE tokenizer trained with Hugging Face ``tokenizers`` and saved as a ``transformers`` tokenizer."""

from __future__ import annotations

import os
from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN = "<|endoftext|>"


def train_tokenizer(texts: Sequence[str], vocab_size: int = 2048, min_frequency: int = 2,
                    progress: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (GPT-2 style, one special token ``<|endoftext|>``) on ``texts``.

    The special token serves as BOS, EOS and padding. Training is deterministic for the same texts.
    """
    if len(texts) == 0:
        raise ValueError("train_tokenizer: no texts to train on")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=progress,
    )
    bpe.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN,
        unk_token=None, model_max_length=1 << 30,
    )


def encode_documents(tokenizer, texts: Iterable[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (callers add EOS separators themselves)."""
    texts = list(texts)
    if not texts:
        return []
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def save_tokenizer(tokenizer, directory: str | os.PathLike) -> None:
    """Save with ``save_pretrained`` so ``AutoTokenizer.from_pretrained(directory)`` loads it."""
    tokenizer.save_pretrained(str(directory))
