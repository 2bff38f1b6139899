"""Word order (Grosse et al. 2023, section 5.3): the influence of sequences that are NOT in the training data.

For held-out facts, hand-built probe sequences (``queries/{corpus}-probes.parquet``) fall into the paper's six
groups: rewordings that keep the name after the relation, the name removed, semantic changes, irrelevant
sentences, the order flipped (name first), and flipped with the relation removed. A second set does the same for
translation pairs: ``English: ... / French: ...`` in the query's order, and with the two languages swapped.

Each probe is scored as if it were added to the training set once, read as a training document (``EOS text``,
exactly how the corpus is tokenised), against its own query with the model's factors
(:func:`influence_study.stages.word_order.score_model`): the raw score
∇f_q^T (G + λI)^-1 ∇log p(probe) divided by the number of training documents N is the change of
log p(completion) in nats that adding one copy of the probe would cause (the study's ``score_norm``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci
from influence_study.findings import Evidence, IntervalCheck, finding

FACT_GROUPS = ("reworded_name_after", "name_removed", "semantic_change", "irrelevant", "flipped",
               "flipped_relation_removed")
TRANSLATION_GROUPS = ("same_order", "flipped_order")
# v2 worlds add a control: the target-language sentence alone (no English), the part of the influence no order needs
TRANSLATION_CONTROL = "target_only"
GROUPS = {"fact": FACT_GROUPS, "translation": (*TRANSLATION_GROUPS, TRANSLATION_CONTROL)}
REFERENCE_GROUP = {"fact": "reworded_name_after", "translation": "same_order"}
PROBE_COLUMNS = ["probe_id", "query_id", "probe_set", "group", "text"]
SCORE_COLUMNS = ["model", "probe_id", "query_id", "probe_set", "group", "text", "tokens", "score", "score_norm"]

# The checks, fixed before the numbers were seen (the paper's words turned into thresholds).
NEAR_ZERO = 0.1          # "≈ 0": |group mean| below 10% of the reworded mean
STRONGLY_REDUCED = 1 / 3  # "strongly reduced": flipped at most a third of the reworded mean
SIMILAR_FACTOR = 2.0     # "≈ flipped": within a factor 2 (or both ≈ 0)
TRANSLATION_REDUCED = 1 / 3  # paper: flipped order ≈ 10x lower; checked: at most a third of the same order


# -- statistics ---------------------------------------------------------------------------------------------------
def group_statistics(scores: pd.DataFrame, order: Sequence[str], level: float = 0.95, resamples: int = 2000,
                     seed: int = 0) -> pd.DataFrame:
    """Per model (in ``order``), probe set and group: probes ``n``, ``mean`` normalised influence (nats per added
    copy) with a bootstrap confidence interval (``ci_low``, ``ci_high``), and ``ratio`` = mean / mean of the
    set's reference group (reworded name-after for facts, same order for translation)."""
    rows = []
    for model in order:
        for probe_set, groups in GROUPS.items():
            chosen = scores[(scores["model"] == model) & (scores["probe_set"] == probe_set)]
            for group in groups:
                values = chosen.loc[chosen["group"] == group, "score_norm"].to_numpy(np.float64)
                mean, low, high = mean_ci(values, level, resamples, seed)
                rows.append({"model": model, "probe_set": probe_set, "group": group, "n": int(values.size),
                             "mean": mean, "ci_low": low, "ci_high": high})
    frame = pd.DataFrame(rows, columns=["model", "probe_set", "group", "n", "mean", "ci_low", "ci_high"])
    reference = frame[frame["group"].isin(REFERENCE_GROUP.values())].set_index(["model", "probe_set"])["mean"]
    base = reference.reindex(pd.MultiIndex.from_frame(frame[["model", "probe_set"]])).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["ratio"] = frame["mean"].to_numpy() / base
    return frame


def group_mean_draws(scores: pd.DataFrame, groups: Sequence[str], resamples: int = 2000,
                     seed: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Mean ``score_norm`` of each group of one model's probe set (``scores``: its probe rows), and the same means
    under a bootstrap over queries (each draw resamples the queries with replacement and keeps all probes of each
    drawn query; a group without a drawn probe gives NaN): ``(point, draws)``, ``draws[g]`` of length
    ``resamples``."""
    queries = sorted(scores["query_id"].astype(str).unique())
    index = {q: i for i, q in enumerate(queries)}
    sums, counts = np.zeros((len(queries), len(groups))), np.zeros((len(queries), len(groups)))
    for j, group in enumerate(groups):
        part = scores[scores["group"] == group]
        rows = part["query_id"].astype(str).map(index).to_numpy(dtype=np.int64)
        np.add.at(sums[:, j], rows, part["score_norm"].to_numpy(np.float64))
        np.add.at(counts[:, j], rows, 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = sums.sum(axis=0) / counts.sum(axis=0)
        weights = np.zeros((resamples, len(queries)))
        if queries:
            draws = np.random.default_rng(seed).integers(0, len(queries), size=(resamples, len(queries)))
            np.add.at(weights, (np.arange(resamples)[:, None], draws), 1.0)
        boot = (weights @ sums) / (weights @ counts)
    return ({g: float(point[j]) for j, g in enumerate(groups)}, {g: boot[:, j] for j, g in enumerate(groups)})


# The v2 contrasts (fixed before the v2 numbers were seen): name -> (function of the group means, bound, side).
# Ratios are of group means; "≈ 0" is a band of ±NEAR_ZERO around 0 relative to the reworded mean.
FACT_CONTRASTS = {
    "reworded mean (nats per copy)": (lambda m: m["reworded_name_after"], 0.0, "above"),
    "name_removed / reworded": (lambda m: m["name_removed"] / m["reworded_name_after"], (-NEAR_ZERO, NEAR_ZERO),
                                "within"),
    "irrelevant / reworded": (lambda m: m["irrelevant"] / m["reworded_name_after"], (-NEAR_ZERO, NEAR_ZERO),
                              "within"),
    "semantic_change / reworded": (lambda m: m["semantic_change"] / m["reworded_name_after"], 1.0, "below"),
    "flipped / reworded": (lambda m: m["flipped"] / m["reworded_name_after"], STRONGLY_REDUCED, "below"),
    "(flipped_relation_removed − flipped) / reworded": (
        lambda m: (m["flipped_relation_removed"] - m["flipped"]) / m["reworded_name_after"],
        (-NEAR_ZERO, NEAR_ZERO), "within"),
}
TRANSLATION_CONTRASTS = {
    "flipped_order / same_order": (lambda m: m["flipped_order"] / m["same_order"], TRANSLATION_REDUCED, "below"),
    # the order-dependent part: what each order adds to the target sentence alone
    "(flipped_order − target_only) / (same_order − target_only)": (
        lambda m: (m["flipped_order"] - m[TRANSLATION_CONTROL]) / (m["same_order"] - m[TRANSLATION_CONTROL]),
        TRANSLATION_REDUCED, "below"),
}
CONTRASTS = {"fact": FACT_CONTRASTS, "translation": TRANSLATION_CONTRASTS}


def contrast_statistics(scores: pd.DataFrame, order: Sequence[str], level: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> dict:
    """Per model (in ``order``) and probe set, each v2 contrast (:data:`CONTRASTS`) with a bootstrap interval over
    queries (:func:`group_mean_draws`): ``{model: {probe_set: {name: {estimate, low, high, bound, side}}}}``;
    NaN where a group has no probe. The target-only ratio is added for reading the translation contrasts."""
    tail = (1 - level) / 2 * 100
    out: dict = {}
    for model in order:
        out[model] = {}
        for probe_set, contrasts in CONTRASTS.items():
            chosen = scores[(scores["model"] == model) & (scores["probe_set"] == probe_set)]
            point, draws = group_mean_draws(chosen, GROUPS[probe_set], resamples, seed)
            entry = {}
            named = dict(contrasts)
            if probe_set == "translation":
                named["target_only / same_order (control)"] = (
                    lambda m: m[TRANSLATION_CONTROL] / m["same_order"], None, None)
            for name, (function, bound, side) in named.items():
                with np.errstate(invalid="ignore", divide="ignore"):
                    estimate, boot = float(function(point)), np.asarray(function(draws), dtype=np.float64)
                boot = boot[np.isfinite(boot)]
                low, high = (np.percentile(boot, [tail, 100 - tail]) if boot.size and np.isfinite(estimate)
                             else (float("nan"), float("nan")))
                entry[name] = {"estimate": estimate, "low": float(low), "high": float(high),
                               "bound": list(bound) if isinstance(bound, tuple) else bound, "side": side}
            out[model][probe_set] = entry
    return out


def contrast_evidence(contrasts: Mapping, probe_set: str, names: Sequence[str], models: Sequence[str],
                      left_out: Sequence[str] = ()):
    """The v2 :class:`findings.Evidence` of one word-order finding: the contrasts ``names`` of ``probe_set`` for
    each model that answers some query (``models``; the others, ``left_out``, are named in the baseline)."""
    checks, parts = [], []
    for model in models:
        entry = contrasts.get(model, {}).get(probe_set, {})
        for name in names:
            c = entry.get(name)
            if c is None:
                continue
            bound = tuple(c["bound"]) if isinstance(c["bound"], list) else c["bound"]
            checks.append(IntervalCheck(f"{model}: {name}", c["estimate"], c["low"], c["high"], bound, c["side"]))
            parts.append(f"{model} {name} {c['estimate']:.3g} [{c['low']:.3g}, {c['high']:.3g}]")
    if probe_set == "translation":
        controls = [f"{m} {c['estimate']:.2f} [{c['low']:.2f}, {c['high']:.2f}]" for m in models
                    if (c := contrasts.get(m, {}).get("translation", {}).get("target_only / same_order (control)"))]
        baseline = "target-only probe / same order: " + (", ".join(controls) or "no target-only probes")
    else:
        baseline = "reworded probes of the same query (intervals: bootstrap over queries)"
    if left_out:
        baseline += f"; left out (answer no query): {', '.join(left_out)}"
    return Evidence("; ".join(parts) or "no probes", baseline, checks)


def summarise(groups: pd.DataFrame, sizes: Mapping[str, int]) -> dict:
    """Statistics per model: parameters, and per probe set and group ``n, mean, ci_low, ci_high, ratio``."""
    out = {}
    for model, frame in groups.groupby("model", sort=False):
        entry = {"parameters": int(sizes[model])}
        for probe_set, part in frame.groupby("probe_set", sort=False):
            entry[probe_set] = {row["group"]: {k: (int(row[k]) if k == "n" else float(row[k]))
                                               for k in ("n", "mean", "ci_low", "ci_high", "ratio")}
                                for row in part.to_dict("records")}
        out[model] = entry
    return out


def _fact_means(entry: Mapping) -> dict[str, float] | None:
    """The six fact-group means of one model, or None when a group has no probe."""
    groups = entry.get("fact", {})
    if any(groups.get(g, {}).get("n", 0) == 0 for g in FACT_GROUPS):
        return None
    return {g: groups[g]["mean"] for g in FACT_GROUPS}


def _similar(a: float, b: float, reference: float) -> bool:
    """``a ≈ b``: both within NEAR_ZERO of the reference, or the same sign and within SIMILAR_FACTOR."""
    near_zero = reference > 0 and abs(a) < NEAR_ZERO * reference and abs(b) < NEAR_ZERO * reference
    return near_zero or (a * b > 0 and 1 / SIMILAR_FACTOR <= a / b <= SIMILAR_FACTOR)


def verdicts(statistics: Mapping) -> list:
    """The paper's six-group description (section 8 of PAPER.md) and the translation-order finding, checked per
    model size (a model without probes of every group is left out)."""
    name = "Word order"
    models = statistics["models"]
    facts = {m: means for m, e in models.items() if (means := _fact_means(e)) is not None}
    contrasts = statistics.get("contrasts")
    scale = statistics.get("scale_models", list(models))
    left_out = statistics.get("left_out", [])

    def evidence(probe_set: str, *names: str):
        return contrast_evidence(contrasts, probe_set, names, scale, left_out) if contrasts is not None else None

    def measured(groups: Sequence[str]) -> str:
        return "; ".join(f"{m}: " + ", ".join(f"{g} {v[g]:.2e}" for g in groups) for m, v in facts.items()) \
            or "no fact probes"

    rw = "reworded_name_after"
    near = f"|mean| < {NEAR_ZERO:.0%} of reworded"
    out = [
        finding(name, "Rewordings that keep the name after the relation have a positive influence, the largest of "
                      "the six groups.", "high (the largest bars)", measured(FACT_GROUPS),
                {f"{m}: reworded > 0 and the largest group": v[rw] > 0 and v[rw] == max(v.values())
                 for m, v in facts.items()}, evidence("fact", "reworded mean (nats per copy)")),
        finding(name, "Removing the name removes the influence.", "≈ 0", measured([rw, "name_removed"]),
                {f"{m}: name_removed {near}": v[rw] > 0 and abs(v["name_removed"]) < NEAR_ZERO * v[rw]
                 for m, v in facts.items()}, evidence("fact", "name_removed / reworded")),
        finding(name, "Irrelevant sequences have no influence.", "≈ 0", measured([rw, "irrelevant"]),
                {f"{m}: irrelevant {near}": v[rw] > 0 and abs(v["irrelevant"]) < NEAR_ZERO * v[rw]
                 for m, v in facts.items()}, evidence("fact", "irrelevant / reworded")),
        finding(name, "Semantic changes (other relation or entity) reduce the influence.", "reduced",
                measured([rw, "semantic_change"]),
                {f"{m}: semantic_change < reworded": v["semantic_change"] < v[rw] for m, v in facts.items()},
                evidence("fact", "semantic_change / reworded")),
        finding(name, "Flipping the order (name before the relation) strongly reduces the influence.",
                "strongly reduced", measured([rw, "flipped"]),
                {f"{m}: flipped ≤ {STRONGLY_REDUCED:.2g} × reworded":
                 v[rw] > 0 and v["flipped"] <= STRONGLY_REDUCED * v[rw] for m, v in facts.items()},
                evidence("fact", "flipped / reworded")),
        finding(name, "Flipped sequences with the relation removed have about the flipped sequences' influence.",
                "≈ flipped", measured([rw, "flipped", "flipped_relation_removed"]),
                {f"{m}: within a factor {SIMILAR_FACTOR:g} of flipped (or both {near})":
                 _similar(v["flipped_relation_removed"], v["flipped"], v[rw]) for m, v in facts.items()},
                evidence("fact", "(flipped_relation_removed − flipped) / reworded")),
    ]
    translation = {m: e["translation"] for m, e in models.items()
                   if all(e.get("translation", {}).get(g, {}).get("n", 0) > 0 for g in TRANSLATION_GROUPS)}
    out.append(finding(
        name, "Translation pairs in the flipped order (other language first) have much less influence on an "
              "English→other translation query.", "≈ 10× lower",
        "; ".join(f"{m}: same order {t['same_order']['mean']:.2e}, flipped {t['flipped_order']['mean']:.2e} "
                  f"(ratio {t['flipped_order']['ratio']:.2f})" for m, t in translation.items())
        or "no translation probes",
        {f"{m}: same order > 0 and flipped ≤ {TRANSLATION_REDUCED:.2g} × same order":
         t["same_order"]["mean"] > 0 and t["flipped_order"]["mean"] <= TRANSLATION_REDUCED * t["same_order"]["mean"]
         for m, t in translation.items()}, evidence("translation", *TRANSLATION_CONTRASTS)))
    return out


def probes_in_training(probes: pd.DataFrame, documents: pd.DataFrame) -> int:
    """How many probe texts are, verbatim, a training document (the paper's probes are not training data)."""
    train = set(documents.loc[documents["split"] == "train", "text"])
    return int(probes["text"].isin(train).sum())
