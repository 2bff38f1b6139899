# Layers (paper section 5.3.2): influence over depth, centre of mass per query family, depth-restricted top documents.
ANALYSES["layers"] = analysis_outputs("layers", "profile", "layers", "restricted")
FIGURES["layers"] = figure_outputs("layers")


rule analysis_layers:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
    output:
        **ANALYSES["layers"],
    params:
        step="layers.run",
        config_slice=config_slice("seed", "analyses.layers"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/layers.log"),
    benchmark:
        out("benchmarks/analyses/layers.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_layers:
    input:
        profile=ANALYSES["layers"]["profile"],
        restricted=ANALYSES["layers"]["restricted"],
    output:
        **report_figure("layers", "Layers"),
    params:
        step="layers.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/layers.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
