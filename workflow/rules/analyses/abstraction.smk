# Abstraction with scale: relations (meaning / token-only / unrelated) of each query's top-k documents per model size.
ANALYSES["abstraction"] = analysis_outputs("abstraction", "per_query", "by_model")
FIGURES["abstraction"] = figure_outputs("abstraction")


rule analysis_abstraction:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
        candidates=CANDIDATES,
        evaluations=evaluation_tables(),
    output:
        **ANALYSES["abstraction"],
    params:
        step="abstraction.run",
        config_slice=config_slice("seed", "analyses.abstraction"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/abstraction.log"),
    benchmark:
        out("benchmarks/analyses/abstraction.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_abstraction:
    input:
        per_query=ANALYSES["abstraction"]["per_query"],
        by_model=ANALYSES["abstraction"]["by_model"],
    output:
        **report_figure("abstraction", "Abstraction"),
    params:
        step="abstraction.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/abstraction.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
