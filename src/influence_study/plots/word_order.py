"""Figure of the word-order analysis: the influence of each probe group per model size, relative to the group
the query's own wording predicts (rewordings with the name after the relation; translation pairs in the query's
order), as the paper's bars."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, study_theme
from influence_study.analyses.word_order import FACT_GROUPS, REFERENCE_GROUP, TRANSLATION_GROUPS

LABELS = {"reworded_name_after": "reworded\n(name after)", "name_removed": "name\nremoved",
          "semantic_change": "semantic\nchange", "irrelevant": "irrelevant", "flipped": "flipped\n(name first)",
          "flipped_relation_removed": "flipped,\nrelation removed", "same_order": "same order\n(en → other)",
          "flipped_order": "flipped order\n(other → en)"}


def _bars(ax, groups: pd.DataFrame, probe_set: str, names, models) -> None:
    """Grouped bars of one probe set: mean / reference mean per group (x) and model (colour), bootstrap CIs."""
    part = groups[groups["probe_set"] == probe_set]
    width = 0.8 / max(len(models), 1)
    colours = plt.cm.viridis(np.linspace(0.1, 0.85, max(len(models), 1)))
    for i, model in enumerate(models):
        rows = part[part["model"] == model].set_index("group").reindex(names)
        reference = rows.loc[REFERENCE_GROUP[probe_set], "mean"]
        scale = reference if np.isfinite(reference) and reference > 0 else np.nan
        mean, low, high = (rows[c].to_numpy(np.float64) / scale for c in ("mean", "ci_low", "ci_high"))
        x = np.arange(len(names)) + (i - (len(models) - 1) / 2) * width
        label = f"{model} (reference {reference:.2g} nats)" if np.isfinite(reference) else f"{model} (no probes)"
        ax.bar(x, np.nan_to_num(mean), width, color=colours[i], label=label)
        ax.errorbar(x, mean, yerr=[np.nan_to_num(mean - low), np.nan_to_num(high - mean)], fmt="none", ecolor="0.2",
                    lw=0.8, capsize=2)
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xticks(np.arange(len(names)), labels=[LABELS[g] for g in names], fontsize=7)


def plot_word_order(groups: pd.DataFrame) -> plt.Figure:
    """Two panels: (a) the six fact-probe groups, (b) translation pairs in the query's and the flipped order; bars
    are each model's group mean divided by its reference group's mean (so sizes whose influence differs by orders
    of magnitude share an axis; the reference, in nats per added copy, is in the legend), with 95% bootstrap CIs."""
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), constrained_layout=True, gridspec_kw={"width_ratios": [3, 1.3]})
    models = list(dict.fromkeys(groups["model"]))
    _bars(axes[0], groups, "fact", FACT_GROUPS, models)
    axes[0].axhline(1 / 3, color="tab:red", ls=":", lw=1, label="check: flipped ≤ 1/3")
    axes[0].set(ylabel="influence / influence of rewordings", title="held-out facts: probe groups (not trained on)")
    axes[0].legend(fontsize=7, title="model (small → large)", title_fontsize=7)
    _bars(axes[1], groups, "translation", TRANSLATION_GROUPS, models)
    axes[1].axhline(1 / 3, color="tab:red", ls=":", lw=1)
    axes[1].set(ylabel="influence / same-order influence", title="translation pairs")
    return fig


def figure(groups: str, png: str, pdf: str) -> None:
    """Step of ``fig_word_order``."""
    save_figure(plot_word_order(pd.read_parquet(groups)), png, pdf)
