"""Magnitude calibration: does an influence score, read as "nats per added copy", predict how much retraining with
added copies of a document changes a query's log p(completion)?

Grosse et al. (2023) read the normalised influence score_norm = score / N (N training sequences, epsilon = 1/N) as
the change of log p(completion | prompt) when one copy of the training sequence is added, and report that no
sequence has an influence above 1 nat. That reading is a linear extrapolation; here it is tested against retraining.
The LDS model (the smallest from-scratch model of the family, ``analyses.lds.model``) is retrained from scratch with
its own seed and training settings:

- ``unmodified``: on the original training documents; it must reproduce the original model's log-probabilities
  (CPU training is deterministic for a fixed seed), which checks the instrument;
- ``target-i``: with ``copies`` extra copies of a target document: the EK-FAC top-1 document (positive influence)
  of a seeded random query of the ``family`` queries (facts by default), one retrain per target;
- ``control``: with ``copies`` extra copies of a low-|influence| document (of a seeded random sample of training
  documents, the one with the smallest largest |score| over queries).

The copies are appended to the list of training documents, so the target and control retrains shuffle lists of the
same length with the same seed: they see the same permutation and differ only in which document is copied (but the
copies' lengths differ, so the packed blocks after the first copy differ too: the noise of the difference is about
that of a new data order). Each retrain scores every query, so each target gives (predicted, measured) pairs for all
queries:

    predicted(q, t) = copies x (score_norm[q, t] - score_norm[q, control])
    measured(q, t)  = log p_t(completion_q) - log p_control(completion_q)

The control against the unmodified retrain (a different permutation) measures the noise of changing the data
order. Across the whole family, the share of queries whose top document's per-copy prediction exceeds the query's
NLL, -log p(completion) (the most log p can rise), says whether the linear reading is possible at all.
Intervals are percentile bootstraps: over queries (clusters of a query's points across retrains), over targets for
the median ratio.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from influence_study.analyses.common import mean_ci, median_ci, top_k
from influence_study.findings import Evidence, IntervalCheck, finding
from influence_study.study.io import require_columns
from influence_study.study.seeds import calibration_control_seed, calibration_target_seed

CONTROL_CANDIDATES = 50  # the control is the least influential of this many random training documents
RATIO_BAND = (0.5, 2.0)  # "within a factor 2"
EXCEEDS_NLL_AT_MOST = 0.05  # v2 (ours): at most 5% of queries with an impossible per-copy prediction
UNMODIFIED, CONTROL, TARGET = "unmodified", "control", "target"
ALL = "all"


# --- the plan: targets, control and the retrains ----------------------------------------------------------------


def retrain_names(targets: int) -> list[str]:
    """The retrains of a study with ``targets`` targets: ``unmodified``, ``control``, ``target-0`` ..."""
    return [UNMODIFIED, CONTROL, *[f"{TARGET}-{i}" for i in range(int(targets))]]


def choose_targets(pairwise: pd.DataFrame, query_ids: Sequence, n_targets: int, seed: int) -> pd.DataFrame:
    """The targets: in a seeded random order of ``query_ids``, each query's top-1 document by ``score_norm`` (ties
    by ``doc_id``), kept when its score is positive and the document is not already a target, until ``n_targets``
    are found. Columns ``target, query_id, doc_id, score_norm``. Raises ValueError when fewer are found."""
    require_columns(pairwise, ["query_id", "doc_id", "score_norm"], "pairwise scores")
    ids = np.array(sorted(set(map(str, query_ids))), dtype=object)
    frame = pairwise.assign(query_id=pairwise["query_id"].astype(str), doc_id=pairwise["doc_id"].astype(str))
    top = top_k(frame[frame["query_id"].isin(set(ids))], 1, "score_norm").set_index("query_id")
    order = ids[np.random.default_rng(calibration_target_seed(seed)).permutation(len(ids))] if len(ids) else ids
    rows, used = [], set()
    for query_id in order:
        if query_id not in top.index:
            continue
        doc_id, score = top.at[query_id, "doc_id"], float(top.at[query_id, "score_norm"])
        if score <= 0 or doc_id in used:
            continue
        used.add(doc_id)
        rows.append({"target": len(rows), "query_id": query_id, "doc_id": doc_id, "score_norm": score})
        if len(rows) == n_targets:
            break
    if len(rows) < n_targets:
        raise ValueError(f"analyses.calibration.targets: asked for {n_targets} targets, but only {len(rows)} of "
                         f"{len(ids)} candidate queries have a distinct top document with positive influence; "
                         f"lower analyses.calibration.targets or choose another analyses.calibration.family")
    return pd.DataFrame(rows)


def choose_control(pairwise: pd.DataFrame, exclude: Sequence, seed: int,
                   candidates: int = CONTROL_CANDIDATES) -> str:
    """The control document: of ``candidates`` seeded random documents of ``pairwise`` (not in ``exclude``), the
    one whose largest |score_norm| over the queries is smallest (ties by ``doc_id``)."""
    frame = pairwise.assign(doc_id=pairwise["doc_id"].astype(str), size=pairwise["score_norm"].abs())
    largest = frame.groupby("doc_id", observed=True)["size"].max().sort_index()
    largest = largest[~largest.index.isin(set(map(str, exclude)))]
    if largest.empty:
        raise ValueError("calibration: no training document is left for the control")
    rng = np.random.default_rng(calibration_control_seed(seed))
    sample = largest.iloc[np.sort(rng.choice(len(largest), size=min(candidates, len(largest)), replace=False))]
    return str(sample.sort_values(kind="stable").index[0])


def plan_table(targets: pd.DataFrame, control: str, copies: int) -> pd.DataFrame:
    """One row per retrain: ``retrain, kind, doc_id`` (the copied document), ``copies``, ``query_id`` (a target's
    query) and ``score_norm`` (its top-1 score)."""
    rows = [{"retrain": UNMODIFIED, "kind": UNMODIFIED, "doc_id": None, "copies": 0, "query_id": None,
             "score_norm": np.nan},
            {"retrain": CONTROL, "kind": CONTROL, "doc_id": str(control), "copies": int(copies), "query_id": None,
             "score_norm": np.nan}]
    for row in targets.itertuples(index=False):
        rows.append({"retrain": f"{TARGET}-{row.target}", "kind": TARGET, "doc_id": str(row.doc_id),
                     "copies": int(copies), "query_id": str(row.query_id), "score_norm": float(row.score_norm)})
    return pd.DataFrame(rows)


# --- the statistics ---------------------------------------------------------------------------------------------


def percentile_interval(draws: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap ``draws`` (NaNs dropped); (nan, nan) without finite draws."""
    draws = np.asarray(draws, dtype=np.float64)
    draws = draws[np.isfinite(draws)]
    if draws.size == 0:
        return float("nan"), float("nan")
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def _pearson_slope(n, sx, sy, sxx, syy, sxy):
    with np.errstate(invalid="ignore", divide="ignore"):
        vx, vy, cxy = sxx - sx * sx / n, syy - sy * sy / n, sxy - sx * sy / n
        pearson = np.where((vx > 0) & (vy > 0), cxy / np.sqrt(vx * vy), np.nan)
        slope = np.where(vx > 0, cxy / vx, np.nan)
    return np.clip(pearson, -1.0, 1.0), slope


def pooled_fit(points: pd.DataFrame, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> dict:
    """Pearson correlation and least-squares slope (with intercept) of ``measured`` on ``predicted`` over every row
    of ``points`` (columns ``query_id, predicted, measured``), with percentile bootstrap intervals that resample
    queries (a drawn query brings all its rows): ``pearson, pearson_low, pearson_high, slope, slope_low,
    slope_high, pairs, queries``."""
    frame = points.dropna(subset=["predicted", "measured"])
    codes, _ = pd.factorize(frame["query_id"].astype(str))
    x, y = frame["predicted"].to_numpy(np.float64), frame["measured"].to_numpy(np.float64)
    q = int(codes.max()) + 1 if len(codes) else 0
    per_query = np.zeros((q, 6))
    for j, column in enumerate([np.ones_like(x), x, y, x * x, y * y, x * y]):
        np.add.at(per_query[:, j], codes, column)
    pearson, slope = _pearson_slope(*per_query.sum(axis=0)) if q else (np.nan, np.nan)
    out = {"pearson": float(pearson), "slope": float(slope), "pairs": int(len(frame)), "queries": q}
    if q >= 2:
        rng = np.random.default_rng(seed)
        counts = np.zeros((resamples, q))
        np.add.at(counts, (np.arange(resamples)[:, None], rng.integers(0, q, size=(resamples, q))), 1.0)
        sums = counts @ per_query
        boot_pearson, boot_slope = _pearson_slope(*sums.T)
        (out["pearson_low"], out["pearson_high"]), (out["slope_low"], out["slope_high"]) = (
            percentile_interval(boot_pearson, level), percentile_interval(boot_slope, level))
    else:
        out.update(pearson_low=out["pearson"], pearson_high=out["pearson"], slope_low=out["slope"],
                   slope_high=out["slope"])
    return out


def matrix(table: pd.DataFrame, index: str, columns: str, values: str) -> pd.DataFrame:
    """``values`` of ``table`` as an ``index`` x ``columns`` matrix (ids as strings, the first value of a pair)."""
    frame = table.assign(**{index: table[index].astype(str), columns: table[columns].astype(str)})
    return frame.pivot_table(index=index, columns=columns, values=values, aggfunc="first", observed=True)


def calibration_points(plan: pd.DataFrame, measurements: pd.DataFrame, pairwise: pd.DataFrame) -> pd.DataFrame:
    """One row per (target retrain, query): ``retrain, target_doc, target_query, query_id, own`` (the query is the
    target's), ``predicted`` = copies x (score_norm[q, target] - score_norm[q, control]), ``measured`` =
    log p_target - log p_control, and ``measured_vs_unmodified`` = log p_target - log p_unmodified (NaN without
    the unmodified retrain). ``measurements``: ``retrain, query_id, logprob``; ``pairwise``: ``query_id, doc_id,
    score_norm`` of (at least) the planned documents."""
    require_columns(plan, ["retrain", "kind", "doc_id", "copies", "query_id"], "calibration plan")
    require_columns(measurements, ["retrain", "query_id", "logprob"], "calibration measurements")
    require_columns(pairwise, ["query_id", "doc_id", "score_norm"], "pairwise scores")
    logprob = matrix(measurements, "query_id", "retrain", "logprob")
    control = plan.loc[plan["kind"] == CONTROL]
    if control.empty or CONTROL not in logprob:
        raise ValueError("calibration: the control retrain is missing from the plan or the measurements")
    control_doc = str(control["doc_id"].iloc[0])
    planned = set(plan["doc_id"].dropna().astype(str))
    scores = matrix(pairwise[pairwise["doc_id"].astype(str).isin(planned)], "query_id", "doc_id", "score_norm")
    missing = sorted(planned - set(scores.columns))
    if missing:
        raise ValueError(f"calibration: planned documents without scores: {missing[:3]}")
    queries = logprob.index.intersection(scores.index)
    frames = []
    for row in plan[plan["kind"] == TARGET].itertuples(index=False):
        if row.retrain not in logprob:
            continue
        doc = str(row.doc_id)
        predicted = row.copies * (scores.loc[queries, doc] - scores.loc[queries, control_doc])
        unmodified = logprob.loc[queries, UNMODIFIED] if UNMODIFIED in logprob else np.nan
        frames.append(pd.DataFrame({
            "retrain": row.retrain, "target_doc": doc, "target_query": str(row.query_id), "query_id": queries,
            "own": queries == str(row.query_id), "copies": int(row.copies), "predicted": predicted.to_numpy(),
            "measured": (logprob.loc[queries, row.retrain] - logprob.loc[queries, CONTROL]).to_numpy(),
            "measured_vs_unmodified": np.asarray(logprob.loc[queries, row.retrain] - unmodified, dtype=np.float64)}))
    if not frames:
        return pd.DataFrame(columns=["retrain", "target_doc", "target_query", "query_id", "own", "copies",
                                     "predicted", "measured", "measured_vs_unmodified"])
    return pd.concat(frames, ignore_index=True)


def target_table(points: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per target retrain, its own query: ``predicted``, ``measured``, ``ratio`` = measured / predicted, and a noise
    interval ``ratio_low, ratio_high`` = (measured -/+ z x noise_sd) / predicted, where ``noise_sd`` is the standard
    deviation of measured - predicted over the retrain's other queries (what the retrain does that the scores do not
    predict); ``per_copy_measured`` = measured / copies; ``measured_z`` = measured / noise_sd (how far the own
    query's change stands out of the retrain's noise)."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    rows = []
    for retrain, group in points.groupby("retrain", sort=False):
        own, other = group[group["own"]], group[~group["own"]]
        if own.empty:
            continue
        predicted, measured = float(own["predicted"].iloc[0]), float(own["measured"].iloc[0])
        noise = float(np.std(other["measured"] - other["predicted"], ddof=1)) if len(other) > 1 else float("nan")
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = measured / predicted if predicted else float("nan")
            bounds = sorted([(measured - z * noise) / predicted, (measured + z * noise) / predicted]) \
                if predicted else [float("nan")] * 2
        rows.append({"retrain": retrain, "doc_id": own["target_doc"].iloc[0], "query_id": own["query_id"].iloc[0],
                     "copies": int(own["copies"].iloc[0]), "predicted": predicted, "measured": measured,
                     "per_copy_predicted": predicted / own["copies"].iloc[0],
                     "per_copy_measured": measured / own["copies"].iloc[0], "ratio": ratio,
                     "ratio_low": float(bounds[0]), "ratio_high": float(bounds[1]), "noise_sd": noise,
                     "measured_z": measured / noise if noise > 0 else float("nan")})
    return pd.DataFrame(rows)


def nll_table(pairwise: Mapping[str, pd.DataFrame], evaluations: Mapping[str, pd.DataFrame],
              families: pd.Series | None = None) -> pd.DataFrame:
    """Per model and query: the top document by ``score_norm`` (``top_doc, top_score_norm``, the predicted gain of
    one added copy), the model's ``nll`` = -log p(completion | prompt) (its ``evaluation`` table), ``exceeds_nll``
    (the prediction is more than log p can rise), ``above_1_nat`` and ``top_to_nll`` = top_score_norm / nll.
    ``families`` maps query_id to its family (``analysis``)."""
    frames = []
    for model, scores in pairwise.items():
        if model not in evaluations:
            raise ValueError(f"calibration: model {model!r} has scores but no evaluation table")
        top = top_k(scores.assign(query_id=scores["query_id"].astype(str), doc_id=scores["doc_id"].astype(str)),
                    1, "score_norm")
        evaluation = evaluations[model]
        logprob = pd.Series(evaluation["logprob"].to_numpy(np.float64),
                            index=evaluation["query_id"].astype(str))
        logprob = logprob[~logprob.index.duplicated()]
        top = top[top["query_id"].isin(logprob.index)]
        nll = -logprob.reindex(top["query_id"]).to_numpy()
        value = top["score_norm"].to_numpy(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(nll > 0, value / nll, np.nan)
        frames.append(pd.DataFrame({
            "model": model, "query_id": top["query_id"].to_numpy(),
            "analysis": (top["query_id"].map(families).astype(object).to_numpy() if families is not None
                         else None),
            "top_doc": top["doc_id"].to_numpy(), "top_score_norm": value, "nll": nll, "exceeds_nll": value > nll,
            "above_1_nat": value > 1.0, "top_to_nll": ratio}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["model", "query_id", "analysis", "top_doc", "top_score_norm", "nll", "exceeds_nll", "above_1_nat",
                 "top_to_nll"])


def share_table(nll: pd.DataFrame, level: float = 0.95, resamples: int = 2000, seed: int = 0) -> pd.DataFrame:
    """Per model, over all queries (``analysis = "all"``) and per family: the share of queries whose top document's
    per-copy prediction exceeds the NLL (``share_exceeds_nll`` with ``_low, _high``: bootstrap over queries), the
    share above 1 nat (likewise) and the median of top_score_norm / nll (likewise)."""
    rows = []
    for model, group in nll.groupby("model", sort=False):
        parts = [(ALL, group), *group.dropna(subset=["analysis"]).groupby("analysis", sort=True)]
        for family, part in parts:
            row = {"model": model, "analysis": family, "queries": int(len(part))}
            for key, column in (("share_exceeds_nll", "exceeds_nll"), ("share_above_1_nat", "above_1_nat")):
                row[key], row[f"{key}_low"], row[f"{key}_high"] = mean_ci(part[column].astype(float), level,
                                                                          resamples, seed)
            row["top_to_nll_median"], row["top_to_nll_median_low"], row["top_to_nll_median_high"] = median_ci(
                part["top_to_nll"], level, resamples, seed)
            rows.append(row)
    return pd.DataFrame(rows)


def summarise_shares(shares: pd.DataFrame) -> dict:
    """``{model: {"all": {...}, family: {...}}}`` of a :func:`share_table`."""
    out: dict = {}
    for record in shares.to_dict("records"):
        model, family = record.pop("model"), record.pop("analysis")
        out.setdefault(model, {})[family] = {k: (int(v) if k == "queries" else float(v)) for k, v in record.items()}
    return out


# --- verdicts ---------------------------------------------------------------------------------------------------


def _interval(stats: Mapping, key: str, fmt: str = ".2f") -> str:
    value = stats.get(key)
    if value is None or not np.isfinite(value):
        return "not measured"
    low, high = stats.get(f"{key}_low", np.nan), stats.get(f"{key}_high", np.nan)
    return f"{value:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def verdicts(statistics: Mapping) -> list:
    """The per-copy reading of influence, checked against retraining and against what is possible, with checks
    fixed before the numbers were seen: the median measured/predicted ratio of the targets' own queries and the
    slope of measured on predicted over all (retrain, query) pairs lie within a factor 2 of 1; and, for every model,
    no query's top document is predicted to raise log p(completion) by more than the query's NLL."""
    name = "Magnitude calibration"
    low, high = RATIO_BAND
    finite = lambda key: statistics.get(key) is not None and np.isfinite(statistics[key])  # noqa: E731
    where = (f"{statistics.get('model')}, {statistics.get('targets')} targets x {statistics.get('copies')} added "
             f"copies, retrained from scratch")
    checks = {}
    if finite("ratio_median"):
        checks[f"median measured/predicted ratio of the targets' own queries in [{low:g}, {high:g}]"] = (
            low <= statistics["ratio_median"] <= high)
    if finite("slope"):
        checks[f"slope of measured on predicted over all (retrain, query) pairs in [{low:g}, {high:g}]"] = (
            low <= statistics["slope"] <= high)
    measured = (f"{where}: median ratio {_interval(statistics, 'ratio_median')}, slope "
                f"{_interval(statistics, 'slope')}, Pearson {_interval(statistics, 'pearson')} over "
                f"{statistics.get('pairs', 0)} pairs; control vs unmodified retrain: sd "
                f"{statistics.get('control_change_sd', float('nan')):.3g} nats; unmodified retrain reproduces the "
                f"model to {statistics.get('reproduction_max_abs_diff', float('nan')):.2g} nats")
    shares = statistics.get("nll_share", {})
    possible = {f"{m}: no query's top document predicted above its NLL": v[ALL]["share_exceeds_nll"] == 0
                for m, v in shares.items() if ALL in v and np.isfinite(v[ALL]["share_exceeds_nll"])}
    share_text = ", ".join(f"{m} {_interval(v[ALL], 'share_exceeds_nll', '.0%')}" for m, v in shares.items()
                           if ALL in v) or "not measured"
    def check(node: Mapping, key: str, label: str, bound, side: str) -> IntervalCheck:
        nan = float("nan")
        value = node.get(key)
        return IntervalCheck(label, nan if value is None else value, node.get(f"{key}_low", nan),
                             node.get(f"{key}_high", nan), bound, side)

    noise = (f"control retrain vs unmodified: sd {statistics.get('control_change_sd', float('nan')):.3g} nats per "
             f"query (the noise of changing the data); a prediction of 0 is the null")
    retraining = Evidence(
        f"{where}: median measured/predicted ratio {_interval(statistics, 'ratio_median')} (interval over targets), "
        f"slope {_interval(statistics, 'slope')} over {statistics.get('pairs', 0)} (retrain, query) pairs",
        noise, [check(statistics, "ratio_median", "median measured/predicted ratio, targets' own queries",
                      RATIO_BAND, "within"),
                check(statistics, "slope", "slope of measured on predicted, all pairs", RATIO_BAND, "within")])
    nll_checks = [check(v[ALL], "share_exceeds_nll", f"{m}: share of queries predicted above their NLL "
                        f"(bound {EXCEEDS_NLL_AT_MOST:.0%}: ours)", EXCEEDS_NLL_AT_MOST, "below")
                  for m, v in shares.items() if ALL in v]
    possible_evidence = Evidence("share of queries whose top document's predicted per-copy gain exceeds the "
                                 "query's NLL (interval over queries): " + share_text,
                                 "the NLL bounds any possible gain: a share above 0 is a linear extrapolation past "
                                 "what retraining can do", nll_checks)
    return [
        finding(name, "An influence score read as nats per added copy predicts retraining: adding c copies of a "
                      "query's top document changes its log p(completion) by about c x score/N.",
                "reads influence as the change per added copy (epsilon = 1/N); not tested against retraining",
                measured, checks, retraining),
        finding(name, "The per-copy reading is possible: no query's top document is predicted to raise "
                      "log p(completion) by more than the query's NLL (the most it can rise).",
                "no sequence above 1 nat per copy; NLLs not compared",
                "share of queries whose top document's predicted gain exceeds the NLL: " + share_text, possible,
                possible_evidence),
    ]
