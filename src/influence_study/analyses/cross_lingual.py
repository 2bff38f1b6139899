"""Cross-lingual influence (Grosse et al. 2023, section 5.3.3): does influence carry over to a translated query?

The paper's protocol: for an English query, take its top-10 English training sequences; translate the QUERY into
other languages and score the same 10 sequences against each translation. Influence is about zero for the smallest
model and grows with size. Here every English facts query with translations (cross_lingual queries whose
``translation_of`` names it) is used; the pairwise tables already hold every query x document score, so nothing is
rescored. Per fact and language the summary statistic is the ratio of the translated query's total influence on the
10 documents to the English query's, sum_d s_lang(d) / sum_d s_en(d) (1: the translation is as influenced as the
English query; 0: not at all); the heatmaps show each document's influence divided by the English query's top score,
as the paper's figure does. Facts whose training documents include the translated language (fact_group
``multilingual``: ``exposures`` > 0) are reported apart from those trained in English only.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import mean_ci, top_k
from influence_study.analyses.scale import combined_evidence, scale_evidence, scale_numbers
from influence_study.findings import finding, increasing
from influence_study.study.io import require_columns

ENGLISH = "en"


def translation_pairs(queries: pd.DataFrame) -> pd.DataFrame:
    """One row per translated query of an English facts query: ``query_id, english_id, language, fact_id,
    fact_group, exposures`` (``exposures``: training documents stating the fact in the translation's language),
    and ``seen_in_language`` (whether there are any)."""
    require_columns(queries, ["query_id", "analysis", "language", "translation_of", "fact_id", "fact_group",
                              "exposures"], "queries table")
    english = queries.loc[(queries["analysis"] == "facts") & (queries["language"] == ENGLISH), "query_id"]
    translated = queries[queries["translation_of"].isin(set(english))]
    pairs = pd.DataFrame({
        "query_id": translated["query_id"].astype(str).to_numpy(),
        "english_id": translated["translation_of"].astype(str).to_numpy(),
        "language": translated["language"].astype(str).to_numpy(),
        "fact_id": translated["fact_id"].astype(str).to_numpy(),
        "fact_group": translated["fact_group"].astype(str).to_numpy(),
        "exposures": translated["exposures"].fillna(0).astype(int).to_numpy(),
    })
    pairs["seen_in_language"] = pairs["exposures"] > 0
    return pairs.sort_values(["english_id", "language"], ignore_index=True)


def english_top_documents(pairwise: pd.DataFrame, english_ids: Sequence[str], documents: Sequence[str] | None,
                          k: int) -> pd.DataFrame:
    """Each English query's ``k`` highest-scoring documents (among ``documents`` when given, e.g. the English
    ones), with its score: columns ``english_id, doc_id, rank, english_score``."""
    rows = pairwise[pairwise["query_id"].isin(list(english_ids))]
    if documents is not None:
        rows = rows[rows["doc_id"].isin(list(documents))]
    top = top_k(rows[["query_id", "doc_id", "score"]], k)
    return pd.DataFrame({"english_id": top["query_id"].astype(str).to_numpy(),
                         "doc_id": top["doc_id"].astype(str).to_numpy(), "rank": top["rank"].to_numpy(),
                         "english_score": top["score"].to_numpy(dtype=np.float64)})


def translated_scores(pairwise: pd.DataFrame, top: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """The scores of every language's query on its English query's top documents, long form: ``english_id,
    fact_id, language, rank, doc_id, score, normalised`` (``normalised``: score / the English query's top score),
    English rows included."""
    wanted = pairs[["query_id", "english_id", "language"]].merge(top, on="english_id")
    rows = pairwise[pairwise["query_id"].isin(set(pairs["query_id"])) & pairwise["doc_id"].isin(set(top["doc_id"]))]
    scores = pd.DataFrame({"query_id": rows["query_id"].astype(str).to_numpy(),
                           "doc_id": rows["doc_id"].astype(str).to_numpy(),
                           "score": rows["score"].to_numpy(dtype=np.float64)})
    translated = wanted.merge(scores, on=["query_id", "doc_id"], how="left")
    missing = translated["score"].isna().sum()
    if missing:
        raise ValueError(f"pairwise table lacks {missing} (translated query, document) scores; the cross-lingual "
                         f"analysis needs every query scored against every document")
    english = top.assign(language=ENGLISH, score=top["english_score"])
    long = pd.concat([english, translated], ignore_index=True)
    facts = pairs.drop_duplicates("english_id").set_index("english_id")["fact_id"]
    long["fact_id"] = facts.reindex(long["english_id"]).to_numpy()
    best = top[top["rank"] == 1].set_index("english_id")["english_score"]
    long["normalised"] = long["score"] / best.reindex(long["english_id"]).to_numpy()
    columns = ["english_id", "fact_id", "language", "rank", "doc_id", "score", "normalised"]
    return long[columns].sort_values(["english_id", "language", "rank"], ignore_index=True)


def translated_percentiles(pairwise: pd.DataFrame, top: pd.DataFrame, pairs: pd.DataFrame,
                           documents: Sequence[str] | None) -> pd.Series:
    """Per translated query (index ``query_id``): the mean percentile of its English query's top documents in the
    translated query's own ranking of ``documents`` (all when None), 1 = its most influential document, about 0.5 =
    no better than a random document. Unlike the ratio, this does not depend on the size of the query's gradient."""
    rows = pairwise[pairwise["query_id"].isin(set(pairs["query_id"]))]
    if documents is not None:
        rows = rows[rows["doc_id"].isin(list(documents))]
    codes, uniques = pd.factorize(rows["query_id"].astype(str))
    order = np.lexsort((rows["score"].to_numpy(), codes))  # by query, then ascending score
    sizes = np.bincount(codes, minlength=len(uniques))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    position = np.empty(len(codes), dtype=np.int64)
    position[order] = np.arange(len(codes)) - starts[codes[order]]  # 0 = the query's lowest score
    ranked = pd.DataFrame({"query_id": uniques[codes], "doc_id": rows["doc_id"].astype(str).to_numpy(),
                           "percentile": (position + 1) / sizes[codes]})
    wanted = pairs[["query_id", "english_id"]].merge(top[["english_id", "doc_id"]], on="english_id")
    return wanted.merge(ranked, on=["query_id", "doc_id"], how="left").groupby("query_id")["percentile"].mean()


def fact_ratios(long: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Per translated query: ``ratio`` = its total influence on the English query's top documents divided by the
    English query's, with the pair's ``fact_group``, ``exposures`` and ``seen_in_language``."""
    totals = long.groupby(["english_id", "language"], sort=False)["score"].sum()
    english = totals.xs(ENGLISH, level="language")
    ratios = pairs.copy()
    translated = totals.reindex(pd.MultiIndex.from_arrays([ratios["english_id"], ratios["language"]]))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios["ratio"] = translated.to_numpy() / english.reindex(ratios["english_id"]).to_numpy()
    return ratios


def summarise(ratios: pd.DataFrame, seed: int = 0) -> dict:
    """Mean ratio with a bootstrap CI per model (ordered as in ``ratios``) and language, over all facts and split by
    whether the fact's training documents include that language; and the mean percentile (a scale-free control,
    reported without a verdict) when ``ratios`` has it."""
    def ci(values) -> dict:
        mean, low, high = mean_ci(values, seed=seed)
        return {"mean": mean, "low": low, "high": high, "facts": int(np.isfinite(np.asarray(values, float)).sum())}

    out = {}
    for model, group in ratios.groupby("model", sort=False):
        out[model] = {}
        for language, part in group.groupby("language", sort=True):
            seen = part["seen_in_language"].astype(bool)
            out[model][language] = {
                "all": ci(part["ratio"]),
                "seen_in_language": ci(part.loc[seen, "ratio"]),
                "english_only": ci(part.loc[~seen, "ratio"]),
            }
            if "percentile" in part:
                out[model][language]["percentile"] = ci(part["percentile"])
    return out


def verdicts(statistics: Mapping) -> list:
    """The paper's cross-lingual finding, checked per language: the translated/English ratio grows with model size
    and the smallest model's mean lies below the largest model's confidence interval."""
    models = statistics["models"]
    names = list(models)
    languages = sorted({language for per_model in models.values() for language in per_model})
    checks, parts = {}, []
    for language in languages:
        values = [models[m].get(language, {}).get("all", {}) for m in names]
        means = [v.get("mean", float("nan")) for v in values]
        parts.append(f"{language}: " + ", ".join(
            f"{m} {v.get('mean', float('nan')):.2f} [{v.get('low', float('nan')):.2f}, "
            f"{v.get('high', float('nan')):.2f}]" for m, v in zip(names, values)))
        if len(names) >= 2 and np.isfinite(means).all():
            checks[f"{language}: ratio increases with size"] = increasing(means)
            checks[f"{language}: smallest model's ratio below the largest's CI"] = means[0] < values[-1]["low"]
    split = "; ".join(
        f"{m}: " + ", ".join(f"{language} seen {v['seen_in_language']['mean']:.2f} / English-only "
                             f"{v['english_only']['mean']:.2f}" for language, v in models[m].items())
        for m in names)
    return [finding(
        "Cross-lingual", "Influence of an English query's top-10 English documents on the query translated into "
        "another language is about zero for the small model and grows with model size.",
        "≈ 0 for the smallest model, growing with size",
        f"mean ratio of translated to English influence on the English top-{statistics['top_k']} (95% CI): "
        + "; ".join(parts)
        + ". By whether training documents state the fact in that language: " + split, checks,
        combined_evidence([scale_evidence(numbers, f"{language} percentile of the English top-{statistics['top_k']}")
                           for language, numbers in statistics.get("scale", {}).items()]))]


def choose_examples(pairs: pd.DataFrame, n: int, seed: int = 0) -> list[str]:
    """``n`` English facts queries for the heatmaps, drawn at random (seeded) alternately from facts seen in
    another language and facts trained in English only, so neither kind is cherry-picked."""
    rng = np.random.default_rng(seed)
    seen = pairs.groupby("english_id")["seen_in_language"].any()
    pools = [sorted(seen.index[seen]), sorted(seen.index[~seen])]
    pools = [list(rng.permutation(pool)) for pool in pools]
    chosen = []
    while len(chosen) < n and any(pools):
        for pool in pools:
            if pool and len(chosen) < n:
                chosen.append(str(pool.pop(0)))
    return chosen


def percentile_scale(ratio_table: pd.DataFrame, learning: pd.DataFrame, correct: pd.DataFrame, seed: int = 0) -> dict:
    """Per language, the v2 scale numbers (:func:`scale.scale_numbers`) of the scale-free statistic: the mean
    percentile of the English query's top documents in the translated query's ranking (1: at its top; 0.5: chance,
    the comparison of the second check), on the facts whose English query the model answers correctly (``correct``:
    ``model, query_id, correct`` of every model's queries; ``learning``: the learning table). Summed scores follow
    the size of a model's gradients, percentiles do not."""
    english = correct.rename(columns={"query_id": "english_id"})
    correct = ratio_table[["model", "query_id", "english_id"]].astype(str).merge(english, on=["model", "english_id"])
    table = ratio_table.assign(chance_percentile=0.5)
    return {str(language): scale_numbers(part, None, "percentile", learning, correct[["model", "query_id", "correct"]],
                                         chance="chance_percentile", seed=seed)
            for language, part in table.groupby("language", sort=True)}
