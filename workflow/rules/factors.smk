# Stage 3: curvature factors per model and strategy. Not snakemake-protected (that made the directory undeletable for
# the rerun a config edit asks for): the engine writes each factor file read-only (0o444) with a content hash that
# every load checks, so a file changed in place is refused, naming it.


rule factors:
    priority: CHAIN_PRIORITY["influence"]
    input:
        model_dir=out("models/{model}"),
        documents=corpus_outputs()["documents"],
    output:
        factors_dir=directory(out("factors/{model}/{strategy}")),
    wildcard_constraints:
        strategy=FACTOR_STRATEGY_PATTERN,
    params:
        step="influence.fit_model_factors",
        model_name=lambda wildcards: wildcards.model,
        strategy=lambda wildcards: wildcards.strategy,
        config_slice=model_config_slice("seed", "device", *FACTOR_KEYS),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/factors/{model}/{strategy}.log"),
    benchmark:
        out("benchmarks/factors/{model}/{strategy}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
