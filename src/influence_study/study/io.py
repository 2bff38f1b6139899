"""File helpers: outputs are never half-written (write to a temporary name, then rename)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import pandas as pd


_DEFAULT_MODE = 0o666
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; on success rename it to ``path``, on error remove it.

    With ``directory=True`` the temporary path is an empty directory, and an existing directory at ``path``
    is replaced.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        if directory and path.exists():
            shutil.rmtree(path)
        tmp.chmod(_DEFAULT_MODE & ~_UMASK | (0o111 if directory else 0))  # mkstemp/mkdtemp made it private
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


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


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete temporaries that an earlier, killed writer of ``path`` left behind (``.<name>.*.tmp`` siblings;
    one output has one writer, so none of them can be in use). Returns what was removed."""
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp")) if path.parent.is_dir() else []
    for tmp in stale:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
    return stale


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, metadata: Mapping | None = None) -> None:
    """Write ``frame`` to parquet atomically (no index); ``metadata`` (JSON-serialisable) is stored in the file's
    schema metadata, where :func:`read_parquet_metadata` finds it."""
    with atomic_path(path) as tmp:
        if metadata is None:
            frame.to_parquet(tmp, index=False)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        extra = {PARQUET_METADATA_KEY: json.dumps(metadata, sort_keys=True, default=str).encode()}
        pq.write_table(table.replace_schema_metadata({**(table.schema.metadata or {}), **extra}), tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict:
    """The metadata :func:`write_parquet` stored in ``path`` (empty if none)."""
    import pyarrow.parquet as pq

    stored = (pq.read_schema(path).metadata or {}).get(PARQUET_METADATA_KEY)
    return json.loads(stored) if stored else {}


def write_json(data: Any, path: str | os.PathLike, sort_keys: bool = True) -> None:
    """Write ``data`` as indented JSON atomically (``sort_keys=False`` keeps the mappings' order)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())
