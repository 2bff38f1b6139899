"""The influence stages of the workflow, one function per rule: factors, BM25 candidates, sharded scores and their
gather, token scores, the BM25 recall table and the token explorer.

Each takes the validated config and the rule's named inputs and outputs (see :mod:`influence_study.stages.registry`).
Every table records its provenance (config hash, model and factor fingerprints, package version, sign convention
and normalisation) in the parquet file's metadata and in a sidecar ``*.provenance.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.corpus.candidates import bm25_candidates, bm25_recall
from influence_study.engine.factors import METADATA_FILE, Factors, fit_factors
from influence_study.engine.files import FileIntegrityError
from influence_study.engine.scoring import SIGN_CONVENTION
from influence_study.engine.tasks import LanguageModelingTask
from influence_study.explorer import write_explorer
from influence_study.stages import sharded_scores
from influence_study.stages.influence_inputs import load_study_inputs, parse_scatteritem
from influence_study.stages.sharded_scores import ScoringSettings, gather_shards
from influence_study.study.config import model_entry
from influence_study.study.io import (atomic_path, read_json, read_parquet, read_parquet_metadata, write_json,
                                     write_parquet)
from influence_study.study.provenance import file_hash, provenance, write_provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger
from influence_study.study.seeds import factor_fit_seed

# Score tables (shards, pairwise, candidates, tokens) stay writable (0o644, never executable): Snakemake counts a
# non-writable output as protected, so for a user other than root a read-only table would stop every rerun that
# replaces it (e.g. after a config change) with "Write-protected output files". Their content hash (checked by
# read_scores) is what catches a table changed in place. Factor files, inside their directory output, are 0o444.
READ_ONLY_SCORES = False
NORMALISATION = "score: raw; score_norm = score / n_train (change of log p(completion), in nats, from adding one copy)"


def scoring_settings(config: Mapping):
    """The :class:`~influence_study.stages.sharded_scores.ScoringSettings` of a config's ``influence`` section."""
    section = config["influence"]
    return ScoringSettings(batch_size=section["batch_size"], query_batch_size=section["query_batch_size"],
                           query_rank=section["query_rank"], rescore_top_k=section["rescore_top_k"],
                           damping=section["damping"])


def _inputs(config: Mapping, model_dir: str, documents: str, queries: str | None = None):
    return load_study_inputs(model_dir, documents, queries, device=resolve_device(config["device"]))


def load_study_factors(factors_dir: str, model, device: str = "cpu") -> Factors:
    """``Factors.load`` with the study's advice when the files changed since they were written or cannot be
    read: delete the directory (its files are read-only) and rerun the workflow, which refits them and rescores."""
    try:
        return Factors.load(factors_dir, model=model, device=device)
    except FileIntegrityError as err:
        raise FileIntegrityError(
            f"{err}. In the workflow: `rm -rf {factors_dir}`, then rerun snakemake: "
            f"it refits the factors and recomputes every score table made from them") from err


def read_scores(path: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A score table (shard, pairwise, candidates or tokens), after checking its data against the SHA-256 that
    :func:`~influence_study.study.io.write_parquet` recorded; a changed, unreadable or unchecked table raises
    :class:`~influence_study.engine.files.FileIntegrityError` naming it."""
    return read_parquet(path, columns=columns, require_hash=True,
                        advice=f"delete it (`rm -f {path}`) and rerun snakemake, which recomputes it")


def _factors(inputs, factors_dir: str):
    return load_study_factors(factors_dir, inputs.model, device="cpu")


def table_provenance(config: Mapping, model_name: str, strategy: str, factors_dir: str, inputs: Sequence[str],
                     **extra) -> dict:
    """The provenance record of a scores table of ``model_name``/``strategy``: config and input hashes, model and
    factor fingerprints, sign convention and normalisation (plus ``extra``)."""
    factor_meta = read_json(Path(factors_dir) / METADATA_FILE)
    return provenance(config, inputs, model=model_name, strategy=strategy,
                      model_fingerprint=factor_meta["model_fingerprint"], factor_fingerprint=file_hash(factors_dir),
                      sign=SIGN_CONVENTION, normalisation=NORMALISATION, **extra)


def write_table(frame: pd.DataFrame, path: str, record: dict, read_only: bool = False) -> None:
    """Write a table with ``record`` in its parquet metadata and in a ``<path>.provenance.json`` sidecar
    (``read_only``: the table gets mode 0o444, as the score tables do)."""
    write_parquet(frame, path, metadata=record, read_only=read_only)
    write_json(record, Path(path).with_name(Path(path).name + ".provenance.json"))


def factor_fit_documents(config: Mapping, model_name: str, n_docs: int) -> tuple[np.ndarray, int]:
    """The training documents (sorted positions among the ``n_docs``) that the factors of ``model_name`` are
    fitted on, ``influence.fit_documents`` of them drawn at random, and the seed (of that draw and of the sampled
    labels, :func:`~influence_study.study.seeds.factor_fit_seed`)."""
    n_fit = n_docs if config["influence"]["fit_documents"] is None else min(config["influence"]["fit_documents"],
                                                                            n_docs)
    seed = factor_fit_seed(config["seed"], config["models"].index(model_entry(config, model_name)))
    return np.sort(np.random.default_rng(seed).choice(n_docs, size=n_fit, replace=False)), seed


def fit_study_factors(config: Mapping, model_name: str, inputs, strategy: str, blocks: int = 1,
                      progress: bool = True):
    """Fit ``strategy``'s curvature of one model (its :class:`~influence_study.stages.influence_inputs.StudyInputs`) as
    the study does: on :func:`factor_fit_documents`, labels sampled from the model unless
    ``influence.sampled_labels`` is false, the A and S factors split into ``blocks`` diagonal blocks."""
    section = config["influence"]
    n_docs = len(inputs.document_sequences)
    subset, seed = factor_fit_documents(config, model_name, n_docs)
    batches = inputs.document_batches(section["batch_size"], subset)
    factors = fit_factors(inputs.model, LanguageModelingTask(), batches.batches, strategy=strategy,
                          modules=section["modules"], sampled_labels=section["sampled_labels"], blocks=blocks,
                          seed=seed, progress=progress)
    factors.metadata["fit_documents"] = {"count": int(len(subset)), "of": int(n_docs), "seed": int(seed)}
    return factors


def fit_model_factors(config: Mapping, model_name: str, strategy: str, model_dir: str, documents: str,
                      factors_dir: str, progress: bool = True) -> None:
    """Fit ``strategy``'s curvature of one model on ``influence.fit_documents`` training documents (a seeded
    random subset; labels sampled from the model unless ``influence.sampled_labels`` is false) and save it."""
    inputs = _inputs(config, model_dir, documents)
    factors = fit_study_factors(config, model_name, inputs, strategy, progress=progress)
    factors.metadata["provenance"] = provenance(config, [model_dir, documents], model=model_name)
    factors.save(factors_dir)  # files read-only (0o444), with the tensors' SHA-256 in metadata.json
    fitted = factors.metadata["fit_documents"]
    get_logger().info("%s factors of %s: %d modules, fitted on %d of %d training documents, saved to %s", strategy,
                      model_name, len(factors.module_names), fitted["count"], fitted["of"], factors_dir)


def make_candidates(config: Mapping, documents: str, queries: str, candidates: str) -> None:
    """The paper's BM25 top-k training documents of every query (``query_id, doc_id, rank, bm25``)."""
    docs = read_parquet(documents, columns=["doc_id", "text", "split"])
    docs = docs[docs["split"] == "train"]
    table = read_parquet(queries, columns=["query_id", "prompt", "completion"])
    section = config["candidates"]
    frame = bm25_candidates(docs, table, section["top_k"], k1=section["k1"])
    record = provenance(config, [documents, queries], top_k=section["top_k"], k1=section["k1"])
    write_table(frame, candidates, record)
    get_logger().info("BM25 candidates: %d rows for %d queries (top %d)", len(frame), frame["query_id"].nunique(),
                      section["top_k"])


def _with_positions(frame: pd.DataFrame, documents: pd.DataFrame, queries: pd.DataFrame, what: str) -> pd.DataFrame:
    """``frame`` (with ``query_id``, ``doc_id``) plus ``query_index``/``doc_index``: positions in the queries
    table and among the training documents, the integer keys the sharded scores use."""
    doc_position = pd.Series(np.arange(len(documents)), index=documents["doc_id"])
    query_position = pd.Series(np.arange(len(queries)), index=queries["query_id"])
    frame = frame.assign(query_index=frame["query_id"].astype(str).map(query_position),
                         doc_index=frame["doc_id"].astype(str).map(doc_position))
    if frame[["query_index", "doc_index"]].isna().any().any():
        raise ValueError(f"{what}: names queries or documents that are not in the corpus; rebuild it")
    return frame.astype({"query_index": np.int32, "doc_index": np.int32})


def _candidate_positions(candidates: str, documents: pd.DataFrame, queries: pd.DataFrame,
                         these_queries_only: bool = False) -> pd.DataFrame:
    """The candidate table as ``query_index, doc_index, bm25_rank, bm25`` (``these_queries_only``: the rows of
    the ``queries`` given, when they are a subset of the study's)."""
    frame = read_parquet(candidates)
    if these_queries_only:
        frame = frame[frame["query_id"].astype(str).isin(set(queries["query_id"].astype(str)))]
    frame = _with_positions(frame, documents, queries, candidates)
    return frame.rename(columns={"rank": "bm25_rank"})[["query_index", "doc_index", "bm25_rank", "bm25"]]


def score_shard(config: Mapping, model_name: str, strategy: str, scatteritem: str, model_dir: str,
                factors_dir: str, documents: str, queries: str, candidates: str, shard: str,
                progress: bool = True) -> None:
    """Score every query against one shard of the training documents (see
    :mod:`~influence_study.stages.sharded_scores`)."""
    index, total = parse_scatteritem(scatteritem)
    inputs = _inputs(config, model_dir, documents, queries)
    factors = _factors(inputs, factors_dir)
    pairs = _candidate_positions(candidates, inputs.documents, inputs.queries)
    frame = sharded_scores.score_shard(inputs, factors, index, total, scoring_settings(config), pairs,
                                       progress=progress)
    record = table_provenance(config, model_name, strategy, factors_dir, [documents, queries, candidates],
                               shard=scatteritem)
    write_parquet(frame, shard, metadata=record, read_only=READ_ONLY_SCORES)
    get_logger().info("shard %s of %s/%s: %d rows", scatteritem, model_name, strategy, len(frame))


def _with_ids(frame: pd.DataFrame, documents: pd.DataFrame, queries: pd.DataFrame, n_train: int) -> pd.DataFrame:
    """Replace positions by ``query_id``/``doc_id`` (categoricals) and add ``score_norm``."""
    out = pd.DataFrame({
        "query_id": pd.Categorical.from_codes(frame["query_index"].to_numpy(), categories=queries["query_id"]),
        "doc_id": pd.Categorical.from_codes(frame["doc_index"].to_numpy(), categories=documents["doc_id"]),
    })
    rest = frame.drop(columns=["query_index", "doc_index"])
    out["score"] = rest.pop("score").astype(np.float32)
    out["score_norm"] = (out["score"] / n_train).astype(np.float32)
    return pd.concat([out, rest.reset_index(drop=True)], axis=1)


def _tables(documents: str, queries: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    docs = read_parquet(documents, columns=["doc_id", "split"])
    docs = docs[docs["split"] == "train"].reset_index(drop=True)
    return docs, read_parquet(queries, columns=["query_id"])


def gather_scores(config: Mapping, model_name: str, strategy: str, factors_dir: str, documents: str, queries: str,
                  candidates: str, shards: Sequence[str], pairwise: str, candidate_scores: str) -> None:
    """Join the shards into ``pairwise.parquet`` (every query x every training document) and
    ``candidates.parquet`` (each query's BM25 candidates), with ``score``, ``score_norm``, ``rescored`` and the
    per-layer raw scores ``layer_*``."""
    docs, table = _tables(documents, queries)
    settings = scoring_settings(config)
    expected = {"model": model_name, "strategy": strategy, "factor_fingerprint": file_hash(factors_dir)}
    for path in shards:
        record = read_parquet_metadata(path)
        stale = {k: (record.get(k), v) for k, v in expected.items() if record.get(k) != v}
        if stale:
            raise ValueError(f"{path}: was computed for other inputs ({stale}); delete it and rerun")
    pairs = _candidate_positions(candidates, docs, table)
    full, restricted = gather_shards([read_scores(p) for p in shards], len(table), len(docs), settings, pairs)
    n_train = len(docs)
    record = table_provenance(config, model_name, strategy, factors_dir, [documents, queries, candidates],
                               n_train=n_train, query_rank=settings.query_rank,
                               rescore_top_k=settings.rescore_top_k, shards=len(shards),
                               layers="layer_i = raw score carried by the tracked modules of transformer block i")
    write_table(_with_ids(full, docs, table, n_train), pairwise, record, read_only=READ_ONLY_SCORES)
    restricted = _with_ids(restricted, docs, table, n_train)
    write_table(restricted, candidate_scores, {**record, "restricted_to": "BM25 candidates (candidates.top_k)"},
                read_only=READ_ONLY_SCORES)
    get_logger().info("%s/%s: %d pairs (%d re-scored at full rank), %d candidate pairs", model_name, strategy,
                      len(full), int(full["rescored"].sum()), len(restricted))


def score_in_memory(config: Mapping, inputs, factors, candidates: str, progress: bool = True) -> pd.DataFrame:
    """Every query of ``inputs`` against every training document in one pass, as :func:`score_shard` and
    :func:`gather_scores` compute them (the ``influence`` settings, re-scoring each query's top-k overall and among
    its BM25 ``candidates`` at full rank): the pairwise table's columns (``query_id, doc_id, score, score_norm,
    layer_*, rescored``), for a model that is not one of the family's (e.g. an early checkpoint)."""
    settings = scoring_settings(config)
    pairs = _candidate_positions(candidates, inputs.documents, inputs.queries, these_queries_only=True)
    frame = sharded_scores.score_shard(inputs, factors, 0, 1, settings, pairs, progress=progress)
    full, _ = gather_shards([frame], len(inputs.queries), len(inputs.documents), settings)
    return _with_ids(full, inputs.documents, inputs.queries, len(inputs.documents))


def top_documents(pairwise: pd.DataFrame, k: int) -> pd.DataFrame:
    """Each query's ``k`` most positive documents with their ``rank`` (1 = highest score; ties go to the earlier
    document), from a gathered pairwise table."""
    frame = pairwise.sort_values(["query_id", "score", "doc_id"], ascending=[True, False, True], kind="stable")
    frame = frame.groupby("query_id", observed=True, sort=False).head(k).copy()
    frame["rank"] = frame.groupby("query_id", observed=True).cumcount() + 1
    return frame.reset_index(drop=True)


def token_scores(config: Mapping, model_name: str, strategy: str, model_dir: str, factors_dir: str,
                 documents: str, queries: str, pairwise: str, tokens: str, progress: bool = True) -> None:
    """Token scores (full rank) of each query's ``influence.token_documents`` top documents:
    ``query_id, doc_id, rank, position, token_id, token, score, score_norm``."""
    inputs = _inputs(config, model_dir, documents, queries)
    factors = _factors(inputs, factors_dir)
    top = top_documents(read_scores(pairwise, columns=["query_id", "doc_id", "score"]),
                        config["influence"]["token_documents"])
    pairs = _with_positions(top, inputs.documents, inputs.queries, pairwise)[["query_index", "doc_index", "rank"]]
    frame = sharded_scores.token_scores(inputs, factors, pairs, scoring_settings(config), progress=progress)
    vocabulary = np.asarray([inputs.tokenizer.decode([i]) for i in range(len(inputs.tokenizer))], dtype=object)
    out = pd.DataFrame({
        "query_id": inputs.queries["query_id"].to_numpy()[frame["query_index"].to_numpy(int)],
        "doc_id": inputs.documents["doc_id"].to_numpy()[frame["doc_index"].to_numpy(int)],
        "rank": frame["rank"].astype(np.int32), "position": frame["position"], "token_id": frame["token_id"],
        "token": vocabulary[frame["token_id"].to_numpy()], "score": frame["score"],
        "score_norm": (frame["score"] / len(inputs.documents)).astype(np.float32),
    })
    record = table_provenance(config, model_name, strategy, factors_dir, [documents, queries, pairwise],
                               n_train=len(inputs.documents), token_documents=config["influence"]["token_documents"],
                               position="the input position t; its score is carried by the prediction of token t+1")
    write_table(out, tokens, record, read_only=READ_ONLY_SCORES)
    get_logger().info("token scores of %s/%s: %d tokens of %d pairs", model_name, strategy, len(out), len(pairs))


def bm25_recall_table(config: Mapping, pairwise: Sequence[str], candidates: str, table: str, summary: str) -> None:
    """For each model, strategy and query: the share of the unfiltered top documents that BM25's top-k holds,
    for every k of ``candidates.recall_k`` (per-query table and a mean per model, strategy and k)."""
    section = config["candidates"]
    bm25 = read_parquet(candidates)
    frames = []
    for path in pairwise:
        record = read_parquet_metadata(path)
        scores = read_scores(path, columns=["query_id", "doc_id", "score"])
        scores = scores.astype({"query_id": str, "doc_id": str})
        recall = bm25_recall(scores, bm25, section["recall_k"], top=section["recall_top"])
        frames.append(recall.assign(model=record["model"], strategy=record["strategy"]))
    frame = pd.concat(frames, ignore_index=True)
    write_table(frame, table, provenance(config, [*pairwise, candidates], what="BM25 recall of the unfiltered top"))
    mean = (frame.groupby(["model", "strategy", "k", "top"], sort=False)["recall"]
            .agg(["mean", "median", "min"]).reset_index())
    with atomic_path(summary) as tmp:
        mean.to_csv(tmp, index=False, float_format="%.4f")
    get_logger().info("BM25 recall of the unfiltered top-%d:\n%s", section["recall_top"], mean.to_string(index=False))


def explorer_page(config: Mapping, model_name: str, strategy: str, pairwise: str, tokens: str, documents: str,
                  queries: str, relations: str, page: str) -> None:
    """The self-contained token explorer of one model (each query's top documents, tokens shaded by influence)."""
    token_table = read_scores(tokens)
    wanted = token_table[["query_id", "doc_id", "rank"]].drop_duplicates()
    scores = read_scores(pairwise).astype({"query_id": str, "doc_id": str})
    top = wanted.merge(scores, on=["query_id", "doc_id"], how="left").sort_values(["query_id", "rank"])
    docs = read_parquet(documents, columns=["doc_id", "family", "text"])
    record = read_parquet_metadata(pairwise)
    shown = {k: record.get(k) for k in ("config_hash", "model_fingerprint", "factor_fingerprint", "version",
                                        "strategy", "query_rank", "rescore_top_k", "n_train")}
    write_explorer(page, model_name=model_name, strategy=strategy, queries=read_parquet(queries), top=top,
                   tokens=token_table, documents=docs, relations=read_parquet(relations), provenance=shown,
                   max_queries=config["explorer"]["max_queries"])
    write_provenance(page, config, [pairwise, tokens], model=model_name, strategy=strategy)
