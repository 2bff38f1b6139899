"""File helpers: outputs are never half-written (write to a temporary name, then rename: :func:`atomic_path`, which
the influence engine shares from :mod:`influence_study.engine.files`), and parquet tables carry a SHA-256 of their
data that :func:`read_parquet` checks.

The checksum covers the bytes of the data pages (everything before the parquet footer, which holds the metadata):
:func:`write_parquet` hashes them as they are written and records the digest in the footer's key-value metadata
(:data:`CONTENT_HASH_KEY`); the table's content and numbers are exactly what ``DataFrame.to_parquet`` writes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from influence_study.engine.files import FileIntegrityError, atomic_path, remove_stale_temporaries

__all__ = ["atomic_path", "remove_stale_temporaries", "require_columns", "write_parquet", "read_parquet",
           "read_parquet_metadata", "parquet_content_hash", "write_json", "read_json", "FileIntegrityError",
           "PARQUET_METADATA_KEY", "CONTENT_HASH_KEY"]

PARQUET_METADATA_KEY = b"influence_study"
# footer key-value metadata: hex SHA-256 of the file's bytes before the footer (the data pages)
CONTENT_HASH_KEY = b"influence_study.sha256"
# schema metadata (kept by anything that copies the schema): the file was written with a content hash, so a file
# that has this mark but no hash was rewritten by another writer
_HASHED_MARK = b"influence_study.hashed"
_RERUN = "delete it and rerun the step that writes it"


def require_columns(table: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    """Raise (naming the table ``name``, the missing columns and those it has) unless ``table`` is a DataFrame
    with every one of ``columns``."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"{name} must be a pandas DataFrame, got {type(table).__name__}")
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"{name} is missing column(s) {missing}; it needs {list(columns)} "
                         f"and has {list(table.columns)}")


def write_parquet(frame: pd.DataFrame, path: str | os.PathLike, metadata: Mapping | None = None,
                  read_only: bool = False) -> None:
    """Write ``frame`` to parquet atomically (no index), as ``frame.to_parquet`` does, with the SHA-256 of its
    data in the file's metadata (checked by :func:`read_parquet`). ``metadata`` (JSON-serialisable) is stored in
    the file's schema metadata, where :func:`read_parquet_metadata` finds it. ``read_only``: mode 0o444."""
    table = pa.Table.from_pandas(frame, preserve_index=False)
    extra = {_HASHED_MARK: b"sha256 of the bytes before the footer, in the footer's key-value metadata"}
    if frame.attrs:  # as DataFrame.to_parquet does
        extra[b"PANDAS_ATTRS"] = json.dumps(frame.attrs).encode()
    if metadata is not None:
        extra[PARQUET_METADATA_KEY] = json.dumps(metadata, sort_keys=True, default=str).encode()
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})
    with atomic_path(path, read_only=read_only) as tmp:
        with open(tmp, "wb") as handle:
            sink = _HashingWriter(handle)
            writer = pq.ParquetWriter(sink, table.schema, compression="snappy")
            try:
                writer.write_table(table)
                # every data page is out: what follows is the footer
                writer.add_key_value_metadata({CONTENT_HASH_KEY: sink.digest.hexdigest().encode()})
            finally:
                writer.close()


def read_parquet(path: str | os.PathLike, columns: Sequence[str] | None = None, require_hash: bool = False,
                 advice: str = _RERUN) -> pd.DataFrame:
    """``pd.read_parquet(path, columns=columns)``, after checking the data against the SHA-256 that
    :func:`write_parquet` recorded (the whole file is read once and hashed). A file whose data changed since it
    was written, that cannot be read as parquet, or (``require_hash``) that records no hash raises
    :class:`FileIntegrityError` naming it and ending with ``advice`` (what to do about it)."""
    path = Path(path)
    data = path.read_bytes()
    _check_content(path, data, require_hash, advice)
    try:
        return pd.read_parquet(pa.BufferReader(data), columns=None if columns is None else list(columns))
    except (pa.ArrowException, OSError) as err:
        raise FileIntegrityError(f"{path}: cannot be read as parquet ({err}); {advice}") from err


def parquet_content_hash(path: str | os.PathLike) -> str | None:
    """The SHA-256 of the data that :func:`write_parquet` recorded in ``path`` (None if none)."""
    stored = (pq.read_metadata(path).metadata or {}).get(CONTENT_HASH_KEY)
    return stored.decode() if stored else None


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


class _HashingWriter(io.RawIOBase):
    """A binary sink that hashes what passes through it on the way to ``handle``."""

    def __init__(self, handle):
        super().__init__()
        self._handle = handle
        self.digest = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


def _check_content(path: Path, data: bytes, require_hash: bool, advice: str) -> None:
    """Compare the bytes before the footer with the recorded SHA-256 (a file without one passes unchecked, unless
    ``require_hash`` or its schema says it had one)."""
    footer = int.from_bytes(data[-8:-4], "little") if len(data) >= 12 else -1
    if data[:4] != b"PAR1" or data[-4:] != b"PAR1" or not 0 <= footer <= len(data) - 12:
        raise FileIntegrityError(f"{path}: not a complete parquet file ({len(data)} bytes; truncated or "
                                 f"overwritten?); {advice}")
    try:
        stored = pq.read_metadata(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as err:
        raise FileIntegrityError(f"{path}: its parquet footer cannot be read ({err}); {advice}") from err
    expected = (stored.metadata or {}).get(CONTENT_HASH_KEY)
    if expected is None:
        if _HASHED_MARK in (stored.schema.to_arrow_schema().metadata or {}):
            raise FileIntegrityError(f"{path}: was rewritten by another writer since write_parquet wrote it "
                                     f"(its content hash is gone); {advice}")
        if require_hash:
            raise FileIntegrityError(f"{path}: records no content hash (not written by write_parquet, or by a "
                                     f"version before hashes were recorded), so its data cannot be checked; "
                                     f"{advice}")
        return
    actual = hashlib.sha256(memoryview(data)[:len(data) - 8 - footer]).hexdigest()
    if actual != expected.decode():
        raise FileIntegrityError(f"{path}: its data changed since it was written (SHA-256 {actual[:16]}..., "
                                 f"its metadata records {expected.decode()[:16]}...); {advice}")
