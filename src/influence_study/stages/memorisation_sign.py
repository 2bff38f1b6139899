"""Steps of the memorisation-and-sign analysis (:mod:`influence_study.analyses.memorisation_sign`): each model's
self-influence and influence on the validation documents for every training document, then the groups (measured by
the LDS retrains' loss gaps, and by construction) and their statistics."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from influence_study.analyses.common import model_sizes
from influence_study.analyses.memorisation_sign import (INFLUENCE_COLUMNS, SIGN_AUC_THRESHOLD, document_table,
                                                        loss_gaps, statistics, verdicts)
from influence_study.engine.scoring import pairwise_scores, self_scores
from influence_study.engine.tasks import LanguageModelingTask
from influence_study.stages.influence import load_study_factors, table_provenance, write_table
from influence_study.stages.influence_inputs import document_batches, load_study_inputs
from influence_study.stages.lds import lds_model as find_lds_model
from influence_study.stages.tables import read_learning, table_model, write_analysis
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger
from influence_study.study.io import read_parquet


def score_documents(config: Mapping, model_name: str, model_dir: str, factors_dir: str, documents: str,
                    influence: str, progress: bool = True) -> pd.DataFrame:
    """Step of ``memorisation_influence``: for every training document of ``model_name``, its self-influence and its
    influence on the summed log-likelihood of the validation documents (one summed query), with the model's
    factors (``doc_id, family, n_tokens, self_influence, valid_influence``, raw)."""
    inputs = load_study_inputs(model_dir, documents, device=resolve_device(config["device"]))
    factors = load_study_factors(factors_dir, inputs.model, device="cpu")
    section = config["influence"]
    docs = read_parquet(documents, columns=["split", "text"])  # the inputs hold the training split only
    valid_texts = docs.loc[docs["split"] == "valid", "text"].tolist()
    if not valid_texts:
        raise ValueError(f"{documents}: no validation document; the influence on held-out data needs some "
                         f"(corpus.valid_fraction > 0)")
    valid = document_batches(inputs.encode_documents(valid_texts), inputs.pad_id, section["batch_size"])
    train = inputs.document_batches(section["batch_size"])
    task = LanguageModelingTask()
    held_out = pairwise_scores(inputs.model, task, factors, valid.batches, train.batches, damping=section["damping"],
                               sum_queries=True, progress=progress)
    own = self_scores(inputs.model, task, factors, train.batches, damping=section["damping"], progress=progress)
    order = train.order  # column m of the scores is training document order[m]
    frame = pd.DataFrame({"doc_id": inputs.documents["doc_id"].to_numpy()[order],
                          "family": inputs.documents["family"].to_numpy()[order],
                          "n_tokens": np.asarray([len(inputs.document_sequences[i]) - 1 for i in order]),
                          "self_influence": own.scores.numpy().astype(np.float64),
                          "valid_influence": held_out.scores[0].numpy().astype(np.float64)})
    frame = frame.sort_values("doc_id", kind="stable").reset_index(drop=True)[INFLUENCE_COLUMNS]
    record = table_provenance(config, model_name, factors.strategy, factors_dir, [documents],
                              n_train=len(frame), n_valid=len(valid_texts),
                              what="self_influence: ∇log p(z)ᵀ(G+λI)⁻¹∇log p(z); valid_influence: change of the "
                                   "summed log-likelihood of the validation documents from adding z once")
    write_table(frame, influence, record)
    get_logger().info("%s: %d training documents, %.0f%% with negative influence on %d validation documents",
                      model_name, len(frame), 100 * (frame["valid_influence"] < 0).mean(), len(valid_texts))
    return frame


def run(config: Mapping, influence: Sequence[str], document_losses: Sequence[str], learning: str, documents: str,
        per_document: str, summary: str) -> None:
    """Step of ``analysis_memorisation_sign``: the gaps of the LDS retrains, the groups and the statistics."""
    section = config["analyses"]["memorisation_sign"]
    by_model = {table_model(p): read_parquet(p) for p in influence}
    order = [m for m in model_sizes(read_learning(learning)).index if m in by_model]
    by_model = {m: by_model[m] for m in order}
    lds_model = find_lds_model(config)
    gaps = None
    if document_losses:
        gaps = loss_gaps(pd.concat([read_parquet(p) for p in document_losses], ignore_index=True),
                         section["min_subsets"])
    table = document_table(by_model, gaps, lds_model, section["memorised_share"])
    stats = statistics(table, lds_model if gaps is not None else None, seed=config["seed"])
    stats.update(memorised_share=section["memorised_share"], sign_auc_threshold=SIGN_AUC_THRESHOLD)
    write_analysis(config, "memorisation_sign", {"per_document": (table, per_document)}, stats, verdicts, summary,
                   inputs=[*influence, *document_losses, learning, documents])
