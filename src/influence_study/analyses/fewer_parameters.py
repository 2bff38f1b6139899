"""Influence on fewer parameters (Kounavis et al. 2023) and where it breaks (Grosse et al. 2023's layer findings).

Kounavis et al. claim that influence computed on far fewer parameters (e.g. only the last layer) agrees with
influence computed on all tracked parameters. Our EK-FAC is block-diagonal over the tracked modules, so the influence
restricted to a subset of layers *with the same factors* is exactly the sum of that subset's per-layer score columns
``layer_0 .. layer_{L-1}`` of the pairwise table (they sum to ``score``). Nothing is recomputed: each restriction is a
sum of columns.

Restrictions, each compared with the full score (all layers, the table's ``score``):

- ``last_layer``: layer L-1 only (the cheap version the claim is about);
- ``upper_half``: layers L//2 .. L-1 (for L = 2 the same as ``last_layer``);
- ``first_layer``: layer 0 only (a control: the input side of the network).

Per model, query and restriction: the Pearson correlation over all of the query's documents between the restricted
and the full score, and the top-k overlap |top-k(restricted) ∩ top-k(full)| / k (``analyses.fewer_parameters.top_k``;
ties broken by ``doc_id``). A model with a single layer has nothing to restrict (every restriction is the full
score), so it is reported as not measured. Grosse et al. found that abstract queries (cross-lingual, math, code) draw
their influence from middle layers and concrete ones (facts, memorised quotes) from upper layers, so the last-layer
shortcut should break first for the abstract families.

The thresholds of the checks (mean Pearson ≥ 0.9, mean top-k overlap ≥ 0.5 for the last layer) are ours: the paper
states the agreement qualitatively.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci, row_pearson
from influence_study.analyses.intervals import describe_interval, interval_check, two_sample_interval
from influence_study.analyses.layers import layer_columns, score_array, top_documents
from influence_study.analyses.relations import summarise as summarise_groups
from influence_study.findings import Evidence, finding

RESTRICTIONS = ("last_layer", "upper_half", "first_layer")
# Grosse et al.: abstract queries draw influence from middle layers, concrete ones from upper layers.
ABSTRACT_FAMILIES = ("cross_lingual", "math", "code")
CONCRETE_FAMILIES = ("facts", "quotes")
PEARSON_THRESHOLD = 0.9  # ours: "agrees" read as a mean Pearson correlation of at least 0.9 over queries
OVERLAP_THRESHOLD = 0.5  # ours: and at least half of the top k shared on average
MEASURES = ("pearson", "overlap")
PER_QUERY_COLUMNS = ["model", "query_id", "analysis", "n_layers", "restriction", "pearson", "overlap", "k", "n_docs"]
BY_FAMILY_COLUMNS = ["model", "analysis", "restriction", "measure", "mean", "low", "high", "queries"]


def restriction_layers(n_layers: int, restriction: str) -> list[int]:
    """The layer indices a restriction keeps in a model of ``n_layers`` layers."""
    if n_layers < 1:
        raise ValueError(f"n_layers: expected at least 1, got {n_layers}")
    if restriction == "last_layer":
        return [n_layers - 1]
    if restriction == "upper_half":
        return list(range(n_layers // 2, n_layers))
    if restriction == "first_layer":
        return [0]
    raise ValueError(f"restriction: expected one of {RESTRICTIONS}, got {restriction!r}")


def restricted_scores(layers: np.ndarray, restriction: str) -> np.ndarray:
    """The score restricted to some layers: the sum of the kept layers' columns of ``layers`` (``[..., L]``)."""
    layers = np.asarray(layers, dtype=np.float64)
    return layers[..., restriction_layers(layers.shape[-1], restriction)].sum(axis=-1)


def top_k_overlap(restricted: np.ndarray, full: np.ndarray, k: int) -> np.ndarray:
    """For each row of ``[n_queries, n_docs]`` scores (NaN = not scored; columns ordered by ``doc_id``, so ties fall
    to the lower ``doc_id``): the share of the full score's top k that is also in the restricted score's top k,
    |top-k(restricted) ∩ top-k(full)| / k with k capped at the number of documents."""
    if k < 1:
        raise ValueError(f"k: expected at least 1, got {k}")
    k = min(k, full.shape[1])
    if full.shape[0] == 0 or k == 0:
        return np.full(full.shape[0], np.nan)
    mine, mine_valid = top_documents(restricted, k)
    theirs, theirs_valid = top_documents(full, k)
    mine = np.where(mine_valid, mine, -1)  # invalid entries never match
    theirs = np.where(theirs_valid, theirs, -2)
    shared = (mine[:, :, None] == theirs[:, None, :]).any(axis=2).sum(axis=1)
    return shared / k


def agreement_table(frame: pd.DataFrame, model: str, queries: pd.DataFrame, k: int) -> pd.DataFrame:
    """Per query and restriction of one model's pairwise table (``query_id, doc_id, score, layer_*``): Pearson
    correlation and top-k overlap of the restricted against the full score (columns ``PER_QUERY_COLUMNS``; empty
    for a single-layer model, whose restrictions are the full score)."""
    columns = layer_columns(frame)
    if len(columns) < 2:
        return pd.DataFrame(columns=PER_QUERY_COLUMNS)
    query_ids, _, values = score_array(frame, ["score", *columns])
    full, layers = values[:, :, 0], values[:, :, 1:]
    n_docs = np.isfinite(full).sum(axis=1)
    families = queries.assign(query_id=queries["query_id"].astype(str)).set_index("query_id")["analysis"]
    parts = []
    for restriction in RESTRICTIONS:
        restricted = restricted_scores(layers, restriction)
        restricted[np.isnan(full)] = np.nan  # a pair the full score lacks is not scored
        parts.append(pd.DataFrame({
            "model": model, "query_id": query_ids,
            "analysis": families.reindex(query_ids).to_numpy(dtype=object), "n_layers": len(columns),
            "restriction": restriction, "pearson": row_pearson(restricted, full),
            "overlap": top_k_overlap(restricted, full, k), "k": min(k, full.shape[1]), "n_docs": n_docs}))
    return pd.concat(parts, ignore_index=True)[PER_QUERY_COLUMNS]


def layer_sum_error(frame: pd.DataFrame) -> float:
    """The largest gap between a pair's ``score`` and the sum of its layer columns, relative to the largest |score|
    of the table (float32 rounding: ~1e-6; a large value means the per-layer columns are not a decomposition)."""
    columns = layer_columns(frame)
    score = frame["score"].to_numpy(dtype=np.float64)
    total = frame[columns].to_numpy(dtype=np.float64).sum(axis=1)
    scale = np.nanmax(np.abs(score)) if score.size else 0.0
    return float(np.nanmax(np.abs(total - score)) / scale) if scale > 0 else 0.0


def _interval(values, seed: int) -> dict:
    mean, low, high = mean_ci(values, seed=seed)
    return {"mean": mean, "low": low, "high": high, "queries": int(np.isfinite(np.asarray(values, float)).sum())}


def family_table(per_query: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap interval of each measure per model, query family and restriction (``BY_FAMILY_COLUMNS``;
    models in the order of ``per_query``, families sorted)."""
    if per_query.empty:
        return pd.DataFrame(columns=BY_FAMILY_COLUMNS)
    ordered = per_query.sort_values("analysis", kind="stable")
    ordered = ordered.assign(model=pd.Categorical(ordered["model"], list(dict.fromkeys(per_query["model"]))))
    ordered = ordered.sort_values("model", kind="stable")
    table = summarise_groups(ordered, list(MEASURES), by=("model", "analysis", "restriction"), seed=seed)
    table["model"] = table["model"].astype(str)
    return table[BY_FAMILY_COLUMNS]


def summarise(per_query: pd.DataFrame, n_layers: Mapping[str, int], seed: int = 0,
              extra: Mapping[str, Mapping] | None = None) -> dict:
    """Statistics per model (keys and order of ``n_layers``: model -> its number of layers): whether it is measured
    (at least 2 layers), and per restriction the mean (with bootstrap interval) of each measure over all queries and
    over the abstract and concrete families' queries, and the difference abstract − concrete of the means
    (``abstract_minus_concrete``, bootstrap resampling each group's queries). ``extra[model]`` is merged into the
    model's entry."""
    out = {}
    for model, layers in n_layers.items():
        entry = {"n_layers": int(layers), "measured": bool(layers >= 2)}
        group = per_query[per_query["model"] == model]
        entry["queries"] = int(group["query_id"].nunique())
        restrictions = {}
        if entry["measured"]:
            for restriction in RESTRICTIONS:
                part = group[group["restriction"] == restriction]
                abstract = part[part["analysis"].isin(ABSTRACT_FAMILIES)]
                concrete = part[part["analysis"].isin(CONCRETE_FAMILIES)]
                restrictions[restriction] = {
                    "layers": restriction_layers(int(layers), restriction),
                    **{measure: {"all": _interval(part[measure], seed), "abstract": _interval(abstract[measure], seed),
                                 "concrete": _interval(concrete[measure], seed),
                                 "abstract_minus_concrete": two_sample_interval(
                                     abstract[measure].to_numpy(float), concrete[measure].to_numpy(float),
                                     seed=seed)} for measure in MEASURES}}
        entry["restrictions"] = restrictions
        entry.update(dict((extra or {}).get(model, {})))
        out[model] = entry
    return out


def _mean(stats: Mapping, measure: str, subset: str = "all", restriction: str = "last_layer") -> float:
    return stats["restrictions"][restriction][measure][subset]["mean"]


def verdicts(statistics: Mapping) -> list:
    """The two findings, checked per model with at least two layers (single-layer models are not measured):
    (1) the last layer agrees with all layers: mean Pearson ≥ 0.9 and mean top-k overlap ≥ 0.5 over all queries
    (thresholds ours); (2) the shortcut breaks for abstract queries first: the mean last-layer top-k overlap over the
    cross-lingual, math and code queries is below that over the facts and quotes queries (a model lacking either
    group is left out of this check). v2: the same means with bootstrap intervals over queries, (1) above the
    thresholds, (2) the difference abstract − concrete below 0 (each group's queries resampled)."""
    name = "Fewer parameters"
    models = statistics["models"]
    measured = {m: v for m, v in models.items() if v["measured"]}
    shallow = [m for m, v in models.items() if not v["measured"]]
    note = f" (single-layer models not measured: {', '.join(shallow)})" if shallow else ""

    agree_text = "; ".join(
        f"{m} ({v['n_layers']} layers): last layer Pearson {_mean(v, 'pearson'):.2f}, top-k overlap "
        f"{_mean(v, 'overlap'):.0%}; first layer Pearson {_mean(v, 'pearson', restriction='first_layer'):.2f}, "
        f"overlap {_mean(v, 'overlap', restriction='first_layer'):.0%}" for m, v in measured.items())
    last = lambda v, measure, subset="all": v["restrictions"]["last_layer"][measure].get(subset)  # noqa: E731
    checks, agree_checks = {}, []
    for model, values in measured.items():
        for measure, title, bound, label in (
                ("pearson", "Pearson", PEARSON_THRESHOLD, f"{PEARSON_THRESHOLD:g}"),
                ("overlap", "top-k overlap", OVERLAP_THRESHOLD, f"{OVERLAP_THRESHOLD:.0%}")):
            checks[f"{model}: mean last-layer {title} ≥ {label}"] = _mean(values, measure) >= bound
            entry = last(values, measure)
            agree_checks.append(interval_check(
                f"{model}: mean last-layer {title} with all layers > {label} (ours; bootstrap over "
                f"{(entry or {}).get('queries', 0)} queries)", entry, bound, "above"))
    agree_evidence = Evidence(
        "mean over queries of the last-layer restriction's agreement with the full score [95% CI]: " + (
            "; ".join(f"{m}: Pearson {describe_interval(last(v, 'pearson'))}, top-k overlap "
                      f"{describe_interval(last(v, 'overlap'))}" for m, v in measured.items())
            or "no model with two or more layers"),
        "the full score over all tracked layers (Pearson 1, overlap 100%); the first layer alone is the control in "
        "the measured column", agree_checks)
    agree = finding(name, "Influence on fewer parameters (the last layer) agrees with influence on all tracked "
                          "parameters.", "Kounavis et al. 2023, qualitative",
                    (agree_text or "no model with two or more layers") + note, checks, agree_evidence)

    comparable = {m: v for m, v in measured.items()
                  if np.isfinite(_mean(v, "overlap", "abstract")) and np.isfinite(_mean(v, "overlap", "concrete"))}
    lacking = [m for m in measured if m not in comparable]
    order_text = "; ".join(
        f"{m}: last-layer top-k overlap abstract {_mean(v, 'overlap', 'abstract'):.1%} "
        f"({v['restrictions']['last_layer']['overlap']['abstract']['queries']} queries) vs concrete "
        f"{_mean(v, 'overlap', 'concrete'):.1%} ({v['restrictions']['last_layer']['overlap']['concrete']['queries']})"
        for m, v in comparable.items())
    if lacking:
        note += f" (models without both abstract and concrete queries not checked: {', '.join(lacking)})"
    breaks = finding(name, "The cheap version breaks for abstract queries (cross-lingual, math, code) before concrete "
                           "ones (facts, quotes).", "Grosse et al. 2023, layer findings (section 5.3.2)",
                     (order_text or "no model with two or more layers and both query groups") + note,
                     {f"{m}: abstract queries' last-layer overlap below the concrete queries'":
                      _mean(v, "overlap", "abstract") < _mean(v, "overlap", "concrete")
                      for m, v in comparable.items()},
                     Evidence("last-layer top-k overlap, mean over the abstract queries − over the concrete ones "
                              "[95% CI]: " + ("; ".join(f"{m}: {describe_interval(last(v, 'overlap', 'abstract_minus_concrete'))}"
                                                        for m, v in comparable.items()) or "not measured"),
                              "the concrete (facts, quotes) queries of the same model",
                              [interval_check(f"{m}: last-layer overlap abstract − concrete < 0 (bootstrap over the "
                                              f"queries of each group)", last(v, "overlap", "abstract_minus_concrete"),
                                              0.0, "below") for m, v in comparable.items()]))
    return [agree, breaks]
