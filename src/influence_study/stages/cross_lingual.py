"""Step of the cross-lingual analysis (:mod:`influence_study.analyses.cross_lingual`): the translated facts queries
scored on each English query's top documents, per model."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd
from tqdm import tqdm

from influence_study.analyses.cross_lingual import (ENGLISH, choose_examples, english_top_documents, fact_ratios,
                                                    percentile_scale, summarise, translated_percentiles,
                                                    translated_scores, translation_pairs, verdicts)
from influence_study.stages.tables import correct_answers, load_family_tables, read_learning, write_analysis
from influence_study.study.io import read_parquet


def run(config: Mapping, pairwise: Sequence[str], learning: str, queries: str, documents: str,
        evaluations: Sequence[str], scores: str, ratios: str, summary: str) -> None:
    """Step of ``analysis_cross_lingual``: the translated queries' influence on each English facts query's top
    documents, per model (``analyses.cross_lingual`` sets k, whether only English documents count, the examples);
    the models' evaluations give the v2 query sets."""
    section = config["analyses"]["cross_lingual"]
    learning_table = read_learning(learning)
    pairs = translation_pairs(read_parquet(queries))
    corpus = read_parquet(documents, columns=["doc_id", "language", "split"])
    corpus = corpus[corpus["split"] == "train"]
    english_docs = corpus.loc[corpus["language"] == ENGLISH, "doc_id"] if section["english_documents_only"] else None
    examples = choose_examples(pairs, section["examples"], config["seed"])
    tables = load_family_tables(pairwise, learning_table, columns=["query_id", "doc_id", "score"])
    longs, per_fact = [], []
    for model in tqdm(list(tables), desc="cross-lingual", unit="model"):
        frame = tables.pop(model)
        top = english_top_documents(frame, pairs["english_id"].unique(), english_docs, section["top_k"])
        long = translated_scores(frame, top, pairs)
        ratio = fact_ratios(long, pairs)
        ratio["percentile"] = translated_percentiles(frame, top, pairs, english_docs).reindex(
            ratio["query_id"]).to_numpy()
        long.insert(0, "model", model)
        long["example"] = long["english_id"].isin(examples)
        ratio.insert(0, "model", model)
        longs.append(long)
        per_fact.append(ratio)
    ratio_table = pd.concat(per_fact, ignore_index=True) if per_fact else pd.DataFrame(
        columns=["model", *pairs.columns, "ratio"])
    score_table = pd.concat(longs, ignore_index=True) if longs else pd.DataFrame()
    statistics = {"top_k": section["top_k"], "english_documents_only": section["english_documents_only"],
                  "facts": int(pairs["english_id"].nunique()), "languages": sorted(pairs["language"].unique()),
                  "examples": examples, "models": summarise(ratio_table, seed=config["seed"]),
                  "scale": percentile_scale(ratio_table, learning_table, correct_answers(evaluations),
                                            config["seed"]) if per_fact else {}}
    write_analysis(config, "cross_lingual", {"scores": (score_table, scores), "ratios": (ratio_table, ratios)},
                   statistics, verdicts, summary, inputs=[*pairwise, learning, queries, documents, *evaluations])
