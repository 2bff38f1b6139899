"""A scale comparison at matched held-out loss: is a larger model's higher abstraction index a property of its
size, or of how far its training went?

Trained for the same epochs, a larger model reaches a lower held-out loss and memorises more of what it scores
(its gradients on those documents shrink), so a difference between a small and a large model's final checkpoints
mixes size with training progress. The comparison here removes the second: the larger model (``model``) is
retrained from the same initialisation, data order and schedule, and stopped at the first evaluation whose
held-out loss is at or below the smaller model's (``reference``) final held-out loss; that checkpoint is scored with
the same factor recipe and compared, query by query, with the reference. Rules (fixed before the numbers were seen):

- the queries are those the abstraction analysis uses; of them, those both the reference and the matched checkpoint
  answer correctly when there are at least :data:`~influence_study.analyses.scale.MIN_CORRECT_QUERIES` of them,
  else every query (the text says which, and gives the other set's value beside);
- the check: the matched checkpoint's statistic minus the reference's, paired over queries, is above 0 (95%
  bootstrap interval over queries);
- beside it: the same difference for the final checkpoint (the fixed-epoch comparison that the trend analyses use),
  final minus matched (what the extra training adds), the chance level, the losses and the step reached.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci
from influence_study.analyses.scale import MIN_CORRECT_QUERIES, MIN_INTERVAL_QUERIES
from influence_study.findings import Evidence, IntervalCheck, finding
from influence_study.study.io import require_columns

MATCHED_SUFFIX = "@matched-loss"


def matched_name(model: str) -> str:
    """The name of ``model``'s matched-loss checkpoint in the analysis's tables (``gpt2-l@matched-loss``)."""
    return f"{model}{MATCHED_SUFFIX}"


def final_valid_loss(history: pd.DataFrame, what: str) -> float:
    """The last finite validation loss of a training history (``history.csv``: ``step, valid_loss``)."""
    require_columns(history, ["step", "valid_loss"], what)
    losses = history.sort_values("step")["valid_loss"].astype(float)
    losses = losses[np.isfinite(losses)]
    if losses.empty:
        raise ValueError(f"{what}: no finite validation loss; the matched-loss comparison needs held-out documents "
                         f"(corpus.valid_fraction > 0)")
    return float(losses.iloc[-1])


def trajectory_difference(original: pd.DataFrame, retrained: pd.DataFrame) -> float:
    """Largest |difference| of the validation loss at the steps both histories measured: 0 when the retrain
    reproduced the original run up to where it stopped (training is deterministic on CPU for a fixed seed and
    thread count); NaN when they share no step."""
    merged = original[["step", "valid_loss"]].merge(retrained[["step", "valid_loss"]], on="step",
                                                    suffixes=("_original", "_retrained"))
    if merged.empty:
        return float("nan")
    return float((merged["valid_loss_original"] - merged["valid_loss_retrained"]).abs().max())


def _paired(frame: pd.DataFrame, first: str, second: str, column: str, resamples: int, seed: int) -> dict:
    wide = frame.pivot_table(index="query_id", columns="model", values=column, aggfunc="first")
    if first not in wide or second not in wide:
        return {"mean": float("nan"), "low": float("nan"), "high": float("nan"), "queries": 0}
    difference = (wide[first] - wide[second]).dropna()
    mean, low, high = mean_ci(difference, resamples=resamples, seed=seed)
    if len(difference) < MIN_INTERVAL_QUERIES:
        low = high = float("nan")
    return {"mean": mean, "low": low, "high": high, "queries": int(len(difference))}


def matched_numbers(per_query: pd.DataFrame, column: str, reference: str, model: str, correct: pd.DataFrame,
                    chance: str | None = None, seed: int = 0, resamples: int = 2000) -> dict:
    """The numbers of the matched-loss comparison of ``column`` (see the module docstring).

    ``per_query``: long table ``model, query_id, <column>`` with rows for ``reference``, ``model`` (its final
    checkpoint) and :func:`matched_name` ``(model)``; ``correct``: ``model, query_id, correct`` for the same three;
    ``chance``: a column of ``per_query`` with each query's value under a random ranking."""
    require_columns(per_query, ["model", "query_id", column], "per-query table")
    matched = matched_name(model)
    rows = per_query[per_query["model"].isin([reference, model, matched])].astype({"query_id": str})
    right = correct[correct["correct"].astype(bool)].astype({"model": str, "query_id": str})
    both = (set(right.loc[right["model"] == reference, "query_id"])
            & set(right.loc[right["model"] == matched, "query_id"]))
    restricted = rows[rows["query_id"].isin(both)]
    defined = restricted.dropna(subset=[column]).groupby("query_id")["model"].nunique()
    use_restricted = int((defined >= 2).sum()) >= MIN_CORRECT_QUERIES
    sets = {"correct": restricted, "all": rows}
    numbers: dict = {"column": column, "reference": reference, "model": model, "matched": matched,
                     "query_set": "correct" if use_restricted else "all", "correct_queries": len(both)}
    for name, frame in sets.items():
        numbers[name] = {
            "matched_minus_reference": _paired(frame, matched, reference, column, resamples, seed),
            "final_minus_reference": _paired(frame, model, reference, column, resamples, seed),
            "final_minus_matched": _paired(frame, model, matched, column, resamples, seed),
            "means": {m: float(frame.loc[frame["model"] == m, column].mean()) for m in (reference, matched, model)},
        }
    numbers["chance"] = float(rows[chance].mean()) if chance is not None and len(rows) else float("nan")
    return numbers


def _interval(node: Mapping, fmt: str = "{:+.3f}") -> str:
    values = [float(node[k]) for k in ("mean", "low", "high")]
    text = ["nan" if not np.isfinite(v) else fmt.format(v) for v in values]
    return f"{text[0]} [{text[1]}, {text[2]}]"


def matched_evidence(numbers: Mapping, checkpoint: Mapping, what: str) -> Evidence:
    """The v2 evidence of the comparison (:func:`matched_numbers` output and the ``checkpoint`` record of the
    retrain: steps, losses, whether the reference's loss was reached)."""
    primary = numbers["query_set"]
    chosen, other = numbers[primary], numbers["all" if primary == "correct" else "correct"]
    reference, model = numbers["reference"], numbers["model"]
    query_set = ("queries both answer correctly" if primary == "correct"
                 else f"queries (every one: fewer than {MIN_CORRECT_QUERIES} are answered correctly by both)")
    check = IntervalCheck(f"{what}: {model} at {reference}'s held-out loss minus {reference}, paired over queries",
                          *(chosen["matched_minus_reference"][k] for k in ("mean", "low", "high")), 0.0, "above")
    means = ", ".join(f"{m} {v:.2f}" if np.isfinite(v) else f"{m} nan" for m, v in chosen["means"].items())
    reached = ("" if checkpoint["reached"] else
               f" ({model} never reached it: its final checkpoint is used, so the comparison is not matched)")
    statistic = (f"{what} of {model} stopped at step {checkpoint['step']} of {checkpoint['steps']} (held-out loss "
                 f"{checkpoint['valid_loss']:.3f}; {reference}'s final {checkpoint['target_loss']:.3f}){reached}: "
                 f"matched minus {reference} {_interval(chosen['matched_minus_reference'])} over "
                 f"{chosen['matched_minus_reference']['queries']} {query_set}; means {means}; "
                 f"{'all queries' if primary == 'correct' else 'correctly answered only'}: "
                 f"{_interval(other['matched_minus_reference'])}")
    baseline = (f"the fixed-epoch comparison ({model}'s final checkpoint, held-out loss "
                f"{checkpoint['final_loss']:.3f}) minus {reference}: {_interval(chosen['final_minus_reference'])}; "
                f"final minus matched (what the rest of the training adds): "
                f"{_interval(chosen['final_minus_matched'])}; chance (random ranking) {numbers['chance']:.2f}")
    return Evidence(statistic, baseline, [check])


def matched_finding(numbers: Mapping | None, checkpoint: Mapping, what: str, section: str):
    """The finding that the abstraction trend survives the comparison at matched held-out loss (``numbers``:
    :func:`matched_numbers` output, None when the comparison was not measured: ``checkpoint["reason"]`` says
    why)."""
    claim = ("The rise of the abstraction index with size is not an effect of training progress: the larger "
             "model, stopped when its held-out loss reaches the smaller model's final loss, still ranks "
             "meaning-related documents above token-only ones more often than the smaller model.")
    paper = "not tested (models of each size compared after the same training tokens)"
    if numbers is None:
        return finding(section, claim, paper, f"not measured: {checkpoint.get('reason', 'no matched checkpoint')}",
                       {})
    difference = numbers[numbers["query_set"]]["matched_minus_reference"]["mean"]
    checks = {"matched checkpoint's mean above the reference's": bool(np.isfinite(difference) and difference > 0)}
    evidence = matched_evidence(numbers, checkpoint, what)
    return finding(section, claim, paper, evidence.statistic, checks, evidence)
