# Fewer parameters (Kounavis et al. 2023; Grosse et al. 2023's layer findings): influence restricted to the last layer,
# the upper half or the first layer (sums of the per-layer EK-FAC columns) against influence on all layers.
ANALYSES["fewer_parameters"] = analysis_outputs("fewer_parameters", "per_query", "by_family")
FIGURES["fewer_parameters"] = figure_outputs("fewer_parameters")


rule analysis_fewer_parameters:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        queries=corpus_outputs()["queries"],
    output:
        **ANALYSES["fewer_parameters"],
    params:
        step="fewer_parameters.run",
        config_slice=config_slice("seed", "analyses.fewer_parameters"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/fewer_parameters.log"),
    benchmark:
        out("benchmarks/analyses/fewer_parameters.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_fewer_parameters:
    input:
        by_family=ANALYSES["fewer_parameters"]["by_family"],
    output:
        **report_figure("fewer_parameters", "Fewer parameters"),
    params:
        step="fewer_parameters.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/fewer_parameters.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
