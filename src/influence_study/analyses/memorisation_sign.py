"""Memorisation and the sign of influence (the claims of Kounavis et al. 2023, treated as hypotheses).

Memorisation is defined operationally, not assumed:

- **measured** (the LDS model only): a training document's loss gap, the mean loss of the document (summed over its
  tokens, read as ``EOS document``) in the LDS retrains trained WITHOUT it minus the mean in those trained WITH it
  (Feldman & Zhang's subsampled estimator). The top ``memorised_share`` of documents by gap count as memorised, the
  same share with the smallest gap as generalised;
- **measured per token** (the LDS model only; added after the first run of the study showed that the summed gap
  grows with the document's length, so long code and role-play documents filled the measured group): the same
  shares ranked by the gap divided by the document's number of predicted tokens;
- **by construction** (every model): the canaries (random digit codes) and the quote copies are known memorised
  items; every other training document is the comparison group.

For each training document and model: its **self-influence** ``∇log p(z)ᵀ(G+λI)⁻¹∇log p(z)`` and its **influence on
the validation documents**, the change of their total log-likelihood from adding it (the study's sign: positive
helps), from the model's EK-FAC factors. The claim tested: the sign of the influence on held-out data separates
memorised from generalised documents (memorised ones do not help, or hurt, held-out data). Statistics: the share of
negative influence per group and the AUCs, for the memorised label, of the sign (negative = 1), of minus the
influence and of the self-influence.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import roc_auc_score

from influence_study.analyses.intervals import auc_intervals, describe_interval, interval_check, two_sample_interval
from influence_study.findings import Evidence, finding

KNOWN_MEMORISED = ("canaries", "quotes")
SIGN_AUC_THRESHOLD = 0.6  # ours: "separates" read as an AUC of the sign of at least 0.6 (0.5 = no separation)
MEASURED = ("measured", "measured_per_token")  # the groupings by the LDS retrains' loss gap
INFLUENCE_COLUMNS = ["doc_id", "family", "n_tokens", "self_influence", "valid_influence"]


# --- measured memorisation ------------------------------------------------------------------------------------


def loss_gaps(document_losses: pd.DataFrame, min_subsets: int) -> pd.DataFrame:
    """Per training document (``document_losses``: ``subset, doc_id, in_subset, logprob, n_tokens`` of every
    retrain): ``loss_in`` and ``loss_out`` (mean summed loss, nats, over the retrains with and without it), their
    counts, ``gap = loss_out - loss_in`` and ``gap_per_token``; documents with fewer than ``min_subsets`` retrains
    on either side are dropped."""
    losses = document_losses.assign(loss=-document_losses["logprob"].astype(np.float64))
    grouped = losses.groupby(["doc_id", "in_subset"])["loss"].agg(["mean", "size"]).unstack("in_subset")
    table = pd.DataFrame({
        "loss_in": grouped.get(("mean", True)), "loss_out": grouped.get(("mean", False)),
        "n_in": grouped.get(("size", True)), "n_out": grouped.get(("size", False))}).fillna({"n_in": 0, "n_out": 0})
    table = table[(table["n_in"] >= min_subsets) & (table["n_out"] >= min_subsets)].copy()
    tokens = losses.groupby("doc_id")["n_tokens"].first()
    table["gap"] = table["loss_out"] - table["loss_in"]
    table["gap_per_token"] = table["gap"] / tokens.reindex(table.index).clip(lower=1)
    table[["n_in", "n_out"]] = table[["n_in", "n_out"]].astype(int)
    return table.reset_index()


def measured_groups(gaps: pd.DataFrame, share: float, column: str = "gap") -> pd.Series:
    """``memorised`` for the ``share`` of documents with the largest ``column`` (``gap`` or ``gap_per_token``),
    ``generalised`` for the same share with the smallest, ``None`` (left out) otherwise; ties by ``doc_id``.
    Index: ``doc_id``."""
    ordered = gaps.sort_values([column, "doc_id"], ascending=[False, True], kind="stable")["doc_id"].to_numpy()
    n = int(np.floor(share * len(ordered)))
    groups = pd.Series(None, index=pd.Index(ordered, name="doc_id"), dtype=object)
    if n:
        groups.iloc[:n] = "memorised"
        groups.iloc[-n:] = "generalised"
    return groups


def construction_groups(influence: pd.DataFrame) -> pd.Series:
    """``memorised`` for canaries and quote copies, ``generalised`` for every other training document."""
    known = influence["family"].isin(KNOWN_MEMORISED).to_numpy()
    return pd.Series(np.where(known, "memorised", "generalised"), index=pd.Index(influence["doc_id"], name="doc_id"))


# --- statistics -------------------------------------------------------------------------------------------------


def _auc(labels: np.ndarray, scores: np.ndarray) -> float:
    labels = np.asarray(labels, dtype=bool)
    return float(roc_auc_score(labels, scores)) if 0 < labels.sum() < len(labels) else float("nan")


def separation(influence: pd.DataFrame, groups: pd.Series, seed: int = 0) -> dict:
    """For the documents of ``influence`` that have a group: count, share of negative validation influence, mean
    self-influence per group, and the AUCs for the memorised label of the sign (negative = 1), of minus the
    validation influence and of the self-influence; ``intervals``: 95% bootstrap intervals over the documents of the
    AUC of the sign, of the self-influence and of the difference of the negative shares (memorised − generalised)."""
    labelled = influence.assign(group=influence["doc_id"].map(groups)).dropna(subset=["group"])
    memorised = (labelled["group"] == "memorised").to_numpy()
    negative = (labelled["valid_influence"] < 0).to_numpy()
    out = {"documents": {g: int((labelled["group"] == g).sum()) for g in ("memorised", "generalised")}}
    for group in ("memorised", "generalised"):
        part = labelled[labelled["group"] == group]
        out[group] = {"negative_share": float((part["valid_influence"] < 0).mean()) if len(part) else float("nan"),
                      "median_valid_influence": float(part["valid_influence"].median()) if len(part) else float("nan"),
                      "median_self_influence": float(part["self_influence"].median()) if len(part) else float("nan")}
    out["auc_sign"] = _auc(memorised, negative.astype(float))
    out["auc_minus_influence"] = _auc(memorised, -labelled["valid_influence"].to_numpy())
    out["auc_self_influence"] = _auc(memorised, labelled["self_influence"].to_numpy())
    # v2: stratified bootstrap over the documents (intervals.auc_intervals), and the difference of the negative shares
    # resampling each group's documents
    out["intervals"] = {
        **auc_intervals(memorised, {"auc_sign": negative.astype(float),
                                    "auc_self_influence": labelled["self_influence"].to_numpy(np.float64)},
                        seed=seed),
        "negative_share_difference": two_sample_interval(negative[memorised].astype(float),
                                                         negative[~memorised].astype(float), seed=seed)}
    return out


def document_table(influence: Mapping[str, pd.DataFrame], gaps: pd.DataFrame | None, lds_model: str | None,
                   share: float) -> pd.DataFrame:
    """One row per model and training document: the influence columns, ``construction`` group, and for the LDS
    model the ``gap`` columns and the ``measured`` and ``measured_per_token`` groups."""
    frames = []
    for model, table in influence.items():
        frame = table.assign(model=model, construction=table["doc_id"].map(construction_groups(table)).to_numpy())
        if gaps is not None and model == lds_model:
            frame = frame.merge(gaps[["doc_id", "loss_in", "loss_out", "gap", "gap_per_token"]], on="doc_id",
                                how="left")
            frame["measured"] = frame["doc_id"].map(measured_groups(gaps, share)).to_numpy()
            frame["measured_per_token"] = frame["doc_id"].map(
                measured_groups(gaps, share, "gap_per_token")).to_numpy()
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    for column in ("loss_in", "loss_out", "gap", "gap_per_token", *MEASURED):
        if column not in table:
            table[column] = None if column in MEASURED else np.nan
    return table[["model", *INFLUENCE_COLUMNS, "construction", *MEASURED, "loss_in", "loss_out", "gap",
                  "gap_per_token"]]


def statistics(documents: pd.DataFrame, lds_model: str | None, seed: int = 0) -> dict:
    """Per model and grouping (``construction`` for every model, :data:`MEASURED` for the LDS model): the
    :func:`separation` statistics; for the LDS model also the median gap per family and the Spearman correlation of
    the gap with the self-influence and with the validation influence."""
    out: dict = {"lds_model": lds_model, "models": {}}
    for model, group in documents.groupby("model", sort=False):
        entry = {"construction": separation(group, group.set_index("doc_id")["construction"], seed)}
        measured = group.dropna(subset=["gap"])
        if model == lds_model and len(measured):
            for grouping in MEASURED:
                entry[grouping] = separation(group, group.set_index("doc_id")[grouping].dropna(), seed)
            entry["median_gap_by_family"] = {f: float(v) for f, v in
                                             measured.groupby("family")["gap"].median().items()}
            entry["spearman_gap_self_influence"] = float(stats.spearmanr(measured["gap"],
                                                                         measured["self_influence"])[0])
            entry["spearman_gap_valid_influence"] = float(stats.spearmanr(measured["gap"],
                                                                          measured["valid_influence"])[0])
        out["models"][model] = entry
    return out


def verdicts(stats: Mapping) -> list:
    """The claims, checked per model and grouping:

    1. the sign of a document's influence on held-out data separates memorised from generalised documents: the
       AUC of the sign is at least 0.6 (ours) and memorised documents have a larger share of negative influence;
    2. memorised documents have larger self-influence (the usual memorisation score; AUC > 0.5).

    v2: the same AUCs with stratified bootstrap intervals over the documents against the same bounds, and the
    difference of the negative shares (memorised − generalised) above 0.
    """
    sign_checks, self_checks, sign_measured, self_measured = {}, {}, [], []
    sign_v2, self_v2, sign_text, self_text = [], [], [], []
    for model, entry in stats["models"].items():
        for grouping in (*MEASURED, "construction"):
            if grouping not in entry:
                continue
            s = entry[grouping]
            if np.isnan(s["auc_sign"]):
                continue
            label = f"{model} ({grouping})"
            sign_measured.append(f"{label}: negative share {s['memorised']['negative_share']:.0%} memorised vs "
                                 f"{s['generalised']['negative_share']:.0%} generalised, AUC of the sign "
                                 f"{s['auc_sign']:.2f}, of -influence {s['auc_minus_influence']:.2f}")
            sign_checks[f"{label}: AUC of the sign ≥ {SIGN_AUC_THRESHOLD}"] = s["auc_sign"] >= SIGN_AUC_THRESHOLD
            sign_checks[f"{label}: more negative influence among memorised"] = (
                s["memorised"]["negative_share"] > s["generalised"]["negative_share"])
            self_measured.append(f"{label}: AUC {s['auc_self_influence']:.2f}")
            self_checks[f"{label}: AUC of self-influence > 0.5"] = s["auc_self_influence"] > 0.5
            node = s.get("intervals", {})
            n = sum(s.get("documents", {}).values())
            sign_v2 += [interval_check(f"{label}: AUC of the sign > {SIGN_AUC_THRESHOLD} (ours; stratified "
                                       f"bootstrap over {n} documents)", node.get("auc_sign"), SIGN_AUC_THRESHOLD),
                        interval_check(f"{label}: negative share memorised − generalised > 0 (bootstrap over each "
                                       f"group's documents)", node.get("negative_share_difference"), 0.0)]
            sign_text.append(f"{label}: AUC of the sign {describe_interval(node.get('auc_sign'))}, negative share "
                             f"difference {describe_interval(node.get('negative_share_difference'))}")
            self_v2.append(interval_check(f"{label}: AUC of self-influence > 0.5 (stratified bootstrap over {n} "
                                          f"documents)", node.get("auc_self_influence"), 0.5))
            self_text.append(f"{label}: {describe_interval(node.get('auc_self_influence'))}")
    return [
        finding("Memorisation and sign", "The sign of a training point's influence indicates whether the model "
                "memorises it rather than generalises from it.", "claim only (Kounavis et al. 2023)",
                "; ".join(sign_measured) or "no grouping measured", sign_checks,
                Evidence("AUC of negative validation influence for the memorised label, and the difference of the "
                         "negative shares [95% CI]: " + ("; ".join(sign_text) or "no grouping measured"),
                         "chance (AUC 0.5; no difference between the groups' negative shares)", sign_v2)),
        finding("Memorisation and sign", "Memorised training points have larger self-influence.",
                "a standard memorisation score (Feldman & Zhang 2020; Pruthi et al. 2020)",
                "; ".join(self_measured) or "no grouping measured", self_checks,
                Evidence("AUC of self-influence for the memorised label [95% CI]: "
                         + ("; ".join(self_text) or "no grouping measured"), "chance (AUC 0.5)", self_v2)),
    ]
