# Abstraction with scale: relations (meaning / token-only / unrelated) of each query's top-k documents per model size.
ANALYSES["abstraction"] = analysis_outputs("abstraction", "per_query", "by_model")
FIGURES["abstraction"] = figure_outputs("abstraction")


MATCHED_LOSS = {
    "matched_scores": out("analyses/abstraction/matched_loss/pairwise.parquet"),
    "matched_answers": out("analyses/abstraction/matched_loss/answers.parquet"),
    "matched_checkpoint": out("analyses/abstraction/matched_loss/checkpoint.json"),
}


# The larger model retrained to the smaller one's final held-out loss and scored (analyses.matched_loss).
rule matched_loss_scores:
    priority: CHAIN_PRIORITY["matched_loss"]
    input:
        model_dirs=model_dirs(),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
        candidates=CANDIDATES,
        learning=LEARNING_TABLE,
    output:
        scores=MATCHED_LOSS["matched_scores"],
        answers=MATCHED_LOSS["matched_answers"],
        checkpoint=MATCHED_LOSS["matched_checkpoint"],
    params:
        step="matched_loss.run",
        config_slice=config_slice("seed", "device", "dtype", "models", "training", "evaluation.batch_size",
                                  *FIT_AND_SCORE_KEYS, "analyses.strategy", "analyses.abstraction.matched_loss"),
    threads: lambda wildcards: config["training"]["threads"]
    resources:
        **TRAINING_JOB,
        gpu=GPU,
    log:
        out("logs/analyses/matched_loss.log"),
    benchmark:
        out("benchmarks/analyses/matched_loss.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule analysis_abstraction:
    input:
        pairwise=strategy_tables("pairwise"),
        learning=LEARNING_TABLE,
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
        relations=corpus_outputs()["relations"],
        candidates=CANDIDATES,
        evaluations=evaluation_tables(),
        **MATCHED_LOSS,
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
