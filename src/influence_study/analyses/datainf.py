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
from scipy import stats
from sklearn.metrics import roc_auc_score

from influence_study.analyses.intervals import (NAN_INTERVAL, auc_intervals, describe_interval, interval,
                                                interval_check, paired_interval, pearson_contrast)
from influence_study.findings import Evidence, finding

REFERENCE = "exact"
MISLABEL_TASK = "noisy_sentiment"
PAPER_CORRELATION = "rank 1: DataInf 0.64, gradient dot product 0.50, LiSSA 0.45 (Kwon et al., Figure 2)"
PAPER_TIME = "4,500 points: DataInf 13 s, LiSSA 70 s, exact 11,279 s"


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, scores))


def correlation_table(totals: pd.DataFrame) -> pd.DataFrame:
    """``model, task, rank, method, pearson, spearman``: each method's influence on the test loss against
    :data:`REFERENCE`'s, over the training examples of the same fine-tune."""
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


def times_table(summaries: Sequence[Mapping]) -> pd.DataFrame:
    """``model, task, rank, method, fit, solve, gradients, total``: the seconds of every method in every fine-tune
    (``summaries``: the fine-tunes' ``summary.json`` records)."""
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


BASELINES = ("identity", "lissa")


def interval_statistics(totals: pd.DataFrame, classes: pd.DataFrame, times: pd.DataFrame, detection_rank: int,
                        seed: int = 0, resamples: int = 2000) -> dict:
    """The intervals of the v2 checks (95% bootstrap):

    - ``correlation[model][rank]["datainf_minus_<baseline>"]``: mean over tasks of Pearson(DataInf, exact) −
      Pearson(baseline, exact), training examples resampled per task (paired);
    - ``small_rank[model]``: mean over tasks of Pearson(DataInf, exact) at the smallest rank − at the largest,
      training examples resampled (the same ids at both ranks);
    - ``mislabel[model]``: DataInf's (and the baselines') AUC of −score for the flipped flag at the detection rank,
      and the paired differences ``datainf_minus_<baseline>``, stratified bootstrap over the training examples;
    - ``classes[model][task]``: mean per-test-example AUC of DataInf, and the paired differences of AUC and recall
      DataInf − identity, bootstrap over the test examples;
    - ``speed[model]["<other>/datainf"]``: mean over tasks of log10 of the wall-time ratio at the detection rank,
      bootstrap over the tasks (one timing each; NaNs with fewer than two tasks).
    """
    out: dict = {"correlation": {}, "small_rank": {}, "mislabel": {}, "classes": {}, "speed": {}}
    wide = totals.pivot_table(index=["model", "task", "rank", "example_id"], columns="method", values="score",
                              aggfunc="first")
    for (model, rank), group in wide.groupby(level=["model", "rank"], sort=False):
        if REFERENCE not in group or "datainf" not in group:
            continue
        node = {}
        for other in BASELINES:
            if other not in group:
                continue
            tasks = [(g["datainf"].to_numpy(), g[REFERENCE].to_numpy(), g[other].to_numpy(), g[REFERENCE].to_numpy())
                     for _, g in group.groupby(level="task", sort=False)]
            node[f"datainf_minus_{other}"] = pearson_contrast(tasks, resamples, seed)
        out["correlation"].setdefault(str(model), {})[str(rank)] = node
    for model, group in wide.groupby(level="model", sort=False):
        if REFERENCE not in group or "datainf" not in group:
            continue
        ranks = sorted(group.index.get_level_values("rank").unique())
        if len(ranks) < 2:
            continue
        tasks = []
        for task, part in group.groupby(level="task", sort=False):
            low = part.xs(ranks[0], level="rank").droplevel(["model", "task"])
            high = part.xs(ranks[-1], level="rank").droplevel(["model", "task"]) if ranks[-1] in \
                part.index.get_level_values("rank") else None
            if high is None or low.empty:
                continue
            low, high = low.align(high, join="inner", axis=0)
            tasks.append((low["datainf"].to_numpy(), low[REFERENCE].to_numpy(), high["datainf"].to_numpy(),
                          high[REFERENCE].to_numpy()))
        out["small_rank"][str(model)] = {**pearson_contrast(tasks, resamples, seed), "from": int(ranks[0]),
                                         "to": int(ranks[-1])}
    noisy = totals[(totals["task"] == MISLABEL_TASK) & (totals["rank"] == detection_rank)]
    for model, group in noisy.groupby("model", sort=False):
        scores = group.pivot(index="example_id", columns="method", values="score")
        flipped = group.drop_duplicates("example_id").set_index("example_id")["flipped"].reindex(scores.index)
        harm = {m: -scores[m].to_numpy(np.float64) for m in scores.columns if m != REFERENCE}
        out["mislabel"][str(model)] = auc_intervals(flipped.to_numpy(bool), harm,
                                                    [("datainf", other) for other in BASELINES], resamples, seed)
    at_rank = classes[classes["rank"] == detection_rank] if len(classes) else classes
    for (model, task), group in at_rank.groupby(["model", "task"], sort=False):
        node = {}
        by = {m: g.set_index("test_id") for m, g in group.groupby("method", sort=False)}
        if "datainf" in by:
            node["datainf_auc"] = interval(by["datainf"]["auc"].to_numpy(np.float64), seed, resamples)
            if "identity" in by:
                a, b = by["datainf"].align(by["identity"], join="inner", axis=0)
                node["auc_datainf_minus_identity"] = paired_interval(a["auc"].to_numpy(float),
                                                                     b["auc"].to_numpy(float), seed, resamples)
                node["recall_datainf_minus_identity"] = paired_interval(a["recall"].to_numpy(float),
                                                                        b["recall"].to_numpy(float), seed, resamples)
        out["classes"].setdefault(str(model), {})[str(task)] = node
    timed = times[times["rank"] == detection_rank]
    for model, group in timed.groupby("model", sort=False):
        seconds = group.pivot_table(index="task", columns="method", values="total", aggfunc="mean")
        node = {}
        for other in ("lissa", "exact"):
            if other in seconds and "datainf" in seconds:
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratios = np.log10(seconds[other] / seconds["datainf"]).to_numpy(np.float64)
                ratios = ratios[np.isfinite(ratios)]
                node[f"{other}/datainf"] = (interval(ratios, seed, resamples) if len(ratios) >= 2
                                            else {**NAN_INTERVAL, "n": int(len(ratios))})
        out["speed"][str(model)] = node
    return out


def statistics(correlations: pd.DataFrame, mislabel: pd.DataFrame, classes: pd.DataFrame, times: pd.DataFrame,
               summaries: Sequence[Mapping], detection_rank: int, intervals: Mapping | None = None) -> dict:
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
        "intervals": dict(intervals or {}),
    }


def _fmt(values: Mapping[str, float], digits: int = 2) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in values.items())


class _Claim:
    """One of DataInf's claims as :func:`verdicts` checks it: what was measured, the v1 checks, and the v2 interval
    checks with a description of each interval for the statistic."""

    def __init__(self) -> None:
        self.measured: list[str] = []
        self.checks: dict[str, bool] = {}
        self.interval_checks: list = []
        self.described: list[str] = []

    def above(self, name: str, entry: Mapping | None, bound: float, described_as: str) -> None:
        """The v2 check ``name`` that ``entry``'s interval lies above ``bound``; the statistic describes the interval
        after ``described_as``."""
        self.interval_checks.append(interval_check(name, entry, bound, "above"))
        self.described.append(described_as + describe_interval(entry))

    def finding(self, claim: str, paper: str, measured: str, statistic: str, unmeasured: str, baseline: str):
        """The finding; its v2 statistic is ``statistic`` followed by the intervals (``unmeasured`` without any)."""
        return finding("DataInf", claim, paper, measured, self.checks,
                       Evidence(statistic + ("; ".join(self.described) or unmeasured), baseline, self.interval_checks))


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

    v2 (the intervals of :func:`interval_statistics`): the paired differences DataInf − baseline above 0 (1, 3, 4),
    the smallest rank − the largest above 0 (2), AUCs above 0.5 (3, 4), log10 wall-time ratios above 0 (5).
    """
    intervals = stats.get("intervals") or {}
    corr = stats["correlation_with_exact"]
    accuracy = _Claim()
    for model, by_rank in corr.items():
        for rank, values in by_rank.items():
            accuracy.measured.append(f"{model} rank {rank}: {_fmt(values)}")
            for other in ("identity", "lissa"):
                if "datainf" in values and other in values:
                    accuracy.checks[f"{model} rank {rank}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
                    entry = intervals.get("correlation", {}).get(model, {}).get(str(rank), {}).get(
                        f"datainf_minus_{other}")
                    accuracy.above(f"{model} rank {rank}: Pearson with exact, DataInf − {other} > 0 (mean over "
                                   f"tasks, paired bootstrap over training examples)", entry, 0.0,
                                   f"{model} rank {rank} DataInf − {other}: ")
    small_rank = _Claim()
    for model, by_rank in corr.items():
        ranks = sorted(by_rank, key=int)
        values = [by_rank[r].get("datainf") for r in ranks]
        if len(ranks) > 1 and None not in values:
            small_rank.measured.append(f"{model}: " + ", ".join(f"rank {r} {v:.2f}" for r, v in zip(ranks, values)))
            small_rank.checks[f"{model}: rank {ranks[0]} ≥ rank {ranks[-1]}"] = values[0] >= values[-1]
            small_rank.above(f"{model}: DataInf's Pearson with exact, rank {ranks[0]} − rank {ranks[-1]} > 0 (mean "
                             f"over tasks, bootstrap over training examples)",
                             intervals.get("small_rank", {}).get(model), 0.0, f"{model}: ")
    mislabel = _Claim()
    for model, values in stats["mislabel_auc"].items():
        mislabel.measured.append(f"{model}: AUC {_fmt(values)}")
        node = intervals.get("mislabel", {}).get(model, {})
        if "datainf" in values:
            mislabel.checks[f"{model}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
            mislabel.above(f"{model}: DataInf AUC > 0.5 (stratified bootstrap over training examples)",
                           node.get("datainf"), 0.5, f"{model}: DataInf AUC ")
            for other in ("identity", "lissa"):
                if other in values:
                    mislabel.checks[f"{model}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
                    mislabel.above(f"{model}: AUC DataInf − {other} > 0 (paired, stratified bootstrap over training "
                                   f"examples)", node.get(f"datainf_minus_{other}"), 0.0, f"DataInf − {other} ")
    same_class = _Claim()
    for model, by_task in stats["class_auc"].items():
        for task, values in by_task.items():
            recall = stats["class_recall"][model][task]
            same_class.measured.append(f"{model} {task}: AUC {_fmt(values)}; recall {_fmt(recall)}")
            node = intervals.get("classes", {}).get(model, {}).get(task, {})
            if "datainf" in values:
                same_class.checks[f"{model} {task}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
                same_class.above(f"{model} {task}: mean DataInf AUC > 0.5 (bootstrap over test examples)",
                                 node.get("datainf_auc"), 0.5, f"{model} {task}: DataInf AUC ")
                if "identity" in values:
                    same_class.checks[f"{model} {task}: DataInf AUC ≥ identity"] = \
                        values["datainf"] >= values["identity"]
                    same_class.checks[f"{model} {task}: DataInf recall ≥ identity"] = \
                        recall["datainf"] >= recall["identity"]
                    for measure in ("auc", "recall"):
                        same_class.above(f"{model} {task}: {measure.upper() if measure == 'auc' else measure} "
                                         f"DataInf − identity > 0 (paired, bootstrap over test examples)",
                                         node.get(f"{measure}_datainf_minus_identity"), 0.0,
                                         f"{measure} DataInf − identity ")
    speed = _Claim()
    for model, values in stats["seconds"].items():
        speed.measured.append(f"{model}: seconds {_fmt(values)}")
        for ratio, value in stats["speedups"].get(model, {}).items():
            speed.checks[f"{model}: {ratio} > 1"] = value > 1
            entry = intervals.get("speed", {}).get(model, {}).get(ratio)
            speed.above(f"{model}: log10({ratio} wall time) > 0, i.e. ratio > 1 (bootstrap over "
                        f"{(entry or {}).get('n', 0)} tasks, one timing each)", entry, 0.0, f"{model} log10 {ratio}: ")
    return [
        accuracy.finding("DataInf approximates exact influence better than the gradient dot product and LiSSA.",
                         PAPER_CORRELATION, "Pearson with exact (mean over tasks): " + "; ".join(accuracy.measured),
                         "difference in Pearson with exact influence [95% CI]: ", "not measured",
                         "the gradient dot product and LiSSA on the same fine-tunes"),
        small_rank.finding("DataInf is most accurate at small LoRA rank (its error bound grows with the dimension).",
                           "error O(d²) per layer", "; ".join(small_rank.measured) or "one rank only",
                           "DataInf's Pearson with exact, smallest − largest rank [95% CI]: ", "one rank only",
                           "DataInf at the largest LoRA rank"),
        mislabel.finding("DataInf detects mislabelled training data (20% flipped labels) at least as well as the "
                         "baselines.", "DataInf's AUC above LiSSA's and the dot product's on most GLUE tasks",
                         "; ".join(mislabel.measured) or "not run",
                         "AUC of −influence for the flipped labels [95% CI]: ", "not run",
                         "chance (AUC 0.5), the gradient dot product and LiSSA"),
        same_class.finding("DataInf finds the training examples of the test example's class among the most "
                           "influential.", "AUC and recall of DataInf above the baselines on the three generation "
                           "tasks", "; ".join(same_class.measured) or "not run",
                           "same-class detection per test example, mean [95% CI]: ", "not run",
                           "chance (AUC 0.5) and the gradient dot product"),
        speed.finding("DataInf is much faster than LiSSA and than exact computation.", PAPER_TIME,
                      "; ".join(speed.measured), "mean over tasks of log10 wall-time ratio [95% CI]: ", "not measured",
                      "LiSSA's and exact computation's wall times (ratio 1 = equally fast)"),
    ]
