"""Figure of the memorisation control: where each quote query's exact copies rank, per model size."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.plots.shares import model_order


def plot_memorisation(copies: pd.DataFrame, per_query: pd.DataFrame) -> plt.Figure:
    """Two panels: (a) the rank of every exact copy in its quote query's ranking (log scale; the dashed line is c,
    the number of copies: all copies on or below it fill the top c), per model; (b) the share of each query's top
    c that are copies (0.9: our threshold for "at the top")."""
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    order = model_order(per_query)
    if len(copies):
        sns.boxplot(data=copies, x="model", y="rank", order=order, color="0.9", showfliers=False, ax=axes[0])
        sns.stripplot(data=copies, x="model", y="rank", order=order, hue="query_id", size=3, alpha=0.7,
                      jitter=0.25, ax=axes[0], legend=False)
        axes[0].axhline(copies["copies"].max(), ls="--", lw=0.8, color="0.3", label="c (copies per quote)")
        axes[0].legend(fontsize="small")
    axes[0].set(yscale="log", xlabel="model (small → large)", ylabel="rank of the copy (1 = top)",
                title="ranks of the exact copies")
    measured = per_query.dropna(subset=["top_c_share"])
    if len(measured):
        sns.barplot(data=measured, x="model", y="top_c_share", order=order, color="tab:blue", alpha=0.5,
                    errorbar=None, ax=axes[1])
        sns.stripplot(data=measured, x="model", y="top_c_share", order=order, color="k", size=3, ax=axes[1])
    axes[1].axhline(0.9, ls=":", lw=0.8, color="tab:red")
    axes[1].set(ylim=(0, 1.05), xlabel="model (small → large)", ylabel="copies among the top c",
                title="share of the top c that are copies")
    return fig


def figure(copies: str, per_query: str, png: str, pdf: str) -> None:
    """Step of ``fig_memorisation``."""
    save_figure(plot_memorisation(pd.read_parquet(copies), pd.read_parquet(per_query)), png, pdf)
