# Stage 1: the corpus (synthetic world or the user's files) and its tokenizer.


rule corpus:
    priority: CHAIN_PRIORITY["training"]
    output:
        **corpus_outputs(),
    params:
        step="corpus.make_corpus",
        config_slice=config_slice("seed", "corpus", "queries"),
    resources:
        **SMALL_JOB,
    log:
        out("logs/corpus.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule tokenizer:
    priority: CHAIN_PRIORITY["training"]
    input:
        documents=corpus_outputs()["documents"],
    output:
        tokenizer_dir=directory(out(f"tokenizer/{CORPUS}")),
    params:
        step="corpus.make_tokenizer",
        config_slice=config_slice("tokenizer"),
    resources:
        **SMALL_JOB,
    log:
        out("logs/tokenizer.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
