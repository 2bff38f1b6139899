"""Figure of the layers analysis: how influence spreads over depth, where each query family's influence sits, and
how related the top documents are when influence is restricted to one third of the layers."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme

FAMILY_ORDER = ("facts", "quotes", "cross_lingual", "word_order", "math", "code", "translation", "roleplay")
RESTRICTION_ORDER = ("all", "lower", "middle", "upper")


def plot_layers(profile: pd.DataFrame, restricted: pd.DataFrame) -> plt.Figure:
    """Three panels: (a) mean share of |influence| of each query's top documents in the lower, middle and upper
    third of depth, per model; (b) centre of mass of influence (relative depth) per query family and model; (c)
    share of the top documents related in meaning when the score is restricted to one third (queries with a
    meaning-related document)."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    order = list(dict.fromkeys(profile["model"]))
    thirds = profile.melt(id_vars=["model", "query_id"], value_vars=["share_lower", "share_middle", "share_upper"],
                          var_name="third", value_name="share")
    thirds["third"] = thirds["third"].str.removeprefix("share_")
    sns.barplot(data=thirds, x="model", y="share", hue="third", order=order, errorbar="se", ax=axes[0])
    axes[0].axhline(1 / 3, color="0.3", linestyle="--", linewidth=0.8)
    axes[0].set(xlabel="model (small → large)", ylabel="mean share of |influence|", ylim=(0, 1),
                title="influence over depth (top documents)")
    present = set(profile["analysis"].dropna())
    families = [f for f in FAMILY_ORDER if f in present] + sorted(present - set(FAMILY_ORDER))  # a user's own last
    sns.pointplot(data=profile, x="analysis", y="centre_of_mass", hue="model", order=families, hue_order=order,
                  errorbar="se", dodge=0.4, linestyle="none", markersize=4, ax=axes[1])
    axes[1].axhline(0.5, color="0.3", linestyle="--", linewidth=0.8)
    axes[1].set(xlabel="query family", ylabel="centre of mass (0 = input, 1 = output)", ylim=(0, 1),
                title="where each family's influence sits")
    axes[1].tick_params(axis="x", rotation=30)
    chosen = restricted[restricted["has_meaning"]]
    if len(chosen):
        sns.pointplot(data=chosen, x="restriction", y="meaning_share", hue="model", order=RESTRICTION_ORDER,
                      hue_order=order, errorbar="se", dodge=0.3, markersize=4, ax=axes[2])
    else:  # a corpus without ground truth (not the synthetic world) says of no document that it shares a meaning
        axes[2].text(0.5, 0.5, "no query has a document related in meaning\n(no ground truth)", ha="center",
                     va="center", transform=axes[2].transAxes, color="0.4")
    axes[2].set(xlabel="influence restricted to", ylabel="share of top documents related in meaning", ylim=(0, 1),
                title="abstraction of the top documents by depth")
    return fig


def figure(profile: str, restricted: str, png: str, pdf: str) -> None:
    """Step of ``fig_layers``."""
    save_figure(plot_layers(pd.read_parquet(profile), pd.read_parquet(restricted)), png, pdf)
