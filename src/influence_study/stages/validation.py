"""Steps of the validation against ground truth (:mod:`influence_study.analyses.validation`): build and train each
setting (:mod:`influence_study.models.toy`), score its points against its measurements with the PBRF, every
estimator and (on the smallest MLP) leave-one-out retraining; then correlate and time them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from influence_study.analyses.common import model_sizes
from influence_study.analyses.validation import (FACTOR_ESTIMATORS, GROUND_TRUTH, LOO_REFERENCES, SCORE_COLUMNS,
                                                 correlations_of, score_frame, statistics_of,
                                                 summarise_correlations, timing_table, verdicts)
from influence_study.engine.factors import fit_factors
from influence_study.engine.scoring import pairwise_scores
from influence_study.models.toy import LM_SETTING, MLP_SETTINGS, build_lm_setting, build_mlp_setting, leave_one_out
from influence_study.stages.influence_inputs import load_study_inputs
from influence_study.stages.tables import read_learning, write_analysis
from influence_study.study.io import read_json, read_parquet, write_json, write_parquet
from influence_study.study.provenance import provenance
from influence_study.study.devices import resolve_device
from influence_study.study.runtime import get_logger


def estimate_influence(setting, lissa: Mapping, pbrf: Mapping, factor_batch_size: int, seed: int = 0,
                       progress: bool = True) -> tuple[pd.DataFrame, dict, dict]:
    """Score the setting's points against its measurements with the PBRF and every estimator.

    Returns the long score table (``setting, estimator, measurement, point, score``; raw scores, positive = adding
    the point raises f), the timings ``{estimator: {fit_seconds, score_seconds, total_seconds}}`` and the damping
    used. ``lissa`` holds ``depth``, ``batch_size``, ``scale``; ``pbrf`` holds ``epsilon``, ``steps``,
    ``learning_rate``, ``central``.
    """
    model, task = setting.model, setting.task
    dtype = next(model.parameters()).dtype
    train = setting.train_batches(factor_batch_size)
    frames, timings = [], {}

    def timed(estimator, fit):
        started = time.perf_counter()
        solver = fit()
        fitted = time.perf_counter()
        result = pairwise_scores(model, task, solver, setting.query_batches, setting.point_batches, damping=damping,
                                 dtype=dtype, progress=progress)
        done = time.perf_counter()
        columns = np.asarray(setting.point_ids)[result.train_indices.numpy()]
        frames.append(score_frame(setting.name, estimator, result.scores.double().cpu().numpy(), setting.query_ids,
                                   columns))
        timings[estimator] = {"fit_seconds": fitted - started, "score_seconds": done - fitted,
                              "total_seconds": done - started}
        return solver

    damping = None  # the PBRF's default, then shared by every estimator
    ground_truth = timed(GROUND_TRUTH, lambda: fit_factors(
        model, task, train, strategy="pbrf", seed=seed, progress=progress, epsilon=pbrf["epsilon"],
        steps=pbrf["steps"], learning_rate=pbrf["learning_rate"], central=pbrf["central"]))
    damping = ground_truth.damping_values()
    for strategy in FACTOR_ESTIMATORS:
        timed(strategy, lambda: fit_factors(model, task, train, strategy=strategy, dtype=torch.float64, seed=seed,
                                            progress=progress))
        if strategy == "identity":
            timed("lissa", lambda: fit_factors(model, task, setting.train_batches(lissa["batch_size"]),
                                               strategy="lissa", seed=seed, progress=progress, depth=lissa["depth"],
                                               scale=lissa["scale"]))
    return pd.concat(frames, ignore_index=True), timings, damping


def loo_frames(setting, points: Sequence[int], progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Leave-one-out references of ``points`` (training-set indices): ``loo`` and ``loo_warm`` rows with score
    ``-(f_without - f) * n_train`` (the effect of adding the point, on the raw-score scale), and their timings."""
    frames, timings = [], {}
    for reference, start in zip(LOO_REFERENCES, ("init", "trained")):
        started = time.perf_counter()
        change = leave_one_out(setting, points, start=start, progress=progress)
        timings[reference] = {"fit_seconds": 0.0, "score_seconds": time.perf_counter() - started,
                              "total_seconds": time.perf_counter() - started}
        frames.append(score_frame(setting.name, reference, -change * setting.n_train, setting.query_ids, points))
    return pd.concat(frames, ignore_index=True), timings


def _smallest_model(model_dirs: Sequence[str], learning: str) -> tuple[str, str]:
    """``(name, directory)`` of the family's smallest model by parameters in the learning table."""
    by_name = {Path(d).name: d for d in model_dirs}
    for name in model_sizes(read_learning(learning)).index:
        if name in by_name:
            return name, by_name[name]
    raise ValueError(f"{learning}: none of the models {sorted(by_name)} has a row in the learning table")


def build_setting(config: Mapping, setting: str, model_dirs=None, learning=None, documents=None, queries=None):
    """The setting ``setting`` of the config's ``analyses.validation`` section (the ``lm`` one needs the model
    directories, the learning table, the documents and the queries)."""
    section = config["analyses"]["validation"]
    if setting in MLP_SETTINGS:
        return build_mlp_setting(setting, section, config["seed"])
    if setting == LM_SETTING:
        missing = [k for k, v in {"model_dirs": model_dirs, "learning": learning, "documents": documents,
                                  "queries": queries}.items() if not v]
        if missing:
            raise ValueError(f"setting 'lm': the rule must give the input(s) {missing}")
        name, directory = _smallest_model(model_dirs, learning)
        inputs = load_study_inputs(directory, documents, queries, device=resolve_device(config["device"]))
        built = build_lm_setting(inputs, section, config["seed"], model_dir=directory, documents=documents,
                                 queries=queries)
        built.description["model"] = name
        built.description["architecture"] = f"{name} ({built.description['architecture']})"
        return built
    raise ValueError(f"setting: expected one of {(*MLP_SETTINGS, LM_SETTING)}, got {setting!r}")


def run_setting(config: Mapping, setting: str, table: str, record: str, model_dirs=None, learning=None,
                documents=None, queries=None, progress: bool = True) -> None:
    """Step of ``validation_setting``: build and train the setting, score it with the PBRF and every estimator
    (and leave-one-out retraining where ``analyses.validation.loo`` asks), and write the long score table and a
    record of timings, damping and what the setting was."""
    section = config["analyses"]["validation"]
    log = get_logger()
    started = time.perf_counter()
    built = build_setting(config, setting, model_dirs, learning, documents, queries)
    log.info("validation %s: %s, %d points x %d measurements, built in %.1f s", setting, built.description,
             len(built.point_ids), len(built.query_ids), time.perf_counter() - started)
    options = section["lm"] if setting == "lm" else section
    batch_size = section["lm"]["batch_size"] if setting == "lm" else section["mlp"]["batch_size"]
    frame, timings, damping = estimate_influence(built, options["lissa"], options["pbrf"], batch_size,
                                                 config["seed"], progress)
    document = {"setting": setting, "points": int(len(built.point_ids)), "measurements": int(len(built.query_ids)),
                "n_train": int(built.n_train), "description": built.description, "damping": damping,
                "lissa": dict(options["lissa"]), "pbrf": dict(options["pbrf"])}
    loo = section["loo"]
    if setting == loo["setting"] and loo["points"] > 0:
        chosen = np.asarray(built.point_ids)[:loo["points"]]
        loo_frame, loo_timings = loo_frames(built, chosen, progress)
        frame = pd.concat([frame, loo_frame], ignore_index=True)
        document["loo"] = {"points": int(len(chosen)),
                           "seconds": {k: v["total_seconds"] for k, v in loo_timings.items()}}
    document["timings"] = timings
    document["seconds"] = time.perf_counter() - started
    inputs = [p for p in (documents, queries, learning) if p] + ([built.description["model_dir"]]
                                                                if "model_dir" in built.description else [])
    record_provenance = provenance(config, inputs, analysis="validation", setting=setting)
    document["provenance"] = record_provenance
    write_parquet(frame, table, metadata=record_provenance)
    write_json(document, record, sort_keys=False)
    log.info("validation %s: done in %.1f s; timings %s", setting, document["seconds"],
             {k: round(v["total_seconds"], 2) for k, v in timings.items()})


def run(config: Mapping, tables: Sequence[str], records: Sequence[str], correlations: str, timings: str,
        scores: str, summary: str) -> None:
    """Step of ``analysis_validation``: merge the settings, correlate every estimator with the PBRF (and with
    leave-one-out retraining where it was run), time them, and write the tables and verdicts."""
    score_table = pd.concat([read_parquet(p) for p in tables], ignore_index=True)[SCORE_COLUMNS]
    documents = [read_json(p) for p in records]
    correlation_table = pd.concat(
        [correlations_of(score_table, reference) for reference in (GROUND_TRUTH, *LOO_REFERENCES)],
        ignore_index=True)
    summary_table = summarise_correlations(correlation_table, config["seed"])
    timing = timing_table(documents, summary_table)
    statistics = statistics_of(summary_table, timing, documents, correlation_table, config["seed"])
    write_analysis(config, "validation", {"correlations": (correlation_table, correlations),
                                          "timings": (timing, timings), "scores": (score_table, scores)},
                   statistics, verdicts, summary, inputs=[*tables, *records])
