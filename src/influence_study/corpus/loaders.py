"""Load a user's own corpus (text, JSON Lines, parquet files or a Hugging Face dataset) as a document table.

Every loader returns the same table as the synthetic world's documents, so the rest of the workflow does not care
where the text came from::

    doc_id      text                      split   family  source_file
    doc-000000  "The first document ..."  train   user    part-0.jsonl
    doc-000001  "Another one ..."         valid   user    part-0.jsonl

Formats:

* ``text``: ``.txt`` files; documents are separated by one or more blank (empty or whitespace-only) lines and are
  stripped.
* ``jsonl``: ``.jsonl``/``.json`` files holding one JSON object per line; the text is in ``text_field``.
  Blank lines are skipped.
* ``parquet``: ``.parquet`` files; the text is in column ``text_field``.
* ``hf_dataset``: a directory written by ``datasets.Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (split
  ``hf_split`` of a DatasetDict), or otherwise a hub name passed to ``datasets.load_dataset``.

``path`` may be one file or a directory; a directory contributes its top-level files with the format's suffix,
sorted by name. Bad input raises :class:`CorpusError` with a message that names the file, line or field.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

import datasets
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from influence_study.study.config_checks import CORPUS_SUFFIXES

SOURCES = ("text", "jsonl", "parquet", "hf_dataset")
SUFFIXES = CORPUS_SUFFIXES  # one table, shared with the config checks
COLUMNS = ["doc_id", "text", "split", "family", "source_file"]
FAMILY = "user"

_BLANK_LINES = re.compile(r"\n[ \t\f\v]*\n")
_HF_BATCH = 1024


class CorpusError(ValueError):
    """A user corpus cannot be loaded; the message names the file, line or field at fault."""


def load_documents(
    source: str,
    path: str | os.PathLike,
    text_field: str = "text",
    hf_split: str = "train",
    max_documents: int | None = None,
    valid_fraction: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Load a user corpus as a document table with a seeded train/valid split.

    Args:
        source: ``"text"``, ``"jsonl"``, ``"parquet"`` or ``"hf_dataset"``.
        path: a file or a directory of files of that format (top level only, sorted by name); for
            ``hf_dataset`` a ``save_to_disk`` directory or a hub dataset name.
        text_field: JSON field / column holding the document text (ignored for ``text``).
        hf_split: split to take from a Hugging Face ``DatasetDict`` or hub dataset.
        max_documents: keep only the first this many (non-empty) documents, in file order, before splitting.
        valid_fraction: share of documents put in the ``"valid"`` split (chosen at random with ``seed``); at least
            one when there are two or more documents and the fraction is positive, and never all of them.
        seed: seed of the train/valid assignment.

    Returns:
        A DataFrame with columns ``doc_id`` (``"doc-000000"``, ... in input order), ``text`` (stripped, never
        empty), ``split`` (``"train"``/``"valid"``), ``family`` (``"user"``) and ``source_file`` (file name, or
        dataset name for ``hf_dataset``).

    Raises:
        CorpusError: unknown source, missing path, a directory without files of the format, a line that is not a
            JSON object, a missing text field, a non-string text, bad arguments, or no documents at all.
    """
    if source not in SOURCES:
        hint = " (the synthetic world is generated, not loaded)" if source == "synthetic" else ""
        raise CorpusError(f"unknown corpus source {source!r}{hint}; expected one of {', '.join(SOURCES)}")
    if max_documents is not None and (
        isinstance(max_documents, bool) or not isinstance(max_documents, (int, np.integer)) or max_documents < 1
    ):
        raise CorpusError(f"max_documents: expected an integer >= 1 or None, got {max_documents!r}")
    if isinstance(valid_fraction, bool) or not isinstance(valid_fraction, (int, float)) or not (
        0 <= valid_fraction < 1
    ):
        raise CorpusError(f"valid_fraction: expected a number in [0, 1), got {valid_fraction!r}")
    if not isinstance(text_field, str) or not text_field:
        raise CorpusError(f"text_field: expected a non-empty string, got {text_field!r}")

    if source == "hf_dataset":
        records = _read_hf_dataset(str(path), text_field, hf_split)
    else:
        records = _read_files(source, Path(path), text_field)

    texts: list[str] = []
    files: list[str] = []
    for text, source_file in records:
        text = text.strip()
        if not text:
            continue
        texts.append(text)
        files.append(source_file)
        if max_documents is not None and len(texts) >= max_documents:
            break
    if not texts:
        raise CorpusError(f"{path}: no documents found (every {source} document was empty or whitespace)")

    n = len(texts)
    return pd.DataFrame(
        {
            "doc_id": [f"doc-{i:06d}" for i in range(n)],
            "text": texts,
            "split": assign_splits(n, valid_fraction, seed),
            "family": [FAMILY] * n,
            "source_file": files,
        },
        columns=COLUMNS,
    )


def assign_splits(n: int, valid_fraction: float, seed: int) -> list[str]:
    """Seeded ``"train"``/``"valid"`` labels for ``n`` documents.

    ``round(n * valid_fraction)`` documents, drawn without replacement, go to ``"valid"``; at least one when
    ``n >= 2`` and ``valid_fraction > 0``, and at most ``n - 1`` so that something is left to train on.
    """
    n_valid = int(round(n * valid_fraction))
    if valid_fraction > 0 and n >= 2:
        n_valid = min(max(n_valid, 1), n - 1)
    else:
        n_valid = 0
    splits = np.full(n, "train", dtype=object)
    if n_valid:
        chosen = np.random.default_rng(seed).choice(n, size=n_valid, replace=False)
        splits[chosen] = "valid"
    return splits.tolist()


# --- files ------------------------------------------------------------------------------------------------------


def _list_files(source: str, path: Path) -> list[Path]:
    if not path.exists():
        raise CorpusError(f"corpus path not found: {path}")
    if path.is_file():
        return [path]
    suffixes = SUFFIXES[source]
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes), key=lambda p: p.name
    )
    if not files:
        raise CorpusError(
            f"{path}: directory has no {source} files (expected top-level files ending in {', '.join(suffixes)})"
        )
    return files


def _read_files(source: str, path: Path, text_field: str) -> Iterator[tuple[str, str]]:
    files = _list_files(source, path)  # raises before any reading starts
    reader = {"text": _read_text_file, "jsonl": _read_jsonl_file, "parquet": _read_parquet_file}[source]
    for file in files:
        for text in reader(file, text_field):
            yield text, file.name


def _read_file_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise CorpusError(f"{file}: not UTF-8 text ({err})") from err


def _read_text_file(file: Path, text_field: str) -> Iterator[str]:
    content = _read_file_text(file).replace("\r\n", "\n").replace("\r", "\n")
    for chunk in _BLANK_LINES.split(content):
        yield chunk


def _read_jsonl_file(file: Path, text_field: str) -> Iterator[str]:
    try:
        handle = open(file, encoding="utf-8-sig")
    except OSError as err:
        raise CorpusError(f"{file}: cannot be read ({err})") from err
    with handle:
        line_number = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError as err:
                raise CorpusError(f"{file}: line {line_number + 1}: not UTF-8 text ({err})") from err
            if not line:
                break
            line_number += 1
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(
                    f"{file}: line {line_number}: not valid JSON ({err.msg} at column {err.colno}); "
                    "expected one JSON object per line (JSON Lines)"
                ) from err
            if not isinstance(record, dict):
                raise CorpusError(
                    f"{file}: line {line_number}: expected a JSON object, got {type(record).__name__}"
                )
            if text_field not in record:
                available = ", ".join(map(repr, record)) or "none"
                raise CorpusError(
                    f"{file}: line {line_number}: missing text field {text_field!r} (fields on this line: "
                    f"{available})"
                )
            text = record[text_field]
            if not isinstance(text, str):
                raise CorpusError(
                    f"{file}: line {line_number}: field {text_field!r} must be a string, got "
                    f"{type(text).__name__} ({_preview(text)})"
                )
            yield text


def _read_parquet_file(file: Path, text_field: str) -> Iterator[str]:
    try:
        schema = pq.read_schema(file)
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{file}: not a readable parquet file ({err})") from err
    if text_field not in schema.names:
        raise CorpusError(
            f"{file}: missing text column {text_field!r} (available columns: {', '.join(schema.names) or 'none'})"
        )
    column_type = schema.field(text_field).type
    if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
            or pa.types.is_null(column_type) or getattr(pa.types, "is_string_view", lambda t: False)(column_type)):
        raise CorpusError(f"{file}: column {text_field!r} must hold strings, got type {column_type}")
    try:
        values = pd.read_parquet(file, columns=[text_field])[text_field].tolist()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorpusError(f"{file}: cannot read column {text_field!r} ({err})") from err
    yield from _checked_strings(values, f"{file}: column {text_field!r}")


# --- Hugging Face datasets --------------------------------------------------------------------------------------


def _read_hf_dataset(path: str, text_field: str, hf_split: str) -> Iterator[tuple[str, str]]:
    local = Path(path)
    if local.is_dir():
        name = local.resolve().name
        try:
            loaded = datasets.load_from_disk(str(local))
        except Exception as err:  # datasets raises FileNotFoundError/ValueError/... for foreign directories
            raise CorpusError(
                f"{path}: not a Hugging Face dataset directory written by save_to_disk ({err})"
            ) from err
        if isinstance(loaded, datasets.DatasetDict):
            if hf_split not in loaded:
                raise CorpusError(
                    f"{path}: split {hf_split!r} not found (available splits: {', '.join(loaded) or 'none'})"
                )
            dataset = loaded[hf_split]
        else:
            dataset = loaded
    elif local.exists():
        raise CorpusError(f"{path}: expected a dataset directory written by save_to_disk, found a file")
    else:
        name = path
        try:
            dataset = datasets.load_dataset(path, split=hf_split)
        except Exception as err:  # network, unknown name, unknown split: all surface as one clear message
            raise CorpusError(
                f"hf_dataset {path!r}: not an existing local directory, and loading it from the hub (split "
                f"{hf_split!r}) failed: {type(err).__name__}: {err}"
            ) from err
    if not isinstance(dataset, datasets.Dataset):
        raise CorpusError(f"{path}: expected a Dataset or a DatasetDict, got {type(dataset).__name__}")
    if text_field not in dataset.column_names:
        raise CorpusError(
            f"{path}: missing text column {text_field!r} (available columns: "
            f"{', '.join(dataset.column_names) or 'none'})"
        )
    return _iter_hf_texts(dataset, text_field, f"{path}: column {text_field!r}", name)


def _iter_hf_texts(dataset, text_field: str, where: str, name: str) -> Iterator[tuple[str, str]]:
    column = dataset.select_columns([text_field])
    for start in range(0, len(column), _HF_BATCH):
        values = column[start : start + _HF_BATCH][text_field]
        for text in _checked_strings(values, where, offset=start):
            yield text, name


# --- helpers ----------------------------------------------------------------------------------------------------


def _checked_strings(values: Iterable, where: str, offset: int = 0) -> Iterator[str]:
    for row, value in enumerate(values, start=offset):
        if not isinstance(value, str):
            raise CorpusError(
                f"{where}: row {row}: text must be a string, got {type(value).__name__} ({_preview(value)})"
            )
        yield value


def _preview(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
