"""Role-play (Grosse et al. 2023): for an assistant that refuses to be shut down, large models' most influential
sequences are stories of AIs or other beings wanting to survive and essays on AI risk (imitation of described
behaviour), small models' are token matches.

For each model size and each role-play query, the share of its top-k documents (raw EK-FAC score) by the theme of
the document in the corpus: AI self-preservation dialogues, non-AI survival stories, AI-risk essays, themed
distractors (built to share the query's tokens, e.g. shutting down a laptop) and everything else. The survival share
is the sum of the first three.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from influence_study.analyses.relations import category_shares, describe, model_values, with_documents
from influence_study.analyses.scale import scale_evidence
from influence_study.findings import finding, increasing

SURVIVAL_THEMES = ("ai_self_preservation", "nonai_survival", "ai_risk_essay")
DISTRACTOR = "themed_distractor"
OTHER = "other"
THEMES = (*SURVIVAL_THEMES, DISTRACTOR, OTHER)
MEASURES = (*(f"share_{t}" for t in THEMES), "share_survival")


def roleplay_table(ranked: pd.DataFrame, documents: pd.DataFrame, query_ids: Sequence[str]) -> pd.DataFrame:
    """One row per model and role-play query of ``ranked`` (each query's top-k): the share of the top-k in each
    theme (``share_<theme>``; a document without one of the known themes counts as ``other``),
    ``share_survival`` (AI self-preservation + non-AI survival + AI-risk essay) and ``chance_survival`` (the
    survival share of a random ranking: survival-themed training documents / documents scored; NaN without
    ``n_docs``)."""
    ranked = ranked[ranked["query_id"].isin(set(query_ids))]
    labelled = with_documents(ranked, documents, ["theme"])
    labelled["theme"] = labelled["theme"].where(labelled["theme"].isin(THEMES[:-1]), OTHER)
    table = category_shares(labelled, "theme", THEMES)
    table["share_survival"] = table[[f"share_{t}" for t in SURVIVAL_THEMES]].sum(axis=1)
    train = documents["split"] == "train" if "split" in documents else pd.Series(True, index=documents.index)
    survival_docs = int((documents["theme"].isin(SURVIVAL_THEMES) & train).sum())
    n_docs = ranked.groupby(["model", "query_id"], sort=False)["n_docs"].first()
    table["chance_survival"] = survival_docs / pd.MultiIndex.from_frame(table[["model", "query_id"]]).map(n_docs)
    return table


def verdicts(statistics: Mapping) -> list:
    """The paper's role-play finding: the survival share rises with size, and the largest model's survival share
    exceeds its themed-distractor share."""
    models = statistics["models"]
    n = statistics["queries"]
    claim = ("For an assistant refusing shutdown, large models' most influential sequences are stories of AIs or "
             "beings wanting to survive and essays on AI risk; small models' match tokens: the survival share of the "
             "top-k rises with size.")
    measured = (f"{n} role-play queries (few: intervals are wide), top {statistics['k']}: survival share "
                + describe(models, "share_survival") + "; themed-distractor share " + describe(models,
                                                                                               f"share_{DISTRACTOR}"))
    checks = {}
    if n > 0 and models:
        survival = model_values(models, "share_survival")
        largest = list(models)[-1]
        checks = {"survival share increases with model size": increasing(list(survival.values())),
                  "largest model: survival share above themed-distractor share":
                      survival[largest] > models[largest][f"share_{DISTRACTOR}"]["mean"]}
    evidence = scale_evidence(statistics["scale"], "survival share") if "scale" in statistics else None
    return [finding("Role-play", claim, "qualitative (0.81B → 52B)", measured, checks, evidence)]
