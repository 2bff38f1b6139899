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

from typing import Sequence

import numpy as np
import pandas as pd

from influence_study.study.io import require_columns
from influence_study.study.seeds import random_removal_seed, removal_split_seed

CONDITIONS = ("none", "harmful", "random")
COLUMNS = ["model", "task", "rank", "method", "condition", "k", "seed", "train_seed", "train_size", "train_flipped",
           "kept", "removed_flipped", "removed_ids", "eval_loss", "eval_accuracy", "selection_loss",
           "selection_accuracy", "eval_examples", "selection_examples", "seconds"]


def split_test(test_ids: Sequence[str], seed: int) -> tuple[list[str], list[str]]:
    """The selection half A and the evaluation half B of ``test_ids``: a permutation seeded by the study seed
    ``seed`` (:func:`~influence_study.study.seeds.removal_split_seed`), A its first ``n // 2`` ids and B the rest
    (both in permuted order). Needs at least two test examples."""
    test_ids = list(test_ids)
    if len(test_ids) < 2:
        raise ValueError(f"finetune.removal: needs at least two test examples to split, got {len(test_ids)}")
    if len(set(test_ids)) != len(test_ids):
        raise ValueError("finetune.removal: the test example ids are not unique")
    order = np.random.default_rng(removal_split_seed(seed)).permutation(len(test_ids))
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
    seed ``seed`` and ``k`` (:func:`~influence_study.study.seeds.random_removal_seed`)."""
    train_ids = list(train_ids)
    if not 0 <= k <= len(train_ids):
        raise ValueError(f"finetune.removal.k: cannot remove {k} of {len(train_ids)} training examples")
    rng = np.random.default_rng(random_removal_seed(study_seed, seed, k))
    picked = rng.choice(len(train_ids), size=k, replace=False)
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

