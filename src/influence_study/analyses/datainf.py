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

from influence_study.study.io import read_parquet_metadata

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


# --- intervals of the v2 checks ---------------------------------------------------------------------------------


def _percentiles(draws: np.ndarray, estimate: float) -> dict:
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if not np.isfinite(estimate) or draws.size == 0:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"mean": float(estimate), "low": float(low), "high": float(high)}


def bootstrap_aucs(labels, scores, resamples: int = 2000, seed: int = 0, chunk: int = 100) -> tuple:
    """AUCs of each row of ``scores`` (``[k, n]``, larger = more likely positive, ties count 1/2) against the boolean
    ``labels``, and their bootstrap draws (``[resamples, k]``): each draw resamples the positives and the negatives
    with replacement, separately (stratified, so every draw has both), the SAME examples for every row (paired).
    Returns ``(auc [k], draws [resamples, k])``; NaNs without both classes."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    k = scores.shape[0]
    pos, neg = scores[:, labels], scores[:, ~labels]
    if pos.shape[1] == 0 or neg.shape[1] == 0:
        return np.full(k, np.nan), np.full((resamples, k), np.nan)
    rng = np.random.default_rng(seed)
    n_pos, n_neg = pos.shape[1], neg.shape[1]
    # per row: negatives sorted, and each positive's number of negatives below it (lo) and at or below it (hi)
    orders = [np.argsort(neg[i], kind="stable") for i in range(k)]
    lo = [np.searchsorted(neg[i][orders[i]], pos[i], side="left") for i in range(k)]
    hi = [np.searchsorted(neg[i][orders[i]], pos[i], side="right") for i in range(k)]

    def aucs(pos_counts: np.ndarray, neg_counts: np.ndarray) -> np.ndarray:
        out = np.empty((len(pos_counts), k))
        for i in range(k):
            cumulative = np.concatenate([np.zeros((len(neg_counts), 1)), np.cumsum(neg_counts[:, orders[i]], 1)], 1)
            below, upto = cumulative[:, lo[i]], cumulative[:, hi[i]]
            wins = (pos_counts * (below + 0.5 * (upto - below))).sum(1)
            out[:, i] = wins / (pos_counts.sum(1) * neg_counts.sum(1))
        return out

    point = aucs(np.ones((1, n_pos)), np.ones((1, n_neg)))[0]
    draws = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        draws.append(aucs(rng.multinomial(n_pos, np.full(n_pos, 1 / n_pos), size=size).astype(np.float64),
                          rng.multinomial(n_neg, np.full(n_neg, 1 / n_neg), size=size).astype(np.float64)))
    return point, np.concatenate(draws)


def auc_intervals(labels, scores: Mapping[str, np.ndarray], versus: Sequence[tuple[str, str]] = (),
                  resamples: int = 2000, seed: int = 0) -> dict:
    """``{name: {mean, low, high, n}}``: the AUC of each of ``scores`` (larger = positive) against ``labels`` with
    its stratified bootstrap interval over the examples, and for each ``(a, b)`` of ``versus`` the paired difference
    ``"a_minus_b"`` (the same resampled examples)."""
    names = list(scores)
    if not names:
        return {}
    point, draws = bootstrap_aucs(labels, np.stack([np.asarray(scores[n], np.float64) for n in names]), resamples,
                                  seed)
    n = int(len(np.asarray(labels)))
    out = {name: {**_percentiles(draws[:, i], point[i]), "n": n} for i, name in enumerate(names)}
    for a, b in versus:
        if a in names and b in names:
            i, j = names.index(a), names.index(b)
            out[f"{a}_minus_{b}"] = {**_percentiles(draws[:, i] - draws[:, j], point[i] - point[j]), "n": n}
    return out


def pearson_contrast(tasks: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], resamples: int = 2000,
                     seed: int = 0) -> dict:
    """Mean over ``tasks`` of Pearson(x1, y1) − Pearson(x2, y2), each task's four vectors over the same examples,
    with a bootstrap interval that resamples each task's examples (the same draw for both correlations: paired).
    ``{mean, low, high, n}`` (``n``: examples of the smallest task); NaNs without tasks."""
    if not tasks:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)

    def weighted_pearson(w: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        total = w.sum(1)
        mx, my = (w @ x) / total, (w @ y) / total
        cov = (w @ (x * y)) / total - mx * my
        vx, vy = (w @ (x * x)) / total - mx ** 2, (w @ (y * y)) / total - my ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            return cov / np.sqrt(vx * vy)

    estimate, draws = [], []
    for x1, y1, x2, y2 in tasks:
        x1, y1, x2, y2 = (np.asarray(v, np.float64) for v in (x1, y1, x2, y2))
        n = len(x1)
        ones = np.ones((1, n))
        estimate.append(float(weighted_pearson(ones, x1, y1)[0] - weighted_pearson(ones, x2, y2)[0]))
        w = rng.multinomial(n, np.full(n, 1 / n), size=resamples).astype(np.float64)
        draws.append(weighted_pearson(w, x1, y1) - weighted_pearson(w, x2, y2))
    return {**_percentiles(np.mean(draws, axis=0), float(np.mean(estimate))),
            "n": int(min(len(t[0]) for t in tasks))}


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
    from influence_study.analyses.intervals import NAN_INTERVAL, interval, paired_interval

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
    from influence_study.findings import Evidence, finding
    from influence_study.analyses.intervals import describe_interval, interval_check

    intervals = stats.get("intervals") or {}
    findings = []
    corr = stats["correlation_with_exact"]
    checks, measured, v2, v2_text = {}, [], [], []
    for model, by_rank in corr.items():
        for rank, values in by_rank.items():
            measured.append(f"{model} rank {rank}: {_fmt(values)}")
            for other in ("identity", "lissa"):
                if "datainf" in values and other in values:
                    checks[f"{model} rank {rank}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
                    entry = intervals.get("correlation", {}).get(model, {}).get(str(rank), {}).get(
                        f"datainf_minus_{other}")
                    v2.append(interval_check(f"{model} rank {rank}: Pearson with exact, DataInf − {other} > 0 "
                                             f"(mean over tasks, paired bootstrap over training examples)", entry,
                                             0.0, "above"))
                    v2_text.append(f"{model} rank {rank} DataInf − {other}: {describe_interval(entry)}")
    findings.append(finding("DataInf", "DataInf approximates exact influence better than the gradient dot product "
                            "and LiSSA.", PAPER_CORRELATION, "Pearson with exact (mean over tasks): "
                            + "; ".join(measured), checks,
                            Evidence("difference in Pearson with exact influence [95% CI]: "
                                     + ("; ".join(v2_text) or "not measured"),
                                     "the gradient dot product and LiSSA on the same fine-tunes", v2)))
    checks, measured, v2, v2_text = {}, [], [], []
    for model, by_rank in corr.items():
        ranks = sorted(by_rank, key=int)
        values = [by_rank[r].get("datainf") for r in ranks]
        if len(ranks) > 1 and None not in values:
            measured.append(f"{model}: " + ", ".join(f"rank {r} {v:.2f}" for r, v in zip(ranks, values)))
            checks[f"{model}: rank {ranks[0]} ≥ rank {ranks[-1]}"] = values[0] >= values[-1]
            entry = intervals.get("small_rank", {}).get(model)
            v2.append(interval_check(f"{model}: DataInf's Pearson with exact, rank {ranks[0]} − rank {ranks[-1]} > 0 "
                                     f"(mean over tasks, bootstrap over training examples)", entry, 0.0, "above"))
            v2_text.append(f"{model}: {describe_interval(entry)}")
    findings.append(finding("DataInf", "DataInf is most accurate at small LoRA rank (its error bound grows with "
                            "the dimension).", "error O(d²) per layer", "; ".join(measured) or "one rank only",
                            checks,
                            Evidence("DataInf's Pearson with exact, smallest − largest rank [95% CI]: "
                                     + ("; ".join(v2_text) or "one rank only"),
                                     "DataInf at the largest LoRA rank", v2)))
    checks, measured, v2, v2_text = {}, [], [], []
    for model, values in stats["mislabel_auc"].items():
        measured.append(f"{model}: AUC {_fmt(values)}")
        node = intervals.get("mislabel", {}).get(model, {})
        if "datainf" in values:
            checks[f"{model}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
            v2.append(interval_check(f"{model}: DataInf AUC > 0.5 (stratified bootstrap over training examples)",
                                     node.get("datainf"), 0.5, "above"))
            v2_text.append(f"{model}: DataInf AUC {describe_interval(node.get('datainf'))}")
            for other in ("identity", "lissa"):
                if other in values:
                    checks[f"{model}: DataInf ≥ {other}"] = values["datainf"] >= values[other]
                    entry = node.get(f"datainf_minus_{other}")
                    v2.append(interval_check(f"{model}: AUC DataInf − {other} > 0 (paired, stratified bootstrap "
                                             f"over training examples)", entry, 0.0, "above"))
                    v2_text.append(f"DataInf − {other} {describe_interval(entry)}")
    findings.append(finding("DataInf", "DataInf detects mislabelled training data (20% flipped labels) at least "
                            "as well as the baselines.", "DataInf's AUC above LiSSA's and the dot product's on "
                            "most GLUE tasks", "; ".join(measured) or "not run", checks,
                            Evidence("AUC of −influence for the flipped labels [95% CI]: "
                                     + ("; ".join(v2_text) or "not run"),
                                     "chance (AUC 0.5), the gradient dot product and LiSSA", v2)))
    checks, measured, v2, v2_text = {}, [], [], []
    for model, by_task in stats["class_auc"].items():
        for task, values in by_task.items():
            recall = stats["class_recall"][model][task]
            measured.append(f"{model} {task}: AUC {_fmt(values)}; recall {_fmt(recall)}")
            node = intervals.get("classes", {}).get(model, {}).get(task, {})
            if "datainf" in values:
                checks[f"{model} {task}: DataInf AUC > 0.5"] = values["datainf"] > 0.5
                v2.append(interval_check(f"{model} {task}: mean DataInf AUC > 0.5 (bootstrap over test examples)",
                                         node.get("datainf_auc"), 0.5, "above"))
                v2_text.append(f"{model} {task}: DataInf AUC {describe_interval(node.get('datainf_auc'))}")
                if "identity" in values:
                    checks[f"{model} {task}: DataInf AUC ≥ identity"] = values["datainf"] >= values["identity"]
                    checks[f"{model} {task}: DataInf recall ≥ identity"] = recall["datainf"] >= recall["identity"]
                    for measure in ("auc", "recall"):
                        entry = node.get(f"{measure}_datainf_minus_identity")
                        v2.append(interval_check(f"{model} {task}: {measure.upper() if measure == 'auc' else measure}"
                                                 f" DataInf − identity > 0 (paired, bootstrap over test examples)",
                                                 entry, 0.0, "above"))
                        v2_text.append(f"{measure} DataInf − identity {describe_interval(entry)}")
    findings.append(finding("DataInf", "DataInf finds the training examples of the test example's class among "
                            "the most influential.", "AUC and recall of DataInf above the baselines on the "
                            "three generation tasks", "; ".join(measured) or "not run", checks,
                            Evidence("same-class detection per test example, mean [95% CI]: "
                                     + ("; ".join(v2_text) or "not run"),
                                     "chance (AUC 0.5) and the gradient dot product", v2)))
    checks, measured, v2, v2_text = {}, [], [], []
    for model, values in stats["seconds"].items():
        measured.append(f"{model}: seconds {_fmt(values)}")
        for ratio, value in stats["speedups"].get(model, {}).items():
            checks[f"{model}: {ratio} > 1"] = value > 1
            entry = intervals.get("speed", {}).get(model, {}).get(ratio)
            v2.append(interval_check(f"{model}: log10({ratio} wall time) > 0, i.e. ratio > 1 (bootstrap over "
                                     f"{(entry or {}).get('n', 0)} tasks, one timing each)", entry, 0.0, "above"))
            v2_text.append(f"{model} log10 {ratio}: {describe_interval(entry)}")
    findings.append(finding("DataInf", "DataInf is much faster than LiSSA and than exact computation.", PAPER_TIME,
                            "; ".join(measured), checks,
                            Evidence("mean over tasks of log10 wall-time ratio [95% CI]: "
                                     + ("; ".join(v2_text) or "not measured"),
                                     "LiSSA's and exact computation's wall times (ratio 1 = equally fast)", v2)))
    return findings


def run(config: Mapping, influence: Sequence[str], pairwise: Sequence[str], finetunes: Sequence[str],
        tasks: str, correlations: str, mislabel: str, curves: str, classes: str, times: str, summary: str) -> None:
    """Step of ``analysis_datainf``: every fine-tune's tables into the statistics and verdicts above."""
    from influence_study.finetune import detection_rank
    from influence_study.study.io import read_json
    from influence_study.analyses.common import write_analysis

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
    intervals = interval_statistics(totals, class_table, time_table, rank, seed=config["seed"])
    stats = statistics(correlation, mislabel_table, class_table, time_table, summaries, rank, intervals)
    write_analysis(config, "datainf", {"correlations": (correlation, correlations), "mislabel": (mislabel_table, mislabel),
                                       "curves": (curve_table, curves), "classes": (class_table, classes),
                                       "times": (time_table, times)},
                   stats, verdicts, summary, inputs=[*influence, *finetunes, tasks])
