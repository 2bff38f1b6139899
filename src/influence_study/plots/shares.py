"""Drawing helpers shared by the figures of the ground-truth analyses (abstraction, math and code, role-play,
memorisation): a measure per model size with its confidence interval (on a share axis: :func:`share_lines`), and
stacked shares of each model's top-k."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.plots import plt, sns


def model_order(table: pd.DataFrame) -> list[str]:
    """The models of ``table`` in order of appearance (the analyses store them from small to large)."""
    return list(dict.fromkeys(table["model"].astype(str)))


def interval_lines(ax: plt.Axes, lines: Mapping[str, pd.DataFrame], order: Sequence[str]) -> None:
    """One line per entry of ``lines`` (label -> rows ``model, mean, low, high``) over the models of ``order``,
    with the confidence interval as error bars (dodged a little so that lines do not hide each other)."""
    colors = sns.color_palette(n_colors=max(len(lines), 1))
    offsets = np.linspace(-0.08, 0.08, len(lines)) if len(lines) > 1 else [0.0]
    position = {m: i for i, m in enumerate(order)}
    for (label, rows), color, offset in zip(lines.items(), colors, offsets):
        rows = rows[rows["model"].isin(position)].dropna(subset=["mean"])
        x = rows["model"].map(position).to_numpy(dtype=float) + offset
        error = np.vstack([rows["mean"] - rows["low"], rows["high"] - rows["mean"]]).clip(min=0)
        ax.errorbar(x, rows["mean"], yerr=error, marker="o", capsize=3, color=color, label=label)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.5, len(order) - 0.5)
    ax.set_xlabel("model (small → large)")


def share_lines(ax: plt.Axes, lines: Mapping[str, pd.DataFrame], order: Sequence[str], title: str,
                ylabel: str = "share of the top-k", legend_title: str | None = None) -> None:
    """:func:`interval_lines` on a share axis (-0.05 to 1.05) with its label and title, and a small legend."""
    interval_lines(ax, lines, order)
    ax.set(ylim=(-0.05, 1.05), ylabel=ylabel, title=title)
    ax.legend(title=legend_title, fontsize="small")


def stacked_shares(ax: plt.Axes, per_query: pd.DataFrame, columns: Mapping[str, str], colors: Sequence,
                   order: Sequence[str]) -> None:
    """One bar per model of ``order``: the mean over queries of each share column (``columns``: column -> label),
    stacked in the given order and colours."""
    means = per_query.groupby("model", sort=False)[list(columns)].mean().reindex(list(order)).fillna(0.0)
    bottom = np.zeros(len(order))
    for (column, label), color in zip(columns.items(), colors):
        values = means[column].to_numpy()
        ax.bar(range(len(order)), values, bottom=bottom, color=color, label=label, width=0.7)
        bottom += values
    ax.set_xticks(range(len(order)), order)
    ax.set(xlabel="model (small → large)", ylim=(0, 1))
