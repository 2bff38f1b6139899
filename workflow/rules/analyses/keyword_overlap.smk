# Keyword overlap (paper appendix): gradient dot product (identity) vs EK-FAC, keywords of the query in its top 50.
# Without identity scores in influence.strategies the identity input is empty and the finding is "not measured".
ANALYSES["keyword_overlap"] = analysis_outputs("keyword_overlap", "table")
FIGURES["keyword_overlap"] = figure_outputs("keyword_overlap")
KEYWORD_STRATEGIES_SCORED = {"identity", "ekfac"} <= set(STRATEGIES)


rule analysis_keyword_overlap:
    input:
        identity=strategy_tables("pairwise", "identity") if KEYWORD_STRATEGIES_SCORED else [],
        ekfac=strategy_tables("pairwise", "ekfac") if KEYWORD_STRATEGIES_SCORED else [],
        learning=LEARNING_TABLE,
        queries=corpus_outputs()["queries"],
        documents=corpus_outputs()["documents"],
    output:
        **ANALYSES["keyword_overlap"],
    params:
        step="keyword_overlap.run",
        config_slice=config_slice("seed", "analyses.keyword_overlap"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/keyword_overlap.log"),
    benchmark:
        out("benchmarks/analyses/keyword_overlap.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_keyword_overlap:
    input:
        table=ANALYSES["keyword_overlap"]["table"],
    output:
        **report_figure("keyword_overlap", "Keyword overlap"),
    params:
        step="keyword_overlap.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/keyword_overlap.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
