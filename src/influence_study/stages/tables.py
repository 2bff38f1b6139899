"""What the analysis stages share: reading the study's tables (influence scores per model, the learning table, the
ground truth, the evaluations, the BM25 candidates) and writing an analysis's outputs (its tables and
``analyses/{name}.json`` with statistics, findings and provenance).

The analyses themselves (:mod:`influence_study.analyses`) are pure functions of the frames read here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import pyarrow.parquet as pq

from influence_study.analyses.common import model_sizes
from influence_study.analyses.relations import SCORE_COLUMNS, rank_documents
from influence_study.findings import Finding
from influence_study.study.io import read_parquet, read_parquet_metadata, require_columns, write_json, write_parquet
from influence_study.study.provenance import provenance


def read_columns(path: str | os.PathLike, columns: Sequence[str], what: str) -> pd.DataFrame:
    """Read only ``columns`` of the parquet file ``path`` (``what`` names it in errors: missing file or columns)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{what} {path} does not exist")
    present = set(pq.read_schema(path).names)
    missing = [c for c in columns if c not in present]
    if missing:
        raise ValueError(f"{what} {path} is missing column(s) {missing}; it has {sorted(present)}")
    return read_parquet(path, columns=list(columns))


def read_learning(learning: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """The learning table (``tables/learning.parquet``: a path, or the table itself)."""
    return learning if isinstance(learning, pd.DataFrame) else read_parquet(learning)


def table_model(path: str | os.PathLike) -> str:
    """The model a scores table belongs to (from its provenance metadata, else its path
    ``scores/{model}/{strategy}/<file>``)."""
    return read_parquet_metadata(path).get("model") or Path(path).parent.parent.name


def table_strategy(path: str | os.PathLike) -> str:
    """The strategy of a scores table (from its provenance metadata, else its path
    ``scores/{model}/{strategy}/<file>``)."""
    return read_parquet_metadata(path).get("strategy") or Path(path).parent.name


def path_of_model(model_name: str, paths: Sequence[str], levels_up: int, what: str) -> str | None:
    """The path among ``paths`` named ``model_name`` ``levels_up`` levels up (0: ``models/{model}``, 1:
    ``factors/{model}/{strategy}``); ``None`` if there is none and ``what`` is empty, else a ValueError."""
    for path in paths:
        path = Path(path)
        if (path.parents[levels_up - 1] if levels_up else path).name == model_name:
            return str(path)
    if what:
        raise ValueError(f"{what}: no path for model {model_name!r} among {list(paths)}")
    return None


def load_family_tables(paths: Iterable[str | os.PathLike], learning: str | os.PathLike | pd.DataFrame,
                       columns: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Read one scores table per model (``pairwise.parquet``, ``tokens.parquet``, ...), keyed by model and ordered
    from the smallest model to the largest. ``columns`` restricts what is read (tables are large)."""
    by_model = {table_model(p): p for p in paths}
    sizes = model_sizes(read_learning(learning))
    missing = sorted(set(by_model) - set(sizes.index))
    if missing:
        raise ValueError(f"models {missing} have scores but no row in the learning table")
    return {m: read_parquet(by_model[m], columns=list(columns) if columns else None)
            for m in sizes.index if m in by_model}


def ranked_documents(pairwise: Sequence[str | os.PathLike], learning, query_ids: Iterable[str],
                     k: int | None) -> pd.DataFrame:
    """:func:`~influence_study.analyses.relations.rank_documents` for every model's scores table (``pairwise``: one
    per model; ``learning``: the learning table that orders them by size): long table ``model, query_id, doc_id,
    score, rank, n_docs``, models from small to large."""
    query_ids = set(query_ids)
    frames = []
    for model, frame in load_family_tables(pairwise, learning, columns=SCORE_COLUMNS).items():
        frames.append(rank_documents(frame, query_ids, k).assign(model=model))
    columns = ["model", *SCORE_COLUMNS, "rank", "n_docs"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


def correct_answers(evaluations: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """``model, query_id, correct`` from the per-model evaluation tables ``evaluation/{model}/queries.parquet``."""
    frames = []
    for path in evaluations:
        frame = read_parquet(path)
        require_columns(frame, ["query_id", "correct"], f"evaluation table {path}")
        frames.append(pd.DataFrame({"model": Path(path).parent.name, "query_id": frame["query_id"].astype(str),
                                    "correct": frame["correct"].astype(bool).to_numpy()}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "query_id", "correct"])


def query_families(queries: str | os.PathLike) -> pd.Series:
    """The family (``analysis`` column) of every query of the queries table, indexed by ``query_id`` as strings."""
    table = read_parquet(queries, columns=["query_id", "analysis"])
    return table.assign(query_id=table["query_id"].astype(str)).set_index("query_id")["analysis"]


def write_analysis(config: Mapping, name: str, tables: Mapping[str, tuple[pd.DataFrame, str]],
                   statistics: Mapping, verdicts: Callable[[Mapping], list[Finding]] | None, summary: str,
                   inputs: Sequence[str | os.PathLike] = ()) -> dict:
    """Write an analysis's outputs: each ``tables[key] = (frame, path)`` as parquet (with provenance metadata) and
    ``summary`` (``analyses/{name}.json``) with ``statistics``, the findings ``verdicts(statistics)`` returns, and
    the provenance record. Returns the summary record."""
    record = provenance(config, inputs, analysis=name)
    for frame, path in tables.values():
        write_parquet(frame, path, metadata=record)
    findings = [f.to_dict() for f in (verdicts(statistics) if verdicts else [])]
    document = {"analysis": name, "statistics": dict(statistics), "findings": findings, "provenance": record}
    write_json(document, summary, sort_keys=False)  # models stay ordered by size
    return document
