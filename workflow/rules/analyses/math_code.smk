# Math and code: same-schema share of each math or code query's top-k documents, plain vs obfuscated names.
ANALYSES["math_code"] = analysis_outputs("math_code", "per_query", "by_model")
FIGURES["math_code"] = figure_outputs("math_code")


rule analysis_math_code:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
        candidates=CANDIDATES,
        evaluations=evaluation_tables(),
    output:
        **ANALYSES["math_code"],
    params:
        step="math_code.run",
        config_slice=config_slice("seed", "analyses.math_code"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/analyses/math_code.log"),
    benchmark:
        out("benchmarks/analyses/math_code.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_math_code:
    input:
        per_query=ANALYSES["math_code"]["per_query"],
        by_model=ANALYSES["math_code"]["by_model"],
    output:
        **report_figure("math_code", "Math and code"),
    params:
        step="math_code.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/math_code.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
