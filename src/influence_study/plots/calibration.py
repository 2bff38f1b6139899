"""Figure of the magnitude calibration: the measured change of log p(completion) after retraining with added
copies against the change the influence scores predict, the ratio for each target's own query, and, per model, the
share of queries whose top document's per-copy prediction exceeds the query's NLL."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.analyses.calibration import ALL, RATIO_BAND


def plot_calibration(points: pd.DataFrame, targets: pd.DataFrame, shares: pd.DataFrame) -> plt.Figure:
    """(a) measured vs predicted change for every (target retrain, query) pair, the targets' own queries marked,
    with the identity line; (b) measured/predicted ratio of each target's own query with its noise interval, the
    band of a factor 2 shaded; (c) per model (small to large), the share of queries whose top document's predicted
    per-copy gain exceeds the query's NLL, with its 95% bootstrap interval."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    shown = points.assign(pair=np.where(points["own"].astype(bool), "target's own query", "other queries"))
    sns.scatterplot(data=shown[~shown["own"].astype(bool)], x="predicted", y="measured", s=6, alpha=0.35,
                    color="0.5", label="other queries", ax=axes[0], edgecolor=None)
    sns.scatterplot(data=shown[shown["own"].astype(bool)], x="predicted", y="measured", s=40, color="tab:red",
                    marker="D", label="target's own query", ax=axes[0])
    if len(points):
        lims = np.nanpercentile(np.r_[points["predicted"], points["measured"]], [0.5, 99.5])
        lims = [min(lims[0], points.loc[points["own"].astype(bool), ["predicted", "measured"]].min().min(), 0),
                max(lims[1], points.loc[points["own"].astype(bool), ["predicted", "measured"]].max().max(), 0)]
        axes[0].plot(lims, lims, color="0.3", lw=0.8, ls="--", label="measured = predicted")
    axes[0].axhline(0, color="0.7", lw=0.6)
    axes[0].set(xlabel="predicted: copies × Δ score_norm (nats)", ylabel="measured: Δ log p vs control (nats)",
                title="retrained with added copies")
    axes[0].legend(fontsize=7)

    ordered = targets.reset_index(drop=True)
    y = np.arange(len(ordered))
    axes[1].axvspan(*RATIO_BAND, color="tab:green", alpha=0.1, label="within a factor 2")
    axes[1].errorbar(ordered["ratio"], y, xerr=[ordered["ratio"] - ordered["ratio_low"],
                                                ordered["ratio_high"] - ordered["ratio"]],
                     fmt="o", color="tab:red", ecolor="0.3", capsize=2, lw=0.8)
    axes[1].axvline(1.0, color="0.3", lw=0.8, ls="--")
    axes[1].axvline(0.0, color="0.6", lw=0.6)
    axes[1].set_yticks(y, [f"{r.query_id}\n({r.doc_id})" for r in ordered.itertuples()], fontsize=6)
    axes[1].set(xlabel="measured / predicted (noise interval)", title="each target's own query",
                ylim=(-0.6, max(len(ordered), 1) - 0.4))
    axes[1].legend(fontsize=7, loc="lower right")

    overall = shares[shares["analysis"] == ALL].reset_index(drop=True)
    sns.barplot(data=overall, x="model", y="share_exceeds_nll", color="tab:blue", ax=axes[2], errorbar=None)
    axes[2].errorbar(np.arange(len(overall)), overall["share_exceeds_nll"],
                     yerr=[overall["share_exceeds_nll"] - overall["share_exceeds_nll_low"],
                           overall["share_exceeds_nll_high"] - overall["share_exceeds_nll"]],
                     fmt="none", ecolor="0.2", capsize=3, lw=0.8)
    for x, row in enumerate(overall.itertuples()):
        axes[2].text(x, min(row.share_exceeds_nll_high, 0.9) + 0.02, f"{row.share_exceeds_nll:.0%}\n(n={row.queries})",
                     ha="center", va="bottom", fontsize=7)
    axes[2].set(xlabel="model (small → large)", ylabel="share of queries", ylim=(0, 1),
                title="top document's per-copy gain > NLL")
    return fig


def figure(points: str, targets: str, shares: str, png: str, pdf: str) -> None:
    """Step of ``fig_calibration``."""
    save_figure(plot_calibration(pd.read_parquet(points), pd.read_parquet(targets), pd.read_parquet(shares)),
                png, pdf)
