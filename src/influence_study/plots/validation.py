"""Figure of the validation against ground truth: each estimator's correlation with the PBRF per setting, its wall
time (fitting included) against that correlation, and the correlations with leave-one-out retraining."""

from __future__ import annotations

import pandas as pd

from influence_study.analyses.validation import SETTINGS
from influence_study.plots import plt, save_figure, sns, study_theme

ORDER = ["identity", "lissa", "kfac", "ekfac", "pbrf"]
NAMES = {"identity": "grad · grad", "lissa": "LiSSA", "kfac": "K-FAC", "ekfac": "EK-FAC", "pbrf": "PBRF",
         "loo": "LOO (from init)", "loo_warm": "LOO (from trained)"}


def _named(frame: pd.DataFrame, column: str = "estimator") -> pd.DataFrame:
    return frame.assign(**{column: frame[column].map(lambda e: NAMES.get(e, e))})


def plot_validation(correlations: pd.DataFrame, timings: pd.DataFrame) -> plt.Figure:
    """Three panels: (a) mean Pearson correlation with the PBRF per setting and estimator (95% CI over the
    measurements); (b) wall time (fitting + scoring the M measurements, log scale) against that correlation;
    (c) correlations with leave-one-out retraining, where it was run."""
    study_theme()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
    estimators = [NAMES[e] for e in ORDER if e in set(correlations["estimator"])]
    truth = _named(correlations[correlations["reference"] == "pbrf"])
    present = set(truth["setting"])
    settings = [s for s in SETTINGS if s in present] + sorted(present - set(SETTINGS))
    sns.barplot(data=truth, x="setting", y="pearson", hue="estimator", hue_order=[e for e in estimators if e != "PBRF"],
                order=settings, errorbar=("ci", 95), ax=axes[0])
    axes[0].set(xlabel="", ylabel="Pearson r with the PBRF", ylim=(min(0.0, truth["pearson"].min() - 0.05), 1.0),
                title="agreement with the ground truth")
    axes[0].legend(title="", fontsize="small", ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    timed = _named(timings.dropna(subset=["pearson_mean"]))
    sns.scatterplot(data=timed, x="total_seconds", y="pearson_mean", hue="estimator",
                    hue_order=[e for e in estimators if e != "PBRF"], style="setting", s=70, ax=axes[1])
    axes[1].set(xscale="log", xlabel="wall time, fitting included (s)", ylabel="mean Pearson r with the PBRF",
                title="accuracy vs cost")
    for _, row in timings[timings["estimator"] == "pbrf"].iterrows():
        axes[1].axvline(row["total_seconds"], color="0.6", lw=0.8, ls=":")
        axes[1].text(row["total_seconds"], 0.02, f" PBRF, {row['setting']}", rotation=90, fontsize="x-small",
                     color="0.4", ha="right", va="bottom", transform=axes[1].get_xaxis_transform())
    axes[1].legend(fontsize="x-small", loc="center left", bbox_to_anchor=(1.0, 0.5))
    loo = _named(correlations[correlations["reference"].isin(["loo", "loo_warm"])])
    if loo.empty:
        axes[2].text(0.5, 0.5, "leave-one-out retraining\nnot measured", ha="center", va="center",
                     transform=axes[2].transAxes)
        axes[2].set_axis_off()
    else:
        loo = _named(loo, "reference")
        order = [e for e in [*estimators, NAMES["loo"]] if e in set(loo["estimator"])]
        sns.barplot(data=loo, x="estimator", y="pearson", hue="reference", order=order, errorbar=("ci", 95),
                    ax=axes[2])
        axes[2].axhline(0, color="0.3", lw=0.8)
        axes[2].set(xlabel="", ylabel="Pearson r with leave-one-out",
                    title=f"leave-one-out retraining ({', '.join(dict.fromkeys(loo['setting']))})")
        axes[2].tick_params(axis="x", labelrotation=20)
        axes[2].legend(title="", fontsize="small")
    return fig


def figure(correlations: str, timings: str, png: str, pdf: str) -> None:
    """Step of ``fig_validation``."""
    save_figure(plot_validation(pd.read_parquet(correlations), pd.read_parquet(timings)), png, pdf)
