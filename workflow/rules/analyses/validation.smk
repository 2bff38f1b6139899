# Validation against ground truth (paper section 5.1): gradient dot product, LiSSA, K-FAC and EK-FAC against the PBRF
# on two scikit-learn MLPs and the family's smallest language model; wall time with fitting; leave-one-out retraining.
VALIDATION = config["analyses"]["validation"]
ANALYSES["validation"] = analysis_outputs("validation", "correlations", "timings", "scores")
FIGURES["validation"] = figure_outputs("validation")
# the lm setting picks the smallest model of the learning table (so it waits for every model) and reads the corpus
VALIDATION_LM_INPUTS = {"model_dirs": model_dirs(), "learning": LEARNING_TABLE,
                        "documents": corpus_outputs()["documents"], "queries": corpus_outputs()["queries"]}


rule validation_setting:
    input:
        unpack(lambda wildcards: VALIDATION_LM_INPUTS if wildcards.setting == "lm" else {}),
    output:
        table=out("analyses/validation/{setting}.parquet"),
        record=out("analyses/validation/{setting}.json"),
    wildcard_constraints:
        setting="mlp_digits|mlp_regression|lm",
    params:
        step="validation.run_setting",
        setting=lambda wildcards: wildcards.setting,
        config_slice=config_slice("seed", "device", "analyses.validation"),
    threads: 1
    resources:
        mem_mb=lambda wildcards: 3000 if wildcards.setting == "lm" else 1500,
        runtime=INFLUENCE["runtime"],
        gpu=lambda wildcards: GPU if wildcards.setting == "lm" else 0,
    log:
        out("logs/analyses/validation/{setting}.log"),
    benchmark:
        out("benchmarks/analyses/validation/{setting}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule analysis_validation:
    input:
        tables=expand(out("analyses/validation/{setting}.parquet"), setting=VALIDATION["settings"]),
        records=expand(out("analyses/validation/{setting}.json"), setting=VALIDATION["settings"]),
    output:
        **ANALYSES["validation"],
    params:
        step="validation.run",
        config_slice=config_slice("seed"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/validation.log"),
    benchmark:
        out("benchmarks/analyses/validation.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_validation:
    input:
        correlations=ANALYSES["validation"]["correlations"],
        timings=ANALYSES["validation"]["timings"],
    output:
        **report_figure("validation", "Validation"),
    params:
        step="validation.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/validation.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
