"""Figure of the DataInf part: accuracy against exact per LoRA rank, mislabelled-data detection, same-class
detection and wall time, per influence method."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.study.io import read_json

METHOD_ORDER = ["datainf", "identity", "ekfac", "lissa", "exact"]


def _methods(*tables: pd.DataFrame) -> list[str]:
    present = set().union(*(set(t["method"]) for t in tables if len(t)))
    return [m for m in METHOD_ORDER if m in present]


def plot_datainf(correlations: pd.DataFrame, curves: pd.DataFrame, classes: pd.DataFrame, times: pd.DataFrame,
                 detection_rank: int) -> plt.Figure:
    """Four panels: (a) Pearson correlation with exact influence against LoRA rank, per method (mean over tasks and
    models, bars: range); (b) share of flipped labels found against share of data inspected (most harmful first) at
    ``detection_rank``, with the random-inspection diagonal; (c) same-class detection AUC per task and method;
    (d) seconds per fine-tune (fitting, solving and scoring, with the shared per-example gradients; log scale)."""
    study_theme()
    methods = _methods(correlations, curves, classes, times)
    palette = dict(zip(METHOD_ORDER, sns.color_palette("colorblind", len(METHOD_ORDER))))
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.9), constrained_layout=True)
    if len(correlations):
        sns.lineplot(data=correlations, x="rank", y="pearson", hue="method", hue_order=[m for m in methods
                     if m in set(correlations["method"])], palette=palette, marker="o", errorbar=("pi", 100),
                     err_style="bars", ax=axes[0])
        axes[0].set_xscale("log", base=2)
        axes[0].set_xticks(sorted(correlations["rank"].unique()), labels=sorted(correlations["rank"].unique()))
    axes[0].set(xlabel="LoRA rank", ylabel="Pearson r with exact", title="accuracy against exact influence")
    at_rank = curves[curves["rank"] == detection_rank]
    if len(at_rank):
        sns.lineplot(data=at_rank, x="inspected", y="found", hue="method", hue_order=[m for m in methods
                     if m in set(at_rank["method"])], palette=palette, errorbar=None, ax=axes[1])
    axes[1].plot([0, 1], [0, 1], ls=":", color="0.4", lw=0.8, label="random")
    axes[1].set(xlabel="share of training data inspected", ylabel="share of flipped labels found",
                title=f"mislabelled data (rank {detection_rank})", xlim=(0, 1), ylim=(0, 1.02))
    if len(classes):
        sns.barplot(data=classes, x="task", y="auc", hue="method", hue_order=[m for m in methods
                    if m in set(classes["method"])], palette=palette, errorbar=None, ax=axes[2])
        axes[2].tick_params(axis="x", labelrotation=15)
    axes[2].axhline(0.5, ls=":", color="0.4", lw=0.8)
    axes[2].set(ylim=(0, 1.02), xlabel="", ylabel="same-class AUC", title=f"same-class data (rank {detection_rank})")
    timed = times[times["rank"] == detection_rank]
    if len(timed):
        sns.barplot(data=timed, x="method", y="total", order=[m for m in methods if m in set(timed["method"])],
                    hue="method", palette=palette, errorbar=("pi", 100), ax=axes[3], legend=False)
    axes[3].set(yscale="log", xlabel="", ylabel="seconds per fine-tune", title=f"wall time (rank {detection_rank})")
    for ax in axes[:3]:
        if ax.get_legend() is not None:
            ax.legend(fontsize="small")
    return fig


def figure(correlations: str, mislabel: str, curves: str, classes: str, times: str, summary: str,
           png: str, pdf: str) -> None:
    """Step of ``fig_datainf``."""
    rank = read_json(summary)["statistics"]["detection_rank"]
    save_figure(plot_datainf(pd.read_parquet(correlations), pd.read_parquet(curves), pd.read_parquet(classes),
                             pd.read_parquet(times), rank), png, pdf)
