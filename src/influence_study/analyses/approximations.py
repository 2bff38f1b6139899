"""Approximation checks (Grosse et al. 2023, "Making it affordable"): how much do the two memory savings of the
paper change the scores?

- Query batching: each module's preconditioned query gradient is stored as its best rank-r approximation (the paper
  uses r = 32 and reports Pearson 0.995 against full rank on one query, ranks 8-128 compared). Here every query of
  a seeded sample is scored against a seeded sample of training documents at each rank and at full rank, and the
  Pearson correlation over the documents is taken per query. A rank at or above a module's smaller dimension
  (``min(out, in + bias)``) IS full rank for that module: the table says how many modules each rank approximates.
- Block-diagonal factors: A and S keep only O diagonal blocks (the paper used O = 2 at 52B and gives no accuracy
  number). Factors with O = 2, 4 are fitted on the same documents, labels and seed as the study's (O = 1) factors,
  and each query's scores are correlated with the O = 1 scores; the memory of the stored factors is counted.

Everything is computed on one model (``analyses.approximations.model``, by default the largest of the family).
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from influence_study.analyses.common import row_pearson

# The checks, fixed before the numbers were seen (the paper's statements turned into thresholds).
PAPER_RANK = 32
PAPER_RANK_PEARSON = 0.995
RANK_PEARSON_MIN = 0.99       # rank-32 median per-query correlation (the paper: 0.995 on one query)
MONOTONE_TOLERANCE = 1e-3     # median correlation may not fall by more than this from one rank to the next
BLOCK_PEARSON_MIN = 0.9       # our threshold (the paper gives none): O = 2 vs O = 1, median per query
MEMORY_RATIO_TOLERANCE = 0.05  # factor memory ratio x O within 5% of 1

# stored tensors of a kfac/ekfac module whose size the block-diagonal split divides (d x d blocks)
BLOCKED_KEYS = ("A_covariance", "S_covariance", "A_eigenvectors", "S_eigenvectors")


# -- pure functions ----------------------------------------------------------------------------------------------
def per_query_pearson(reference, approximation) -> np.ndarray:
    """Pearson correlation of each row of ``approximation`` [Q, M] with the same row of ``reference`` (NaN for a
    row without spread)."""
    x = np.asarray(reference, dtype=np.float64)
    y = np.asarray(approximation, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(f"expected two [queries, documents] matrices of one shape, got {x.shape} and {y.shape}")
    return row_pearson(y, x)


def module_min_dims(factors) -> dict[str, int]:
    """Each tracked module's smaller dimension of its gradient matrix ``[out, in (+1 for the bias)]``: a query
    rank at or above it is full rank for that module."""
    return {name: min(int(d["out"]), int(d["in"]) + int(bool(d["bias"])))
            for name, d in factors.metadata["modules"].items()}


def approximated_modules(factors, rank: int) -> int:
    """How many tracked modules a rank-``rank`` query approximates (the others keep full rank)."""
    return sum(rank < dim for dim in module_min_dims(factors).values())


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
    from tqdm.auto import tqdm

    from influence_study.engine.scoring import pairwise_scores
    from influence_study.engine.tasks import LanguageModelingTask

    task = LanguageModelingTask()
    out = {}
    for rank in tqdm([None, *ranks], desc="query ranks", disable=not progress):
        out[rank] = pairwise_scores(model, task, factors, query_loader, train_loader, damping=damping,
                                    query_rank=rank, dtype=dtype, progress=False).scores
    return out


def rank_table(scores: Mapping[int | None, torch.Tensor], query_ids: Sequence[str], factors) -> pd.DataFrame:
    """One row per query and rank: ``query_id, rank, pearson`` (with the full-rank scores of ``scores[None]``),
    ``modules_approximated`` (of ``modules``) and ``full_rank`` (no module approximated)."""
    reference = scores[None]
    n_modules = len(factors.module_names)
    frames = []
    for rank, values in scores.items():
        if rank is None:
            continue
        approximated = approximated_modules(factors, rank)
        frames.append(pd.DataFrame({"query_id": list(query_ids), "rank": int(rank),
                                    "pearson": per_query_pearson(reference, values),
                                    "modules_approximated": approximated, "modules": n_modules,
                                    "full_rank": approximated == 0}))
    return pd.concat(frames, ignore_index=True)


def block_table(reference, by_blocks: Mapping[int, torch.Tensor], query_ids: Sequence[str]) -> pd.DataFrame:
    """One row per query and block count O: ``query_id, blocks, pearson`` against the O = 1 ``reference``."""
    frames = [pd.DataFrame({"query_id": list(query_ids), "blocks": int(blocks),
                            "pearson": per_query_pearson(reference, values)}) for blocks, values in by_blocks.items()]
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame({"query_id": pd.Series(dtype=str), "blocks": pd.Series(dtype=int),
                               "pearson": pd.Series(dtype=float)}))


def memory_table(factors_by_blocks: Mapping[int, object]) -> pd.DataFrame:
    """One row per block count O (O = 1 included): :func:`factor_memory` and the ratios to O = 1."""
    rows = [{"blocks": int(blocks), **factor_memory(f)} for blocks, f in sorted(factors_by_blocks.items())]
    frame = pd.DataFrame(rows)
    base = frame.set_index("blocks").loc[1]
    frame["blocked_ratio"] = frame["blocked_bytes"] / base["blocked_bytes"]
    frame["total_ratio"] = frame["total_bytes"] / base["total_bytes"]
    return frame


def _quantiles(values: pd.Series) -> dict:
    values = values.dropna()
    if values.empty:
        return {"median": float("nan"), "q25": float("nan"), "min": float("nan"), "queries": 0}
    return {"median": float(values.median()), "q25": float(values.quantile(0.25)), "min": float(values.min()),
            "queries": int(len(values))}


def rank_gain(ranks: pd.DataFrame, seed: int = 0) -> dict:
    """Per query, the Pearson with full rank at the largest rank minus that at the smallest, paired; its mean over
    queries with a bootstrap interval (``{mean, low, high, n, from, to}``; NaNs with fewer than two ranks)."""
    from influence_study.analyses.intervals import NAN_INTERVAL, paired_interval

    present = sorted(int(r) for r in ranks["rank"].unique()) if len(ranks) else []
    if len(present) < 2:
        return {**NAN_INTERVAL, "from": None, "to": None}
    wide = ranks.pivot_table(index="query_id", columns="rank", values="pearson", aggfunc="first")
    return {**paired_interval(wide[present[-1]].to_numpy(), wide[present[0]].to_numpy(), seed=seed),
            "from": present[0], "to": present[-1]}


def summarise(ranks: pd.DataFrame, blocks: pd.DataFrame, memory: pd.DataFrame, seed: int = 0) -> dict:
    """Statistics of the three tables: per rank and per O the median (quartile, minimum) per-query Pearson with
    a bootstrap interval of the median over queries (``median_ci``), the modules each rank approximates, the
    memory per O, and the paired gain from the smallest to the largest rank (``rank_gain``)."""
    from influence_study.analyses.intervals import statistic_interval

    by_rank = {}
    for rank, group in ranks.groupby("rank", sort=True):
        by_rank[int(rank)] = {**_quantiles(group["pearson"]),
                              "median_ci": statistic_interval(group["pearson"], np.median, seed=seed),
                              "modules_approximated": int(group["modules_approximated"].iloc[0]),
                              "modules": int(group["modules"].iloc[0]), "full_rank": bool(group["full_rank"].iloc[0])}
    by_blocks = {}
    for o, group in blocks.groupby("blocks", sort=True):
        by_blocks[int(o)] = {**_quantiles(group["pearson"]),
                             "median_ci": statistic_interval(group["pearson"], np.median, seed=seed)}
    for row in memory.to_dict("records"):
        entry = by_blocks.setdefault(int(row["blocks"]), {})
        entry.update({k: int(row[k]) for k in ("blocked_bytes", "other_bytes", "total_bytes")})
        entry.update({k: float(row[k]) for k in ("blocked_ratio", "total_ratio", "fit_seconds") if k in row})
    return {"ranks": by_rank, "blocks": dict(sorted(by_blocks.items())), "rank_gain": rank_gain(ranks, seed)}


def verdicts(statistics: Mapping) -> list:
    """The paper's statements on query batching and block-diagonal factors, as checks on the statistics.

    v2: the median per-query Pearson at rank 32 above :data:`RANK_PEARSON_MIN` and at O = 2 above
    :data:`BLOCK_PEARSON_MIN` (bootstrap of the median over queries); the paired per-query gain from the smallest to
    the largest rank above 0; the memory ratio × O within :data:`MEMORY_RATIO_TOLERANCE` of 1 (exact byte counts,
    zero-width intervals)."""
    from influence_study.findings import Evidence, finding
    from influence_study.analyses.intervals import describe_interval, exact_interval, interval_check

    name = "Approximations"
    ranks = {int(k): v for k, v in statistics["ranks"].items()}
    blocks = {int(k): v for k, v in statistics["blocks"].items()}
    model = statistics.get("model", "?")
    full = [r for r, v in ranks.items() if v["full_rank"]]
    full_note = (f"; rank {', '.join(map(str, full))}: full rank for every module of {model} "
                 f"(smallest module dimension {statistics.get('min_module_dim')})") if full else ""
    medians = ", ".join(f"r={r}: {v['median']:.4f}" for r, v in sorted(ranks.items()))
    findings = []
    rank_checks = {}
    if PAPER_RANK in ranks and ranks[PAPER_RANK]["queries"]:
        rank_checks[f"median per-query Pearson at rank {PAPER_RANK} ≥ {RANK_PEARSON_MIN}"] = \
            ranks[PAPER_RANK]["median"] >= RANK_PEARSON_MIN
    at_rank = ranks.get(PAPER_RANK, {}).get("median_ci")
    n_queries = (at_rank or {}).get("n", 0)
    findings.append(finding(
        name, f"Storing each preconditioned query gradient at rank {PAPER_RANK} barely changes the scores.",
        f"Pearson {PAPER_RANK_PEARSON} (rank {PAPER_RANK} vs full, one query)",
        f"{model}: median per-query Pearson with full rank over {statistics.get('documents')} documents, "
        f"{statistics.get('queries')} queries: {medians}{full_note}", rank_checks,
        Evidence(f"{model}: median per-query Pearson of rank {PAPER_RANK} with full rank "
                 f"{describe_interval(at_rank, '{:.4f}')} (95% CI over {n_queries} queries){full_note}",
                 "the full-rank preconditioned query gradient (Pearson 1)",
                 [interval_check(f"median per-query Pearson at rank {PAPER_RANK} > {RANK_PEARSON_MIN} (ours, from the "
                                 f"paper's {PAPER_RANK_PEARSON} on one query; bootstrap over {n_queries} queries)",
                                 at_rank, RANK_PEARSON_MIN, "above")])))
    ordered = [ranks[r]["median"] for r in sorted(ranks) if ranks[r]["queries"]]
    monotone = {}
    if len(ordered) >= 2:
        monotone[f"median correlation non-decreasing with rank (tolerance {MONOTONE_TOLERANCE})"] = all(
            b >= a - MONOTONE_TOLERANCE for a, b in zip(ordered, ordered[1:]))
    gain = statistics.get("rank_gain") or {}
    gain_label = f"rank {gain.get('to')} − rank {gain.get('from')}"
    findings.append(finding(name, "The approximation improves with the query rank (ranks 8-128 compared).",
                            "ranks 8–128 compared", medians + full_note, monotone,
                            Evidence(f"mean per-query gain in Pearson with full rank, {gain_label}: "
                                     f"{describe_interval(gain, '{:.4f}')} (95% CI over {gain.get('n', 0)} queries)",
                                     f"the smallest rank compared (rank {gain.get('from')})",
                                     [interval_check(f"Pearson {gain_label} > 0 (paired, bootstrap over "
                                                     f"{gain.get('n', 0)} queries)", gain, 0.0, "above")])))
    split = {o: v for o, v in blocks.items() if o > 1}
    block_checks = {}
    if 2 in split and split[2].get("queries"):
        block_checks[f"median per-query Pearson O=2 vs O=1 ≥ {BLOCK_PEARSON_MIN} (our threshold)"] = \
            split[2]["median"] >= BLOCK_PEARSON_MIN
    two = split.get(2, {}).get("median_ci")
    findings.append(finding(
        name, "Block-diagonal factors (O = 2) leave the scores nearly unchanged.",
        "O = 2 used at 52B (no accuracy number given)",
        f"{model}: median per-query Pearson with O = 1: "
        + ", ".join(f"O={o}: {v.get('median', float('nan')):.4f}" for o, v in sorted(split.items())), block_checks,
        Evidence(f"{model}: median per-query Pearson of O = 2 with O = 1 {describe_interval(two, '{:.4f}')} (95% CI "
                 f"over {(two or {}).get('n', 0)} queries)", "the full (O = 1) factors (Pearson 1)",
                 [interval_check(f"median per-query Pearson O=2 vs O=1 > {BLOCK_PEARSON_MIN} (our threshold; "
                                 f"bootstrap over {(two or {}).get('n', 0)} queries)", two, BLOCK_PEARSON_MIN,
                                 "above")])))
    memory_checks = {f"O={o}: factor memory ratio within {MEMORY_RATIO_TOLERANCE:.0%} of 1/{o}":
                     abs(v["blocked_ratio"] * o - 1) <= MEMORY_RATIO_TOLERANCE
                     for o, v in sorted(split.items()) if "blocked_ratio" in v}
    memory_intervals = [interval_check(f"O={o}: A, S bytes ratio × O within {MEMORY_RATIO_TOLERANCE:.0%} of 1 "
                                       f"(counted bytes, exact: zero-width interval)",
                                       exact_interval(v["blocked_ratio"] * o),
                                       (1 - MEMORY_RATIO_TOLERANCE, 1 + MEMORY_RATIO_TOLERANCE), "within")
                        for o, v in sorted(split.items()) if "blocked_ratio" in v]
    findings.append(finding(
        name, "Splitting A and S into O diagonal blocks divides their memory by about O.", "saves memory (O = 2)",
        "A, S (covariances, eigenvectors) bytes relative to O = 1: "
        + ", ".join(f"O={o}: {v['blocked_ratio']:.3f}" for o, v in sorted(split.items()) if "blocked_ratio" in v)
        + "; all stored factors incl. eigenvalues: "
        + ", ".join(f"O={o}: {v['total_ratio']:.3f}" for o, v in sorted(split.items()) if "total_ratio" in v),
        memory_checks,
        Evidence("A, S bytes relative to O = 1, times O (exact counts): "
                 + (", ".join(f"O={o}: {v['blocked_ratio'] * o:.3f}" for o, v in sorted(split.items())
                              if "blocked_ratio" in v) or "not measured"),
                 "the O = 1 factors' bytes", memory_intervals)))
    return findings


# -- the study's factors -----------------------------------------------------------------------------------------
def study_factors_match(metadata: Mapping, config: Mapping, model_name: str, n_docs: int,
                        module_names: Sequence[str]) -> bool:
    """Whether stored factors (their ``metadata``) were fitted as :func:`fit_study_factors` would fit them now:
    EK-FAC, one block, the same fit documents and seed, labels and tracked modules."""
    from influence_study.stages.influence import factor_fit_documents

    subset, seed = factor_fit_documents(config, model_name, n_docs)
    sampled = config["influence"]["sampled_labels"]
    return (metadata.get("strategy") == "ekfac" and int(metadata.get("blocks", 1)) == 1
            and metadata.get("fit_documents") == {"count": int(len(subset)), "of": int(n_docs), "seed": int(seed)}
            and metadata.get("sampled_labels") == (True if sampled is None else sampled)
            and list(metadata.get("modules", {})) == list(module_names))


def choose_model(config: Mapping, learning: str) -> str:
    """``analyses.approximations.model``, or the largest model of the family by parameters."""
    from influence_study.analyses.common import model_sizes

    wanted = config["analyses"]["approximations"]["model"]
    names = [m["name"] for m in config["models"]]
    if wanted is not None:
        if wanted not in names:
            raise ValueError(f"analyses.approximations.model: {wanted!r} is not a model of the study ({names})")
        return wanted
    return str(model_sizes(learning).index[-1])


def _path_of(model_name: str, paths: Sequence[str], levels_up: int, what: str) -> str | None:
    """The path among ``paths`` named ``model_name`` ``levels_up`` levels up (0: ``models/{model}``, 1:
    ``factors/{model}/{strategy}``); ``None`` if there is none and ``what`` is empty, else a ValueError."""
    for path in paths:
        path = Path(path)
        if (path.parents[levels_up - 1] if levels_up else path).name == model_name:
            return str(path)
    if what:
        raise ValueError(f"{what}: no path for model {model_name!r} among {list(paths)}")
    return None


def run(config: Mapping, model_dirs: Sequence[str], documents: str, queries: str, learning: str, ranks: str,
        blocks: str, memory: str, summary: str, factors_dirs: Sequence[str] = (), progress: bool = True) -> None:
    """Step of ``analysis_approximations``: query-rank and block-diagonal checks on one model (see the module
    docstring); ``analyses.approximations`` sets the model, the samples, the ranks and the block counts.
    ``factors_dirs``: the study's EK-FAC factors (``factors/{model}/ekfac``), reused for O = 1 when they match."""
    import time

    from influence_study.engine.factors import Factors
    from influence_study.stages.influence_inputs import load_study_inputs
    from influence_study.stages.influence import fit_study_factors
    from influence_study.study.runtime import get_logger, resolve_device
    from influence_study.engine.scoring import pairwise_scores
    from influence_study.engine.tasks import LanguageModelingTask
    from influence_study.engine.tracking import select_modules
    from influence_study.analyses.common import model_sizes, write_analysis

    log = get_logger()
    section = config["analyses"]["approximations"]
    model_name = choose_model(config, learning)
    model_dir = _path_of(model_name, model_dirs, 0, "model_dirs")
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

    stored = _path_of(model_name, factors_dirs, 1, "")
    modules = list(select_modules(inputs.model, config["influence"]["modules"]))
    factors_by_blocks, fit_seconds = {}, {}
    if stored is not None:
        candidate = Factors.load(stored, model=inputs.model)
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
    rank_frame = rank_table(by_rank, query_ids, factors_by_blocks[1])
    by_blocks = {}
    for o, factors in factors_by_blocks.items():
        if o == 1:
            continue
        result = pairwise_scores(inputs.model, LanguageModelingTask(), factors, query_batches.batches,
                                 doc_batches.batches, damping=damping, progress=False)
        by_blocks[o] = result.scores
    block_frame = block_table(by_rank[None], by_blocks, query_ids)
    memory_frame = memory_table(factors_by_blocks)
    memory_frame["fit_seconds"] = memory_frame["blocks"].map(fit_seconds)
    memory_frame["reused"] = memory_frame["blocks"].eq(1) & reused
    for frame in (rank_frame, block_frame, memory_frame):
        frame.insert(0, "model", model_name)
    dims = module_min_dims(factors_by_blocks[1])
    statistics = {"model": model_name, "parameters": int(model_sizes(learning)[model_name]),
                  "queries": int(len(query_positions)), "documents": int(len(doc_positions)),
                  "min_module_dim": int(min(dims.values())), "max_module_dim": int(max(dims.values())),
                  "o1_factors": "reused from the study" if reused else "fitted here (the study's settings differ)",
                  **summarise(rank_frame, block_frame, memory_frame, seed=config["seed"])}
    write_analysis(config, "approximations", {"ranks": (rank_frame, ranks), "blocks": (block_frame, blocks),
                                              "memory": (memory_frame, memory)},
                   statistics, verdicts, summary, inputs=[model_dir, *([stored] if stored else []), documents,
                                                          queries, learning])
