"""Figure of the linear datamodeling score: the LDS of each strategy per query family with its confidence interval,
and, for one query, the predicted change (summed scores of a subset) against the retrained model's log-probability."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.analyses.lds import ALL, STRATEGY_LABELS
from influence_study.study.io import read_json


def plot_lds(families: pd.DataFrame, points: pd.DataFrame, query_id: str | None) -> plt.Figure:
    """(a) Mean LDS per query family (``all`` first) and strategy, with 95% bootstrap intervals; (b) one panel per
    strategy: predicted change vs measured log p(completion) of the retrained models for ``query_id``."""
    study_theme()
    strategies = list(dict.fromkeys(families["strategy"]))
    fig, axes = plt.subplots(1, 1 + len(strategies), figsize=(4.2 + 3.0 * len(strategies), 3.6),
                             constrained_layout=True, sharey=False, gridspec_kw={"width_ratios": [1.6] + [1] * len(strategies)})
    bars = families.assign(strategy=families["strategy"].map(lambda s: STRATEGY_LABELS.get(s, s)),
                           label=families["analysis"] + " (" + families["queries"].astype(str) + ")")
    order = list(dict.fromkeys([*bars.loc[bars["analysis"] == ALL, "label"], *bars["label"]]))
    hue_order = [STRATEGY_LABELS.get(s, s) for s in strategies]
    sns.barplot(data=bars, y="label", x="lds", hue="strategy", order=order, hue_order=hue_order, ax=axes[0],
                errorbar=None, orient="h")
    height = 0.8 / len(hue_order)
    for i, label in enumerate(hue_order):  # the bootstrap intervals of the table (seaborn would recompute them)
        rows = bars[bars["strategy"] == label].set_index("label").reindex(order)
        y = np.arange(len(order)) - 0.4 + height * (i + 0.5)
        axes[0].errorbar(rows["lds"], y, xerr=[rows["lds"] - rows["ci_low"], rows["ci_high"] - rows["lds"]],
                         fmt="none", ecolor="0.2", capsize=2, lw=0.8)
    axes[0].axvline(0, color="0.3", lw=0.8)
    axes[0].set(ylabel="query family (queries)", xlabel="mean LDS (Spearman), 95% CI",
                title="linear datamodeling score")
    axes[0].legend(title=None, fontsize=7)
    for ax, strategy in zip(axes[1:], strategies):
        shown = points[(points["strategy"] == strategy) & (points["query_id"] == query_id)]
        sns.regplot(data=shown, x="predicted", y="measured", ax=ax, ci=None, scatter_kws={"s": 14},
                    line_kws={"lw": 0.8, "color": "0.4"})
        ax.set(xlabel="predicted: summed scores",
               ylabel="log p(completion), retrained" if ax is axes[1] else "")
        ax.set_title(f"{STRATEGY_LABELS.get(strategy, strategy)}\n{query_id}", fontsize=8)
    return fig


def figure(families: str, points: str, summary: str, png: str, pdf: str) -> None:
    """Step of ``fig_lds``."""
    query_id = read_json(summary)["statistics"]["scatter_query"]
    save_figure(plot_lds(pd.read_parquet(families), pd.read_parquet(points), query_id), png, pdf)
