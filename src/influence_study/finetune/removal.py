"""Influence-guided removal (Kounavis et al. 2023): drop the training examples with the most harmful influence,
fine-tune again, and compare the held-out loss with dropping random examples and with dropping none.

The influence comes from the DataInf stage (``finetune/{model}/{task}/rank-{rank}/pairwise.parquet``, the study's
sign: positive = adding the training example raises the test example's log-likelihood). The task's test examples
are split in two halves by a seeded permutation: the *selection* half A ranks the training examples, the
*evaluation* half B measures the result, so the examples are never selected with the data they are judged on.

- harm of a training example = minus the sum of its scores over A (the most harmful lowers A's log-likelihood
  most); ties are broken by ``example_id``;
- conditions, for every fine-tuning seed ``s`` (LoRA initialisation and batch order) and every ``k``:
  ``none`` (all training examples; once per seed, ``k = 0``), ``harmful`` (all but the k most harmful) and
  ``random`` (all but k drawn uniformly without replacement from a generator seeded by the study seed, ``s`` and
  ``k``, so the random removal differs between seeds);
- every run starts again from the base model with a fresh LoRA at the detection rank; the conditions of one seed
  share the LoRA initialisation, so they differ only in the training examples.
"""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.finetune import detection_rank
from influence_study.study.io import read_parquet_metadata, require_columns, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.runtime import get_logger, resolve_device

CONDITIONS = ("none", "harmful", "random")
SPLIT_SALT = 17  # mixed into the study seed for the test split, so it is not the stream of any other choice
SEED_OFFSET = 500  # fine-tuning seed of removal seed s: study seed * 1000 + 500 + s (DataInf's fine-tunes: + rank)
COLUMNS = ["model", "task", "rank", "method", "condition", "k", "seed", "train_seed", "train_size", "train_flipped",
           "kept", "removed_flipped", "removed_ids", "eval_loss", "eval_accuracy", "selection_loss",
           "selection_accuracy", "eval_examples", "selection_examples", "seconds"]


def split_test(test_ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """The selection half A and the evaluation half B of ``test_ids``: a permutation seeded by ``seed``, A its
    first ``n // 2`` ids and B the rest (both in permuted order). Needs at least two test examples."""
    test_ids = list(test_ids)
    if len(test_ids) < 2:
        raise ValueError(f"finetune.removal: needs at least two test examples to split, got {len(test_ids)}")
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("finetune.removal: the test example ids are not unique")
    order = np.random.default_rng([seed, SPLIT_SALT]).permutation(len(test_ids))
    half = len(test_ids) // 2
    return [test_ids[i] for i in order[:half]], [test_ids[i] for i in order[half:]]


def harm_ranking(pairwise: pd.DataFrame, selection: Sequence[str], train_ids: Sequence[str] | None = None
                 ) -> pd.DataFrame:
    """``example_id, harm`` for every training example of ``pairwise`` (``test_id, example_id, score`` of one
    method), harm = minus the summed score over the test examples ``selection``; most harmful first, ties by
    ``example_id``. With ``train_ids``, every one of them must be scored against every selection example."""
    require_columns(pairwise, ["test_id", "example_id", "score"], "pairwise table")
    selection = list(selection)
    rows = pairwise[pairwise["test_id"].isin(set(selection))]
    missing = sorted(set(selection) - set(rows["test_id"]))
    if missing:
        raise ValueError(f"pairwise table: no scores for the selection test examples {missing[:5]}")
    counts = rows.groupby("example_id").size()
    if train_ids is not None:
        unscored = sorted(set(train_ids) - set(counts.index))
        if unscored:
            raise ValueError(f"pairwise table: training examples {unscored[:5]} (of {len(unscored)}) have no score")
    incomplete = counts[counts != len(selection)]
    if len(incomplete):
        raise ValueError(f"pairwise table: training examples {list(incomplete.index[:5])} are not scored against "
                         f"every one of the {len(selection)} selection test examples")
    harm = -rows.groupby("example_id")["score"].sum()
    table = pd.DataFrame({"example_id": harm.index.astype(str), "harm": harm.to_numpy(np.float64)})
    if train_ids is not None:
        table = table[table["example_id"].isin(set(train_ids))]
    table = table.sort_values(["harm", "example_id"], ascending=[False, True], kind="stable")
    return table.reset_index(drop=True)


def most_harmful(ranking: pd.DataFrame, k: int) -> list[str]:
    """The ``k`` first example ids of a :func:`harm_ranking`."""
    if not 0 <= k <= len(ranking):
        raise ValueError(f"finetune.removal.k: cannot remove {k} of {len(ranking)} training examples")
    return ranking["example_id"].iloc[:k].tolist()


def random_removal(train_ids: Sequence[str], k: int, study_seed: int, seed: int) -> list[str]:
    """``k`` ids of ``train_ids`` drawn without replacement by a generator seeded by the study seed, the removal
    seed ``seed`` and ``k``."""
    train_ids = list(train_ids)
    if not 0 <= k <= len(train_ids):
        raise ValueError(f"finetune.removal.k: cannot remove {k} of {len(train_ids)} training examples")
    picked = np.random.default_rng([study_seed, seed, k]).choice(len(train_ids), size=k, replace=False)
    return [train_ids[i] for i in picked]


def removal_plan(train_ids: Sequence[str], ranking: pd.DataFrame, ks: Sequence[int], seeds: int,
                 study_seed: int) -> list[dict]:
    """Every run of the experiment: ``{"condition", "k", "seed", "removed"}``, per seed ``none`` first, then for
    each ``k`` ``harmful`` and ``random``."""
    for k in ks:
        if not 1 <= k < len(train_ids):
            raise ValueError(f"finetune.removal.k: {k} must be between 1 and the number of training examples - 1 "
                             f"({len(train_ids) - 1})")
    plan = []
    for seed in range(seeds):
        plan.append({"condition": "none", "k": 0, "seed": seed, "removed": []})
        for k in ks:
            plan.append({"condition": "harmful", "k": int(k), "seed": seed, "removed": most_harmful(ranking, k)})
            plan.append({"condition": "random", "k": int(k), "seed": seed,
                         "removed": random_removal(train_ids, k, study_seed, seed)})
    return plan


def run_removal(config: Mapping, model_name: str, model_dir: str, tasks: str, pairwise: str, runs: str,
                progress: bool = True) -> pd.DataFrame:
    """Step of ``removal_finetunes``: every run of :func:`removal_plan` for ``model_name``, written to ``runs``
    (one row per run, columns :data:`COLUMNS`; ``removed_ids`` lists the removed examples). Each run is logged."""
    import copy

    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from influence_study.stages.influence_inputs import context_length
    from influence_study.finetune.lora import add_lora, encode_examples, train_lora
    from influence_study.stages.finetune import evaluate_completions

    log = get_logger()
    section, settings = config["finetune"], config["finetune"]["removal"]
    task, method, rank = settings["task"], settings["method"], detection_rank(config)
    stored = read_parquet_metadata(pairwise)
    for key, expected in (("model", model_name), ("task", task), ("rank", rank)):
        if key in stored and stored[key] != expected:
            raise ValueError(f"{pairwise}: a table of {key} {stored[key]!r}, expected {expected!r}")
    table = pd.read_parquet(tasks)
    rows = table[table["task"] == task].reset_index(drop=True)
    if rows.empty:
        raise ValueError(f"{tasks}: no example of task {task!r} (finetune.removal.task)")
    train = rows[rows["split"] == "train"]
    test_ids = rows.loc[rows["split"] == "test", "example_id"].tolist()
    selection, evaluation = split_test(test_ids, config["seed"])
    scores = pd.read_parquet(pairwise)
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
        train_seed = config["seed"] * 1000 + SEED_OFFSET + run["seed"]
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
