"""DataInf on LoRA fine-tuning (Kwon et al. 2023): accuracy against exact influence, detection of mislabelled and of
same-class training data, and wall time, per method.

Inputs are the fine-tuning jobs' tables (``finetune/{model}/{task}/rank-{rank}/``): ``influence.parquet`` (each
training example's influence on the summed test log-likelihood, the study's sign: positive helps) and
``pairwise.parquet`` (each test example against each training example). The statistics:

- correlation with exact: Pearson and Spearman, over the training examples, of each method's influence on the
  test loss with that of ``exact`` (the dense damped empirical Fisher per LoRA matrix), per task and rank;
- mislabelled-data detection (``noisy_sentiment``): a flipped label should harm the test loss, so examples are
  inspected from the most harmful (lowest score) up; the AUC of ``-score`` against the flipped flag, and the
  detection curve (share of flipped labels found against share of data inspected);
- same-class detection (the generation tasks): for each test example, the AUC of its scores against "same class"
  and the recall of same-class examples among its top k (k = training examples per class), averaged;
- wall time: fitting + solving + scoring, with the shared per-example gradients, per method.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from ..io import read_parquet_metadata

REFERENCE = "exact"
MISLABEL_TASK = "noisy_sentiment"
PAPER_CORRELATION = "rank 1: DataInf 0.64, gradient dot product 0.50, LiSSA 0.45 (Kwon et al., Figure 2)"
PAPER_TIME = "4,500 points: DataInf 13 s, LiSSA 70 s, exact 11,279 s"


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def correlation_table(totals: pd.DataFrame) -> pd.DataFrame:
    """``model, task, rank, method, pearson, spearman``: each method's influence on the test loss against
    :data:`REFERENCE`'s, over the training examples of the same fine-tune."""
    from scipy import stats

    rows = []
    for (model, task, rank), group in totals.groupby(["model", "task", "rank"], sort=False):
        wide = group.pivot(index="example_id", columns="method", values="score")
        if REFERENCE not in wide:
            continue
        for method in wide.columns.drop(REFERENCE):
            x, y = wide[method].to_numpy(), wide[REFERENCE].to_numpy()
            rows.append({"model": model, "task": task, "rank": rank, "method": method,
                         "pearson": float(np.corrcoef(x, y)[0, 1]), "spearman": float(stats.spearmanr(x, y)[0])})
    return pd.DataFrame(rows, columns=["model", "task", "rank", "method", "pearson", "spearman"])


def detection_curve(flipped: np.ndarray, harm: np.ndarray, points: int = 101) -> tuple[np.ndarray, np.ndarray]:
    """Share of flipped examples found against share of data inspected, inspecting from the largest ``harm`` down
    (ties in the given order); evaluated at ``points`` evenly spaced shares from 0 to 1."""
    flipped = np.asarray(flipped, dtype=bool)
    order = np.argsort(-np.asarray(harm, dtype=np.float64), kind="stable")
    found = np.concatenate([[0], np.cumsum(flipped[order])]) / max(flipped.sum(), 1)
    inspected = np.linspace(0, 1, points)
    return inspected, found[np.round(inspected * len(flipped)).astype(int)]


def mislabel_tables(totals: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """For the :data:`MISLABEL_TASK` fine-tunes: ``model, rank, method, auc`` (``-score`` against ``flipped``) and
    the detection curves ``model, rank, method, inspected, found``."""
    rows, curves = [], []
    for (model, rank, method), group in totals[totals["task"] == MISLABEL_TASK].groupby(
            ["model", "rank", "method"], sort=False):
        flipped, harm = group["flipped"].to_numpy(bool), -group["score"].to_numpy(np.float64)
        rows.append({"model": model, "rank": rank, "method": method, "auc": _auc(flipped, harm),
                     "flipped": int(flipped.sum()), "examples": int(len(group))})
        inspected, found = detection_curve(flipped, harm)
        curves.append(pd.DataFrame({"model": model, "rank": rank, "method": method, "inspected": inspected,
                                    "found": found}))
    columns = ["model", "rank", "method", "auc", "flipped", "examples"]
    return (pd.DataFrame(rows, columns=columns),
            pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
                columns=["model", "rank", "method", "inspected", "found"]))


def class_detection(pairwise: pd.DataFrame, classes: Mapping[str, str]) -> pd.DataFrame:
    """For one fine-tune's ``pairwise`` (``method, test_id, example_id, score``): per method and test example the
    AUC of the scores against "same class" and the recall of same-class training examples among the top k (k =
    the number of training examples of the test example's class; most helpful first, ties by ``example_id``).
    ``classes`` maps every example id to its class."""
    rows = []
    for (method, test_id), group in pairwise.groupby(["method", "test_id"], sort=False):
        group = group.sort_values(["score", "example_id"], ascending=[False, True], kind="stable")
        same = group["example_id"].map(classes).to_numpy() == classes[test_id]
        k = int(same.sum())
        rows.append({"method": method, "test_id": test_id, "auc": _auc(same, group["score"].to_numpy()),
                     "recall": float(same[:k].mean()) if k else float("nan")})
    return pd.DataFrame(rows, columns=["method", "test_id", "auc", "recall"])


def _times(summaries: Sequence[Mapping]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        for method, seconds in s["seconds"].items():
            rows.append({"model": s["model"], "task": s["task"], "rank": s["rank"], "method": method, **seconds})
    return pd.DataFrame(rows, columns=["model", "task", "rank", "method", "fit", "solve", "gradients", "total"])


def _mean_by(table: pd.DataFrame, keys: list[str], column: str) -> dict:
    """Nested ``{key0: {key1: ... mean}}`` of ``column``."""
    out: dict = {}
    for key, value in table.groupby(keys, sort=False)[column].mean().items():
        key = key if isinstance(key, tuple) else (key,)
        node = out
        for part in key[:-1]:
            node = node.setdefault(str(part), {})
        node[str(key[-1])] = float(value)
    return out


def statistics(correlations: pd.DataFrame, mislabel: pd.DataFrame, classes: pd.DataFrame, times: pd.DataFrame,
               summaries: Sequence[Mapping], detection_rank: int) -> dict:
    """The summary: mean correlation with exact per model, rank and method (over tasks); mislabel AUC and class
    detection per model and method at ``detection_rank``; mean seconds per model and method at that rank, with the
    speed-ups of DataInf over LiSSA and exact; test loss and accuracy after fine-tuning per model and task."""
    at_rank = times[times["rank"] == detection_rank]
    seconds = _mean_by(at_rank, ["model", "method"], "total")
    speedups = {model: {f"{other}/datainf": values[other] / values["datainf"] for other in ("lissa", "exact")
                        if other in values and "datainf" in values}
                for model, values in seconds.items()}
    fine_tunes = {}
    for s in summaries:
        if s["rank"] == detection_rank:
            fine_tunes.setdefault(s["model"], {})[s["task"]] = {
                "test_loss_before": s["before"]["loss"], "test_loss_after": s["after"]["loss"],
                "test_accuracy_after": s["after"]["accuracy"], "lora_parameters": s["lora_parameters"]}
    return {
        "detection_rank": detection_rank,
        "ranks": sorted(int(r) for r in correlations["rank"].unique()) if len(correlations) else [],
        "correlation_with_exact": _mean_by(correlations, ["model", "rank", "method"], "pearson"),
        "spearman_with_exact": _mean_by(correlations, ["model", "rank", "method"], "spearman"),
        "mislabel_auc": _mean_by(mislabel[mislabel["rank"] == detection_rank], ["model", "method"], "auc"),
        "class_auc": _mean_by(classes[classes["rank"] == detection_rank], ["model", "task", "method"], "auc"),
        "class_recall": _mean_by(classes[classes["rank"] == detection_rank], ["model", "task", "method"], "recall"),
        "seconds": seconds,
        "speedups": speedups,
        "fine_tunes": fine_tunes,
    }


def _fmt(values: Mapping[str, float], digits: int = 2) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in values.items())


def verdicts(stats: Mapping) -> list:
    """DataInf's claims, checked per model (and rank or task):

    1. DataInf correlates with exact influence at least as well as the gradient dot product and LiSSA, at every
       rank;
    2. it is most accurate at small rank (its error bound grows with d): the correlation at the smallest rank is
       at least that at the largest;
    3. it detects mislabelled data better than chance and at least as well as the dot product and LiSSA;
    4. it finds same-class training data better than chance and at least as well as the dot product (AUC and
       recall);
    5. it is faster than LiSSA and than exact.
    """
    from ..findings import finding

    findings = []
    corr = stats["correlation_with_exact"]
    checks, measured = {}, []
    for model, by_rank in corr.items():
        for rank, values in by_rank.items():
            measured.append(f"{model} rank {rank}: {_fmt(values)}")
            for other in ("identity", "lissa"):
                if "datainf" in values and other in values:
                    checks[f"{model} rank {rank}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
    findings.append(finding("DataInf", "DataInf approximates exact influence better than the gradient dot product "
                            "and LiSSA.", PAPER_CORRELATION, "Pearson with exact (mean over tasks): "
                            + "; ".join(measured), checks))
    checks, measured = {}, []
    for model, by_rank in corr.items():
        ranks = sorted(by_rank, key=int)
        values = [by_rank[r].get("datainf") for r in ranks]
        if len(ranks) > 1 and None not in values:
            measured.append(f"{model}: " + ", ".join(f"rank {r} {v:.2f}" for r, v in zip(ranks, values)))
            checks[f"{model}: rank {ranks[0]} ≥ rank {ranks[-1]}"] = values[0] >= values[-1]
    findings.append(finding("DataInf", "DataInf is most accurate at small LoRA rank (its error bound grows with "
                            "the dimension).", "error O(d²) per layer", "; ".join(measured) or "one rank only",
                            checks))
    checks, measured = {}, []
    for model, values in stats["mislabel_auc"].items():
        measured.append(f"{model}: AUC {_fmt(values)}")
        if "datainf" in values:
            checks[f"{model}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
            for other in ("identity", "lissa"):
                if other in values:
                    checks[f"{model}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
    findings.append(finding("DataInf", "DataInf detects mislabelled training data (20% flipped labels) at least "
                            "as well as the baselines.", "DataInf's AUC above LiSSA's and the dot product's on "
                            "most GLUE tasks", "; ".join(measured) or "not run", checks))
    checks, measured = {}, []
    for model, by_task in stats["class_auc"].items():
        for task, values in by_task.items():
            recall = stats["class_recall"][model][task]
            measured.append(f"{model} {task}: AUC {_fmt(values)}; recall {_fmt(recall)}")
            if "datainf" in values:
                checks[f"{model} {task}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
                if "identity" in values:
                    checks[f"{model} {task}: DataInf AUC ≥ identity"] = values["datainf"] >= values["identity"]
                    checks[f"{model} {task}: DataInf recall ≥ identity"] = recall["datainf"] >= recall["identity"]
    findings.append(finding("DataInf", "DataInf finds the training examples of the test example's class among "
                            "the most influential.", "AUC and recall of DataInf above the baselines on the "
                            "three generation tasks", "; ".join(measured) or "not run", checks))
    checks, measured = {}, []
    for model, values in stats["seconds"].items():
        measured.append(f"{model}: seconds {_fmt(values)}")
        for ratio, value in stats["speedups"].get(model, {}).items():
            checks[f"{model}: {ratio} > 1"] = value > 1
    findings.append(finding("DataInf", "DataInf is much faster than LiSSA and than exact computation.", PAPER_TIME,
                            "; ".join(measured), checks))
    return findings


def run(config: Mapping, influence: Sequence[str], pairwise: Sequence[str], finetunes: Sequence[str],
        tasks: str, correlations: str, mislabel: str, curves: str, classes: str, times: str, summary: str) -> None:
    """Step of ``analysis_datainf``: every fine-tune's tables into the statistics and verdicts above."""
    from ..finetune import detection_rank
    from ..io import read_json
    from .common import write_analysis

    summaries = [read_json(path) for path in finetunes]
    rank = detection_rank(config)
    totals = []
    for path in influence:
        meta = read_parquet_metadata(path)
        totals.append(pd.read_parquet(path).assign(model=meta["model"], task=meta["task"], rank=int(meta["rank"])))
    totals = pd.concat(totals, ignore_index=True)
    examples = pd.read_parquet(tasks, columns=["example_id", "class"])
    class_of = dict(zip(examples["example_id"], examples["class"]))
    class_rows = []
    for path in pairwise:
        meta = read_parquet_metadata(path)
        if meta["task"] == MISLABEL_TASK or int(meta["rank"]) != rank:
            continue
        table = class_detection(pd.read_parquet(path), class_of)
        class_rows.append(table.assign(model=meta["model"], task=meta["task"], rank=int(meta["rank"])))
    class_table = (pd.concat(class_rows, ignore_index=True) if class_rows else
                   pd.DataFrame(columns=["method", "test_id", "auc", "recall", "model", "task", "rank"]))
    correlation = correlation_table(totals)
    mislabel_table, curve_table = mislabel_tables(totals)
    time_table = _times(summaries)
    stats = statistics(correlation, mislabel_table, class_table, time_table, summaries, rank)
    write_analysis(config, "datainf", {"correlations": (correlation, correlations), "mislabel": (mislabel_table, mislabel),
                                       "curves": (curve_table, curves), "classes": (class_table, classes),
                                       "times": (time_table, times)},
                   stats, verdicts, summary, inputs=[*influence, *finetunes, tasks])
