"""Figure of the approximation checks: per-query agreement of rank-r query gradients with full rank, of
block-diagonal factors with O = 1, and the factors' memory."""

from __future__ import annotations

import numpy as np
import pandas as pd

from influence_study.plots import plt, save_figure, sns, study_theme

FLOOR = 1e-8  # 1 - Pearson is drawn on a log axis; exact agreement (full rank) is drawn at this floor


def plot_approximations(ranks: pd.DataFrame, blocks: pd.DataFrame, memory: pd.DataFrame) -> plt.Figure:
    """Three panels: (a) 1 - Pearson (log) of each query's rank-r scores with its full-rank scores against r,
    the median in bold, the paper's rank-32 value marked; (b) each query's Pearson of O-block factors with
    O = 1; (c) the stored factors' memory per O (A and S blocks, eigenvalues)."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), constrained_layout=True,
                             gridspec_kw={"width_ratios": [1.4, 1, 1]})
    model = ranks["model"].iloc[0] if len(ranks) else "?"
    ax = axes[0]
    frame = ranks.assign(gap=np.clip(1.0 - ranks["pearson"], FLOOR, None))
    for _, query in frame.groupby("query_id", sort=False):
        ax.plot(query["rank"], query["gap"], color="0.6", alpha=0.35, lw=0.8)
    median = frame.groupby("rank")["gap"].median()
    ax.plot(median.index, median.to_numpy(), "o-", color="tab:blue", lw=2, label="median over queries")
    ax.scatter([32], [1 - 0.995], marker="*", s=120, color="tab:red", zorder=5, label="paper: rank 32, one query")
    ax.axhline(1 - 0.99, color="tab:red", ls=":", lw=1, label="check: median ≥ 0.99 at rank 32")
    full = sorted(frame.loc[frame["full_rank"], "rank"].unique())
    if full:
        ax.axvspan(min(full) * 0.9, max(full) * 1.1, color="tab:green", alpha=0.08, label="full rank for every module")
    ax.set(xscale="log", yscale="log", xlabel="query rank r", ylabel="1 − Pearson with full rank",
           title=f"query batching ({model})")
    ax.set_xticks(sorted(frame["rank"].unique()), labels=[str(r) for r in sorted(frame["rank"].unique())])
    ax.legend(fontsize=7)
    ax = axes[1]
    if len(blocks):
        order = sorted(blocks["blocks"].unique())
        sns.boxplot(data=blocks, x="blocks", y="pearson", order=order, color="0.9", showfliers=False, ax=ax)
        sns.stripplot(data=blocks, x="blocks", y="pearson", order=order, size=3, alpha=0.6, ax=ax)
    ax.axhline(0.9, color="tab:red", ls=":", lw=1, label="check: median ≥ 0.9 at O = 2 (ours)")
    ax.set(xlabel="diagonal blocks O of A and S", ylabel="Pearson with O = 1", title="block-diagonal factors")
    ax.legend(fontsize=7)
    ax = axes[2]
    mib = memory.sort_values("blocks").assign(blocked=lambda m: m["blocked_bytes"] / 2 ** 20,
                                              other=lambda m: m["other_bytes"] / 2 ** 20)
    labels = mib["blocks"].astype(str)
    ax.bar(labels, mib["blocked"], color="tab:blue", label="A, S: covariance and eigenvector blocks")
    ax.bar(labels, mib["other"], bottom=mib["blocked"], color="tab:orange", label="eigenvalues (λ_A, λ_S, Λ)")
    for x, (total, ratio) in enumerate(zip(mib["blocked"] + mib["other"], mib["blocked_ratio"])):
        ax.annotate(f"A,S ×{ratio:.2f}", (x, total), ha="center", va="bottom", fontsize=7)
    ax.set(xlabel="diagonal blocks O", ylabel="stored factors (MiB)", title="factor memory",
           ylim=(0, 1.35 * float((mib["blocked"] + mib["other"]).max())))
    ax.legend(fontsize=7, loc="upper right")
    return fig


def figure(ranks: str, blocks: str, memory: str, png: str, pdf: str) -> None:
    """Step of ``fig_approximations``."""
    save_figure(plot_approximations(pd.read_parquet(ranks), pd.read_parquet(blocks), pd.read_parquet(memory)),
                png, pdf)
