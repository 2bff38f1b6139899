# Sparsity (paper section 5.2.1): power-law fit of each query's top tail (documents of identical text counted once:
# the corpus is an input), share of the top 1%, per model and per query family.
ANALYSES["sparsity"] = analysis_outputs("sparsity", "table", "curves")
FIGURES["sparsity"] = figure_outputs("sparsity")


rule analysis_sparsity:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
    output:
        **ANALYSES["sparsity"],
    params:
        step="sparsity.run",
        config_slice=config_slice("seed", "analyses.sparsity"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/sparsity.log"),
    benchmark:
        out("benchmarks/analyses/sparsity.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_sparsity:
    input:
        table=ANALYSES["sparsity"]["table"],
        curves=ANALYSES["sparsity"]["curves"],
    output:
        **report_figure("sparsity", "Sparsity"),
    params:
        step="sparsity.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/sparsity.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
