"""Loaders of a user's own corpus: text, JSON Lines, parquet and Hugging Face datasets."""

from __future__ import annotations

import json

import datasets
import pandas as pd
import pytest

from influence_study.corpus.loaders import COLUMNS, CorpusError, assign_splits, load_documents
from influence_study.corpus.queries import empty_probes, empty_relations, load_queries, query_families
from influence_study.corpus.synthetic import PROBE_COLUMNS, QUERY_COLUMNS


# --- fixtures ---------------------------------------------------------------------------------------------------


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(
        "\n\n  First document,\nwith two lines.  \n\nSecond document.\n\n\n   \n\t\nThird document.\n",
        encoding="utf-8",
    )
    return path


@pytest.fixture
def jsonl_dir(tmp_path):
    folder = tmp_path / "jsonl"
    folder.mkdir()
    # b sorts after a; the ignored file has the wrong suffix, the sub-directory is not read.
    write_jsonl(folder / "b.jsonl", [{"text": "b one", "id": 1}, {"text": "b two"}])
    write_jsonl(folder / "a.jsonl", [{"text": "a one"}, {"text": "   "}, {"text": "a three", "lang": "en"}])
    (folder / "notes.md").write_text("not a corpus file")
    (folder / "nested").mkdir()
    write_jsonl(folder / "nested" / "c.jsonl", [{"text": "nested, never read"}])
    return folder


@pytest.fixture
def parquet_file(tmp_path):
    path = tmp_path / "docs.parquet"
    pd.DataFrame({"id": [1, 2, 3], "body": ["p one", "p two", "p three"]}).to_parquet(path)
    return path


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    single = root / "single"
    datasets.Dataset.from_dict({"content": [f"hf doc {i}" for i in range(10)], "n": list(range(10))}).save_to_disk(
        str(single)
    )
    both = root / "both"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": ["train a", "", "train b", "train c"]}),
            "test": datasets.Dataset.from_dict({"text": ["test a", "test b"]}),
        }
    ).save_to_disk(str(both))
    numbers = root / "numbers"
    datasets.Dataset.from_dict({"text": [1, 2]}).save_to_disk(str(numbers))
    return {"single": single, "both": both, "numbers": numbers}


# --- text -------------------------------------------------------------------------------------------------------


def test_text_file_documents_are_blank_line_separated_and_stripped(text_file):
    docs = load_documents("text", str(text_file), valid_fraction=0)
    assert list(docs.columns) == COLUMNS
    assert docs["text"].tolist() == ["First document,\nwith two lines.", "Second document.", "Third document."]
    assert docs["doc_id"].tolist() == ["doc-000000", "doc-000001", "doc-000002"]
    assert set(docs["split"]) == {"train"}
    assert set(docs["family"]) == {"user"}
    assert set(docs["source_file"]) == {"corpus.txt"}


def test_text_windows_line_endings(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"one\r\nstill one\r\n\r\ntwo\r\n")
    docs = load_documents("text", str(path), valid_fraction=0)
    assert docs["text"].tolist() == ["one\nstill one", "two"]


def test_text_directory_sorted_by_name(tmp_path):
    (tmp_path / "2.txt").write_text("second file")
    (tmp_path / "1.txt").write_text("first file\n\nfirst file, again")
    (tmp_path / "skip.jsonl").write_text('{"text": "wrong suffix"}\n')
    docs = load_documents("text", tmp_path, valid_fraction=0)
    assert docs["text"].tolist() == ["first file", "first file, again", "second file"]
    assert docs["source_file"].tolist() == ["1.txt", "1.txt", "2.txt"]


# --- jsonl ------------------------------------------------------------------------------------------------------


def test_jsonl_directory_reads_top_level_files_in_name_order(jsonl_dir):
    docs = load_documents("jsonl", str(jsonl_dir), valid_fraction=0)
    assert docs["text"].tolist() == ["a one", "a three", "b one", "b two"]  # the blank one is dropped
    assert docs["source_file"].tolist() == ["a.jsonl", "a.jsonl", "b.jsonl", "b.jsonl"]
    assert docs["doc_id"].tolist() == [f"doc-{i:06d}" for i in range(4)]


def test_jsonl_custom_field_and_json_suffix(tmp_path):
    path = write_jsonl(tmp_path / "data.json", [{"body": "x"}, {"body": "y"}])
    (tmp_path / "data.json").write_text(path.read_text() + "\n\n")  # trailing blank lines are fine
    docs = load_documents("jsonl", str(tmp_path), text_field="body", valid_fraction=0)
    assert docs["text"].tolist() == ["x", "y"]


def test_max_documents_keeps_first_in_file_order(jsonl_dir):
    docs = load_documents("jsonl", str(jsonl_dir), max_documents=3, valid_fraction=0)
    assert docs["text"].tolist() == ["a one", "a three", "b one"]
    assert docs["doc_id"].tolist() == ["doc-000000", "doc-000001", "doc-000002"]


def test_max_documents_stops_before_later_bad_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "good"}\n{"text": "also good"}\nnot json\n')
    docs = load_documents("jsonl", str(path), max_documents=2, valid_fraction=0)
    assert docs["text"].tolist() == ["good", "also good"]


# --- parquet ----------------------------------------------------------------------------------------------------


def test_parquet_file(parquet_file):
    docs = load_documents("parquet", str(parquet_file), text_field="body", valid_fraction=0)
    assert docs["text"].tolist() == ["p one", "p two", "p three"]
    assert set(docs["source_file"]) == {"docs.parquet"}


def test_parquet_directory(tmp_path):
    pd.DataFrame({"text": ["z1", "z2"]}).to_parquet(tmp_path / "z.parquet")
    pd.DataFrame({"text": ["y1"]}).to_parquet(tmp_path / "y.parquet")
    docs = load_documents("parquet", tmp_path, valid_fraction=0)
    assert docs["text"].tolist() == ["y1", "z1", "z2"]
    assert docs["source_file"].tolist() == ["y.parquet", "z.parquet", "z.parquet"]


# --- Hugging Face datasets --------------------------------------------------------------------------------------


def test_hf_dataset_saved_to_disk(hf_dirs):
    docs = load_documents("hf_dataset", str(hf_dirs["single"]), text_field="content", valid_fraction=0)
    assert docs["text"].tolist() == [f"hf doc {i}" for i in range(10)]
    assert set(docs["source_file"]) == {"single"}


def test_hf_dataset_dict_takes_requested_split(hf_dirs):
    train = load_documents("hf_dataset", str(hf_dirs["both"]), valid_fraction=0)
    assert train["text"].tolist() == ["train a", "train b", "train c"]
    test = load_documents("hf_dataset", str(hf_dirs["both"]), hf_split="test", valid_fraction=0)
    assert test["text"].tolist() == ["test a", "test b"]


def test_hf_dataset_max_documents(hf_dirs):
    docs = load_documents("hf_dataset", str(hf_dirs["single"]), text_field="content", max_documents=4)
    assert docs["text"].tolist() == [f"hf doc {i}" for i in range(4)]


# --- train/valid split ------------------------------------------------------------------------------------------


def many_docs(tmp_path, n=200):
    return write_jsonl(tmp_path / "many.jsonl", [{"text": f"document number {i}"} for i in range(n)])


def test_split_fraction_and_order(tmp_path):
    path = many_docs(tmp_path)
    docs = load_documents("jsonl", str(path), valid_fraction=0.1, seed=3)
    assert (docs["split"] == "valid").sum() == 20
    assert (docs["split"] == "train").sum() == 180
    assert docs["text"].tolist() == [f"document number {i}" for i in range(200)]  # split does not reorder
    assert docs["doc_id"].is_unique


def test_split_is_deterministic_by_seed(tmp_path):
    path = many_docs(tmp_path)
    first = load_documents("jsonl", str(path), valid_fraction=0.1, seed=7)
    again = load_documents("jsonl", str(path), valid_fraction=0.1, seed=7)
    other = load_documents("jsonl", str(path), valid_fraction=0.1, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert first["split"].tolist() != other["split"].tolist()
    assert (other["split"] == "valid").sum() == 20


@pytest.mark.parametrize(
    "n, fraction, expected_valid",
    [(1, 0.05, 0), (2, 0.05, 1), (3, 0.01, 1), (10, 0.0, 0), (10, 0.25, 2), (40, 0.05, 2), (4, 0.9, 3)],
)
def test_assign_splits_counts(n, fraction, expected_valid):
    splits = assign_splits(n, fraction, seed=0)
    assert len(splits) == n
    assert splits.count("valid") == expected_valid
    assert set(splits) <= {"train", "valid"}


def test_small_corpus_gets_one_valid_document(text_file):
    docs = load_documents("text", str(text_file), valid_fraction=0.05)
    assert docs["split"].tolist().count("valid") == 1


# --- errors -----------------------------------------------------------------------------------------------------


def test_unknown_source(tmp_path):
    with pytest.raises(CorpusError, match=r"unknown corpus source 'csv'.*text, jsonl, parquet, hf_dataset"):
        load_documents("csv", str(tmp_path))
    with pytest.raises(CorpusError, match="generated, not loaded"):
        load_documents("synthetic", str(tmp_path))


def test_corpus_error_is_a_value_error():
    assert issubclass(CorpusError, ValueError)


@pytest.mark.parametrize("source", ["text", "jsonl", "parquet"])
def test_path_not_found(tmp_path, source):
    missing = tmp_path / "nowhere.data"
    with pytest.raises(CorpusError, match="not found") as info:
        load_documents(source, str(missing))
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("source, suffix", [("text", ".txt"), ("jsonl", ".jsonl"), ("parquet", ".parquet")])
def test_directory_without_matching_files(tmp_path, source, suffix):
    (tmp_path / "readme.md").write_text("hello")
    with pytest.raises(CorpusError) as info:
        load_documents(source, str(tmp_path))
    message = str(info.value)
    assert str(tmp_path) in message and suffix in message


def test_jsonl_invalid_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "fine"}\n\n{"text": "broken"\n')
    with pytest.raises(CorpusError) as info:
        load_documents("jsonl", str(path))
    message = str(info.value)
    assert str(path) in message and "line 3" in message and "not valid JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "list.jsonl"
    path.write_text('["text", "in a list"]\n')
    with pytest.raises(CorpusError, match=r"list\.jsonl: line 1: expected a JSON object, got list"):
        load_documents("jsonl", str(path))


def test_jsonl_missing_field_names_file_line_and_field(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", [{"text": "ok"}, {"body": "no text here", "id": 2}])
    with pytest.raises(CorpusError) as info:
        load_documents("jsonl", str(path))
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "'text'" in message
    assert "'body'" in message and "'id'" in message  # the fields that are there


def test_jsonl_non_string_text(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"text": "ok"}, {"text": 42}])
    with pytest.raises(CorpusError) as info:
        load_documents("jsonl", str(path))
    message = str(info.value)
    assert str(path) in message and "line 2" in message and "'text'" in message and "int" in message


def test_parquet_missing_column_lists_available(parquet_file):
    with pytest.raises(CorpusError) as info:
        load_documents("parquet", str(parquet_file))  # default field "text" is not there
    message = str(info.value)
    assert str(parquet_file) in message and "'text'" in message and "id, body" in message


def test_parquet_non_string_column(parquet_file):
    with pytest.raises(CorpusError) as info:
        load_documents("parquet", str(parquet_file), text_field="id")
    message = str(info.value)
    assert str(parquet_file) in message and "'id'" in message and "int64" in message


def test_parquet_null_text_names_row(tmp_path):
    path = tmp_path / "nulls.parquet"
    pd.DataFrame({"text": ["a", None, "c"]}).to_parquet(path)
    with pytest.raises(CorpusError, match=r"nulls\.parquet: column 'text': row 1: text must be a string"):
        load_documents("parquet", str(path))


def test_hf_missing_column(hf_dirs):
    with pytest.raises(CorpusError) as info:
        load_documents("hf_dataset", str(hf_dirs["single"]))
    message = str(info.value)
    assert str(hf_dirs["single"]) in message and "'text'" in message and "content, n" in message


def test_hf_missing_split(hf_dirs):
    with pytest.raises(CorpusError, match=r"split 'validation' not found \(available splits: train, test\)"):
        load_documents("hf_dataset", str(hf_dirs["both"]), hf_split="validation")


def test_hf_non_string_text(hf_dirs):
    with pytest.raises(CorpusError, match=r"column 'text': row 0: text must be a string, got int"):
        load_documents("hf_dataset", str(hf_dirs["numbers"]))


def test_hf_directory_that_is_not_a_dataset(tmp_path):
    (tmp_path / "random.txt").write_text("hi")
    with pytest.raises(CorpusError, match="not a Hugging Face dataset directory") as info:
        load_documents("hf_dataset", str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_hf_hub_failure_is_wrapped(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("no network here")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(CorpusError, match=r"hf_dataset 'someorg/missing-set'.*split 'train'.*no network here"):
        load_documents("hf_dataset", "someorg/missing-set")


@pytest.mark.parametrize("source, name, content", [
    ("text", "empty.txt", "\n\n   \n\n"),
    ("jsonl", "empty.jsonl", '{"text": ""}\n{"text": "  \\n "}\n'),
])
def test_zero_documents(tmp_path, source, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(CorpusError, match="no documents found") as info:
        load_documents(source, str(path))
    assert str(path) in str(info.value)


@pytest.mark.parametrize("kwargs, key", [
    ({"max_documents": 0}, "max_documents"),
    ({"max_documents": 2.5}, "max_documents"),
    ({"valid_fraction": 1.0}, "valid_fraction"),
    ({"valid_fraction": -0.1}, "valid_fraction"),
    ({"text_field": ""}, "text_field"),
])
def test_bad_arguments(text_file, kwargs, key):
    with pytest.raises(CorpusError, match=key):
        load_documents("text", str(text_file), **kwargs)


# --- the queries of a user corpus (queries.source) ---------------------------------------------------------------


def test_queries_from_jsonl_get_the_synthetic_world_s_schema(tmp_path):
    path = write_jsonl(tmp_path / "q.jsonl", [
        {"query_id": "capital", "prompt": "The capital of France is", "completion": " Paris", "family": "geo",
         "note": "ignored"},
        {"prompt": "Two plus two is", "completion": " four", "label": "math"},
        {"prompt": "Hello", "completion": " world"},
    ])
    table = load_queries(path)
    assert list(table.columns) == QUERY_COLUMNS
    assert table["query_id"].tolist() == ["capital", "q-00001", "q-00002"]
    assert table["analysis"].tolist() == ["geo", "math", "user"]
    assert table["completion"].tolist() == [" Paris", " four", " world"]
    assert table["exposures"].isna().all() and str(table["exposures"].dtype) == "Int64"


def test_queries_from_parquet(tmp_path):
    path = tmp_path / "q.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "completion": [" x", " y"], "family": ["f", None]}).to_parquet(path)
    assert load_queries(path)["analysis"].tolist() == ["f", "user"]
    assert query_families(path) == ["f", "user"]


@pytest.mark.parametrize("write, expected", [
    (lambda p: write_jsonl(p, [{"prompt": "a"}]), ["queries.source", "line 1", "missing field(s) completion"]),
    (lambda p: pd.DataFrame({"text": ["a"]}).to_parquet(p.with_suffix(".parquet")),
     ["queries.source", "missing column(s) prompt, completion", "it has: text"]),
    (lambda p: p.write_text('{"prompt": "a", "completion": ""}\n'), ["row 0", "empty completion"]),
    (lambda p: p.write_text('{"prompt": 1, "completion": "b"}\n'), ["prompt: row 0", "expected a string"]),
    (lambda p: p.write_text('{"prompt": "a", "completion": "b"\n'), ["line 1", "not valid JSON"]),
    (lambda p: p.write_text('["a", "b"]\n'), ["line 1", "expected a JSON object"]),
    (lambda p: write_jsonl(p, [{"query_id": "x", "prompt": "a", "completion": "b"}] * 2), ["repeated", "'x'"]),
    (lambda p: p.write_text("\n\n"), ["no queries"]),
    (lambda p: p.with_suffix(".csv").write_text("prompt,completion\n"), [".jsonl", ".parquet"]),
    (lambda p: None, ["file not found"]),
])
def test_bad_queries_files_are_named_with_the_key(tmp_path, write, expected):
    target = tmp_path / "q.jsonl"
    write(target)
    written = [p for p in tmp_path.iterdir()] or [target]
    with pytest.raises(CorpusError) as info:
        load_queries(written[0])
    for part in expected:
        assert part in str(info.value), str(info.value)
    assert str(written[0]) in str(info.value)


def test_a_user_corpus_has_empty_ground_truth_tables():
    assert list(empty_relations().columns) == ["query_id", "doc_id", "relation", "token_overlap"]
    assert list(empty_probes().columns) == PROBE_COLUMNS and empty_probes().empty and empty_relations().empty
