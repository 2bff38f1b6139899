"""Abstraction with scale (Grosse et al. 2023): small models' most influential training sequences
share short token strings with the query, large models' share its meaning or theme.

For each model size, each query's top-k documents (raw EK-FAC score) are labelled with the ground truth of the
synthetic world: related in meaning (the same fact in other words, in another language or in flipped order; a
solution of the same schema; a story of the same theme), related only by shared tokens (``lexical_overlap``: the
distractors built to share the query's surface strings), or unrelated. A query's abstraction index is
meaning share / (meaning + token-only share) of its top-k (undefined when its top-k holds neither), and the index of a
model is the mean over queries with a bootstrap interval. Only queries for which the ground truth lists both kinds of
document take part (facts, cross-lingual, math and role-play queries; not code, whose ground truth has no token-only
distractors, nor quotes, word-order probes or translations, which have no meaning-related documents).
"""

from __future__ import annotations

from typing import Mapping

import pandas as pd

from influence_study.analyses.relations import (COPY_RELATIONS, MEANING_RELATIONS, RELATIONS, TOKEN_RELATIONS,
                                                UNRELATED, category_shares, describe, interval_above, label_relations,
                                                model_values, relation_counts, summarise, with_documents)
from influence_study.analyses.matched_loss import matched_finding
from influence_study.analyses.scale import scale_evidence
from influence_study.findings import finding, increasing

ALL = "all"
GROUPS = {"meaning": MEANING_RELATIONS, "token_only": TOKEN_RELATIONS, "copy": COPY_RELATIONS,
          "other_language": ("same_fact_other_language",)}
MEASURES = ("abstraction_index", "share_meaning", "share_token_only", "share_unrelated", "share_other_distractor",
            "cross_lingual_share", "chance_meaning", "chance_token_only", "chance_abstraction_index")


def eligible_queries(relations: pd.DataFrame, queries: pd.DataFrame) -> pd.DataFrame:
    """The queries (``query_id, analysis`` and the count of meaning-related, token-only, copy and other-language
    documents) for which the ground truth lists at least one meaning-related and one token-only document."""
    counts = relation_counts(relations, queries["query_id"].astype(str), GROUPS)
    table = counts.assign(analysis=queries["analysis"].astype(str).to_numpy()).rename_axis("query_id").reset_index()
    return table[(table["meaning"] > 0) & (table["token_only"] > 0)].reset_index(drop=True)


def abstraction_table(ranked: pd.DataFrame, relations: pd.DataFrame, eligible: pd.DataFrame,
                      documents: pd.DataFrame) -> pd.DataFrame:
    """One row per model and query of ``ranked`` (each query's top-k: ``model, query_id, doc_id, rank, n_docs``)
    restricted to the ``eligible`` queries (:func:`eligible_queries`): the share of the top-k in each relation
    (``share_<relation>``, ``share_unrelated``), grouped (``share_meaning``, ``share_token_only``), the abstraction
    index, the share of the same fact in another language (``cross_lingual_share``, NaN for a query without such
    documents), the share of distractors built for other queries (``share_other_distractor``: documents of the
    ``distractors`` family or the ``themed_distractor`` theme unrelated to this query, a part of ``share_unrelated``
    that shares surface strings with the query's template) and the shares expected by chance (related documents /
    documents scored)."""
    ranked = ranked[ranked["query_id"].isin(set(eligible["query_id"]))]
    labelled = label_relations(ranked, relations)
    table = category_shares(labelled, "relation", [*RELATIONS, UNRELATED])
    labelled = with_documents(labelled, documents, ["family", "theme"])
    built_as_distractor = (labelled["family"] == "distractors") | (labelled["theme"] == "themed_distractor")
    labelled["other_distractor"] = ((labelled["relation"] == UNRELATED) & built_as_distractor).astype(float)
    other = labelled.groupby(["model", "query_id"], sort=False)["other_distractor"].mean()
    table = table.merge(other.rename("share_other_distractor").reset_index(), on=["model", "query_id"], how="left")
    table["share_meaning"] = table[[f"share_{r}" for r in MEANING_RELATIONS]].sum(axis=1)
    table["share_token_only"] = table[[f"share_{r}" for r in TOKEN_RELATIONS]].sum(axis=1)
    related = table["share_meaning"] + table["share_token_only"]
    table["abstraction_index"] = table["share_meaning"] / related.where(related > 0)
    info = eligible.set_index("query_id")
    table.insert(1, "analysis", table["query_id"].map(info["analysis"]))
    has_other_language = table["query_id"].map(info["other_language"]) > 0
    table["cross_lingual_share"] = table["share_same_fact_other_language"].where(has_other_language)
    n_docs = ranked.groupby(["model", "query_id"], sort=False)["n_docs"].first().reset_index()
    table = table.merge(n_docs, on=["model", "query_id"], how="left")
    table["chance_meaning"] = table["query_id"].map(info["meaning"]) / table["n_docs"]
    table["chance_token_only"] = table["query_id"].map(info["token_only"]) / table["n_docs"]
    meaning, token_only = table["query_id"].map(info["meaning"]), table["query_id"].map(info["token_only"])
    table["chance_abstraction_index"] = meaning / (meaning + token_only)  # a random ranking's expected index
    return table


def summarise_abstraction(per_query: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean and bootstrap interval of each measure per model, over all eligible queries (``analysis = "all"``) and
    per query analysis (facts, cross-lingual, math, role-play)."""
    overall = summarise(per_query.assign(analysis=ALL), MEASURES, by=("model", "analysis"), seed=seed)
    per_analysis = summarise(per_query, MEASURES, by=("model", "analysis"), seed=seed)
    table = pd.concat([overall, per_analysis], ignore_index=True)
    order = {m: i for i, m in enumerate(dict.fromkeys(per_query["model"]))}
    return table.sort_values("model", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)


def verdicts(statistics: Mapping) -> list:
    """The paper's abstraction finding: the index rises with size, and the largest model's interval lies above
    the smallest's."""
    models = statistics["models"]
    claim = ("Small models' most influential sequences share short token strings with the query; large models' "
             "share its meaning or theme: the abstraction index (meaning / (meaning + token-only) share of each "
             "query's top-k) rises with size.")
    measured = (f"abstraction index of the top {statistics['k']} ({statistics['queries']} queries): "
                + describe(models, "abstraction_index", ALL, "{:.2f}")
                + "; meaning share: " + describe(models, "share_meaning", ALL)
                + "; token-only share: " + describe(models, "share_token_only", ALL, "{:.1%}")
                + "; unrelated share: " + describe(models, "share_unrelated", ALL)
                + " (distractors built for other queries: " + describe(models, "share_other_distractor", ALL) + ")"
                + "; same fact in another language: " + describe(models, "cross_lingual_share", ALL))
    checks = {}
    if statistics["queries"] > 0:
        index = model_values(models, "abstraction_index", ALL)
        checks = {"index increases with model size": increasing(list(index.values())),
                  "largest model's 95% CI lies above the smallest's": interval_above(models, "abstraction_index", ALL)}
    evidence = scale_evidence(statistics["scale"], "abstraction index") if "scale" in statistics else None
    found = [finding("Abstraction", claim, "qualitative (0.81B → 52B): token matches → meaning and theme", measured,
                     checks, evidence)]
    if "matched_loss" in statistics:
        matched = statistics["matched_loss"]
        found.append(matched_finding(matched.get("numbers"), matched["checkpoint"], "abstraction index",
                                     "Abstraction"))
    return found
