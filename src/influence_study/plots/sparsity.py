"""Figure of the sparsity analysis: log-log survival of a typical query's top tail per model, and the
power-law exponent and top-1% share per model size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme


def plot_sparsity(per_query: pd.DataFrame, curves: pd.DataFrame) -> plt.Figure:
    """Three panels: (a) P(X >= x) of the top tail of each model's median-exponent query, log-log;
    (b) the fitted exponent per query and model; (c) the share of positive influence held by the top 1%."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)
    order = list(dict.fromkeys(per_query["model"]))
    positive = curves[curves["score_norm"] > 0]
    sns.lineplot(data=positive, x="score_norm", y="survival", hue="model", hue_order=order, ax=axes[0],
                 drawstyle="steps-post")
    axes[0].set(xscale="log", yscale="log", xlabel="influence (nats per added copy)", ylabel="P(X ≥ x) in the tail",
                title="top tail of a typical query")
    fitted = per_query.dropna(subset=["alpha"]).copy()
    fitted["power law"] = np.where(fitted["rejected"].astype(bool), "rejected (p ≤ 0.1)", "not rejected")
    sns.boxplot(data=fitted, x="model", y="alpha", order=order, color="0.9", showfliers=False, ax=axes[1])
    sns.stripplot(data=fitted, x="model", y="alpha", order=order, hue="power law", size=2.5, alpha=0.6, ax=axes[1])
    axes[1].axhspan(2.0, 4.3, color="tab:green", alpha=0.08, label="paper's range")
    axes[1].set(xlabel="model (small → large)", ylabel="power-law exponent α", title="exponent per query")
    sns.boxplot(data=per_query, x="model", y="top1pct_share", order=order, color="tab:blue", showfliers=False,
                ax=axes[2])
    axes[2].axhspan(0.12, 0.52, color="tab:green", alpha=0.08)
    axes[2].set(xlabel="model (small → large)", ylabel="share of positive influence", ylim=(0, 1),
                title="held by the top 1% of documents")
    return fig


def figure(table: str, curves: str, png: str, pdf: str) -> None:
    """Step of ``fig_sparsity``."""
    save_figure(plot_sparsity(pd.read_parquet(table), pd.read_parquet(curves)), png, pdf)
