# Word order (paper section 5.3): the influence of ADDING each probe sequence (not in the training data) on its
# held-out fact or translation query, one job per model with its factors, then statistics per group and size.
ANALYSES["word_order"] = analysis_outputs("word_order", "table", "groups")
FIGURES["word_order"] = figure_outputs("word_order")


rule word_order_scores:
    input:
        model_dir=out("models/{model}"),
        factors_dir=out(f"factors/{{model}}/{ANALYSIS_STRATEGY}"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        probes=corpus_outputs()["probes"],
    output:
        scores=out("analyses/word_order/{model}.parquet"),
    params:
        step="word_order.score_model",
        model_name=lambda wildcards: wildcards.model,
        config_slice=config_slice("device", "influence.batch_size", "influence.damping"),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/analyses/word_order/{model}.log"),
    benchmark:
        out("benchmarks/analyses/word_order/{model}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule analysis_word_order:
    input:
        scores=expand(out("analyses/word_order/{model}.parquet"), model=model_names()),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
    output:
        **ANALYSES["word_order"],
    params:
        step="word_order.run",
        config_slice=config_slice("seed", "analyses.word_order"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/word_order.log"),
    benchmark:
        out("benchmarks/analyses/word_order.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_word_order:
    input:
        groups=ANALYSES["word_order"]["groups"],
    output:
        **report_figure("word_order", "Word order"),
    params:
        step="word_order.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/word_order.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
