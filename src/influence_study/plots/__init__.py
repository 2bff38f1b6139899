"""Figures of the study: each function takes a table and returns a matplotlib figure.

One module per analysis (``influence_study.plots.<name>``) holds its plotting function and the ``figure`` step of
its ``fig_<name>`` rule (it reads the analysis's tables, never the config); notebooks call the same functions, so a
notebook's figure and the workflow's are one code.
"""

from __future__ import annotations

import sys

import matplotlib

if "ipykernel" not in sys.modules:  # a notebook keeps its inline backend; workflow jobs draw off-screen
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from influence_study.study.io import atomic_path  # noqa: E402


def study_theme() -> None:
    """The seaborn theme of every figure of the study."""
    sns.set_theme(style="whitegrid", context="paper")


def plot_loss_curves(history: pd.DataFrame) -> plt.Figure:
    """Training and validation loss (nats per token) against tokens seen, one line per model.

    ``history`` has columns ``model, tokens, train_loss, valid_loss`` (one row per logged step).
    """
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True, constrained_layout=True)
    for ax, column, title in zip(axes, ("train_loss", "valid_loss"), ("training loss", "held-out loss")):
        sns.lineplot(data=history, x="tokens", y=column, hue="model", marker="o", markersize=3, ax=ax)
        ax.set(title=title, xlabel="tokens seen", ylabel="nats per token", yscale="log")
    if axes[0].get_legend() is not None:
        axes[0].get_legend().remove()
    return fig


def save_figure(fig: plt.Figure, *paths) -> None:
    """Save ``fig`` to each path (format from the suffix) and close it."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=str(path).rsplit(".", 1)[-1], dpi=150)
    plt.close(fig)
