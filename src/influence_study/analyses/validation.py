"""Validation against ground truth (Grosse et al. 2023, section 5.1): how well do the gradient dot product,
LiSSA, K-FAC and EK-FAC agree with the proximal Bregman response function (PBRF), and at what cost?

For each setting (:mod:`influence_study.models.toy`) every estimator scores N training points against M
measurements, with the same damping λ (the PBRF's: 0.1 × the mean diagonal of the sampled Fisher, per module);
the gradient dot product uses none. The metric is the paper's: the Pearson correlation, over the N points, of an
estimator's influence with the PBRF's, averaged over the M measurements. Each estimator's wall time is the time of
fitting it (factors, damping estimate) plus scoring the M measurements against the N points.

On the smallest MLP, leave-one-out retraining adds two more references: retraining without each of k points from
the same initialisation (``loo``), and from the trained weights (``loo_warm``, the local response of the
optimum). Both are stored as the effect of ADDING the point, ``-(f_without - f) * n_train``, on the scale of the
raw scores, so that every reference has the sign of the estimators.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci
from influence_study.analyses.intervals import (NAN_INTERVAL, describe_interval, interval, interval_check,
                                                paired_interval)
from influence_study.findings import Evidence, finding

ESTIMATORS = ("identity", "lissa", "kfac", "ekfac")
FACTOR_ESTIMATORS = ("identity", "kfac", "ekfac")
GROUND_TRUTH = "pbrf"
LOO_REFERENCES = ("loo", "loo_warm")
LABELS = {"identity": "gradient dot product", "lissa": "LiSSA", "kfac": "K-FAC", "ekfac": "EK-FAC",
          "pbrf": "PBRF", "loo": "leave-one-out (from init)", "loo_warm": "leave-one-out (from trained)"}
SCORE_COLUMNS = ["setting", "estimator", "measurement", "point", "score"]
# The settings, in the order the tables and the figure show them (those of influence_study.models.toy).
SETTINGS = ("mlp_digits", "mlp_regression", "lm")
# The paper's claim "EK-FAC ≈ LiSSA", made a number before the results were seen.
SIMILAR = 0.1


# ---------------------------------------------------------------------------------------------------------------
# Scores (one setting: :func:`influence_study.stages.validation.estimate_influence`)
# ---------------------------------------------------------------------------------------------------------------

def score_frame(setting: str, estimator: str, scores, query_ids, point_ids) -> pd.DataFrame:
    """A long table of a ``[measurements, points]`` score matrix."""
    scores = np.asarray(scores, dtype=np.float64)
    measurement, point = np.meshgrid(np.asarray(query_ids), np.asarray(point_ids), indexing="ij")
    return pd.DataFrame({"setting": setting, "estimator": estimator,
                         "measurement": measurement.ravel().astype(np.int64), "point": point.ravel().astype(np.int64),
                         "score": scores.ravel()})


# ---------------------------------------------------------------------------------------------------------------
# Statistics (pure)
# ---------------------------------------------------------------------------------------------------------------

def pearson(a, b) -> float:
    """Pearson correlation of two vectors; NaN with fewer than 3 pairs or a constant vector."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def correlations(scores: pd.DataFrame, reference: str, estimators: Sequence[str]) -> pd.DataFrame:
    """Per setting, measurement and estimator: the Pearson correlation, over the points both have, of the
    estimator's scores with ``reference``'s (columns ``setting, reference, estimator, measurement, points,
    pearson``). Settings without ``reference`` give no rows."""
    wide = scores.pivot_table(index=["setting", "measurement", "point"], columns="estimator", values="score",
                              aggfunc="first")
    rows = []
    if reference not in wide.columns:
        return pd.DataFrame(columns=["setting", "reference", "estimator", "measurement", "points", "pearson"])
    for (setting, measurement), group in wide.groupby(level=["setting", "measurement"], sort=False):
        for estimator in estimators:
            if estimator not in group.columns or estimator == reference:
                continue
            pair = group[[reference, estimator]].dropna()
            if pair.empty:
                continue
            rows.append({"setting": setting, "reference": reference, "estimator": estimator,
                         "measurement": int(measurement), "points": int(len(pair)),
                         "pearson": pearson(pair[estimator], pair[reference])})
    return pd.DataFrame(rows, columns=["setting", "reference", "estimator", "measurement", "points", "pearson"])


def summarise_correlations(table: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean correlation over measurements with a bootstrap 95% interval, per setting, reference and estimator."""
    rows = []
    for (setting, reference, estimator), group in table.groupby(["setting", "reference", "estimator"], sort=False):
        mean, low, high = mean_ci(group["pearson"], seed=seed)
        rows.append({"setting": setting, "reference": reference, "estimator": estimator, "pearson_mean": mean,
                     "ci_low": low, "ci_high": high, "measurements": int(group["pearson"].notna().sum()),
                     "points": int(group["points"].max())})
    return pd.DataFrame(rows, columns=["setting", "reference", "estimator", "pearson_mean", "ci_low", "ci_high",
                                       "measurements", "points"])


def timing_table(records: Sequence[Mapping], summary: pd.DataFrame) -> pd.DataFrame:
    """Per setting and estimator: fit, scoring and total seconds, with the mean correlation with the PBRF."""
    rows = []
    for record in records:
        for estimator, times in record["timings"].items():
            rows.append({"setting": record["setting"], "estimator": estimator, **times,
                         "points": record["points"], "measurements": record["measurements"]})
    frame = pd.DataFrame(rows, columns=["setting", "estimator", "fit_seconds", "score_seconds", "total_seconds",
                                        "points", "measurements"])
    accuracy = summary.loc[summary["reference"] == GROUND_TRUTH, ["setting", "estimator", "pearson_mean"]]
    return frame.merge(accuracy, on=["setting", "estimator"], how="left")


# The paired contrasts of the v2 checks: (name, estimator, reference) minus (estimator, reference), per measurement.
CONTRASTS = {"ekfac_minus_identity": (("ekfac", GROUND_TRUTH), ("identity", GROUND_TRUTH)),
             "ekfac_minus_lissa": (("ekfac", GROUND_TRUTH), ("lissa", GROUND_TRUTH)),
             "ekfac_minus_kfac": (("ekfac", GROUND_TRUTH), ("kfac", GROUND_TRUTH)),
             "pbrf_minus_loo": (("ekfac", GROUND_TRUTH), ("ekfac", "loo"))}


def paired_differences(table: pd.DataFrame, seed: int = 0) -> dict:
    """Per setting and contrast of :data:`CONTRASTS`: the mean over measurements of the paired difference of two
    Pearson correlations (e.g. EK-FAC's with the PBRF minus the gradient dot product's), with a bootstrap interval
    over the measurements (``{setting: {contrast: {mean, low, high, n}}}``; a contrast missing an estimator is
    left out)."""
    out: dict = {}
    for setting, group in table.groupby("setting", sort=False):
        by = group.set_index(["estimator", "reference", "measurement"])["pearson"].sort_index()
        node = {}
        for name, (first, second) in CONTRASTS.items():
            try:
                a, b = by.loc[first], by.loc[second]
            except KeyError:
                continue
            a, b = a.align(b, join="inner")
            node[name] = paired_interval(a.to_numpy(), b.to_numpy(), seed=seed)
        out[setting] = node
    return out


def speed_interval(settings: Mapping, seed: int = 0) -> dict:
    """log10 of LiSSA's wall time over EK-FAC's (fitting included), its mean over the settings with a bootstrap
    interval over them (each setting one repeat of the comparison; ``n`` settings); NaNs with fewer than two."""
    ratios = [np.log10(s["seconds"]["lissa"] / s["seconds"]["ekfac"]) for s in settings.values()
              if _finite(s.get("seconds", {}).get("lissa", np.nan), s.get("seconds", {}).get("ekfac", np.nan))
              and s["seconds"]["ekfac"] > 0 and s["seconds"]["lissa"] > 0]
    if len(ratios) < 2:
        return {**NAN_INTERVAL, "n": len(ratios)}
    return interval(ratios, seed=seed)


def statistics_of(summary: pd.DataFrame, timings: pd.DataFrame, records: Sequence[Mapping],
                  correlations: pd.DataFrame | None = None, seed: int = 0) -> dict:
    """The statistics of the summary JSON: per setting, each estimator's mean correlation (with CI) with every
    reference, its wall time, and (from the per-measurement ``correlations``) the paired differences of the v2
    checks (``differences``); plus what each setting was, and the speed-up of EK-FAC over LiSSA across settings
    (``speed``)."""
    differences = paired_differences(correlations, seed) if correlations is not None and len(correlations) else {}
    settings = {}
    for record in records:
        name = record["setting"]
        entry = {"points": record["points"], "measurements": record["measurements"], "n_train": record["n_train"],
                 "description": record.get("description", {}), "damping": record.get("damping", {}),
                 "correlation": {}, "seconds": {}}
        for _, row in summary[summary["setting"] == name].iterrows():
            entry["correlation"].setdefault(row["reference"], {})[row["estimator"]] = {
                "mean": row["pearson_mean"], "ci": [row["ci_low"], row["ci_high"]], "points": int(row["points"])}
        for _, row in timings[timings["setting"] == name].iterrows():
            entry["seconds"][row["estimator"]] = float(row["total_seconds"])
        if "loo" in record:
            entry["loo"] = record["loo"]
        entry["differences"] = differences.get(name, {})
        settings[name] = entry
    return {"settings": settings, "speed": speed_interval(settings, seed)}


# ---------------------------------------------------------------------------------------------------------------
# Verdicts: the paper's claims as checks, fixed before the numbers were seen
# ---------------------------------------------------------------------------------------------------------------

def _value(setting: Mapping, reference: str, estimator: str) -> float:
    return float(setting["correlation"].get(reference, {}).get(estimator, {}).get("mean", float("nan")))


def _checks(settings: Mapping, check) -> dict:
    """``{name: bool}`` of ``check(name, setting) -> (label, value or None)`` for every setting where the
    statistic exists (None or NaN inputs: not measured, no check)."""
    out = {}
    for name, setting in settings.items():
        result = check(name, setting)
        if result is not None:
            out[result[0]] = result[1]
    return out


def _finite(*values) -> bool:
    return all(np.isfinite(v) for v in values)


def verdicts(statistics: Mapping) -> list:
    """The paper's validation findings (section 5.1, Figure 3), each checked per setting.

    v2 checks (bootstrap over the measurements of a setting, paired: the same measurement's correlations):
    EK-FAC − gradient dot product > 0; EK-FAC − LiSSA within ±:data:`SIMILAR` (our band for "≈"); EK-FAC − K-FAC
    > 0; EK-FAC's correlation with the PBRF − with leave-one-out > 0. Speed: the log10 wall-time ratio LiSSA /
    EK-FAC > 0, bootstrap over the settings (one timing each; not measured with fewer than two)."""
    settings = statistics["settings"]
    name = "Validation against ground truth"
    r = lambda s, e: _value(s, GROUND_TRUTH, e)  # noqa: E731
    fmt = lambda f: "; ".join(f"{n}: {f(s)}" for n, s in settings.items())  # noqa: E731

    def at_least_dot_product(n, s):
        if _finite(r(s, "ekfac"), r(s, "identity")):
            return f"{n}: EK-FAC's mean r ≥ the gradient dot product's", r(s, "ekfac") >= r(s, "identity")

    def close_to_lissa(n, s):
        if _finite(r(s, "ekfac"), r(s, "lissa")):
            return f"{n}: |EK-FAC − LiSSA| ≤ {SIMILAR}", abs(r(s, "ekfac") - r(s, "lissa")) <= SIMILAR

    def faster_than_lissa(n, s):
        ekfac, lissa = s["seconds"].get("ekfac", np.nan), s["seconds"].get("lissa", np.nan)
        if _finite(ekfac, lissa):
            return f"{n}: EK-FAC's wall time (fitting included) < LiSSA's", ekfac < lissa

    def better_than_kfac(n, s):
        if _finite(r(s, "ekfac"), r(s, "kfac")):
            return f"{n}: EK-FAC's mean r ≥ K-FAC's", r(s, "ekfac") >= r(s, "kfac")

    def pbrf_over_loo(n, s):
        if _finite(r(s, "ekfac"), _value(s, "loo", "ekfac")):
            return (f"{n}: EK-FAC correlates better with the PBRF than with leave-one-out retraining",
                    r(s, "ekfac") > _value(s, "loo", "ekfac"))

    seconds = lambda s, e: f"{s['seconds'].get(e, float('nan')):.3g} s"  # noqa: E731

    def difference(s, contrast):
        return s.get("differences", {}).get(contrast)

    def v2(contrast, label, bound, side, only=None):
        """The per-setting interval checks and statistic of one contrast of :data:`CONTRASTS`."""
        chosen = only if only is not None else settings
        checks = [interval_check(f"{n}: {label} (bootstrap over {(difference(s, contrast) or {}).get('n', 0)} "
                                 f"measurements)", difference(s, contrast), bound, side) for n, s in chosen.items()]
        statistic = f"{label}, mean over measurements [95% CI]: " + "; ".join(
            f"{n}: {describe_interval(difference(s, contrast))}" for n, s in chosen.items())
        return statistic, checks

    dot_stat, dot_checks = v2("ekfac_minus_identity", "EK-FAC − gradient dot product Pearson with the PBRF", 0.0,
                              "above")
    lissa_stat, lissa_checks = v2("ekfac_minus_lissa", f"EK-FAC − LiSSA Pearson with the PBRF within ±{SIMILAR}",
                                  (-SIMILAR, SIMILAR), "within")
    kfac_stat, kfac_checks = v2("ekfac_minus_kfac", "EK-FAC − K-FAC Pearson with the PBRF", 0.0, "above")
    speed = statistics.get("speed")
    speed_checks = [interval_check(f"log10(LiSSA / EK-FAC wall time) > 0, i.e. ratio > 1 (bootstrap over "
                                   f"{(speed or {}).get('n', 0)} settings, one timing each)", speed, 0.0, "above")]
    speed_stat = (f"mean log10 wall-time ratio LiSSA / EK-FAC over settings [95% CI]: {describe_interval(speed)}"
                  f" (ratio {10 ** speed['mean']:.3g}×)" if speed and np.isfinite(speed.get("mean", np.nan))
                  else "mean log10 wall-time ratio LiSSA / EK-FAC: not measured (needs two settings with both)")
    items = [
        finding(name, "EK-FAC approximates the PBRF at least as well as the gradient dot product.",
                "EK-FAC > gradient dot product (Figure 3)",
                "mean r with PBRF, EK-FAC vs dot product — "
                + fmt(lambda s: f"{r(s, 'ekfac'):.2f} vs {r(s, 'identity'):.2f}"),
                _checks(settings, at_least_dot_product),
                Evidence(dot_stat, "the gradient dot product (identity) estimator, same points and measurements",
                         dot_checks)),
        finding(name, "EK-FAC is about as accurate as LiSSA.", "EK-FAC ≈ LiSSA (Figure 3)",
                "mean r with PBRF, EK-FAC vs LiSSA — " + fmt(lambda s: f"{r(s, 'ekfac'):.2f} vs {r(s, 'lissa'):.2f}"),
                _checks(settings, close_to_lissa),
                Evidence(lissa_stat, f"LiSSA, same points and measurements; band ±{SIMILAR} ours", lissa_checks)),
        finding(name, "EK-FAC is much faster than LiSSA over several measurements, factor fitting included.",
                "orders of magnitude faster",
                "wall time, EK-FAC vs LiSSA — " + fmt(lambda s: f"{seconds(s, 'ekfac')} vs {seconds(s, 'lissa')}"),
                _checks(settings, faster_than_lissa),
                Evidence(speed_stat, "LiSSA's wall time (ratio 1 = equally fast)", speed_checks)),
        finding(name, "EK-FAC's eigenvalue correction makes it at least as accurate as K-FAC (why the paper uses "
                      "EK-FAC; K-FAC is not in its Figure 3).", "not reported (George et al. 2018: EK-FAC ≥ K-FAC)",
                "mean r with PBRF, EK-FAC vs K-FAC — " + fmt(lambda s: f"{r(s, 'ekfac'):.2f} vs {r(s, 'kfac'):.2f}"),
                _checks(settings, better_than_kfac),
                Evidence(kfac_stat, "K-FAC (no eigenvalue correction), same points and measurements", kfac_checks)),
    ]
    loo = {n: s for n, s in settings.items() if "loo" in s.get("correlation", {})}
    if loo:
        loo_stat, loo_checks = v2("pbrf_minus_loo", "EK-FAC's Pearson with the PBRF − with leave-one-out", 0.0,
                                  "above", only=loo)
        items.append(finding(
            name, "Influence functions of neural networks approximate the PBRF rather than leave-one-out retraining "
                  "(Bae et al. 2022; the reason the paper validates against the PBRF).", "no number",
            "mean r of EK-FAC with PBRF vs with leave-one-out from the same initialisation (and from the trained "
            "weights) — " + "; ".join(f"{n}: {r(s, 'ekfac'):.2f} vs {_value(s, 'loo', 'ekfac'):.2f} "
                                      f"({_value(s, 'loo_warm', 'ekfac'):.2f})" for n, s in loo.items()),
            _checks(loo, pbrf_over_loo),
            Evidence(loo_stat, "leave-one-out retraining from the same initialisation, same measurements",
                     loo_checks)))
    return items


def correlations_of(scores: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Every other estimator's correlations with ``reference`` (the PBRF too when the reference is LOO)."""
    others = [*ESTIMATORS, GROUND_TRUTH] if reference != GROUND_TRUTH else list(ESTIMATORS)
    if reference == "loo_warm":
        others.append("loo")
    return correlations(scores, reference, others)
