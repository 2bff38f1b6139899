"""Figure of the cross-lingual analysis: heatmaps of the translated queries' influence on an English query's top
documents (as in the paper's figure), and the mean ratio over all facts per model size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme


def _languages(scores: pd.DataFrame) -> list[str]:
    others = sorted(set(scores["language"]) - {"en"})
    return ["en", *others]


def plot_cross_lingual(scores: pd.DataFrame, ratios: pd.DataFrame) -> plt.Figure:
    """One heatmap per example fact (rows of panels) and model (columns): rows are the English query's top
    documents by rank, columns the query's languages, values the influence divided by the English query's top
    score. Bottom: the mean ratio of translated to English influence on those documents per model and language,
    split by whether the fact's training documents include that language (error bars: 95% bootstrap CI)."""
    study_theme()
    order = list(dict.fromkeys(ratios["model"])) or list(dict.fromkeys(scores.get("model", [])))
    examples = list(dict.fromkeys(scores.loc[scores["example"], "english_id"])) if len(scores) else []
    n_cols = max(len(order), 1)
    fig = plt.figure(figsize=(2.6 * n_cols + 1, 2.6 * len(examples) + 3.2), constrained_layout=True)
    grid = fig.add_gridspec(len(examples) + 1, n_cols, height_ratios=[1.0] * len(examples) + [1.2])
    languages = _languages(scores) if len(scores) else []
    shown = scores.loc[scores["example"], "normalised"] if len(scores) else pd.Series(dtype=float)
    # the colour scale covers the English top score (1) and most cells; the few beyond it saturate
    bound = max(1.0, float(np.nanquantile(np.abs(shown), 0.95))) if len(shown) else 1.0
    for row, english_id in enumerate(examples):
        for col, model in enumerate(order):
            ax = fig.add_subplot(grid[row, col])
            part = scores[(scores["model"] == model) & (scores["english_id"] == english_id)]
            matrix = part.pivot(index="rank", columns="language", values="normalised").reindex(columns=languages)
            sns.heatmap(matrix, ax=ax, cmap="RdBu_r", vmin=-bound, vmax=bound, cbar=col == n_cols - 1,
                        cbar_kws={"extend": "both", "label": "influence / English top"}, annot=False,
                        linewidths=0.2)
            fact = part["fact_id"].iloc[0] if len(part) else english_id
            ax.set(title=f"{model}: {fact}", xlabel="query language" if row == len(examples) - 1 else "",
                   ylabel="English top doc (rank)" if col == 0 else "")
    ax = fig.add_subplot(grid[len(examples), :])
    if len(ratios):
        shown = ratios.assign(training=np.where(ratios["seen_in_language"], "fact also trained in that language",
                                                "fact trained in English only"),
                              series=lambda f: f["language"] + ", " + f["training"])
        sns.pointplot(data=shown, x="model", y="ratio", hue="series", order=order,
                      hue_order=sorted(set(shown["series"])), errorbar=("ci", 95), n_boot=500, seed=0, dodge=0.3,
                      markersize=4, ax=ax)
    ax.axhline(0, color="0.3", linewidth=0.8)
    ax.axhline(1, color="0.3", linestyle="--", linewidth=0.8)
    ax.set(xlabel="model (small → large)", ylabel="translated / English influence",
           title="over all facts: influence of the English top documents on the translated query")
    return fig


def figure(scores: str, ratios: str, png: str, pdf: str) -> None:
    """Step of ``fig_cross_lingual``."""
    save_figure(plot_cross_lingual(pd.read_parquet(scores), pd.read_parquet(ratios)), png, pdf)
