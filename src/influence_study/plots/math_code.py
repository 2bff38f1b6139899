"""Figure of the math-and-code analysis: the same-schema share of the top-k per model size for math, code with
plain names and code with obfuscated names, and the token-only and cross-naming matches."""

from __future__ import annotations

import pandas as pd

from influence_study.plots import plt, save_figure, study_theme
from influence_study.analyses.math_code import MATH
from influence_study.plots.shares import model_order, share_lines


def plot_math_code(per_query: pd.DataFrame, by_model: pd.DataFrame) -> plt.Figure:
    """Two panels: (a) the share of each query's top-k that solve the same schema, per model with its 95% interval,
    for each query group (dotted: the share expected by chance, the same for every model); (b) math's token-only
    matches (another schema with the query's names) and, for code, same-schema documents whose naming (plain or
    obfuscated) differs from the query's."""
    study_theme()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
    order = model_order(per_query)
    groups = list(dict.fromkeys(by_model["group"]))
    same = by_model[by_model["measure"] == "share_same_schema"]
    share_lines(axes[0], {g: same[same["group"] == g] for g in groups}, order, "same schema (dotted: chance)")
    chance = by_model[by_model["measure"] == "chance_same_schema"].groupby("group", sort=False)["mean"].mean()
    for value in chance:
        axes[0].axhline(value, ls=":", lw=0.8, color="0.4")
    lines = {}
    for group in groups:
        measure, label = (("share_lexical_overlap", "math: other schema, same names") if group == MATH
                          else ("share_same_schema_other_naming", f"{group}: same schema, other naming"))
        lines[label] = by_model[(by_model["group"] == group) & (by_model["measure"] == measure)]
    share_lines(axes[1], lines, order, "token-only and cross-naming matches")
    return fig


def figure(per_query: str, by_model: str, png: str, pdf: str) -> None:
    """Step of ``fig_math_code``."""
    save_figure(plot_math_code(pd.read_parquet(per_query), pd.read_parquet(by_model)), png, pdf)
