"""Factor files and score tables carry a SHA-256 of their content, checked when they are read: a file changed in
place (same size), truncated or rewritten by another writer is refused with a message that names it and says
what to do, instead of being used silently. Written files are read-only (0o444) and never executable.

Every test here fails without the checks: the tampered files load (or fail with an error that names no file).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from influence_study import ClassificationTask, Factors, fit_factors
from influence_study.engine import factors as factor_files
from influence_study.stages import influence as influence_stages
from influence_study.stages import tables as stage_tables
from influence_study.study import io as study_io
from influence_study.study.config import validate_config

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlp_factors(strategy: str = "ekfac") -> tuple[nn.Module, Factors]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4)).double().eval()
    g = torch.Generator().manual_seed(1)
    loader = [{"inputs": torch.randn(6, 5, generator=g, dtype=torch.float64),
               "labels": torch.randint(0, 4, (6,), generator=g)} for _ in range(2)]
    return model, fit_factors(model, ClassificationTask(), loader, strategy=strategy, dtype=torch.float64,
                              progress=False)


@pytest.fixture
def saved(tmp_path):
    model, factors = _mlp_factors()
    return model, factors, factors.save(tmp_path / "factors" / "mlp" / "ekfac")


def _tensor_file(directory):
    return directory / "factors.safetensors"


def _overwrite_in_place(path, offset_from_end: int = 1) -> None:
    """Flip the bits of one byte of the tensor data, keeping the file's size (root ignores the 0o444 mode; the
    test makes the file writable as any other user would have to)."""
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF
    with open(path, "r+b") as handle:
        handle.write(data)


# --- factor files -------------------------------------------------------------------------------------------------


def test_saved_factors_record_the_tensor_files_hash_and_load_unchanged(saved):
    model, factors, directory = saved
    record = json.loads((directory / "metadata.json").read_text())
    content = record["content"]["factors.safetensors"]
    assert content["sha256"] == hashlib.sha256(_tensor_file(directory).read_bytes()).hexdigest()
    assert content["bytes"] == _tensor_file(directory).stat().st_size
    loaded = Factors.load(directory, model=model)
    assert loaded.metadata == json.loads(json.dumps(factors.metadata))  # the record is not part of the metadata
    for name in factors.module_names:
        for key, tensor in factors.tensors[name].items():
            assert torch.equal(loaded.tensors[name][key], tensor)


def test_a_factor_file_overwritten_in_place_with_the_same_size_is_refused(saved):
    model, _, directory = saved
    path = _tensor_file(directory)
    size = path.stat().st_size
    _overwrite_in_place(path)
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="changed since it was written") as info:
        Factors.load(directory, model=model)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "refit" in message and str(directory) in message


def test_a_truncated_factor_file_is_refused_naming_it(saved):
    _, _, directory = saved
    path = _tensor_file(directory)
    size = path.stat().st_size
    path.chmod(0o644)
    os.truncate(path, size // 2)
    with pytest.raises(ValueError) as info:
        Factors.load(directory)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and f"{size // 2} bytes, {size} when written" in message


def test_an_unreadable_factor_file_without_a_recorded_hash_names_the_file(saved):
    """Factors saved before hashes were recorded load unchecked, but a damaged file still names itself (today:
    a SafetensorError that names no file)."""
    _, _, directory = saved
    meta = directory / "metadata.json"
    record = json.loads(meta.read_text())
    del record["content"]
    meta.chmod(0o644)
    meta.write_text(json.dumps(record))
    Factors.load(directory)  # intact: loads
    path = _tensor_file(directory)
    path.chmod(0o644)
    os.truncate(path, path.stat().st_size - 3)
    with pytest.raises(ValueError, match="cannot be read as a safetensors file") as info:
        Factors.load(directory)
    assert str(info.value).startswith(f"{path}: ")


def test_the_study_stage_says_how_to_refit(saved):
    model, _, directory = saved
    _overwrite_in_place(_tensor_file(directory))
    with pytest.raises(ValueError) as info:
        influence_stages.load_study_factors(str(directory), model)
    message = str(info.value)
    assert str(_tensor_file(directory)) in message
    assert f"rm -rf {directory}" in message and "rerun snakemake" in message


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("strategy", ["identity", "diagonal", "ekfac"])
def test_factor_files_are_read_only_and_not_executable(tmp_path, strategy):
    _, factors = _mlp_factors(strategy)
    directory = factors.save(tmp_path / strategy)
    for name in ("factors.safetensors", "metadata.json"):
        assert _mode(directory / name) == 0o444, name
    assert _mode(directory) & 0o700 == 0o700  # the directory stays deletable by its owner
    Factors.load(factors.save(tmp_path / strategy))  # saving again replaces the read-only files


def test_the_factor_file_hash_is_what_the_engine_exports():
    assert factor_files.CONTENT_KEY == "content" and issubclass(factor_files.FileIntegrityError, ValueError)


# --- score tables -------------------------------------------------------------------------------------------------


def _flip_a_data_byte(path) -> None:
    """Change one byte in the middle of a parquet file's data pages (before its footer), keeping its size."""
    data = path.read_bytes()
    data_end = len(data) - 8 - int.from_bytes(data[-8:-4], "little")
    _overwrite_in_place(path, offset_from_end=len(data) - data_end // 2)


def _scores_frame(n: int = 60) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "query_id": pd.Categorical.from_codes(np.arange(n) % 3, categories=["q0", "q1", "q2"]),
        "doc_id": pd.Categorical.from_codes(np.arange(n) // 3, categories=[f"d{i}" for i in range(n // 3)]),
        "score": rng.normal(size=n).astype(np.float32), "rescored": np.arange(n) % 2 == 0,
    })


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "scores" / "m" / "ekfac" / "pairwise.parquet"
    frame = _scores_frame()
    study_io.write_parquet(frame, path, metadata={"model": "m", "strategy": "ekfac"}, read_only=True)
    return path, frame


def test_a_hashed_table_reads_back_as_written_and_its_content_is_plain_parquet(table, tmp_path):
    path, frame = table
    pd.testing.assert_frame_equal(study_io.read_parquet(path), frame)
    pd.testing.assert_frame_equal(study_io.read_parquet(path, columns=["doc_id", "score"]),
                                  pd.read_parquet(path, columns=["doc_id", "score"]))
    assert study_io.read_parquet_metadata(path) == {"model": "m", "strategy": "ekfac"}
    assert len(study_io.parquet_content_hash(path)) == 64
    # the data pages are byte for byte what DataFrame.to_parquet writes: hashing changes only the footer
    plain = tmp_path / "plain.parquet"
    frame.to_parquet(plain, index=False)
    hashed, reference = path.read_bytes(), plain.read_bytes()

    def data_pages(data: bytes) -> bytes:
        return data[:len(data) - 8 - int.from_bytes(data[-8:-4], "little")]

    assert data_pages(hashed) == data_pages(reference)


def test_a_table_overwritten_in_place_is_refused_by_the_stage_reader(table):
    path, frame = table
    size = path.stat().st_size
    _flip_a_data_byte(path)
    assert path.stat().st_size == size
    with pytest.raises(ValueError, match="changed since it was written") as info:
        influence_stages.read_scores(str(path))
    assert str(info.value).startswith(f"{path}: ") and "rerun snakemake" in str(info.value)


def test_a_table_whose_data_was_rewritten_keeping_its_metadata_is_refused(table):
    """What a script that 'fixes' a table does: read it with pyarrow, change a column, write it back (the schema,
    with the study's provenance record, is kept)."""
    path, _ = table
    stored = pq.read_table(path)
    changed = stored.set_column(stored.schema.get_field_index("score"), "score",
                                pc.multiply(stored["score"], pa.scalar(2.0, pa.float32())))
    path.chmod(0o644)
    pq.write_table(changed, path)
    assert study_io.read_parquet_metadata(path) == {"model": "m", "strategy": "ekfac"}  # looks like ours
    with pytest.raises(ValueError, match="rewritten by another writer") as info:
        influence_stages.read_scores(str(path))
    assert str(info.value).startswith(f"{path}: ")


def test_a_score_table_rewritten_by_pandas_is_refused(table):
    path, frame = table
    path.chmod(0o644)
    frame.assign(score=frame["score"] * 2).to_parquet(path, index=False)
    with pytest.raises(ValueError, match="records no content hash") as info:
        influence_stages.read_scores(str(path), columns=["score"])
    assert str(info.value).startswith(f"{path}: ")


def test_a_truncated_table_is_refused_naming_it(table):
    path, _ = table
    path.chmod(0o644)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(ValueError, match="not a complete parquet file") as info:
        study_io.read_parquet(path)
    assert str(info.value).startswith(f"{path}: ")


def test_score_tables_are_read_only_and_other_tables_keep_their_mode(table, tmp_path):
    path, frame = table
    assert _mode(path) == 0o444
    other = tmp_path / "tables" / "learning.parquet"
    study_io.write_parquet(frame, other)
    assert _mode(other) & 0o111 == 0 and _mode(other) & 0o200
    study_io.write_parquet(frame, path, read_only=True)  # a rewrite replaces a read-only table
    assert _mode(path) == 0o444


def test_gather_refuses_a_changed_shard(tmp_path):
    """The gather stage reads its shards through the checked reader: a shard changed after it was written stops it
    with the shard's name (today: its numbers would go into pairwise.parquet)."""
    config = validate_config({"models": [{"name": "m"}], "output_dir": str(tmp_path / "results")})
    factors_dir = tmp_path / "factors"
    factors_dir.mkdir()
    (factors_dir / "metadata.json").write_text("{}")
    docs = pd.DataFrame({"doc_id": [f"d{i}" for i in range(20)], "split": "train"})
    queries = pd.DataFrame({"query_id": ["q0", "q1", "q2"]})
    candidates = pd.DataFrame({"query_id": ["q0"], "doc_id": ["d1"], "rank": [1], "bm25": [1.0]})
    for name, frame in (("docs", docs), ("queries", queries), ("candidates", candidates)):
        frame.to_parquet(tmp_path / f"{name}.parquet", index=False)
    record = {"model": "m", "strategy": "ekfac", "factor_fingerprint": influence_stages.file_hash(factors_dir)}
    shard = tmp_path / "shard-1-of-1.parquet"
    study_io.write_parquet(_scores_frame(), shard, metadata=record, read_only=True)
    _flip_a_data_byte(shard)
    with pytest.raises(ValueError, match="changed since it was written") as info:
        influence_stages.gather_scores(config, "m", "ekfac", str(factors_dir), str(tmp_path / "docs.parquet"),
                                       str(tmp_path / "queries.parquet"), str(tmp_path / "candidates.parquet"),
                                       [str(shard)], str(tmp_path / "pairwise.parquet"),
                                       str(tmp_path / "candidate-scores.parquet"))
    assert str(info.value).startswith(f"{shard}: ")
    assert not (tmp_path / "pairwise.parquet").exists()


def test_the_analyses_table_reader_refuses_a_changed_score_table(table, tmp_path):
    """The analyses read every model's scores through ``stages.tables.load_family_tables``: a table changed in
    place is refused there too, naming it, not only by the scoring stages' ``read_scores``."""
    path, _ = table
    learning = pd.DataFrame({"model": ["m"], "parameters": [10]})
    assert set(stage_tables.load_family_tables([str(path)], learning)) == {"m"}
    _flip_a_data_byte(path)
    with pytest.raises(ValueError, match="changed since it was written") as info:
        stage_tables.load_family_tables([str(path)], learning)
    assert str(path) in str(info.value)


def _unchecked_reads(module_path) -> list[str]:
    """The calls in a module that read a table or factors without the content check: ``pd.read_parquet`` (or
    ``pandas.read_parquet``) and ``Factors.load``."""
    found = []
    for node in ast.walk(ast.parse(module_path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            name = f"{owner.id}.{node.func.attr}" if isinstance(owner, ast.Name) else None
            if name in {"pd.read_parquet", "pandas.read_parquet", "Factors.load"}:
                found.append(f"{module_path.name}:{node.lineno}: {name}")
    return found


def test_no_stage_reads_a_table_or_factors_without_checking_their_hash():
    """Every table a stage reads goes through ``study.io.read_parquet`` (or ``read_scores``) and every factors
    directory through ``load_study_factors``, so a file changed since it was written is refused in every stage,
    not only in the scoring ones."""
    stages_dir = Path(influence_stages.__file__).parent
    found = [hit for path in sorted(stages_dir.glob("*.py")) for hit in _unchecked_reads(path)]
    # the one sanctioned call: load_study_factors itself
    assert found == [f"influence.py:{_line_of(stages_dir / 'influence.py', 'return Factors.load(')}: Factors.load"]


def _line_of(path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)
