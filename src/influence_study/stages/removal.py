"""Steps of the influence-guided removal (Kounavis et al. 2023): the removal fine-tunes of one model
(:mod:`influence_study.finetune.removal` says what is removed and how the test examples are split) and the analysis
of their held-out losses (:mod:`influence_study.analyses.removal`)."""

from __future__ import annotations

import copy
import time
from typing import Mapping, Sequence

import pandas as pd
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer

from influence_study.analyses.removal import (RUN_COLUMNS, condition_table, difference_table, per_run_table,
                                              statistics, verdicts)
from influence_study.finetune.lora import add_lora, encode_examples, train_lora
from influence_study.finetune.removal import COLUMNS, harm_ranking, removal_plan, split_test
from influence_study.models.build import context_length
from influence_study.models.evaluation import evaluate_completions
from influence_study.stages.finetune import detection_rank
from influence_study.stages.tables import write_analysis
from influence_study.study.io import read_parquet, read_parquet_metadata, require_columns, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger
from influence_study.study.seeds import removal_finetune_seed


def run_removal(config: Mapping, model_name: str, model_dir: str, tasks: str, pairwise: str, runs: str,
                progress: bool = True) -> pd.DataFrame:
    """Step of ``removal_finetunes``: every run of :func:`~influence_study.finetune.removal.removal_plan` for
    ``model_name``, written to ``runs`` (one row per run, columns :data:`~influence_study.finetune.removal.COLUMNS`;
    ``removed_ids`` lists the removed examples). Each run is logged. The runs of removal seed ``s`` fine-tune from
    :func:`~influence_study.study.seeds.removal_finetune_seed`."""
    log = get_logger()
    section, settings = config["finetune"], config["finetune"]["removal"]
    task, method, rank = settings["task"], settings["method"], detection_rank(config)
    stored = read_parquet_metadata(pairwise)
    for key, expected in (("model", model_name), ("task", task), ("rank", rank)):
        if key in stored and stored[key] != expected:
            raise ValueError(f"{pairwise}: a table of {key} {stored[key]!r}, expected {expected!r}")
    table = read_parquet(tasks)
    rows = table[table["task"] == task].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{tasks}: no example of task {task!r} (finetune.removal.task)")
    train = rows[rows["split"] == "train"]
    test_ids = rows.loc[rows["split"] == "test", "example_id"].tolist()
    selection, evaluation = split_test(test_ids, config["seed"])
    scores = read_parquet(pairwise)
    require_columns(scores, ["method", "test_id", "example_id", "score"], f"pairwise table {pairwise}")
    scores = scores[scores["method"] == method]
    if scores.empty:
        raise ValueError(f"{pairwise}: no scores of method {method!r} (finetune.removal.method)")
    train_ids = train["example_id"].tolist()
    ranking = harm_ranking(scores, selection, train_ids)
    plan = removal_plan(train_ids, ranking, settings["k"], settings["seeds"], config["seed"])

    device = resolve_device(config["device"])
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    max_length = context_length(base)
    examples = encode_examples(tokenizer, rows["prompt"], rows["completion"], max_length)
    position = {example_id: i for i, example_id in enumerate(rows["example_id"])}
    flipped = dict(zip(train["example_id"], train["flipped"].astype(bool)))
    by_id = rows.set_index("example_id")
    eval_rows, selection_rows = by_id.loc[evaluation].reset_index(), by_id.loc[selection].reset_index()
    batch_size = section["training"]["batch_size"]
    records = []
    for number, run in enumerate(tqdm(plan, desc=f"removal {model_name}", unit="fine-tune", disable=not progress), 1):
        removed = set(run["removed"])
        kept = [position[i] for i in train_ids if i not in removed]
        train_seed = removal_finetune_seed(config["seed"], run["seed"])
        model = add_lora(copy.deepcopy(base), rank, section["lora"]["alpha"], section["lora"]["target_modules"],
                         train_seed).to(device)
        started = time.perf_counter()
        train_lora(model, examples, kept, section["training"], train_seed, device, progress=False)
        seconds = time.perf_counter() - started
        held_out = evaluate_completions(model, tokenizer, eval_rows, batch_size, device, max_length)
        chosen = evaluate_completions(model, tokenizer, selection_rows, batch_size, device, max_length)
        records.append({
            "model": model_name, "task": task, "rank": rank, "method": method, "condition": run["condition"],
            "k": run["k"], "seed": run["seed"], "train_seed": train_seed, "train_size": len(train_ids),
            "train_flipped": int(sum(flipped.values())), "kept": len(kept),
            "removed_flipped": int(sum(flipped[i] for i in run["removed"])), "removed_ids": list(run["removed"]),
            "eval_loss": held_out["loss"], "eval_accuracy": held_out["accuracy"], "selection_loss": chosen["loss"],
            "selection_accuracy": chosen["accuracy"], "eval_examples": len(evaluation),
            "selection_examples": len(selection), "seconds": seconds})
        log.info("removal %d/%d (%s, k=%d, seed %d): held-out loss %.4f, accuracy %.2f, %.1f s", number,
                 len(plan), run["condition"], run["k"], run["seed"], held_out["loss"], held_out["accuracy"], seconds)
        del model
    frame = pd.DataFrame(records, columns=COLUMNS)
    record = provenance(config, [model_dir, tasks, pairwise], model=model_name, task=task, rank=rank,
                        method=method, selection_ids=selection, evaluation_ids=evaluation,
                        harm="minus the summed score over the selection half (most harmful first, ties by id)",
                        sign="scores: positive = adding the training example raises the test log-likelihood",
                        loss="mean over examples of the summed completion cross-entropy (nats)")
    write_parquet(frame, runs, metadata=record)
    return frame


def load_runs(paths: Sequence[str]) -> pd.DataFrame:
    """The runs of every model, in the order of ``paths``."""
    frames = [read_parquet(p) for p in paths]
    for path, frame in zip(paths, frames):
        require_columns(frame, RUN_COLUMNS, f"removal runs {path}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RUN_COLUMNS)


def run(config: Mapping, runs: Sequence[str], per_run: str, conditions: str, differences: str, summary: str) -> None:
    """Step of ``analysis_removal``: the per-run, per-condition and paired-difference tables and the summary."""
    runs = [runs] if isinstance(runs, str) else list(runs)
    table = per_run_table(load_runs(runs))
    by_condition = condition_table(table, seed=config["seed"])
    contrasts = difference_table(table, seed=config["seed"])
    write_analysis(config, "removal", {"per_run": (table, per_run), "conditions": (by_condition, conditions),
                                       "differences": (contrasts, differences)},
                   statistics(table, by_condition, contrasts), verdicts, summary, inputs=runs)
