# Memorisation and the sign of influence: each model's self-influence and influence on the validation documents
# for every training document (one job per model), memorisation measured as the loss gap across the LDS retrains
# (documents.parquet of lds_retrain) and known by construction (canaries, quote copies).
MEMORISATION_SIGN_MODELS = config["analyses"]["memorisation_sign"]["models"] or model_names()
ANALYSES["memorisation_sign"] = analysis_outputs("memorisation_sign", "per_document")
FIGURES["memorisation_sign"] = figure_outputs("memorisation_sign")


rule memorisation_influence:
    input:
        model_dir=out("models/{model}"),
        factors_dir=out(f"factors/{{model}}/{ANALYSIS_STRATEGY}"),
        documents=corpus_outputs()["documents"],
    output:
        influence=out("analyses/memorisation_sign/{model}.parquet"),
    params:
        step="memorisation_sign.score_documents",
        model_name=lambda wildcards: wildcards.model,
        config_slice=config_slice("device", "influence.batch_size", "influence.damping"),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/analyses/memorisation_sign/{model}.log"),
    benchmark:
        out("benchmarks/analyses/memorisation_sign/{model}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule analysis_memorisation_sign:
    input:
        influence=expand(out("analyses/memorisation_sign/{model}.parquet"), model=MEMORISATION_SIGN_MODELS),
        document_losses=LDS_DOCUMENT_LOSSES,
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
    output:
        **ANALYSES["memorisation_sign"],
    params:
        step="memorisation_sign.run",
        config_slice=config_slice("seed", "analyses.memorisation_sign"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/memorisation_sign.log"),
    benchmark:
        out("benchmarks/analyses/memorisation_sign.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_memorisation_sign:
    input:
        per_document=ANALYSES["memorisation_sign"]["per_document"],
        summary=ANALYSES["memorisation_sign"]["summary"],
    output:
        **report_figure("memorisation_sign", "Memorisation"),
    params:
        step="memorisation_sign.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/memorisation_sign.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
