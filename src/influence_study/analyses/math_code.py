"""Math and code (Grosse et al. 2023): for word problems and classic algorithms, large models' most influential
sequences are structurally related solutions (the same schema), small models' are token matches.

For each model size and each math or code query, the share of its top-k documents (raw EK-FAC score) that solve the
same schema (relation ``same_schema``), with the queries split into math, code with plain names and code with
obfuscated names (random identifiers: a same-schema document then shares structure, not names). Also measured: the
share of token-only matches (``lexical_overlap``: math problems of another schema with the query's names), and for
code the share of same-schema documents whose naming (plain or obfuscated) differs from the query's.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from influence_study.analyses.relations import (category_shares, describe, label_relations, model_values,
                                                relation_counts, with_documents)
from influence_study.analyses.scale import combined_evidence, scale_evidence
from influence_study.findings import finding, increasing

MATH, CODE_PLAIN, CODE_OBFUSCATED = "math", "code, plain names", "code, obfuscated names"
GROUP_ORDER = (MATH, CODE_PLAIN, CODE_OBFUSCATED)
CATEGORIES = ("same_schema", "lexical_overlap", "other")
MEASURES = ("share_same_schema", "share_lexical_overlap", "share_same_schema_other_naming", "chance_same_schema")


def query_groups(queries: pd.DataFrame) -> pd.DataFrame:
    """The math and code queries (``query_id, group, obfuscated``): group math, code with plain names or code with
    obfuscated names (``obfuscated`` missing on a code query counts as plain)."""
    chosen = queries[queries["analysis"].isin(["math", "code"])]
    obfuscated = chosen["obfuscated"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    is_math = (chosen["analysis"] == "math").to_numpy()
    group = np.where(is_math, MATH, np.where(obfuscated, CODE_OBFUSCATED, CODE_PLAIN))
    return pd.DataFrame({"query_id": chosen["query_id"].astype(str).to_numpy(), "group": group,
                         "obfuscated": obfuscated})


def math_code_table(ranked: pd.DataFrame, relations: pd.DataFrame, documents: pd.DataFrame,
                    groups: pd.DataFrame) -> pd.DataFrame:
    """One row per model and query of ``groups`` (:func:`query_groups`) from ``ranked`` (each query's top-k):
    shares of same-schema, token-only and other documents, the share of same-schema documents whose naming differs
    from the query's (code only; NaN for math), and the same-schema share expected by chance."""
    info = groups.set_index("query_id")
    ranked = ranked[ranked["query_id"].isin(set(info.index))]
    labelled = with_documents(label_relations(ranked, relations), documents, ["obfuscated"], suffix="_doc")
    labelled["category"] = labelled["relation"].where(labelled["relation"].isin(CATEGORIES[:2]), "other")
    table = category_shares(labelled, "category", CATEGORIES)
    query_naming = labelled["query_id"].map(info["obfuscated"])
    doc_naming = labelled["obfuscated_doc"].astype("boolean")
    other_naming = (labelled["relation"] == "same_schema") & (doc_naming != query_naming)
    labelled["other_naming"] = other_naming.fillna(False).astype(float)
    share_other = labelled.groupby(["model", "query_id"], sort=False)["other_naming"].mean().rename(
        "share_same_schema_other_naming").reset_index()
    n_docs = labelled.groupby(["model", "query_id"], sort=False)["n_docs"].first().reset_index()
    table = table.merge(share_other, on=["model", "query_id"]).merge(n_docs, on=["model", "query_id"])
    table.insert(1, "group", table["query_id"].map(info["group"]))
    table.loc[table["group"] == MATH, "share_same_schema_other_naming"] = float("nan")
    same_schema = relation_counts(relations, info.index, {"same_schema": ("same_schema",)})["same_schema"]
    table["chance_same_schema"] = table["query_id"].map(same_schema) / table["n_docs"]
    return table


def verdicts(statistics: Mapping) -> list:
    """The paper's math-and-code finding: the same-schema share of the top-k rises with size for math, for code
    with plain names and for code with obfuscated names."""
    models = statistics["models"]
    present = [g for g in GROUP_ORDER if statistics["queries"].get(g, 0) > 0]
    claim = ("For math word problems and algorithms (also with obfuscated names), large models' most influential "
             "sequences are structurally related solutions (same schema), small models' are token matches: the "
             "same-schema share of the top-k rises with size.")
    measured = "; ".join(f"{g} ({statistics['queries'][g]} queries), same-schema share of the top "
                         f"{statistics['k']}: " + describe(models, "share_same_schema", g) for g in present)
    checks = {f"{g}: same-schema share increases with model size":
              increasing(list(model_values(models, "share_same_schema", g).values())) for g in present}
    scale = statistics.get("scale", {})
    evidence = (combined_evidence([scale_evidence(scale[g], f"{g} same-schema share") for g in present if g in scale])
                if scale else None)
    return [finding("Math and code", claim, "qualitative (0.81B → 52B)", measured or "no math or code queries",
                    checks, evidence)]
