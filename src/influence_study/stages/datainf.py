"""Step of the DataInf analysis (:mod:`influence_study.analyses.datainf`): every LoRA fine-tune's influence tables
into accuracy against exact influence, detection of mislabelled and same-class data, and wall time per method."""

from __future__ import annotations

from typing import Mapping, Sequence

import pandas as pd

from influence_study.analyses.datainf import (MISLABEL_TASK, class_detection, correlation_table, interval_statistics,
                                              mislabel_tables, statistics, times_table, verdicts)
from influence_study.stages.finetune import detection_rank
from influence_study.stages.tables import write_analysis
from influence_study.study.io import read_json, read_parquet, read_parquet_metadata


def run(config: Mapping, influence: Sequence[str], pairwise: Sequence[str], finetunes: Sequence[str],
        tasks: str, correlations: str, mislabel: str, curves: str, classes: str, times: str, summary: str) -> None:
    """Step of ``analysis_datainf``: every fine-tune's tables into the statistics and verdicts of
    :mod:`influence_study.analyses.datainf`."""
    summaries = [read_json(path) for path in finetunes]
    rank = detection_rank(config)
    totals = []
    for path in influence:
        meta = read_parquet_metadata(path)
        totals.append(read_parquet(path).assign(model=meta["model"], task=meta["task"], rank=int(meta["rank"])))
    totals = pd.concat(totals, ignore_index=True)
    examples = read_parquet(tasks, columns=["example_id", "class"])
    class_of = dict(zip(examples["example_id"], examples["class"]))
    class_rows = []
    for path in pairwise:
        meta = read_parquet_metadata(path)
        if meta["task"] == MISLABEL_TASK or int(meta["rank"]) != rank:
            continue
        table = class_detection(read_parquet(path), class_of)
        class_rows.append(table.assign(model=meta["model"], task=meta["task"], rank=int(meta["rank"])))
    class_table = (pd.concat(class_rows, ignore_index=True) if class_rows else
                   pd.DataFrame(columns=["method", "test_id", "auc", "recall", "model", "task", "rank"]))
    correlation = correlation_table(totals)
    mislabel_table, curve_table = mislabel_tables(totals)
    time_table = times_table(summaries)
    intervals = interval_statistics(totals, class_table, time_table, rank, seed=config["seed"])
    stats = statistics(correlation, mislabel_table, class_table, time_table, summaries, rank, intervals)
    write_analysis(config, "datainf", {"correlations": (correlation, correlations),
                                       "mislabel": (mislabel_table, mislabel), "curves": (curve_table, curves),
                                       "classes": (class_table, classes), "times": (time_table, times)},
                   stats, verdicts, summary, inputs=[*influence, *finetunes, tasks])
