# Stage 2: the model family (trained from scratch, or imported checkpoints) and what each has learned.


rule train_model:
    priority: CHAIN_PRIORITY["training"]
    input:
        documents=corpus_outputs()["documents"],
        tokenizer_dir=out(f"tokenizer/{CORPUS}"),
    output:
        model_dir=directory(out("models/{model}")),
    params:
        step="models.train_model",
        model_name=lambda wildcards: wildcards.model,
        config_slice=model_config_slice("seed", "device", "dtype"),
    threads: lambda wildcards: config["training"]["threads"]
    resources:
        **TRAINING_JOB,
        gpu=GPU,
    log:
        out("logs/train_model/{model}.log"),
    benchmark:
        out("benchmarks/train_model/{model}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule evaluate_model:
    priority: CHAIN_PRIORITY["training"]
    input:
        model_dir=out("models/{model}"),
        documents=corpus_outputs()["documents"],
        queries=corpus_outputs()["queries"],
    output:
        scores=out("evaluation/{model}/queries.parquet"),
        summary=out("evaluation/{model}/summary.json"),
    params:
        step="models.evaluate_model",
        model_name=lambda wildcards: wildcards.model,
        config_slice=config_slice("device", "dtype", "evaluation"),
    threads: 1
    resources:
        **TABLE_JOB,
        gpu=GPU,
    log:
        out("logs/evaluate_model/{model}.log"),
    benchmark:
        out("benchmarks/evaluate_model/{model}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule learning_table:
    priority: CHAIN_PRIORITY["training"]
    input:
        model_dirs=model_dirs(),
        summaries=evaluation_summaries(),
    output:
        **learning_table_outputs(),
    params:
        step="models.learning_table",
    resources:
        **SMALL_JOB,
    log:
        out("logs/learning_table.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
