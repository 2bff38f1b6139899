"""Steps of the approximation checks (:mod:`influence_study.analyses.approximations`): on one model, the scores at
each query rank against full rank, and the scores of block-diagonal factors (O blocks) against O = 1, with the
memory of the stored factors."""

from __future__ import annotations

import time
from typing import Mapping, Sequence

import numpy as np
import torch
from tqdm import tqdm

from influence_study.analyses.approximations import block_table, memory_table, rank_table, summarise, verdicts
from influence_study.analyses.common import model_sizes
from influence_study.engine.scoring import pairwise_scores
from influence_study.engine.tasks import LanguageModelingTask
from influence_study.engine.tracking import select_modules
from influence_study.stages.influence import factor_fit_documents, fit_study_factors, load_study_factors
from influence_study.stages.influence_inputs import load_study_inputs
from influence_study.stages.tables import path_of_model, read_learning, write_analysis
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger

# stored tensors of a kfac/ekfac module whose size the block-diagonal split divides (d x d blocks)
BLOCKED_KEYS = ("A_covariance", "S_covariance", "A_eigenvectors", "S_eigenvectors")


def module_min_dims(factors) -> dict[str, int]:
    """Each tracked module's smaller dimension of its gradient matrix ``[out, in (+1 for the bias)]``: a query
    rank at or above it is full rank for that module."""
    return {name: min(int(d["out"]), int(d["in"]) + int(bool(d["bias"])))
            for name, d in factors.metadata["modules"].items()}


def factor_memory(factors) -> dict[str, int]:
    """Bytes of the stored factors: ``blocked`` (the A and S covariance and eigenvector blocks, what the
    block-diagonal split divides by about O), ``other`` (eigenvalues: λ_A, λ_S and Λ [out, in]) and ``total``."""
    blocked = other = 0
    for tensors in factors.tensors.values():
        for key, tensor in tensors.items():
            size = tensor.numel() * tensor.element_size()
            if key.split(".")[0] in BLOCKED_KEYS:
                blocked += size
            else:
                other += size
    return {"blocked_bytes": int(blocked), "other_bytes": int(other), "total_bytes": int(blocked + other)}


def rank_sweep(model, factors, query_loader, train_loader, ranks: Sequence[int], damping=None,
               dtype: torch.dtype = torch.float32, progress: bool = False) -> dict[int | None, torch.Tensor]:
    """Raw scores ``[Q, M]`` at full query rank (key ``None``) and at each of ``ranks`` (query batching)."""
    task = LanguageModelingTask()
    out = {}
    for rank in tqdm([None, *ranks], desc="query ranks", disable=not progress):
        out[rank] = pairwise_scores(model, task, factors, query_loader, train_loader, damping=damping,
                                    query_rank=rank, dtype=dtype, progress=False).scores
    return out


def study_factors_match(metadata: Mapping, config: Mapping, model_name: str, n_docs: int,
                        module_names: Sequence[str]) -> bool:
    """Whether stored factors (their ``metadata``) were fitted as
    :func:`~influence_study.stages.influence.fit_study_factors` would fit them now:
    EK-FAC, one block, the same fit documents and seed, labels and tracked modules."""
    subset, seed = factor_fit_documents(config, model_name, n_docs)
    sampled = config["influence"]["sampled_labels"]
    return (metadata.get("strategy") == "ekfac" and int(metadata.get("blocks", 1)) == 1
            and metadata.get("fit_documents") == {"count": int(len(subset)), "of": int(n_docs), "seed": int(seed)}
            and metadata.get("sampled_labels") == (True if sampled is None else sampled)
            and list(metadata.get("modules", {})) == list(module_names))


def choose_model(config: Mapping, learning: str) -> str:
    """``analyses.approximations.model``, or the largest model of the family by parameters."""
    wanted = config["analyses"]["approximations"]["model"]
    names = [m["name"] for m in config["models"]]
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"analyses.approximations.model: {wanted!r} is not a model of the study ({names})")
        return wanted
    return str(model_sizes(read_learning(learning)).index[-1])


def run(config: Mapping, model_dirs: Sequence[str], documents: str, queries: str, learning: str, ranks: str,
        blocks: str, memory: str, summary: str, factors_dirs: Sequence[str] = (), progress: bool = True) -> None:
    """Step of ``analysis_approximations``: query-rank and block-diagonal checks on one model (see the module
    docstring); ``analyses.approximations`` sets the model, the samples, the ranks and the block counts.
    ``factors_dirs``: the study's EK-FAC factors (``factors/{model}/ekfac``), reused for O = 1 when they match."""
    log = get_logger()
    section = config["analyses"]["approximations"]
    model_name = choose_model(config, learning)
    model_dir = path_of_model(model_name, model_dirs, 0, "model_dirs")
    inputs = load_study_inputs(model_dir, documents, queries, device=resolve_device(config["device"]))
    n_docs, n_queries = len(inputs.document_sequences), len(inputs.query_sequences)
    if n_queries == 0:
        raise ValueError(f"{queries}: no query to score")
    rng = np.random.default_rng(config["seed"])
    query_positions = np.sort(rng.choice(n_queries, size=min(section["queries"], n_queries), replace=False))
    doc_positions = np.sort(rng.choice(n_docs, size=min(section["documents"], n_docs), replace=False))
    batch_size = config["influence"]["batch_size"]
    query_batches = inputs.query_batches(batch_size, query_positions)
    doc_batches = inputs.document_batches(batch_size, doc_positions)
    damping = config["influence"]["damping"]

    stored = path_of_model(model_name, factors_dirs, 1, "")
    modules = list(select_modules(inputs.model, config["influence"]["modules"]))
    factors_by_blocks, fit_seconds = {}, {}
    if stored is not None:
        candidate = load_study_factors(stored, inputs.model)
        if study_factors_match(candidate.metadata, config, model_name, n_docs, modules):
            factors_by_blocks[1], fit_seconds[1] = candidate, float(candidate.metadata.get("seconds", np.nan))
    reused = 1 in factors_by_blocks
    for o in sorted({1, *section["blocks"]}):
        if o not in factors_by_blocks:
            started = time.perf_counter()
            factors_by_blocks[o] = fit_study_factors(config, model_name, inputs, "ekfac", blocks=o, progress=progress)
            fit_seconds[o] = time.perf_counter() - started
    log.info("approximations on %s: %d queries x %d documents; O = 1 factors %s", model_name, len(query_positions),
             len(doc_positions), "reused from the study" if reused else "fitted (the study's do not match)")

    by_rank = rank_sweep(inputs.model, factors_by_blocks[1], query_batches.batches, doc_batches.batches,
                         sorted(section["ranks"]), damping, progress=progress)
    # every score matrix has rows in query-loader order and columns in document-loader order
    query_ids = inputs.queries["query_id"].to_numpy()[query_batches.order]
    rank_frame = rank_table(by_rank, query_ids, module_min_dims(factors_by_blocks[1]))
    by_blocks = {}
    for o, factors in factors_by_blocks.items():
        if o == 1:
            continue
        result = pairwise_scores(inputs.model, LanguageModelingTask(), factors, query_batches.batches,
                                 doc_batches.batches, damping=damping, progress=False)
        by_blocks[o] = result.scores
    block_frame = block_table(by_rank[None], by_blocks, query_ids)
    memory_frame = memory_table({o: factor_memory(f) for o, f in factors_by_blocks.items()})
    memory_frame["fit_seconds"] = memory_frame["blocks"].map(fit_seconds)
    memory_frame["reused"] = memory_frame["blocks"].eq(1) & reused
    for frame in (rank_frame, block_frame, memory_frame):
        frame.insert(0, "model", model_name)
    dims = module_min_dims(factors_by_blocks[1])
    statistics = {"model": model_name, "parameters": int(model_sizes(read_learning(learning))[model_name]),
                  "queries": int(len(query_positions)), "documents": int(len(doc_positions)),
                  "min_module_dim": int(min(dims.values())), "max_module_dim": int(max(dims.values())),
                  "o1_factors": "reused from the study" if reused else "fitted here (the study's settings differ)",
                  **summarise(rank_frame, block_frame, memory_frame, seed=config["seed"])}
    write_analysis(config, "approximations", {"ranks": (rank_frame, ranks), "blocks": (block_frame, blocks),
                                              "memory": (memory_frame, memory)},
                   statistics, verdicts, summary, inputs=[model_dir, *([stored] if stored else []), documents,
                                                          queries, learning])
