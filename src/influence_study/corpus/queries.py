"""The queries of a user's own corpus (``queries.source``): a JSON Lines or parquet file of prompt/completion rows.

The synthetic world writes its own queries with their ground truth; a corpus of one's own has neither, so its
queries come from a file. Each row is one query, scored as ``BOS prompt completion`` with
f = log p(completion | prompt) (the completion is appended to the prompt as it is: start it with a space when
the model should read a separate word)::

    {"prompt": "The capital of France is", "completion": " Paris", "family": "geography"}
    {"query_id": "q-math-1", "prompt": "Two plus two is", "completion": " four"}

Columns (fields):

* ``prompt`` (string) and ``completion`` (non-empty string): required;
* ``query_id`` (optional): a unique name per query; a row without one is named by its position in the file
  (``q-00000``, ``q-00001``, ...);
* ``family`` or ``label`` (optional; a row that gives both takes ``family``): the query's family, the ``analysis``
  column the per-family statistics group by; default ``"user"``.

Other columns are ignored. :func:`load_queries` returns the table in the schema the synthetic world writes
(:data:`QUERY_COLUMNS`; the ground-truth columns are null), and :func:`empty_relations` / :func:`empty_probes` the
(empty) ground truth of a user corpus. Bad input raises :class:`~influence_study.corpus.loaders.CorpusError` naming
the key ``queries.source``, the file, the line or row, and the missing columns.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from influence_study.corpus.loaders import CorpusError
from influence_study.corpus.synthetic import NULLABLE_DTYPES, PROBE_COLUMNS, QUERY_COLUMNS
from influence_study.corpus.synthetic.ground_truth import RELATION_COLUMNS

KEY = "queries.source"
SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
REQUIRED = ("prompt", "completion")
FAMILY_COLUMNS = ("family", "label")  # the first one present gives the query's family
DEFAULT_FAMILY = "user"
ID_FORMAT = "q-{:05d}"


def load_queries(path: str | os.PathLike) -> pd.DataFrame:
    """Read the queries file ``path`` (``.jsonl``/``.json``: one JSON object per line; ``.parquet``) as a queries
    table with the synthetic world's columns (:data:`QUERY_COLUMNS`): ``query_id``, ``analysis`` (the family),
    ``prompt``, ``completion`` and the ground-truth columns, all null.

    Raises:
        CorpusError: a missing file or an unknown suffix, a line that is not a JSON object, missing columns (named,
            with those the file has), a prompt or completion that is not a string, an empty completion, a
            ``query_id`` repeated, or no query at all.
    """
    path = Path(path)
    where = f"{KEY}: {path}"
    if not path.is_file():
        raise CorpusError(f"{where}: file not found")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise CorpusError(f"{where}: expected a .jsonl (or .json: one JSON object per line) or .parquet file")
    frame = _read_jsonl(path, where) if kind == "jsonl" else _read_parquet(path, where)
    if frame.empty:
        raise CorpusError(f"{where}: no queries (expected rows with {' and '.join(REQUIRED)})")
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise CorpusError(f"{where}: missing column(s) {', '.join(missing)} (it has: "
                          f"{', '.join(map(str, frame.columns)) or 'none'}); every query needs a prompt and a "
                          f"completion")
    for column in REQUIRED:
        _check_strings(frame[column], f"{where}: {column}")
    empty = [i for i, text in enumerate(frame["completion"]) if not text]
    if empty:
        raise CorpusError(f"{where}: row {empty[0]}: empty completion (f = log p(completion | prompt) needs at "
                          f"least one token)")
    query_ids = _query_ids(frame, where)
    families = _families(frame, where)
    table = pd.DataFrame({"query_id": query_ids, "analysis": families, "prompt": frame["prompt"].tolist(),
                          "completion": frame["completion"].tolist()})
    for column in QUERY_COLUMNS:
        if column not in table:
            table[column] = None
    table = table[QUERY_COLUMNS]
    for column, dtype in NULLABLE_DTYPES.items():
        if column in table:
            table[column] = table[column].astype(dtype)
    return table


def empty_relations() -> pd.DataFrame:
    """The relations table of a corpus without ground truth: no rows, the synthetic world's columns."""
    return pd.DataFrame({c: pd.Series(dtype="float64" if c == "token_overlap" else "object")
                         for c in [*RELATION_COLUMNS, "token_overlap"]})


def empty_probes() -> pd.DataFrame:
    """The probes table of a corpus without ground truth: no rows, the synthetic world's columns."""
    return pd.DataFrame({c: pd.Series(dtype="object") for c in PROBE_COLUMNS})


def query_families(path: str | os.PathLike) -> list[str]:
    """The distinct families of the queries file ``path``, sorted."""
    return sorted(load_queries(path)["analysis"].unique())


# --- internals --------------------------------------------------------------------------------------------------


def _read_jsonl(path: Path, where: str) -> pd.DataFrame:
    records = []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise CorpusError(f"{where}: not UTF-8 text ({err})") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise CorpusError(f"{where}: line {number}: not valid JSON ({err.msg} at column {err.colno}); expected "
                              f"one JSON object per line") from err
        if not isinstance(record, dict):
            raise CorpusError(f"{where}: line {number}: expected a JSON object, got {type(record).__name__}")
        missing = [c for c in REQUIRED if c not in record]
        if missing:
            raise CorpusError(f"{where}: line {number}: missing field(s) {', '.join(missing)} (fields on this "
                              f"line: {', '.join(map(repr, record)) or 'none'})")
        records.append(record)
    return pd.DataFrame.from_records(records) if records else pd.DataFrame(columns=list(REQUIRED))


def _read_parquet(path: Path, where: str) -> pd.DataFrame:
    try:
        pq.read_schema(path)
        return pd.read_parquet(path)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorpusError(f"{where}: not a readable parquet file ({err})") from err


def _check_strings(values: pd.Series, where: str) -> None:
    for row, value in enumerate(values):
        if not isinstance(value, str):
            raise CorpusError(f"{where}: row {row}: expected a string, got {type(value).__name__} ({value!r:.60})")


def _query_ids(frame: pd.DataFrame, where: str) -> list[str]:
    if "query_id" not in frame.columns:
        return [ID_FORMAT.format(i) for i in range(len(frame))]
    ids = []
    for row, value in enumerate(frame["query_id"]):
        missing = value is None or (isinstance(value, float) and pd.isna(value)) or str(value).strip() == ""
        ids.append(ID_FORMAT.format(row) if missing else str(value).strip())
    repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
    if repeated:
        raise CorpusError(f"{where}: query_id: repeated value(s) {repeated[:5]}; every query needs its own id (a "
                          f"row without one is named {ID_FORMAT.format(0)}, ... by its position)")
    return ids


def _families(frame: pd.DataFrame, where: str) -> list[str]:
    columns = [c for c in FAMILY_COLUMNS if c in frame.columns]
    families = []
    for row in range(len(frame)):
        family = DEFAULT_FAMILY
        for column in columns:  # the first of family, label that the row gives
            value = frame[column].iloc[row]
            if value is None or (isinstance(value, float) and pd.isna(value)):
                continue
            if not isinstance(value, str) or not value.strip():
                raise CorpusError(f"{where}: {column}: row {row}: expected a non-empty string, got {value!r:.60}")
            family = value.strip()
            break
        families.append(family)
    return families
