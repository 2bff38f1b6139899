"""Steps of the DataInf stage: generate the fine-tuning tasks; fine-tune one model with LoRA on one task at one
rank and score every training example against every test example by each method."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from transformers import AutoModelForCausalLM, AutoTokenizer

from influence_study.finetune.datasets import generate_tasks
from influence_study.finetune.influence import lora_influence
from influence_study.finetune.lora import add_lora, encode_examples, train_lora
from influence_study.models.build import context_length
from influence_study.models.evaluation import evaluate_completions
from influence_study.study.io import read_parquet, write_json, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger
from influence_study.study.seeds import datainf_finetune_seed

SIGN = "positive = adding the training example raises the test example's log-likelihood (helps); DataInf: opposite"


def detection_rank(config: Mapping) -> int:
    """The LoRA rank of the detection statistics, the wall times and the removal experiment:
    ``finetune.detection_rank``, else the largest of ``finetune.ranks``."""
    section = config["finetune"]
    return int(section["detection_rank"] or max(section["ranks"]))


def make_tasks(config: Mapping, tasks: str) -> pd.DataFrame:
    """Step of ``finetune_tasks``: write the generated examples of every task in ``finetune.tasks``."""
    table = generate_tasks(config["finetune"]["tasks"], config["seed"])
    write_parquet(table, tasks, metadata=provenance(config, tasks=sorted(table["task"].unique())))
    get_logger().info("fine-tuning tasks: %s", table.groupby(["task", "split"]).size().to_dict())
    return table


def finetune_and_score(config: Mapping, model_name: str, task: str, rank: int | str, model_dir: str, tasks: str,
                       influence: str, pairwise: str, summary: str, progress: bool = True) -> dict:
    """Step of ``datainf_finetune``: LoRA-fine-tune ``model_name`` on ``task`` at ``rank``, then write

    - ``influence``: ``method, example_id, class, flipped, score`` (influence of each training example on the summed
      test log-likelihood; sign in the provenance);
    - ``pairwise``: ``method, test_id, example_id, score`` for the methods that score every test example;
    - ``summary``: training curve, test loss and accuracy before and after, seconds per method, damping.

    The LoRA initialisation, the batch order and the influence fits draw from
    :func:`~influence_study.study.seeds.datainf_finetune_seed`.
    """
    log = get_logger()
    section = config["finetune"]
    rank = int(rank)
    device = resolve_device(config["device"])
    table = read_parquet(tasks)
    rows = table[table["task"] == task].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{tasks}: no example of task {task!r} (tasks: {sorted(table['task'].unique())})")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    max_length = context_length(base)
    examples = encode_examples(tokenizer, rows["prompt"], rows["completion"], max_length)
    train = np.flatnonzero(rows["split"].to_numpy() == "train")
    test = np.flatnonzero(rows["split"].to_numpy() == "test")
    seed = datainf_finetune_seed(config["seed"], rank)
    model = add_lora(base, rank, section["lora"]["alpha"], section["lora"]["target_modules"], seed).to(device)
    batch_size = section["training"]["batch_size"]
    before = evaluate_completions(model, tokenizer, rows.iloc[test], batch_size, device, max_length)
    history = train_lora(model, examples, train, section["training"], seed, device, progress)
    after = evaluate_completions(model, tokenizer, rows.iloc[test], batch_size, device, max_length)
    log.info("%s on %s, rank %d: test loss %.3f -> %.3f, accuracy %.2f -> %.2f", model_name, task, rank,
             before["loss"], after["loss"], before["accuracy"], after["accuracy"])

    train_batches, train_order = examples.batches(section["influence"]["batch_size"], train)
    test_batches, test_order = examples.batches(section["influence"]["batch_size"], test)
    result = lora_influence(model, train_batches, test_batches, section["methods"],
                            lissa=section["influence"]["lissa"], seed=seed, progress=progress)
    train_rows, test_rows = rows.iloc[train_order], rows.iloc[test_order]
    totals, pairs, seconds = [], [], {}
    for method, scores in result.methods.items():
        totals.append(pd.DataFrame({"method": method, "example_id": train_rows["example_id"].to_numpy(),
                                    "class": train_rows["class"].to_numpy(),
                                    "flipped": train_rows["flipped"].to_numpy(), "score": scores.total}))
        if scores.pairwise is not None:
            grid = pd.DataFrame(scores.pairwise, index=test_rows["example_id"].to_numpy(),
                                columns=train_rows["example_id"].to_numpy())
            stacked = grid.stack()
            pairs.append(pd.DataFrame({"method": method, "test_id": stacked.index.get_level_values(0),
                                       "example_id": stacked.index.get_level_values(1),
                                       "score": stacked.to_numpy()}))
        seconds[method] = {"fit": scores.fit_seconds, "solve": scores.solve_seconds,
                           "gradients": result.gradient_seconds,
                           "total": scores.fit_seconds + scores.solve_seconds + result.gradient_seconds}
        log.info("%s: fit %.2f s, solve and score %.2f s", method, scores.fit_seconds, scores.solve_seconds)
    lora_parameters = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    record = provenance(config, [model_dir, tasks], model=model_name, task=task, rank=rank, seed=seed,
                        sign=SIGN, normalisation="raw (summed completion loss)")
    write_parquet(pd.concat(totals, ignore_index=True), influence, metadata=record)
    write_parquet(pd.concat(pairs, ignore_index=True), pairwise, metadata=record)
    out = {"model": model_name, "task": task, "rank": rank, "lora_parameters": lora_parameters,
           "train_examples": int(len(train)), "test_examples": int(len(test)), "before": before, "after": after,
           "history": history.to_dict(orient="records"), "seconds": seconds, "damping": result.damping,
           "provenance": record}
    write_json(out, summary, sort_keys=False)
    return out
