"""Steps of the model stage: train each model of the family from scratch (or import its checkpoint), evaluate it on
the held-out documents and the queries, and gather the learning table and the loss-curve figure."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from influence_study.corpus.tokenizer import encode_documents
from influence_study.models.build import build_model, build_model_config, count_parameters, load_checkpoint
from influence_study.models.evaluation import completion_scores, heldout_loss
from influence_study.models.training import train_language_model
from influence_study.plots import plot_loss_curves, save_figure
from influence_study.study.config import model_entry, training_settings
from influence_study.study.io import atomic_path, read_json, read_parquet, write_json, write_parquet
from influence_study.study.provenance import provenance, write_provenance
from influence_study.study.devices import autocast, resolve_device
from influence_study.study.runtime import get_logger
from influence_study.study.seeds import model_seed


def train_model(config: Mapping, model_name: str, documents: str, tokenizer_dir: str, model_dir: str,
                progress: bool = True) -> None:
    """Train one model of the family from scratch (or import its checkpoint) and save it to ``model_dir``
    with ``save_pretrained``, its tokenizer, ``history.csv`` (loss curve) and ``training.json``."""
    log = get_logger()
    entry = model_entry(config, model_name)
    device = resolve_device(config["device"])
    if entry.get("checkpoint"):
        model, tokenizer = load_checkpoint(entry["checkpoint"])
        history, info = pd.DataFrame(columns=["step", "tokens", "train_loss", "valid_loss"]), {
            "source": "checkpoint", "checkpoint": entry["checkpoint"], "seconds": 0.0, "tokens": 0}
        inputs = []
    else:
        settings = training_settings(config, model_name)
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        model, result, seed = train_from_scratch(config, model_name, read_parquet(documents), tokenizer,
                                                 settings, device, progress)
        history = result.history
        info = {"source": "scratch", "seconds": result.seconds, "tokens": result.tokens, "settings": settings,
                "seed": seed, "threads": torch.get_num_threads(), "device": str(device), "dtype": config["dtype"]}
        inputs = [documents, tokenizer_dir]
    info.update(count_parameters(model), architecture=model.config.model_type, name=model_name)
    with atomic_path(model_dir, directory=True) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        history.assign(model=model_name).to_csv(tmp / "history.csv", index=False)
        write_json(info, tmp / "training.json")
        write_json(provenance(config, inputs, model=model_name), tmp / "provenance.json")
    log.info("saved %s to %s", model_name, model_dir)


def train_from_scratch(config: Mapping, model_name: str, docs: pd.DataFrame, tokenizer, settings: Mapping,
                       device, progress: bool = True, stop_at_valid_loss: float | None = None):
    """Build model ``model_name`` of the family (its config entry and its init seed,
    :func:`~influence_study.study.seeds.model_seed`) and train it from scratch with ``settings`` on the ``train``
    rows of ``docs`` (validation loss on the ``valid`` rows). The recipe of :func:`train_model`; the LDS retrains
    subsets with it, the matched-loss comparison stops it early (``stop_at_valid_loss``, see
    :func:`~influence_study.models.training.train_language_model`). Returns ``(model, TrainingResult, seed)``."""
    log = get_logger()
    entry = model_entry(config, model_name)
    train_ids = encode_documents(tokenizer, docs.loc[docs["split"] == "train", "text"])
    valid_ids = [d[:settings["seq_len"] - 1] for d in
                 encode_documents(tokenizer, docs.loc[docs["split"] == "valid", "text"])]
    model_config = build_model_config(entry, vocab_size=len(tokenizer), max_positions=settings["seq_len"],
                                      eos_token_id=tokenizer.eos_token_id)
    seed = model_seed(config["seed"], config["models"].index(entry))
    model = build_model(model_config, seed)
    log.info("model %s: %s, %s", model_name, entry["architecture"], count_parameters(model))
    result = train_language_model(model, train_ids, valid_ids, settings, tokenizer.eos_token_id, seed,
                                  device=device, progress=progress, log=log.info, dtype=config["dtype"],
                                  stop_at_valid_loss=stop_at_valid_loss)
    return model, result, seed


def evaluate_model(config: Mapping, model_name: str, model_dir: str, documents: str, queries: str,
                   scores: str, summary: str) -> None:
    """Held-out loss and completion accuracy of every query for one model; per-query table + summary JSON."""
    device = resolve_device(config["device"])
    model = AutoModelForCausalLM.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    max_len = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    batch_size = config["evaluation"]["batch_size"]
    docs = read_parquet(documents)
    valid = [d[:max_len - 1] for d in encode_documents(tokenizer, docs.loc[docs["split"] == "valid", "text"])]
    table = read_parquet(queries)
    with autocast(config["dtype"], device):
        loss = heldout_loss(model, valid, tokenizer.eos_token_id, batch_size, device) if valid else float("nan")
        if len(table):
            table = pd.concat([table.reset_index(drop=True), completion_scores(
                model, tokenizer, table["prompt"], table["completion"], batch_size, device, max_length=max_len)],
                axis=1)
    table.insert(0, "model", model_name)
    write_parquet(table, scores)
    stats = {"model": model_name, "heldout_loss": loss, "n_valid_documents": len(valid),
             **fact_accuracy(table, config["evaluation"]["min_exposures"])}
    write_json(stats, summary)
    write_provenance(scores, config, [model_dir, documents, queries])
    get_logger().info("evaluation of %s: %s", model_name, json.dumps(stats))


def fact_accuracy(scored: pd.DataFrame, min_exposures: int) -> dict:
    """Top-1 completion accuracy on English fact queries: of facts seen at least ``min_exposures`` times, per
    number of exposures, and per fact group (held-out, flipped-only, single-language ...)."""
    if "analysis" not in scored or "correct" not in scored:
        return {}
    facts = scored[scored["analysis"] == "facts"]
    seen = facts[facts["exposures"] >= min_exposures]
    return {
        "min_exposures": min_exposures,
        "fact_accuracy_well_seen": float(seen["correct"].mean()) if len(seen) else float("nan"),
        "n_facts_well_seen": int(len(seen)),
        "fact_accuracy_by_exposures": {int(k): float(v) for k, v in facts.groupby("exposures")["correct"].mean().items()},
        "fact_accuracy_by_group": {str(k): float(v) for k, v in facts.groupby("fact_group")["correct"].mean().items()},
        "accuracy_by_analysis": {str(k): float(v) for k, v in scored.groupby("analysis")["correct"].mean().items()},
    }


def learning_table(config: Mapping, model_dirs: Sequence[str], summaries: Sequence[str], table: str,
                   table_csv: str) -> pd.DataFrame:
    """One row per model: size, training cost, held-out loss and fact accuracy (the learning table)."""
    rows = []
    for model_dir, summary in zip(model_dirs, summaries):
        info, stats = read_json(Path(model_dir) / "training.json"), read_json(summary)
        rows.append({
            "model": info["name"], "architecture": info["architecture"], "parameters": info["parameters"],
            "non_embedding_parameters": info["non_embedding_parameters"], "source": info["source"],
            "train_tokens": info["tokens"], "train_seconds": round(info["seconds"], 1),
            "heldout_loss": stats["heldout_loss"],
            "fact_accuracy_well_seen": stats.get("fact_accuracy_well_seen"),
            "n_facts_well_seen": stats.get("n_facts_well_seen"),
            **{f"fact_accuracy_exposures_{k}": v for k, v in stats.get("fact_accuracy_by_exposures", {}).items()},
            **{f"fact_accuracy_{k}": v for k, v in stats.get("fact_accuracy_by_group", {}).items()},
            **{f"accuracy_{k}": v for k, v in stats.get("accuracy_by_analysis", {}).items()},
        })
    frame = pd.DataFrame(rows)
    write_parquet(frame, table)
    with atomic_path(table_csv) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.4f")
    write_provenance(table, config, list(summaries))
    return frame


def loss_figure(model_dirs: Sequence[str], png: str, pdf: str) -> None:
    """The loss-curve figure of every trained model (step of ``fig_loss_curves``; it reads no config)."""
    history = pd.concat([pd.read_csv(Path(d) / "history.csv") for d in model_dirs], ignore_index=True)
    history = history.dropna(subset=["train_loss"])
    save_figure(plot_loss_curves(history), png, pdf)
