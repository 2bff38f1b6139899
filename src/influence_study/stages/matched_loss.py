"""Step of the matched-loss comparison (:mod:`influence_study.analyses.matched_loss`): retrain the larger model of
the pair from its own initialisation, stop it at the smaller model's final held-out loss, and score the abstraction
analysis's queries with that checkpoint as the study scores its models (same factor recipe, same scoring
settings). The abstraction step (:mod:`influence_study.stages.abstraction`) compares it with the reference."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from influence_study.analyses.abstraction import eligible_queries
from influence_study.analyses.common import scale_models
from influence_study.analyses.matched_loss import final_valid_loss, matched_name, trajectory_difference
from influence_study.models.evaluation import completion_scores
from influence_study.stages.influence import fit_study_factors, score_in_memory
from influence_study.stages.influence_inputs import StudyInputs, load_study_inputs
from influence_study.stages.models import train_from_scratch
from influence_study.stages.tables import path_of_model, read_columns, read_learning
from influence_study.study.config import model_entry, training_settings
from influence_study.study.io import read_parquet, write_json, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import autocast, resolve_device
from influence_study.study.runtime import get_logger


def choose_pair(config: Mapping, learning: pd.DataFrame) -> tuple[str, str] | str:
    """``(reference, model)`` of ``analyses.abstraction.matched_loss``, or by default the smallest and the largest
    of the models that take part in scale comparisons (:func:`~influence_study.analyses.common.scale_models`) and
    were trained here; a string saying why there is no pair otherwise (disabled, fewer than two such models)."""
    section = config["analyses"]["abstraction"]["matched_loss"]
    if not section["enabled"]:
        return "disabled (analyses.abstraction.matched_loss.enabled: false)"
    if section["reference"] is not None and section["model"] is not None:
        return section["reference"], section["model"]
    answering, _ = scale_models(learning)
    trained = [m for m in answering if not model_entry(config, m).get("checkpoint")]
    if len(trained) < 2:
        return (f"fewer than two models trained here answer any query ({', '.join(trained) or 'none'}): no scale "
                f"comparison to match")
    reference, model = section["reference"] or trained[0], section["model"] or trained[-1]
    if reference == model:
        return f"the reference and the model would both be {model!r}: name the other one"
    return reference, model


def query_subset(inputs: StudyInputs, query_ids: Sequence[str]) -> StudyInputs:
    """``inputs`` with only the queries ``query_ids`` (in the queries table's order)."""
    wanted = set(map(str, query_ids))
    keep = [i for i, q in enumerate(inputs.queries["query_id"].astype(str)) if q in wanted]
    return dataclasses.replace(inputs, queries=inputs.queries.iloc[keep].reset_index(drop=True),
                               query_sequences=[inputs.query_sequences[i] for i in keep],
                               query_starts=[inputs.query_starts[i] for i in keep])


def run(config: Mapping, model_dirs: Sequence[str], documents: str, queries: str, relations: str, candidates: str,
        learning: str, scores: str, answers: str, checkpoint: str, progress: bool = True) -> None:
    """Step of ``matched_loss_scores``: writes ``scores`` (the matched checkpoint's pairwise table for the
    abstraction analysis's queries), ``answers`` (its ``query_id, correct`` on them) and ``checkpoint`` (the record
    of the retrain: pair, losses, step reached, agreement with the original run, seconds)."""
    log = get_logger()
    pair = choose_pair(config, read_learning(learning))
    record = provenance(config, [*model_dirs, documents, queries, relations, candidates, learning])
    if isinstance(pair, str):
        log.info("matched-loss comparison not measured: %s", pair)
        write_parquet(pd.DataFrame(columns=["query_id", "doc_id", "score", "score_norm", "rescored"]), scores,
                      metadata=record)
        write_parquet(pd.DataFrame(columns=["query_id", "correct"]), answers, metadata=record)
        write_json({"measured": False, "reason": pair, "provenance": record}, checkpoint)
        return
    reference, model = pair
    reference_dir, model_dir = (path_of_model(name, model_dirs, 0, "model_dirs") for name in (reference, model))
    target = final_valid_loss(pd.read_csv(Path(reference_dir) / "history.csv"), f"{reference_dir}/history.csv")
    original = pd.read_csv(Path(model_dir) / "history.csv")
    device = resolve_device(config["device"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # evaluated more often than the original run (same steps and schedule: the same trajectory) to stop close to
    # the reference's loss; the original's measurements are a subset, which trajectory_difference compares
    settings = {**training_settings(config, model),
                "eval_every": config["analyses"]["abstraction"]["matched_loss"]["eval_every"]}
    started = time.perf_counter()
    network, result, seed = train_from_scratch(config, model, read_parquet(documents), tokenizer, settings, device,
                                               progress, stop_at_valid_loss=target)
    history = result.history
    train_seconds = time.perf_counter() - started
    eligible = eligible_queries(read_columns(relations, ["query_id", "doc_id", "relation"], "relations table"),
                                read_columns(queries, ["query_id", "analysis"], "queries table"))
    with tempfile.TemporaryDirectory() as tmp:
        network.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        inputs = query_subset(load_study_inputs(tmp, documents, queries, device=device), eligible["query_id"])
    with autocast(config["dtype"], device):
        answered = completion_scores(inputs.model, inputs.tokenizer, inputs.queries["prompt"],
                                     inputs.queries["completion"], config["evaluation"]["batch_size"], device,
                                     max_length=inputs.max_length)
    answer_table = pd.DataFrame({"query_id": inputs.queries["query_id"].astype(str).to_numpy(),
                                 "correct": answered["correct"].astype(bool).to_numpy()})
    started = time.perf_counter()
    factors = fit_study_factors(config, model, inputs, config["analyses"]["strategy"], progress=progress)
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    pairwise = score_in_memory(config, inputs, factors, candidates, progress=progress)
    score_seconds = time.perf_counter() - started
    last = history.iloc[-1]
    info = {"measured": True, "reference": reference, "model": model, "matched": matched_name(model),
            "strategy": config["analyses"]["strategy"], "target_loss": target,
            "final_loss": final_valid_loss(original, f"{model_dir}/history.csv"),
            "valid_loss": float(last["valid_loss"]), "step": int(last["step"]),
            "steps": int(original["step"].max()), "reached": bool(last["valid_loss"] <= target),
            "trajectory_difference": trajectory_difference(original, history), "seed": int(seed),
            "queries": int(len(inputs.queries)), "correct": int(answer_table["correct"].sum()),
            "seconds": {"train": round(train_seconds, 1), "fit": round(fit_seconds, 1),
                        "score": round(score_seconds, 1)},
            "history": history[["step", "valid_loss"]].to_dict(orient="records"), "provenance": record}
    write_parquet(pairwise, scores, metadata=record)
    write_parquet(answer_table, answers, metadata=record)
    write_json(info, checkpoint)
    log.info("matched loss: %s stopped at step %d of %d (held-out loss %.4f, %s's final %.4f; max |difference| "
             "with the original run %.2g); %d queries scored, %d answered correctly", model, info["step"],
             info["steps"], info["valid_loss"], reference, target, info["trajectory_difference"], info["queries"],
             info["correct"])
    if np.isfinite(info["trajectory_difference"]) and info["trajectory_difference"] > 1e-4:
        log.warning("matched loss: the retrain of %s departs from its original run by %.3g nats of held-out loss "
                    "(a different device or thread count?): the checkpoint is of a sibling run", model,
                    info["trajectory_difference"])
