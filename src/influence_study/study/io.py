"""File helpers: outputs are never half-written (write to a temporary name, then rename: :func:`atomic_path`, which
the influence engine shares from :mod:`influence_study.engine.files`)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from influence_study.engine.files import atomic_path, remove_stale_temporaries

__all__ = ["atomic_path", "remove_stale_temporaries", "require_columns", "write_parquet", "read_parquet_metadata",
           "write_json", "read_json", "PARQUET_METADATA_KEY"]

PARQUET_METADATA_KEY = b"influence_study"


def require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise (naming the table ``name``, the missing columns and those it has) unless ``table`` is a DataFrame
    with every one of ``columns``."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it needs {list(columns)} "
                         f"and has {list(table.columns)}")


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, metadata: Mapping | None = None) -> None:
    """Write ``frame`` to parquet atomically (no index); ``metadata`` (JSON-serialisable) is stored in the file's
    schema metadata, where :func:`read_parquet_metadata` finds it."""
    with atomic_path(path) as tmp:
        if metadata is None:
            frame.to_parquet(tmp, index=False)
            return
        table = pa.Table.from_pandas(frame, preserve_index=False)
        extra = {PARQUET_METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`write_parquet` stored in ``path`` (empty if none)."""
    stored = (pq.read_schema(path).metadata or {}).get(PARQUET_METADATA_KEY)
    return json.loads(stored) if stored else {}


def write_json(data: Any, path: str | os.PathLike, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON atomically (``sort_keys=False`` keeps the mappings' order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
