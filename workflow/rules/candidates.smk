# Stage 4: the paper's BM25 candidate documents of every query, and how much of the unfiltered top they hold.


rule candidates:
    priority: CHAIN_PRIORITY["training"]
    input:
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
    output:
        candidates=CANDIDATES,
    params:
        step="influence.make_candidates",
        config_slice=config_slice("candidates.top_k", "candidates.k1"),
    resources:
        **SMALL_JOB,
    log:
        out("logs/candidates.log"),
    benchmark:
        out("benchmarks/candidates.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule bm25_recall:
    input:
        pairwise=pairwise_tables(),
        candidates=CANDIDATES,
    output:
        **bm25_recall_outputs(),
    params:
        step="influence.bm25_recall_table",
        config_slice=config_slice("candidates.recall_k", "candidates.recall_top"),
    resources:
        **TABLE_JOB,
    log:
        out("logs/bm25_recall.log"),
    benchmark:
        out("benchmarks/bm25_recall.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
