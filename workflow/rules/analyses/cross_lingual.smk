# Cross-lingual (paper section 5.3.3): translated facts queries scored on the English query's top-10 documents.
ANALYSES["cross_lingual"] = analysis_outputs("cross_lingual", "scores", "ratios")
FIGURES["cross_lingual"] = figure_outputs("cross_lingual")


rule analysis_cross_lingual:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        queries=corpus_outputs()["queries"],
        documents=corpus_outputs()["documents"],
        evaluations=evaluation_tables(),
    output:
        **ANALYSES["cross_lingual"],
    params:
        step="cross_lingual.run",
        config_slice=config_slice("seed", "analyses.cross_lingual"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/cross_lingual.log"),
    benchmark:
        out("benchmarks/analyses/cross_lingual.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_cross_lingual:
    input:
        scores=ANALYSES["cross_lingual"]["scores"],
        ratios=ANALYSES["cross_lingual"]["ratios"],
    output:
        **report_figure("cross_lingual", "Cross-lingual"),
    params:
        step="cross_lingual.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/cross_lingual.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
