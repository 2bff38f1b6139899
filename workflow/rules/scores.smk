# Stage 5: every query against every training document, sharded over the documents (scatter), gathered into
# one table per model and strategy, plus token scores of each query's top documents.


rule score_shard:
    priority: CHAIN_PRIORITY["influence"]
    input:
        model_dir=out("models/{model}"),
        factors_dir=out("factors/{model}/{strategy}"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        candidates=CANDIDATES,
    output:
        shard=out("scores/{model}/{strategy}/shard-{scatteritem}.parquet"),
    wildcard_constraints:
        strategy=FACTOR_STRATEGY_PATTERN,
        scatteritem=r"\d+-of-\d+",
    params:
        step="influence.score_shard",
        model_name=lambda wildcards: wildcards.model,
        strategy=lambda wildcards: wildcards.strategy,
        scatteritem=lambda wildcards: wildcards.scatteritem,
        config_slice=config_slice("device", *SCORING_KEYS),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/score_shard/{model}/{strategy}/{scatteritem}.log"),
    benchmark:
        out("benchmarks/score_shard/{model}/{strategy}/{scatteritem}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule gather_scores:
    priority: CHAIN_PRIORITY["influence"]
    input:
        shards=gather.shards(out("scores/{{model}}/{{strategy}}/shard-{scatteritem}.parquet")),
        factors_dir=out("factors/{model}/{strategy}"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        candidates=CANDIDATES,
    output:
        pairwise=out("scores/{model}/{strategy}/pairwise.parquet"),
        candidate_scores=out("scores/{model}/{strategy}/candidates.parquet"),
    wildcard_constraints:
        strategy=FACTOR_STRATEGY_PATTERN,
    params:
        step="influence.gather_scores",
        model_name=lambda wildcards: wildcards.model,
        strategy=lambda wildcards: wildcards.strategy,
        config_slice=config_slice(*SCORING_KEYS),
    resources:
        mem_mb=INFLUENCE_RESOURCES["mem_mb"],
        runtime=INFLUENCE_RESOURCES["runtime"],
    log:
        out("logs/gather_scores/{model}/{strategy}.log"),
    benchmark:
        out("benchmarks/gather_scores/{model}/{strategy}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule token_scores:
    priority: CHAIN_PRIORITY["influence"]
    input:
        model_dir=out("models/{model}"),
        factors_dir=out("factors/{model}/{strategy}"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        pairwise=out("scores/{model}/{strategy}/pairwise.parquet"),
    output:
        tokens=out("scores/{model}/{strategy}/tokens.parquet"),
    wildcard_constraints:
        strategy=FACTOR_STRATEGY_PATTERN,
    params:
        step="influence.token_scores",
        model_name=lambda wildcards: wildcards.model,
        strategy=lambda wildcards: wildcards.strategy,
        config_slice=config_slice("device", *SCORING_KEYS, "influence.token_documents"),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/token_scores/{model}/{strategy}.log"),
    benchmark:
        out("benchmarks/token_scores/{model}/{strategy}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
