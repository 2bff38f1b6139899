"""Figure of the abstraction analysis: the abstraction index per model size, the relations of each model's top-k
documents stacked, and the share of the same fact in another language."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.plots.shares import model_order, share_lines, stacked_shares

RELATION_LABELS = {
    "share_same_fact": "same fact",
    "share_same_fact_other_language": "same fact, other language",
    "share_same_fact_flipped": "same fact, flipped order",
    "share_same_schema": "same schema",
    "share_same_theme": "same theme",
    "share_lexical_overlap": "shared tokens only",
    "share_exact_copy": "exact copy",
    "share_other_distractor": "unrelated: distractor of another query",
    "unrelated_rest": "unrelated: other",
}


def plot_abstraction(per_query: pd.DataFrame, by_model: pd.DataFrame) -> plt.Figure:
    """Three panels: (a) the abstraction index (meaning / (meaning + token-only) share of the top-k) per model with
    its 95% interval, over all eligible queries and per query analysis; (b) the mean share of each relation in the
    top-k, stacked (meaning in blues and greens, token-only in orange, unrelated in greys: distractors built for
    other queries, and the rest); (c) the share of the same fact in another language, with its interval."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True)
    order = model_order(per_query)
    index = by_model[by_model["measure"] == "abstraction_index"]
    lines = {a: rows for a, rows in index.groupby("analysis", sort=False)}
    share_lines(axes[0], lines, order, "meaning / (meaning + shared tokens)", ylabel="abstraction index",
                legend_title="queries")
    axes[0].axhline(0.5, color="0.5", lw=0.8, ls=":")
    meaning = sns.color_palette("Blues_r", 3) + sns.color_palette("Greens_r", 2)
    colors = [*meaning, sns.color_palette()[1], sns.color_palette()[4], "0.65", "0.85"]
    per_query = per_query.assign(unrelated_rest=per_query["share_unrelated"] - per_query["share_other_distractor"])
    columns = {c: label for c, label in RELATION_LABELS.items() if c in per_query}
    stacked_shares(axes[1], per_query, columns, colors, order)
    axes[1].set(ylabel="share of the top-k", title="relation of the top-k documents")
    axes[1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    overall = by_model[by_model["analysis"] == "all"]
    share_lines(axes[2], {"same fact, other language": overall[overall["measure"] == "cross_lingual_share"],
                          "meaning (any)": overall[overall["measure"] == "share_meaning"]}, order,
                "cross-lingual matches")
    return fig


def figure(per_query: str, by_model: str, png: str, pdf: str) -> None:
    """Step of ``fig_abstraction``."""
    save_figure(plot_abstraction(pd.read_parquet(per_query), pd.read_parquet(by_model)), png, pdf)
