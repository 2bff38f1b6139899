# Approximation checks ("Making it affordable"): query rank r vs full rank and block-diagonal factors (O blocks)
# vs O = 1 on one model (analyses.approximations.model, default the largest: the step picks it from the learning
# table, so every model and its EK-FAC factors are inputs; the O = 1 factors are reused when their settings match).
ANALYSES["approximations"] = analysis_outputs("approximations", "ranks", "blocks", "memory")
FIGURES["approximations"] = figure_outputs("approximations")


rule analysis_approximations:
    input:
        model_dirs=model_dirs(),
        factors_dirs=expand(out("factors/{model}/ekfac"), model=model_names()) if "ekfac" in STRATEGIES else [],
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        learning=LEARNING_TABLE,
    output:
        **ANALYSES["approximations"],
    params:
        step="approximations.run",
        config_slice=config_slice("seed", "device", "models", "analyses.approximations", *FACTOR_KEYS,
                                  "influence.damping"),
    threads: INFLUENCE["threads"]
    resources:
        **INFLUENCE_RESOURCES,
    log:
        out("logs/analyses/approximations.log"),
    benchmark:
        out("benchmarks/analyses/approximations.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule fig_approximations:
    input:
        ranks=ANALYSES["approximations"]["ranks"],
        blocks=ANALYSES["approximations"]["blocks"],
        memory=ANALYSES["approximations"]["memory"],
    output:
        **report_figure("approximations", "Approximations"),
    params:
        step="approximations.figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/figures/approximations.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
