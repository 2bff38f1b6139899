"""Influence-guided removal (Kounavis et al. 2023): does dropping the training examples with the most harmful
influence lower the held-out loss more than dropping random ones?

Input: the ``removal_finetunes`` jobs' tables (``finetune/{model}/removal.parquet``, one row per fine-tune, see
:func:`influence_study.stages.removal.run_removal`): conditions ``none`` (every training example, ``k = 0``),
``harmful`` (all but the k most harmful by influence on the selection half of the test examples) and ``random`` (all
but k random ones), each over several fine-tuning seeds, evaluated on the other half of the test examples.

The statistics, per model and k:

- mean held-out (evaluation-half) loss per condition, with a bootstrap interval over the seeds;
- the paired differences ``harmful − none``, ``random − none`` and ``harmful − random`` (per seed; the conditions
  of one seed share the LoRA initialisation), mean and bootstrap interval;
- the share of flipped labels among the removed examples, against the share among all training examples (the
  base rate, 20% in the default study): influence that finds mislabelled data removes more than that.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci
from influence_study.analyses.intervals import describe_interval, interval_check
from influence_study.findings import Evidence, finding
from influence_study.study.io import require_columns

ANALYSIS = "Influence-guided removal"
CLAIM = "Removing the training examples with the most harmful influence lowers the held-out loss more than " \
        "removing random ones."
PAPER = "qualitative (Kounavis et al.)"
CONTRASTS = {"harmful − none": ("harmful", "none"), "random − none": ("random", "none"),
             "harmful − random": ("harmful", "random")}
RUN_COLUMNS = ["model", "task", "rank", "method", "condition", "k", "seed", "train_size", "train_flipped",
               "removed_flipped", "eval_loss", "eval_accuracy", "selection_loss"]


def per_run_table(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with ``flipped_share`` (flipped labels among the removed; NaN for ``none``), ``base_flipped_share``
    (among all training examples) and ``delta_none`` (held-out loss minus that of the same model and seed without
    removal; NaN when that run is missing)."""
    require_columns(runs, RUN_COLUMNS, "removal runs")
    table = runs.copy()
    unknown = sorted(set(table["condition"]) - {"none", "harmful", "random"})
    if unknown:
        raise ValueError(f"removal runs: unknown conditions {unknown}")
    k = table["k"].astype(np.float64)
    table["flipped_share"] = (table["removed_flipped"] / k.where(k > 0)).where(table["condition"] != "none")
    table["base_flipped_share"] = table["train_flipped"] / table["train_size"]
    none = table[table["condition"] == "none"].groupby(["model", "seed"], sort=False)["eval_loss"].mean()
    reference = pd.Series([none.get((m, s), np.nan) for m, s in zip(table["model"], table["seed"])],
                          index=table.index, dtype=np.float64)
    table["delta_none"] = table["eval_loss"] - reference
    return table


def condition_table(per_run: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per model, condition and k (``none``: k = 0): seeds, mean held-out loss with its bootstrap interval
    over the seeds, mean held-out accuracy, mean selection-half loss, and the mean flipped share among the removed
    with the base rate."""
    rows = []
    for (model, condition, k), group in per_run.groupby(["model", "condition", "k"], sort=False):
        mean, low, high = mean_ci(group["eval_loss"], seed=seed)
        rows.append({"model": model, "condition": condition, "k": int(k), "seeds": int(group["seed"].nunique()),
                     "eval_loss": mean, "eval_loss_low": low, "eval_loss_high": high,
                     "eval_accuracy": float(group["eval_accuracy"].mean()),
                     "selection_loss": float(group["selection_loss"].mean()),
                     "flipped_share": float(group["flipped_share"].mean()) if condition != "none" else float("nan"),
                     "base_flipped_share": float(group["base_flipped_share"].mean())})
    columns = ["model", "condition", "k", "seeds", "eval_loss", "eval_loss_low", "eval_loss_high", "eval_accuracy",
               "selection_loss", "flipped_share", "base_flipped_share"]
    return pd.DataFrame(rows, columns=columns)


def difference_table(per_run: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """One row per model, k and contrast of :data:`CONTRASTS`: the held-out loss of the first condition minus that
    of the second, paired by seed (``none`` is shared by every k), mean over the seeds with a bootstrap interval."""
    rows = []
    ks = sorted(int(k) for k in per_run.loc[per_run["condition"] != "none", "k"].unique())
    for model, runs in per_run.groupby("model", sort=False):
        for k in ks:
            losses = {}
            for condition in ("none", "harmful", "random"):
                chosen = runs[(runs["condition"] == condition) & (runs["k"] == (0 if condition == "none" else k))]
                losses[condition] = chosen.groupby("seed")["eval_loss"].mean()
            for contrast, (first, second) in CONTRASTS.items():
                paired = pd.concat([losses[first], losses[second]], axis=1, join="inner").dropna()
                values = (paired.iloc[:, 0] - paired.iloc[:, 1]).to_numpy() if len(paired) else np.zeros(0)
                mean, low, high = mean_ci(values, seed=seed)
                rows.append({"model": model, "k": k, "contrast": contrast, "seeds": int(len(values)),
                             "difference": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["model", "k", "contrast", "seeds", "difference", "low", "high"])


def statistics(per_run: pd.DataFrame, conditions: pd.DataFrame, differences: pd.DataFrame) -> dict:
    """The summary: the setting (task, method, rank, seeds, k, sizes of the test halves) and per model the
    base flipped share, the ``none`` condition, and per k each removal condition and each contrast."""
    first = per_run.iloc[0] if len(per_run) else None
    models: dict = {}
    for model, group in conditions.groupby("model", sort=False):
        runs = per_run[per_run["model"] == model]
        none = group[group["condition"] == "none"]
        entry = {"train_size": int(runs["train_size"].iloc[0]),
                 "base_flipped_share": float(runs["base_flipped_share"].iloc[0]),
                 "none": _condition(none.iloc[0]) if len(none) else None, "k": {}}
        for k in sorted(int(k) for k in group.loc[group["condition"] != "none", "k"].unique()):
            node = {}
            for condition in ("harmful", "random"):
                row = group[(group["condition"] == condition) & (group["k"] == k)]
                node[condition] = _condition(row.iloc[0]) if len(row) else None
            for contrast in CONTRASTS:
                row = differences[(differences["model"] == model) & (differences["k"] == k)
                                  & (differences["contrast"] == contrast)]
                key = contrast.replace(" − ", "_minus_")
                node[key] = ({"mean": float(row["difference"].iloc[0]), "low": float(row["low"].iloc[0]),
                              "high": float(row["high"].iloc[0]), "seeds": int(row["seeds"].iloc[0])}
                             if len(row) else None)
            entry["k"][str(k)] = node
        models[str(model)] = entry
    setting = {}
    if first is not None:
        setting = {"task": str(first["task"]), "method": str(first["method"]), "rank": int(first["rank"]),
                   "seeds": int(per_run["seed"].nunique()),
                   "k": sorted(int(k) for k in per_run.loc[per_run["condition"] != "none", "k"].unique())}
        for column in ("eval_examples", "selection_examples"):
            if column in per_run:
                setting[column] = int(per_run[column].iloc[0])
    return {**setting, "models": models}


def _condition(row: pd.Series) -> dict:
    out = {"eval_loss": float(row["eval_loss"]), "low": float(row["eval_loss_low"]),
           "high": float(row["eval_loss_high"]), "eval_accuracy": float(row["eval_accuracy"]),
           "seeds": int(row["seeds"])}
    if row["condition"] != "none":
        out["flipped_share"] = float(row["flipped_share"])
    return out


def verdicts(statistics: Mapping) -> list:
    """The claim of Kounavis et al., checked per model and k: the mean held-out loss after removing the k most
    harmful examples is below that after removing k random ones, and below that after removing none.

    v1: the point means. v2: the paired (per seed) differences harmful − random and harmful − none, each with its
    bootstrap interval over the seeds (``difference_table``), below 0."""
    checks, measured, interval_checks, statistic = {}, [], [], []
    for model, values in statistics.get("models", {}).items():
        none = values.get("none")
        for k, node in values.get("k", {}).items():
            harmful, random = node.get("harmful"), node.get("random")
            if not harmful or not random or not none:
                continue
            checks[f"{model}, k={k}: loss(harmful) < loss(random)"] = harmful["eval_loss"] < random["eval_loss"]
            checks[f"{model}, k={k}: loss(harmful) < loss(none)"] = harmful["eval_loss"] < none["eval_loss"]
            measured.append(f"{model}, k={k}: held-out loss harmful {harmful['eval_loss']:.4f}, random "
                            f"{random['eval_loss']:.4f}, none {none['eval_loss']:.4f} (over {harmful['seeds']} "
                            f"seeds); flipped labels among the harmful removals {harmful['flipped_share']:.0%} "
                            f"(base rate {values['base_flipped_share']:.0%})")
            versus_random, versus_none = node.get("harmful_minus_random"), node.get("harmful_minus_none")
            for label, entry in (("random", versus_random), ("none", versus_none)):
                seeds = (entry or {}).get("seeds", 0)
                interval_checks.append(interval_check(
                    f"{model}, k={k}: loss(harmful) − loss({label}) < 0 (paired by seed, bootstrap over {seeds} "
                    f"seeds)", entry, 0.0, "below"))
            statistic.append(f"{model}, k={k}: held-out loss harmful − random {describe_interval(versus_random)}, "
                             f"harmful − none {describe_interval(versus_none)}")
    evidence = Evidence("mean paired difference of held-out loss [95% CI over seeds]: "
                        + ("; ".join(statistic) or "no removal runs"),
                        "removing k random training examples (and removing none), same seeds", interval_checks)
    return [finding(ANALYSIS, CLAIM, PAPER, "; ".join(measured) or "no removal runs", checks, evidence)]
