"""Where in the network influence sits (Grosse et al. 2023, section 5.3.2): the layerwise decomposition of each
query's top documents, mapped to relative depth.

Every pairwise table holds per-layer scores ``layer_0 .. layer_{L-1}`` that sum to ``score`` (exact under the
block-diagonal approximation). Models differ in depth, so layers are mapped to relative depth: layer ``l`` of ``L``
occupies the interval [l/L, (l+1)/L] of depth [0, 1] and its influence is spread uniformly over it. The lower,
middle and upper thirds then receive the share of each layer their interval covers (:func:`third_weights`; exact
for L divisible by 3; a 2-layer model's middle third takes a third of each layer, so its restricted score is the
total's third and ranks documents like the total, which is why the restriction checks need at least 3 layers).

Three statistics:
(a) the layer profile of a query: the mean over its top-k documents of each layer's share of the document's
    absolute influence, |s_l| / sum_l' |s_l'|, then mapped to thirds;
(b) the centre of mass of that profile, sum_l share_l (l + 0.5) / L, in [0, 1] (0 = input, 1 = output);
(c) the top-k documents when the score is restricted to one third (sum of the weighted layer columns), and the
    share of them related to the query in meaning (same fact in any wording, language or order, same schema, same
    theme) or by tokens only (lexical overlap), from the synthetic world's ground truth.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci
from influence_study.analyses.relations import MEANING_RELATIONS, TOKEN_RELATIONS, label_relations
from influence_study.findings import Evidence, IntervalCheck, finding

THIRDS = ("lower", "middle", "upper")
RESTRICTIONS = ("all", *THIRDS)
# The paper's query families: facts and memorised quotes in upper layers; math, code and translation in middle ones.
UPPER_FAMILIES = ("facts", "quotes")
MIDDLE_FAMILIES = ("math", "code", "translation")
# "Spread evenly over layers": each third holds between 20% and 47% of the influence (even: 33%).
EVEN_SHARE_BAND = (0.20, 0.47)
# v2: a depth statistic needs depth to resolve; models with fewer layers are left out of the v2 checks (the issue's
# rule, fixed before the v2 numbers were seen: a third of a 2-layer model is not a third of anything).
MIN_LAYERS_V2 = 6


def layer_columns(frame: pd.DataFrame) -> list[str]:
    """The ``layer_<i>`` columns of a scores table, in layer order; raises when they are missing or have gaps."""
    found = {int(m.group(1)): c for c in frame.columns if (m := re.fullmatch(r"layer_(\d+)", str(c)))}
    if not found:
        raise ValueError(f"scores table has no layer_<i> columns (columns: {list(frame.columns)})")
    if sorted(found) != list(range(len(found))):
        raise ValueError(f"scores table's layer columns are not layer_0..layer_{len(found) - 1}: {sorted(found)}")
    return [found[i] for i in range(len(found))]


def layer_depths(n_layers: int) -> np.ndarray:
    """Relative depth of each layer's centre, (l + 0.5) / L."""
    if n_layers < 1:
        raise ValueError(f"n_layers: expected at least 1, got {n_layers}")
    return (np.arange(n_layers) + 0.5) / n_layers


def third_weights(n_layers: int) -> np.ndarray:
    """``[n_layers, 3]`` matrix: the share of layer l's depth interval [l/L, (l+1)/L] inside the lower, middle and
    upper third of [0, 1]. Rows sum to 1."""
    if n_layers < 1:
        raise ValueError(f"n_layers: expected at least 1, got {n_layers}")
    starts, ends = np.arange(n_layers) / n_layers, (np.arange(n_layers) + 1) / n_layers
    bounds = np.array([0.0, 1 / 3, 2 / 3, 1.0])
    overlap = np.clip(np.minimum(ends[:, None], bounds[None, 1:]) - np.maximum(starts[:, None], bounds[None, :-1]),
                      0.0, None)
    return overlap * n_layers


def score_array(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Score columns of one model's pairwise table (e.g. the layer columns, or ``["score"]``) as a dense array:
    ``(query_ids, doc_ids, values)`` with ids sorted and ``values[q, d, c]`` column c's score of document d for
    query q (NaN for a pair the table lacks). With :func:`top_documents` this ranks every query at once, much
    faster than sorting the long table."""
    query_codes, query_ids = pd.factorize(frame["query_id"], sort=True)
    doc_codes, doc_ids = pd.factorize(frame["doc_id"], sort=True)
    values = np.full((len(query_ids), len(doc_ids), len(columns)), np.nan)
    values[query_codes, doc_codes] = frame[list(columns)].to_numpy(dtype=np.float64)
    return np.asarray(query_ids, dtype=str), np.asarray(doc_ids, dtype=str), values


def top_documents(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` highest entries of ``[n_queries, n_docs]`` scores (NaN = not scored), best first, ties
    broken by the lower column: ``(columns [n_queries, k'], valid [n_queries, k'])`` with k' = min(k, n_docs) and
    ``valid`` false where a row has fewer than k' scored documents."""
    filled = np.where(np.isnan(scores), -np.inf, scores)
    k = min(k, scores.shape[1])
    # a stable sort of each row: ties (e.g. identical copies of a document) go to the lower column, also at the
    # k-th place, which a partition would decide arbitrarily
    chosen = np.argsort(-filled, axis=1, kind="stable")[:, :k]
    return chosen, np.isfinite(np.take_along_axis(filled, chosen, axis=1))


def layer_shares(values: np.ndarray) -> np.ndarray:
    """``[n_queries, L]``: for ``[n_queries, k, L]`` layer scores of each query's top documents, the mean over
    documents of each layer's share of the document's absolute influence. Documents whose layer scores are all zero
    (or missing) are skipped."""
    magnitude = np.abs(values)
    totals = magnitude.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(totals > 0, magnitude / totals, np.nan)
        return np.nanmean(shares, axis=1)


def centre_of_mass(profiles: np.ndarray) -> np.ndarray:
    """Relative depth of the centre of mass of each row of ``[n, L]`` layer shares (rows summing to 1)."""
    profiles = np.asarray(profiles, dtype=np.float64)
    return profiles @ layer_depths(profiles.shape[1])


def restricted_score(layers: np.ndarray, third: str) -> np.ndarray:
    """The score restricted to one third of depth (``"all"``: the sum of every layer) from layer scores
    ``[..., L]``: each layer weighted by the share of it inside that third (:func:`third_weights`)."""
    layers = np.asarray(layers, dtype=np.float64)
    if third == "all":
        return layers.sum(axis=-1)
    if third not in THIRDS:
        raise ValueError(f"third: expected one of {RESTRICTIONS}, got {third!r}")
    return layers @ third_weights(layers.shape[-1])[:, THIRDS.index(third)]


def kind_shares(top: pd.DataFrame, relations: pd.DataFrame) -> pd.DataFrame:
    """Per query of ``top`` (its top-k rows): the share of its documents related in meaning and by tokens only
    (columns ``meaning_share, token_share``; index ``query_id``); exact copies and unrelated documents count in
    neither (``relations``: the ground truth, ``query_id, doc_id, relation``)."""
    pairs = pd.DataFrame({"query_id": top["query_id"].astype(str).to_numpy(),
                          "doc_id": top["doc_id"].astype(str).to_numpy()})
    labelled = label_relations(pairs, relations)
    labelled["meaning_share"] = labelled["relation"].isin(MEANING_RELATIONS).astype(float)
    labelled["token_share"] = labelled["relation"].isin(TOKEN_RELATIONS).astype(float)
    return labelled.groupby("query_id", sort=True)[["meaning_share", "token_share"]].mean()


def model_layer_tables(frame: pd.DataFrame, model: str, queries: pd.DataFrame, relations: pd.DataFrame,
                       k: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The three per-query tables of one model's pairwise table (``query_id, doc_id, layer_*``):
    ``profile`` (share per third and centre of mass of its top-k documents by total score), ``layers`` (long:
    share per layer and its depth) and ``restricted`` (meaning and token shares of the top-k under each
    restriction)."""
    columns = layer_columns(frame)
    query_ids, doc_ids, values = score_array(frame, columns)
    weights = third_weights(len(columns))
    families = queries.set_index("query_id")["analysis"]
    rows = np.arange(len(query_ids))[:, None]
    restricted = []
    for restriction in RESTRICTIONS:
        chosen, valid = top_documents(restricted_score(values, restriction), k)
        if restriction == "all":
            shares = layer_shares(np.where(valid[:, :, None], values[rows, chosen], np.nan))
        pairs = pd.DataFrame({"query_id": np.broadcast_to(query_ids[:, None], chosen.shape)[valid],
                              "doc_id": doc_ids[chosen][valid]})
        part = kind_shares(pairs, relations).reset_index()
        part.insert(0, "restriction", restriction)
        part.insert(0, "model", model)
        restricted.append(part)
    restricted = pd.concat(restricted, ignore_index=True)
    restricted["analysis"] = families.reindex(restricted["query_id"]).to_numpy()
    restricted["n_layers"] = len(columns)
    with_meaning = relations.loc[relations["relation"].isin(MEANING_RELATIONS), "query_id"].astype(str)
    restricted["has_meaning"] = restricted["query_id"].isin(set(with_meaning))
    thirds = shares @ weights
    profile = pd.DataFrame({"model": model, "query_id": query_ids, "n_layers": len(columns)})
    profile["analysis"] = families.reindex(profile["query_id"]).to_numpy()
    for i, third in enumerate(THIRDS):
        profile[f"share_{third}"] = thirds[:, i]
    profile["centre_of_mass"] = centre_of_mass(shares)
    long = pd.DataFrame({"model": model, "query_id": np.repeat(query_ids, len(columns)),
                         "layer": np.tile(np.arange(len(columns)), len(query_ids)), "share": shares.ravel()})
    long["depth"] = layer_depths(len(columns))[long["layer"].to_numpy()]
    return profile, long, restricted


def summarise(profile: pd.DataFrame, restricted: pd.DataFrame, seed: int = 0) -> dict:
    """Statistics per model (ordered as in ``profile``): mean share per third, centre of mass per query family,
    and meaning / token shares of the top-k per restriction over the queries with a meaning-related document
    (``has_meaning``; for the others the meaning share is zero by construction)."""
    out = {}
    for model, group in profile.groupby("model", sort=False):
        thirds = {t: dict(zip(("mean", "low", "high"), mean_ci(group[f"share_{t}"], seed=seed))) for t in THIRDS}
        families = {
            family: {**dict(zip(("mean", "low", "high"), mean_ci(part["centre_of_mass"], seed=seed))),
                     "queries": int(len(part))}
            for family, part in group.groupby("analysis", sort=True)
        }
        chosen = restricted[(restricted["model"] == model) & restricted["has_meaning"]]
        by_restriction = {}
        for restriction in RESTRICTIONS:
            part = chosen[chosen["restriction"] == restriction]
            by_restriction[restriction] = {
                "meaning": dict(zip(("mean", "low", "high"), mean_ci(part["meaning_share"], seed=seed))),
                "tokens": dict(zip(("mean", "low", "high"), mean_ci(part["token_share"], seed=seed))),
                "queries": int(len(part)),
            }
        pivot = chosen.pivot_table(index="query_id", columns="restriction", values="meaning_share")
        middle_minus = {other: dict(zip(("mean", "low", "high"), mean_ci(
            (pivot["middle"] - pivot[other]).to_numpy() if {"middle", other} <= set(pivot.columns) else [],
            seed=seed))) for other in ("lower", "upper")}
        out[model] = {"n_layers": int(group["n_layers"].iloc[0]), "queries": int(len(group)),
                      "thirds": thirds, "centre_of_mass": families, "restricted": by_restriction,
                      "middle_minus": middle_minus}
    return out


def _family_com(stats: Mapping, family: str) -> float:
    return stats["centre_of_mass"].get(family, {}).get("mean", float("nan"))


def verdicts(statistics: Mapping) -> list:
    """The paper's layer findings, checked per model size (models too shallow for a check are left out of it)."""
    models = statistics["models"]
    name = "Layers"
    evidence = _evidence(models)
    low, high = EVEN_SHARE_BAND
    spread = {m: v for m, v in models.items() if v["n_layers"] >= 2}
    thirds_text = "; ".join(f"{m} ({v['n_layers']} layers) " + "/".join(f"{v['thirds'][t]['mean']:.0%}" for t in THIRDS)
                            for m, v in models.items())
    even = finding(
        name, "On average influence is spread evenly over the layers.", "roughly even over layers",
        "mean share of |influence| in the lower/middle/upper third: " + thirds_text,
        {f"{m}: every third's share in [{low:.0%}, {high:.0%}]":
         all(low <= v["thirds"][t]["mean"] <= high for t in THIRDS) for m, v in spread.items()}, evidence[0])

    def ordered(stats) -> bool:
        upper = [_family_com(stats, f) for f in UPPER_FAMILIES]
        middle = [_family_com(stats, f) for f in MIDDLE_FAMILIES]
        return bool(np.isfinite(upper + middle).all() and min(upper) > max(middle))

    com_text = "; ".join(
        f"{m}: " + ", ".join(f"{f} {_family_com(v, f):.2f}" for f in (*UPPER_FAMILIES, *MIDDLE_FAMILIES))
        for m, v in models.items())
    families = finding(
        name, "Facts and memorised quotes sit in upper layers; math, code and translation in middle layers.",
        "facts, quotes: upper; math, code, translation: middle",
        "centre of mass of influence (relative depth, 0 = input, 1 = output): " + com_text,
        {f"{m}: centre of mass of facts and of quotes above that of math, of code and of translation": ordered(v)
         for m, v in spread.items()}, evidence[1])

    resolved = {m: v for m, v in models.items() if v["n_layers"] >= 3}

    def meaning(stats, restriction):
        return stats["restricted"][restriction]["meaning"]["mean"]

    restricted_text = "; ".join(
        f"{m}: " + ", ".join(f"{r} {meaning(v, r):.0%}" for r in RESTRICTIONS) for m, v in models.items())
    abstract = finding(
        name, "Restricting influence to the middle third of the layers gives the most abstract matches.",
        "middle third most abstract",
        "share of the top documents related in meaning, per restriction: " + restricted_text
        + (f" (models with fewer than 3 layers not checked: "
           f"{', '.join(m for m in models if m not in resolved)})" if len(resolved) < len(models) else ""),
        {f"{m}: middle third's meaning share above the lower's and the upper's":
         meaning(v, "middle") > max(meaning(v, "lower"), meaning(v, "upper")) for m, v in resolved.items()},
        evidence[2])
    return [even, families, abstract]


def _evidence(models: Mapping) -> tuple:
    """The v2 evidence of the three layer findings (models with at least :data:`MIN_LAYERS_V2` layers): each
    third's share within the even band, the centre-of-mass differences of upper and middle families above 0, and
    the middle third's meaning share above the lower's and the upper's (paired over queries)."""
    deep = [m for m, v in models.items() if v["n_layers"] >= MIN_LAYERS_V2]
    shallow = ", ".join(m for m in models if m not in deep)
    note = f"models with fewer than {MIN_LAYERS_V2} layers left out{': ' + shallow if shallow else ''}"
    def third(m: str, t: str) -> str:
        v = models[m]["thirds"][t]
        return f"{t} {v['mean']:.0%} [{v['low']:.0%}, {v['high']:.0%}]"

    even = Evidence(
        "; ".join(f"{m} " + ", ".join(third(m, t) for t in THIRDS) for m in deep)
        or "no model deep enough", f"an even spread gives each third 1/3; {note}",
        [IntervalCheck(f"{m}: {t} third's share of |influence|", models[m]["thirds"][t]["mean"],
                       models[m]["thirds"][t]["low"], models[m]["thirds"][t]["high"], EVEN_SHARE_BAND, "within")
         for m in deep for t in THIRDS])

    def difference(model: str, upper: str, middle: str) -> IntervalCheck:
        # independent query sets: the interval of a difference from the two intervals (conservative)
        a, b = models[model]["centre_of_mass"].get(upper, {}), models[model]["centre_of_mass"].get(middle, {})
        nan = float("nan")
        return IntervalCheck(f"{model}: centre of mass {upper} − {middle}", a.get("mean", nan) - b.get("mean", nan),
                             a.get("low", nan) - b.get("high", nan), a.get("high", nan) - b.get("low", nan), 0.0)

    com_checks = [difference(m, u, d) for m in deep for u in UPPER_FAMILIES for d in MIDDLE_FAMILIES]
    families = Evidence(
        "; ".join(f"{m}: " + ", ".join(f"{f} {_family_com(models[m], f):.2f}" for f in (*UPPER_FAMILIES,
                                                                                      *MIDDLE_FAMILIES)) for m in deep)
        or "no model deep enough", f"no depth preference: differences 0 (interval of a difference: the two "
                                   f"families' intervals combined); {note}", com_checks)
    abstract_checks = [IntervalCheck(f"{m}: meaning share, middle third − {other}, paired over queries",
                                     *(models[m]["middle_minus"][other][k] for k in ("mean", "low", "high")), 0.0)
                       for m in deep if "middle_minus" in models[m] for other in ("lower", "upper")]
    meaning = {m: ", ".join(f"{r} {models[m]['restricted'][r]['meaning']['mean']:.0%}" for r in RESTRICTIONS)
               for m in deep}
    abstract = Evidence(
        "; ".join(f"{m}: {text}" for m, text in meaning.items())
        or "no model deep enough", f"all layers (restriction 'all'); {note}", abstract_checks)
    return even, families, abstract
