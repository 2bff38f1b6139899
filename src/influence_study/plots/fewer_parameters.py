"""Figure of the fewer-parameters analysis: how well influence restricted to some layers agrees with influence on
all layers, per query family, restriction and model size."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme
from influence_study.analyses.fewer_parameters import (ABSTRACT_FAMILIES, CONCRETE_FAMILIES, OVERLAP_THRESHOLD, PEARSON_THRESHOLD,
                                         RESTRICTIONS)
from influence_study.plots.shares import model_order

OTHER_FAMILIES = ("translation", "word_order", "roleplay")
MEASURE_LABELS = {"overlap": ("top-k overlap with all layers", OVERLAP_THRESHOLD),
                  "pearson": ("Pearson r with all layers", PEARSON_THRESHOLD)}
RESTRICTION_LABELS = {"last_layer": "last layer", "upper_half": "upper half of the layers",
                      "first_layer": "first layer (control)"}


def family_order(families) -> list[str]:
    """Abstract families first, then concrete ones, then the rest (those present in ``families``)."""
    present = set(families)
    known = [f for f in (*ABSTRACT_FAMILIES, *CONCRETE_FAMILIES, *OTHER_FAMILIES) if f in present]
    return known + sorted(present - set(known))


def plot_fewer_parameters(by_family: pd.DataFrame) -> plt.Figure:
    """A grid of panels: rows are the measures (top-k overlap, Pearson correlation of the restricted with the full
    score), columns the restrictions (last layer, upper half, first layer). In each panel, the mean over a query
    family's queries with its 95% bootstrap interval, one colour per model (small → large); abstract families
    (cross-lingual, math, code) on the left of the dotted separator, concrete ones (facts, quotes) next, the rest
    after the second separator. Dashed lines: our thresholds for "agrees" (overlap 0.5, Pearson 0.9)."""
    study_theme()
    fig, axes = plt.subplots(2, len(RESTRICTIONS), figsize=(14, 7), sharey="row", squeeze=False,
                             constrained_layout=True)
    if by_family.empty:
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 0].text(0, 0.5, "no model with two or more layers: not measured", transform=axes[0, 0].transAxes)
        return fig
    order = model_order(by_family)
    families = family_order(by_family["analysis"].dropna())
    colours = dict(zip(order, sns.color_palette(n_colors=len(order))))
    offsets = np.linspace(-0.25, 0.25, len(order)) if len(order) > 1 else [0.0]
    position = {f: i for i, f in enumerate(families)}
    breaks = [len([f for f in families if f in ABSTRACT_FAMILIES]),
              len([f for f in families if f in (*ABSTRACT_FAMILIES, *CONCRETE_FAMILIES)])]
    for row, (measure, (label, threshold)) in enumerate(MEASURE_LABELS.items()):
        for column, restriction in enumerate(RESTRICTIONS):
            ax = axes[row, column]
            rows = by_family[(by_family["measure"] == measure) & (by_family["restriction"] == restriction)]
            for model, offset in zip(order, offsets):
                part = rows[(rows["model"] == model) & rows["analysis"].isin(position)].dropna(subset=["mean"])
                x = part["analysis"].map(position).to_numpy(dtype=float) + offset
                error = np.vstack([part["mean"] - part["low"], part["high"] - part["mean"]]).clip(min=0)
                ax.errorbar(x, part["mean"], yerr=error, marker="o", markersize=4, capsize=2, linestyle="none",
                            color=colours[model], label=model)
            for edge in sorted(set(breaks)):
                if 0 < edge < len(families):
                    ax.axvline(edge - 0.5, color="0.5", linestyle=":", linewidth=0.8)
            ax.axhline(threshold, color="tab:red", linestyle="--", linewidth=0.8)
            ax.set_xticks(range(len(families)), families if row == 1 else [""] * len(families), rotation=35,
                          ha="right")
            ax.set_xlim(-0.5, len(families) - 0.5)
            ax.set(ylabel=label if column == 0 else "", xlabel="query family" if row == 1 else "")
            if row == 0:
                ax.set_title(f"restricted to the {RESTRICTION_LABELS.get(restriction, restriction)}")
    for row, measure in enumerate(MEASURE_LABELS):  # overlap on [0, 1]; correlations zoomed on their range
        low = float(by_family.loc[by_family["measure"] == measure, "low"].min())
        floor = max(-1.0, min(0.5, low - 0.05)) if measure == "pearson" and np.isfinite(low) else 0.0
        axes[row, 0].set_ylim(floor - 0.02, 1.02)
    axes[0, 0].legend(title="model (small → large)", fontsize="small", loc="lower left")
    return fig


def figure(by_family: str, png: str, pdf: str) -> None:
    """Step of ``fig_fewer_parameters``."""
    save_figure(plot_fewer_parameters(pd.read_parquet(by_family)), png, pdf)
