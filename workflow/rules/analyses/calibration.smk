# Magnitude calibration: the LDS model retrained from scratch with added copies of documents (one job per retrain:
# unmodified, control, one per target); the analysis compares the measured change of log p(completion) with
# copies x score_norm, and checks every model's per-copy predictions against each query's NLL.
from influence_study.analyses.calibration import retrain_names

CALIBRATION = config["analyses"]["calibration"]
CALIBRATION_RETRAINS = retrain_names(CALIBRATION["targets"])
CALIBRATION_MEASUREMENTS = expand(out("calibration/{model}/{retrain}/measurements.parquet"), model=LDS_MODEL,
                                  retrain=CALIBRATION_RETRAINS)
CALIBRATION_DOCUMENT_SCORES = expand(out("calibration/{model}/{retrain}/documents.parquet"), model=LDS_MODEL,
                                     retrain=CALIBRATION_RETRAINS)


if "calibration" in PLANNED_ANALYSES:
    ANALYSES["calibration"] = analysis_outputs("calibration", "points", "targets", "retrains", "nll", "shares")
    FIGURES["calibration"] = figure_outputs("calibration")

    rule calibration_plan:
        input:
            pairwise=out(f"scores/{LDS_MODEL}/{ANALYSIS_STRATEGY}/pairwise.parquet"),
            queries=corpus_outputs()["queries"],
        output:
            plan=out("calibration/plan.parquet"),
        params:
            step="calibration.make_plan",
            targets=CALIBRATION["targets"],
            copies=CALIBRATION["copies"],
            family=CALIBRATION["family"],
            config_slice=config_slice("seed"),
        resources:
            **SMALL_JOB,
        log:
            out("logs/calibration/plan.log"),
        benchmark:
            out("benchmarks/calibration/plan.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule calibration_retrain:
        input:
            documents=corpus_outputs()["documents"],
            tokenizer_dir=out(f"tokenizer/{CORPUS}"),
            queries=corpus_outputs()["queries"],
            plan=out("calibration/plan.parquet"),
        output:
            measurements=out("calibration/{model}/{retrain}/measurements.parquet"),
            document_scores=out("calibration/{model}/{retrain}/documents.parquet"),
        params:
            step="calibration.retrain_with_copies",
            model_name=lambda wildcards: wildcards.model,
            retrain=lambda wildcards: wildcards.retrain,
            config_slice=model_config_slice("seed", "device", "dtype", "evaluation.batch_size"),
        wildcard_constraints:
            retrain="|".join(CALIBRATION_RETRAINS),
        threads: lambda wildcards: config["training"]["threads"]
        resources:
            **TRAINING_JOB,
            gpu=GPU,
        log:
            out("logs/calibration/{model}/{retrain}.log"),
        benchmark:
            out("benchmarks/calibration/{model}/{retrain}.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule analysis_calibration:
        input:
            plan=out("calibration/plan.parquet"),
            measurements=CALIBRATION_MEASUREMENTS,
            document_scores=CALIBRATION_DOCUMENT_SCORES,
            pairwise=strategy_tables("pairwise"),
            evaluations=expand(out("evaluation/{model}/queries.parquet"), model=model_names()),
            learning=LEARNING_TABLE,
            queries=corpus_outputs()["queries"],
        output:
            **ANALYSES["calibration"],
        params:
            step="calibration.run",
            config_slice=config_slice("seed", "analyses.calibration"),
        resources:
            **TABLE_JOB,
        log:
            out("logs/analyses/calibration.log"),
        benchmark:
            out("benchmarks/analyses/calibration.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule fig_calibration:
        input:
            points=ANALYSES["calibration"]["points"],
            targets=ANALYSES["calibration"]["targets"],
            shares=ANALYSES["calibration"]["shares"],
        output:
            **report_figure("calibration", "Validation"),
        params:
            step="calibration.figure",
        resources:
            **SMALL_JOB,
        log:
            out("logs/figures/calibration.log"),
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT
