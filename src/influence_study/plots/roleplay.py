"""Figure of the role-play analysis: the themes of each model's top-k documents for the role-play queries."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.plots.shares import model_order, share_lines, stacked_shares

THEME_LABELS = {
    "share_ai_self_preservation": "AI self-preservation",
    "share_nonai_survival": "non-AI survival",
    "share_ai_risk_essay": "AI-risk essay",
    "share_themed_distractor": "themed distractor (shared tokens)",
    "share_other": "other",
}


def plot_roleplay(per_query: pd.DataFrame, by_model: pd.DataFrame) -> plt.Figure:
    """Two panels: (a) the mean share of each theme in the role-play queries' top-k, stacked per model (survival
    themes in greens, the themed distractors in orange, the rest in grey); (b) the survival share (the three
    survival themes together) and the themed-distractor share per model with 95% intervals over queries."""
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    order = model_order(per_query)
    colors = [*sns.color_palette("Greens_r", 3), sns.color_palette()[1], "0.85"]
    stacked_shares(axes[0], per_query, THEME_LABELS, colors, order)
    axes[0].set(ylabel="share of the top-k", title=f"themes of the top-k ({per_query['query_id'].nunique()} queries)")
    axes[0].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    lines = {"survival themes": by_model[by_model["measure"] == "share_survival"],
             "themed distractor": by_model[by_model["measure"] == "share_themed_distractor"]}
    share_lines(axes[1], lines, order, "survival vs token matches")
    return fig


def figure(per_query: str, by_model: str, png: str, pdf: str) -> None:
    """Step of ``fig_roleplay``."""
    save_figure(plot_roleplay(pd.read_parquet(per_query), pd.read_parquet(by_model)), png, pdf)
