"""Retraining a model of the family from scratch on other training documents, and scoring what the retrained model
says: shared by the LDS (random subsets, :mod:`influence_study.stages.lds`) and the magnitude calibration (added
copies, :mod:`influence_study.stages.calibration`)."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from influence_study.models.evaluation import completion_scores
from influence_study.stages.models import train_from_scratch
from influence_study.study.devices import autocast


def retrain_on(config: Mapping, model_name: str, docs: pd.DataFrame, train_doc_ids: Sequence, tokenizer,
               settings: Mapping, device, progress: bool = True):
    """Train ``model_name`` from scratch with the recipe of :func:`influence_study.stages.models.train_from_scratch`
    (its config entry, init seed and data-order seed) on the training documents ``train_doc_ids``, in that order
    and with repeats: a document listed k times is trained on k times per epoch (the epoch shuffle permutes the
    list). The ``valid`` rows of ``docs`` give the held-out loss. The LDS (subsets) and the calibration analysis
    (added copies) retrain through it. Returns ``(model, TrainingResult, seed)``."""
    train = docs[docs["split"] == "train"].set_index("doc_id", drop=False)
    wanted = pd.Index(list(train_doc_ids))
    unknown = wanted.difference(train.index)
    if len(unknown):
        raise ValueError(f"retrain of {model_name}: {len(unknown)} document ids are not training documents of the "
                         f"corpus (e.g. {list(unknown[:3])})")
    if not train.index.is_unique:
        raise ValueError("retrain: the corpus repeats doc_id values; each training document needs its own id")
    kept = pd.concat([train.loc[wanted].reset_index(drop=True), docs[docs["split"] != "train"]],
                     ignore_index=True)
    return train_from_scratch(config, model_name, kept, tokenizer, settings, device, progress)


def completion_logprobs(config: Mapping, model, tokenizer, prompts: Sequence[str], completions: Sequence[str],
                        device) -> pd.DataFrame:
    """:func:`~influence_study.models.evaluation.completion_scores` with the study's batch size, dtype and the
    model's context length."""
    max_len = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    with autocast(config["dtype"], device):
        return completion_scores(model, tokenizer, prompts, completions, config["evaluation"]["batch_size"], device,
                                 max_length=max_len)


def query_logprobs(config: Mapping, model, tokenizer, queries: pd.DataFrame, device) -> pd.DataFrame:
    """log p(completion | prompt) of every query under ``model`` (``query_id`` plus the columns of
    :func:`~influence_study.models.evaluation.completion_scores`), scored as the ``evaluate_model`` rule scores
    them."""
    scores = completion_logprobs(config, model, tokenizer, queries["prompt"], queries["completion"], device)
    return pd.concat([queries[["query_id"]].reset_index(drop=True), scores], axis=1)


def document_logprobs(config: Mapping, model, tokenizer, texts: Sequence[str], device) -> pd.DataFrame:
    """Log-likelihood of each text read as ``EOS text`` (columns of
    :func:`~influence_study.models.evaluation.completion_scores`, one row per text)."""
    return completion_logprobs(config, model, tokenizer, [""] * len(texts), list(texts), device)
