"""Figure of the keyword-overlap analysis: how much of the query's keywords its top documents contain, for the
gradient dot product and EK-FAC, per model size."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme

LABELS = {"identity": "gradient dot product", "ekfac": "EK-FAC"}


def plot_keyword_overlap(table: pd.DataFrame) -> plt.Figure:
    """Two panels per model: (a) mean fraction of the query's keywords present in its top documents, per strategy,
    with the chance level (all training documents) as a grey marker; (b) share of top documents containing at least
    one keyword. Error bars: standard error over queries."""
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), constrained_layout=True)
    if table.empty:
        for ax in axes:
            ax.text(0.5, 0.5, "not measured: no gradient dot product scores", ha="center", va="center")
            ax.set_axis_off()
        return fig
    shown = table.assign(strategy=table["strategy"].map(LABELS).fillna(table["strategy"]))
    order = list(dict.fromkeys(table["model"]))
    hue_order = [LABELS[s] for s in LABELS if LABELS[s] in set(shown["strategy"])]
    sns.barplot(data=shown, x="model", y="keyword_overlap", hue="strategy", order=order, hue_order=hue_order,
                errorbar="se", ax=axes[0])
    chance = table.drop_duplicates(["model", "query_id"]).groupby("model", sort=False)["chance_overlap"].mean()
    axes[0].scatter(range(len(order)), chance.reindex(order), color="0.4", marker="_", s=400, zorder=3,
                    label="chance (all documents)")
    axes[0].legend()
    axes[0].set(xlabel="model (small → large)", ylabel="share of the query's keywords",
                title="keywords in the top documents")
    sns.barplot(data=shown, x="model", y="any_keyword", hue="strategy", order=order, hue_order=hue_order,
                errorbar="se", ax=axes[1])
    axes[1].set(xlabel="model (small → large)", ylabel="share of top documents", ylim=(0, 1),
                title="top documents with at least one keyword")
    return fig


def figure(table: str, png: str, pdf: str) -> None:
    """Step of ``fig_keyword_overlap``."""
    save_figure(plot_keyword_overlap(pd.read_parquet(table)), png, pdf)
