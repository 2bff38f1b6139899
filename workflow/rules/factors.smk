# Stage 3: curvature factors per model and strategy (expensive: protected, so nothing overwrites them silently;
# delete the directory to refit).


rule factors:
    input:
        model_dir=out("models/{model}"),
        documents=corpus_outputs()["documents"],
    output:
        factors_dir=protected(directory(out("factors/{model}/{strategy}"))),
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
