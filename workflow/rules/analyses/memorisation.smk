# Memorisation control: the rank of each quote query's exact copies in its full ranking, per model size.
ANALYSES["memorisation"] = analysis_outputs("memorisation", "copies", "per_query")
FIGURES["memorisation"] = figure_outputs("memorisation")


rule analysis_memorisation:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
    output:
        **ANALYSES["memorisation"],
    params:
        step="memorisation.run",
        config_slice=config_slice("seed"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/memorisation.log"),
    benchmark:
        out("benchmarks/analyses/memorisation.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_memorisation:
    input:
        copies=ANALYSES["memorisation"]["copies"],
        per_query=ANALYSES["memorisation"]["per_query"],
    output:
        **report_figure("memorisation", "Memorisation"),
    params:
        step="memorisation.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/memorisation.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
