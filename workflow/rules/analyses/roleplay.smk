# Role-play: themes of each role-play query's top-k documents per model size.
ANALYSES["roleplay"] = analysis_outputs("roleplay", "per_query", "by_model")
FIGURES["roleplay"] = figure_outputs("roleplay")


rule analysis_roleplay:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        candidates=CANDIDATES,
        evaluations=evaluation_tables(),
    output:
        **ANALYSES["roleplay"],
    params:
        step="roleplay.run",
        config_slice=config_slice("seed", "analyses.roleplay"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/roleplay.log"),
    benchmark:
        out("benchmarks/analyses/roleplay.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_roleplay:
    input:
        per_query=ANALYSES["roleplay"]["per_query"],
        by_model=ANALYSES["roleplay"]["by_model"],
    output:
        **report_figure("roleplay", "Role-play"),
    params:
        step="roleplay.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/roleplay.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
