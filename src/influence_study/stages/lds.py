"""Steps of the linear datamodeling score (:mod:`influence_study.analyses.lds`): which model the LDS retrains, the
random subsets of the training documents, one retrain per subset, and the LDS of every query from the retrains."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from influence_study.analyses.lds import (draw_subsets, family_table, lds_tables, paired_difference,
                                          subset_training_settings, summarise, typical_query, verdicts)
from influence_study.models.build import build_model_config, count_parameters
from influence_study.stages.retrain import document_logprobs, query_logprobs, retrain_on
from influence_study.stages.tables import query_families, table_strategy, write_analysis
from influence_study.study.config import model_entry, training_settings
from influence_study.study.io import read_parquet, read_parquet_metadata, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger


def lds_model(config: Mapping) -> str | None:
    """The model the LDS retrains: ``analyses.lds.model``, else the from-scratch model with the fewest parameters
    (counted on the meta device, nothing is allocated); ``None`` when every model is an imported checkpoint."""
    named = config["analyses"]["lds"]["model"]
    if named is not None:
        if model_entry(config, named).get("checkpoint"):
            raise ValueError(f"analyses.lds.model: {named!r} is an imported checkpoint; the LDS retrains a model "
                             f"from scratch, so name a model of `models` without `checkpoint`")
        return named
    scratch = [m for m in config["models"] if not m.get("checkpoint")]
    if not scratch:
        return None
    return min(scratch, key=lambda entry: parameter_count(entry, config))["name"]


def parameter_count(entry: Mapping, config: Mapping) -> int:
    """Parameters of a from-scratch model entry (vocabulary of ``tokenizer.vocab_size``), built on the meta device."""
    seq_len = training_settings(config, entry["name"])["seq_len"]
    model_config = build_model_config(entry, config["tokenizer"]["vocab_size"], seq_len, eos_token_id=0)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config)
    return count_parameters(model)["parameters"]


def make_subsets(config: Mapping, documents: str, subsets: str, n_subsets: int, fraction: float) -> None:
    """Step of ``lds_subsets``: draw ``n_subsets`` random subsets of the training documents, each a share
    ``fraction`` of them (``analyses.lds``; rule parameters, so that changing them redraws the subsets)."""
    docs = read_parquet(documents, columns=["doc_id", "split"])
    table = draw_subsets(docs.loc[docs["split"] == "train", "doc_id"].to_numpy(), n_subsets, fraction,
                         config["seed"])
    write_parquet(table, subsets, metadata=provenance(config, [documents], fraction=fraction))


def retrain_subset(config: Mapping, model_name: str, subset: str | int, documents: str, tokenizer_dir: str,
                   queries: str, subsets: str, measurements: str, document_losses: str | None = None,
                   progress: bool = True) -> pd.DataFrame:
    """Step of ``lds_retrain``: train ``model_name`` from scratch on training subset ``subset`` (the recipe of
    :func:`influence_study.stages.models.train_from_scratch`, steps scaled by the fraction) and write its
    log p(completion | prompt) of every query (columns of :func:`~influence_study.models.evaluation.completion_scores`
    plus ``subset, query_id``) and, to ``document_losses``, the log-likelihood of every training document read as
    ``EOS document`` (``subset, doc_id, in_subset, logprob, n_tokens``; the memorisation analysis compares them
    between the retrains with and without each document). The weights are not kept."""
    subset = int(subset)
    membership = read_parquet(subsets)
    chosen = membership.loc[membership["subset"] == subset, "doc_id"]
    if chosen.empty:
        raise ValueError(f"subset {subset}: not in {subsets} (it holds subsets 0..{membership['subset'].max()})")
    docs = read_parquet(documents)
    train_docs = docs[docs["split"] == "train"].reset_index(drop=True)
    in_subset = train_docs["doc_id"].isin(set(chosen))
    fraction = read_parquet_metadata(subsets).get("fraction", config["analyses"]["lds"]["fraction"])
    settings = subset_training_settings(training_settings(config, model_name), fraction)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    device = resolve_device(config["device"])
    model, result, seed = retrain_on(config, model_name, docs, train_docs.loc[in_subset, "doc_id"], tokenizer,
                                     settings, device, progress)
    table = read_parquet(queries, columns=["query_id", "prompt", "completion"])
    frame = query_logprobs(config, model, tokenizer, table, device)
    frame.insert(0, "subset", subset)
    valid_loss = float(result.history["valid_loss"].iloc[-1]) if len(result.history) else float("nan")
    record = provenance(config, [documents, tokenizer_dir, queries, subsets], model=model_name, subset=subset,
                        documents=int(len(chosen)), settings=settings, seed=seed, seconds=result.seconds,
                        valid_loss=valid_loss)
    write_parquet(frame, measurements, metadata=record)
    if document_losses is not None:
        doc_scores = document_logprobs(config, model, tokenizer, train_docs["text"], device)
        write_parquet(pd.DataFrame({"subset": subset, "doc_id": train_docs["doc_id"].to_numpy(),
                                    "in_subset": in_subset.to_numpy(),
                                    "logprob": doc_scores["logprob"].to_numpy(),
                                    "n_tokens": doc_scores["n_tokens"].to_numpy()}), document_losses, metadata=record)
    get_logger().info("subset %d: %d documents, %d steps in %.1f s, valid loss %.4f", subset, len(chosen),
                      settings["steps"], result.seconds, valid_loss)
    return frame


def run(config: Mapping, pairwise: Sequence[str], subsets: str, measurements: Sequence[str], queries: str,
        per_query: str, families: str, points: str, summary: str) -> None:
    """Step of ``analysis_lds``: the LDS of every query for each strategy's scores (``pairwise``: one table per
    strategy of the retrained model), per family and overall, from the subsets' measurements."""
    section = config["analyses"]["lds"]
    tables = {}
    for path in pairwise:
        tables[table_strategy(path)] = read_parquet(path, columns=["query_id", "doc_id", "score"])
    membership = read_parquet(subsets)
    measured = pd.concat([read_parquet(p) for p in measurements], ignore_index=True)
    family_of = query_families(queries)
    lds_per_query, lds_points = lds_tables(tables, membership, measured, family_of)
    by_family = family_table(lds_per_query, section["resamples"], config["seed"])
    runs = [read_parquet_metadata(p) for p in measurements]
    strategy = "ekfac" if "ekfac" in tables else next(iter(tables))
    statistics = {
        "model": runs[0].get("model") if runs else None,
        "subsets": int(membership["subset"].nunique()),
        "fraction": float(read_parquet_metadata(subsets).get("fraction", section["fraction"])),
        "documents_per_subset": int(membership.groupby("subset").size().iloc[0]),
        "steps": runs[0].get("settings", {}).get("steps") if runs else None,
        "queries": int(lds_per_query["query_id"].nunique()),
        "retrain_seconds_total": float(sum(r.get("seconds", 0.0) for r in runs)),
        "retrain_valid_loss_mean": float(np.mean([r.get("valid_loss", np.nan) for r in runs])),
        "scatter_query": typical_query(lds_per_query, strategy),
        "scatter_strategy": strategy,
        "lds": summarise(by_family),
        "ekfac_minus_identity": paired_difference(lds_per_query, "ekfac", "identity", section["resamples"],
                                                  config["seed"]),
    }
    write_analysis(config, "lds", {"per_query": (lds_per_query, per_query), "families": (by_family, families),
                                   "points": (lds_points, points)},
                   statistics, verdicts, summary, inputs=[*pairwise, subsets, *measurements, queries])
