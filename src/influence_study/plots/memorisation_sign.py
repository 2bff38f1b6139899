"""Figure of memorisation and the sign of influence: the measured loss gaps, the influence on held-out data by
group, and the AUCs of the sign, of minus the influence and of the self-influence for the memorised label."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.study.io import read_json

SCORES = {"auc_sign": "sign (negative)", "auc_minus_influence": "−influence", "auc_self_influence": "self-influence"}


def _signed_log(values: pd.Series) -> np.ndarray:
    """sign(x) log10(1 + |x|): influence spans orders of magnitude on both sides of zero."""
    return np.sign(values) * np.log10(1 + np.abs(values))


# Grouping -> its label on the AUC panel.
GROUPINGS = {"measured": "gap", "measured_per_token": "gap per token", "construction": "constructed"}


def plot_memorisation_sign(documents: pd.DataFrame, statistics: Mapping) -> plt.Figure:
    """Three panels: (a) the LDS model's loss gap (nats per document, retrains without minus with the document)
    per family; (b) influence on the validation documents (signed log scale) against the gap, memorised and
    generalised documents marked; (c) per model and grouping, the AUC for the memorised label of the sign of
    the influence, of minus the influence and of the self-influence (0.5: no separation)."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2), constrained_layout=True)
    lds_model = statistics.get("lds_model")
    measured = documents[(documents["model"] == lds_model) & documents["gap"].notna()] if lds_model else documents[:0]
    if len(measured):
        order = measured.groupby("family")["gap"].median().sort_values(ascending=False).index
        sns.boxplot(data=measured, y="family", x="gap", order=order, color="0.85", showfliers=False, ax=axes[0])
        sns.stripplot(data=measured, y="family", x="gap", order=order, size=1.5, alpha=0.4, color="k", ax=axes[0])
        axes[0].axvline(0, ls=":", color="0.4", lw=0.8)
        shown = measured.assign(influence=_signed_log(measured["valid_influence"]),
                                group=measured["measured"].fillna("middle"))
        sns.scatterplot(data=shown, x="gap", y="influence", hue="group", hue_order=["memorised", "middle",
                        "generalised"], palette={"memorised": "tab:red", "middle": "0.75", "generalised": "tab:blue"},
                        s=8, linewidth=0, alpha=0.7, ax=axes[1])
        canaries = shown[shown["family"].isin(["canaries", "quotes"])]
        axes[1].scatter(canaries["gap"], canaries["influence"], s=18, facecolors="none", edgecolors="k", lw=0.6,
                        label="canaries and quotes")
        axes[1].axhline(0, ls=":", color="0.4", lw=0.8)
        axes[1].legend(fontsize="small", markerscale=2)
    axes[0].set(xlabel="loss gap (nats; without − with)", ylabel="", title=f"measured memorisation ({lds_model})")
    axes[1].set(xlabel="loss gap (nats)", ylabel="influence on validation (signed log10)",
                title="held-out influence against the gap")
    rows = [{"model": model, "grouping": grouping, "score": label, "auc": entry[grouping][key]}
            for model, entry in statistics["models"].items() for grouping in GROUPINGS
            if grouping in entry for key, label in SCORES.items()]
    aucs = pd.DataFrame(rows, columns=["model", "grouping", "score", "auc"])
    if len(aucs):
        aucs["case"] = aucs["model"] + "\n" + aucs["grouping"].map(GROUPINGS)
        sns.barplot(data=aucs, x="case", y="auc", hue="score", hue_order=list(SCORES.values()), ax=axes[2])
        axes[2].tick_params(axis="x", labelsize="small")
        axes[2].legend(fontsize="small")
    axes[2].axhline(0.5, ls=":", color="0.4", lw=0.8)
    axes[2].set(ylim=(0, 1.02), xlabel="", ylabel="AUC for 'memorised'", title="does the score separate the groups?")
    return fig


def figure(per_document: str, summary: str, png: str, pdf: str) -> None:
    """Step of ``fig_memorisation_sign``."""
    save_figure(plot_memorisation_sign(pd.read_parquet(per_document), read_json(summary)["statistics"]), png, pdf)
