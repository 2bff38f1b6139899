"""Steps of the magnitude calibration (:mod:`influence_study.analyses.calibration`): the plan of added-copy retrains
(targets and control), one retrain of the LDS model per planned retrain, and the analysis of measured against
predicted changes of log p(completion), with every model's predictions checked against each query's NLL."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

from influence_study.analyses.calibration import (CONTROL, TARGET, UNMODIFIED, calibration_points, choose_control,
                                                  choose_targets, matrix, nll_table, plan_table, pooled_fit,
                                                  share_table, summarise_shares, target_table, verdicts)
from influence_study.analyses.common import mean_ci, median_ci
from influence_study.corpus.tokenizer import encode_documents
from influence_study.models.training import steps_for
from influence_study.stages.retrain import document_logprobs, query_logprobs, retrain_on
from influence_study.stages.tables import (load_family_tables, query_families, table_model, table_strategy,
                                           write_analysis)
from influence_study.study.config import training_settings
from influence_study.study.io import read_parquet, read_parquet_metadata, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger


def make_plan(config: Mapping, pairwise: str, queries: str, plan: str, targets: int, copies: int,
              family: str) -> pd.DataFrame:
    """Step of ``calibration_plan``: choose the targets (top-1 documents of seeded random ``family`` queries) and
    the control of the retrained model's ``pairwise`` scores, and write the retrains
    (:func:`~influence_study.analyses.calibration.plan_table`). The sizes are rule parameters, so that changing them
    redraws the plan."""
    scores = read_parquet(pairwise, columns=["query_id", "doc_id", "score_norm"])
    table = read_parquet(queries, columns=["query_id", "analysis"])
    candidates = table.loc[table["analysis"] == family, "query_id"]
    if candidates.empty:
        known = sorted(table["analysis"].dropna().unique())
        raise ValueError(f"analyses.calibration.family: no query of family {family!r} in {queries} "
                         f"(families: {known})")
    chosen = choose_targets(scores, candidates, targets, config["seed"])
    control = choose_control(scores, chosen["doc_id"], config["seed"])
    frame = plan_table(chosen, control, copies)
    write_parquet(frame, plan, metadata=provenance(config, [pairwise, queries], model=table_model(pairwise),
                                                   strategy=table_strategy(pairwise), copies=int(copies),
                                                   family=family))
    return frame


def retrain_with_copies(config: Mapping, model_name: str, retrain: str, documents: str, tokenizer_dir: str,
                        queries: str, plan: str, measurements: str, document_scores: str,
                        progress: bool = True) -> pd.DataFrame:
    """Step of ``calibration_retrain``: train ``model_name`` from scratch (its seed and training settings, and the
    original model's number of steps also when ``training.epochs`` sets them; the held-out loss is measured once, at
    the end) on every training document plus the ``copies`` extra copies of retrain ``retrain``'s document (appended
    to the list, see :mod:`influence_study.analyses.calibration`), and write its log p(completion | prompt) of every
    query (``retrain, query_id`` plus the columns of
    :func:`~influence_study.models.evaluation.completion_scores`) and, to ``document_scores``, the log-likelihood of
    each planned document read as ``EOS document`` (``retrain, doc_id, logprob, n_tokens``)."""
    table = read_parquet(plan)
    row = table[table["retrain"] == retrain]
    if row.empty:
        raise ValueError(f"retrain {retrain!r}: not in {plan} (it plans {list(table['retrain'])}); is "
                         f"analyses.calibration.targets the value the plan was drawn with?")
    row = row.iloc[0]
    docs = read_parquet(documents)
    train_ids = docs.loc[docs["split"] == "train", "doc_id"].tolist()
    added = [row["doc_id"]] * int(row["copies"]) if row["copies"] else []
    settings = training_settings(config, model_name)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    if settings.get("epochs") is not None:  # the original model's steps (the copies must not add steps)
        original = encode_documents(tokenizer, docs.loc[docs["split"] == "train", "text"])
        settings = {**settings, "steps": steps_for(settings, original), "epochs": None}
    settings = {**settings, "eval_every": settings["steps"]}
    device = resolve_device(config["device"])
    model, result, seed = retrain_on(config, model_name, docs, train_ids + added, tokenizer, settings, device,
                                     progress)
    frame = query_logprobs(config, model, tokenizer,
                           read_parquet(queries, columns=["query_id", "prompt", "completion"]), device)
    frame.insert(0, "retrain", retrain)
    planned = table["doc_id"].dropna().drop_duplicates().tolist()
    texts = docs.set_index("doc_id").loc[planned, "text"]
    scored = document_logprobs(config, model, tokenizer, texts.tolist(), device)
    doc_frame = pd.DataFrame({"retrain": retrain, "doc_id": planned, "logprob": scored["logprob"].to_numpy(),
                              "n_tokens": scored["n_tokens"].to_numpy()})
    valid_loss = float(result.history["valid_loss"].iloc[-1]) if len(result.history) else float("nan")
    record = provenance(config, [documents, tokenizer_dir, queries, plan], model=model_name, retrain=retrain,
                        kind=str(row["kind"]), doc_id=None if pd.isna(row["doc_id"]) else str(row["doc_id"]),
                        copies=int(row["copies"]),
                        documents=len(train_ids) + len(added), settings=settings, seed=seed, seconds=result.seconds,
                        valid_loss=valid_loss)
    write_parquet(frame, measurements, metadata=record)
    write_parquet(doc_frame, document_scores, metadata=record)
    get_logger().info("calibration retrain %s: %d + %d documents, %d steps in %.1f s, valid loss %.4f", retrain,
                      len(train_ids), len(added), settings["steps"], result.seconds, valid_loss)
    return frame


def run(config: Mapping, plan: str, measurements: Sequence[str], document_scores: Sequence[str],
        pairwise: Sequence[str], evaluations: Sequence[str], learning: str, queries: str, points: str,
        targets: str, retrains: str, nll: str, shares: str, summary: str) -> None:
    """Step of ``analysis_calibration``: measured vs predicted changes of the added-copy retrains (``plan``,
    ``measurements``, ``document_scores``; the retrained model's table among ``pairwise``), the control's noise and
    the reproduction check, and the share of queries whose top document's prediction exceeds the NLL for every
    model (``pairwise``: one table per model; ``evaluations``: ``evaluation/{model}/queries.parquet``)."""
    section = config["analyses"]["calibration"]
    level, resamples, seed = 0.95, section["resamples"], config["seed"]
    plan_frame = read_parquet(plan)
    plan_meta = read_parquet_metadata(plan)
    model = plan_meta.get("model")
    measured = pd.concat([read_parquet(p) for p in measurements], ignore_index=True)
    doc_scores = pd.concat([read_parquet(p) for p in document_scores], ignore_index=True)
    runs = {read_parquet_metadata(p).get("retrain"): read_parquet_metadata(p) for p in measurements}
    family_tables = load_family_tables(pairwise, learning, ["query_id", "doc_id", "score_norm"])
    if model not in family_tables:
        raise ValueError(f"calibration: the plan's model {model!r} has no table among the pairwise inputs "
                         f"({sorted(family_tables)})")
    evaluation_tables = {}
    for path in evaluations:
        table = read_parquet(path, columns=["model", "query_id", "logprob"])
        evaluation_tables[str(table["model"].iloc[0]) if len(table) else Path(path).parent.name] = table
    family_of = query_families(queries)

    point_frame = calibration_points(plan_frame, measured, family_tables[model])
    point_frame["analysis"] = point_frame["query_id"].map(family_of).astype(object)
    per_target = target_table(point_frame, level)
    fit = pooled_fit(point_frame, level, resamples, seed)
    ratio = median_ci(per_target["ratio"] if len(per_target) else [], level, resamples, seed)

    logprob = matrix(measured, "query_id", "retrain", "logprob")
    original = evaluation_tables.get(model)
    reproduction = float("nan")
    if original is not None and UNMODIFIED in logprob:
        reference = original.assign(query_id=original["query_id"].astype(str)).set_index("query_id")["logprob"]
        common = logprob.index.intersection(reference.index)
        reproduction = float(np.max(np.abs(logprob.loc[common, UNMODIFIED] - reference.loc[common])))
    control_change = (logprob[CONTROL] - logprob[UNMODIFIED]) if UNMODIFIED in logprob else pd.Series(dtype=float)
    control_mean = mean_ci(control_change, level, resamples, seed)

    docs = matrix(doc_scores, "doc_id", "retrain", "logprob")
    retrain_rows = []
    for row in plan_frame.itertuples(index=False):
        meta = runs.get(row.retrain, {})
        own = float("nan")
        if row.kind == TARGET and pd.notna(row.doc_id) and row.doc_id in docs.index:
            own = float(docs.at[row.doc_id, row.retrain] - docs.at[row.doc_id, CONTROL])
        retrain_rows.append({"retrain": row.retrain, "kind": row.kind,
                             "doc_id": None if pd.isna(row.doc_id) else str(row.doc_id), "copies": int(row.copies),
                             "query_id": None if pd.isna(row.query_id) else str(row.query_id),
                             "seconds": meta.get("seconds", np.nan),
                             "valid_loss": meta.get("valid_loss", np.nan), "self_logprob_gain": own})
    retrain_frame = pd.DataFrame(retrain_rows)
    self_gain = retrain_frame.loc[retrain_frame["kind"] == TARGET, "self_logprob_gain"]

    nll_frame = nll_table(family_tables, evaluation_tables, family_of)
    share_frame = share_table(nll_frame, level, resamples, seed)
    seconds = [r.get("seconds", 0.0) for r in runs.values()]
    statistics = {
        "model": model, "strategy": plan_meta.get("strategy"), "family": plan_meta.get("family"),
        "copies": int(plan_meta.get("copies", section["copies"])), "targets": int(len(per_target)),
        "documents": int(runs[UNMODIFIED].get("documents", 0)) if UNMODIFIED in runs else None,
        "steps": next(iter(runs.values())).get("settings", {}).get("steps") if runs else None,
        "control_doc": str(plan_frame.loc[plan_frame["kind"] == CONTROL, "doc_id"].iloc[0]),
        "retrain_seconds_total": float(np.sum(seconds)), "retrain_seconds_mean": float(np.mean(seconds)),
        "reproduction_max_abs_diff": reproduction,
        "control_change_sd": float(np.std(control_change, ddof=1)) if len(control_change) > 1 else float("nan"),
        "control_change_mean": control_mean[0], "control_change_mean_low": control_mean[1],
        "control_change_mean_high": control_mean[2],
        "ratio_median": ratio[0], "ratio_median_low": ratio[1], "ratio_median_high": ratio[2],
        **fit,
        "own_positive_share": float((per_target["measured"] > 0).mean()) if len(per_target) else float("nan"),
        "own_measured_z_median": float(per_target["measured_z"].median()) if len(per_target) else float("nan"),
        "self_logprob_gain_median": float(self_gain.median()) if len(self_gain) else float("nan"),
        "self_logprob_gain_positive_share": float((self_gain > 0).mean()) if len(self_gain) else float("nan"),
        "per_target": per_target.to_dict("records"),
        "nll_share": summarise_shares(share_frame),
    }
    write_analysis(config, "calibration", {"points": (point_frame, points), "targets": (per_target, targets),
                                           "retrains": (retrain_frame, retrains), "nll": (nll_frame, nll),
                                           "shares": (share_frame, shares)},
                   statistics, verdicts, summary,
                   inputs=[plan, *measurements, *document_scores, *pairwise, *evaluations, learning, queries])
