"""Figure of influence-guided removal: held-out loss after removing the most harmful, random or no training
examples, and the share of flipped labels among the removed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, study_theme

COLOURS = {"none": "0.45", "harmful": "tab:red", "random": "tab:blue"}
OFFSETS = {"harmful": -0.15, "random": 0.15}


def plot_removal(per_run: pd.DataFrame, conditions: pd.DataFrame) -> plt.Figure:
    """One column per model. Top: held-out loss against k (dots: seeds; markers and bars: mean with its bootstrap
    interval); the grey line and band are the mean and interval without removal. Bottom: the share of flipped
    labels among the removed examples per k (dots: seeds), the dotted line the share among all training
    examples."""
    study_theme()
    models = list(dict.fromkeys(conditions["model"])) or ["(no runs)"]
    fig, axes = plt.subplots(2, len(models), figsize=(4.2 * len(models) + 0.8, 6.4), squeeze=False,
                             constrained_layout=True)
    jitter = np.random.default_rng(0)
    for column, model in enumerate(models):
        loss_ax, share_ax = axes[0, column], axes[1, column]
        runs = per_run[per_run["model"] == model]
        summary = conditions[conditions["model"] == model]
        ks = sorted(int(k) for k in summary.loc[summary["condition"] != "none", "k"].unique())
        none = summary[summary["condition"] == "none"]
        if len(none):
            row = none.iloc[0]
            loss_ax.axhline(row["eval_loss"], color=COLOURS["none"], lw=1, label="none removed")
            loss_ax.axhspan(row["eval_loss_low"], row["eval_loss_high"], color=COLOURS["none"], alpha=0.15, lw=0)
        for condition, offset in OFFSETS.items():
            for i, k in enumerate(ks):
                seeds = runs[(runs["condition"] == condition) & (runs["k"] == k)]
                x = i + offset + jitter.uniform(-0.04, 0.04, len(seeds))
                loss_ax.scatter(x, seeds["eval_loss"], s=12, color=COLOURS[condition], alpha=0.5, lw=0)
                share_ax.scatter(x, seeds["flipped_share"], s=12, color=COLOURS[condition], alpha=0.5, lw=0)
                row = summary[(summary["condition"] == condition) & (summary["k"] == k)]
                if len(row):
                    row = row.iloc[0]
                    error = [[row["eval_loss"] - row["eval_loss_low"]], [row["eval_loss_high"] - row["eval_loss"]]]
                    loss_ax.errorbar(i + offset, row["eval_loss"], yerr=error, fmt="D", ms=5, capsize=3,
                                     color=COLOURS[condition], label=f"{condition} removed" if i == 0 else None)
                    share_ax.bar(i + offset, row["flipped_share"], width=0.28, color=COLOURS[condition], alpha=0.35,
                                 label=f"{condition} removed" if i == 0 else None)
        if len(runs):
            share_ax.axhline(runs["base_flipped_share"].mean(), ls=":", lw=1, color="0.2",
                             label="share among all training examples")
        for ax in (loss_ax, share_ax):
            ax.set_xticks(range(len(ks)), [str(k) for k in ks])
            ax.set_xlim(-0.6, max(len(ks), 1) - 0.4)
            ax.set_xlabel("k (training examples removed)")
        loss_ax.set(ylabel="held-out loss (nats per example)", title=f"{model}: held-out loss")
        share_ax.set(ylim=(0, 1.02), ylabel="flipped labels among the removed", title=f"{model}: what was removed")
        if column == 0:
            loss_ax.legend(fontsize="small")
            share_ax.legend(fontsize="small")
    return fig


def figure(per_run: str, conditions: str, png: str, pdf: str) -> None:
    """Step of ``fig_removal``."""
    save_figure(plot_removal(pd.read_parquet(per_run), pd.read_parquet(conditions)), png, pdf)
