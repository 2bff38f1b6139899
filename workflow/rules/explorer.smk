# Reports: the token explorer, one self-contained HTML page per model.


rule explorer:
    input:
        pairwise=out(f"scores/{{model}}/{EXPLORER_STRATEGY}/pairwise.parquet"),
        tokens=out(f"scores/{{model}}/{EXPLORER_STRATEGY}/tokens.parquet"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
    output:
        page=out("reports/explorer/{model}.html"),
    params:
        step="influence.explorer_page",
        model_name=lambda wildcards: wildcards.model,
        strategy=EXPLORER_STRATEGY,
        config_slice=config_slice("explorer.max_queries"),
    resources:
        **SMALL_JOB,
    log:
        out("logs/explorer/{model}.log"),
    benchmark:
        out("benchmarks/explorer/{model}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
