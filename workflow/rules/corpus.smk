# Stage 1: the corpus (synthetic world or the user's files) and its tokenizer.


rule corpus:
    output:
        **corpus_outputs(),
    params:
        step="corpus.make_corpus",
    log:
        out("logs/corpus.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT


rule tokenizer:
    input:
        documents=corpus_outputs()["documents"],
    output:
        tokenizer_dir=directory(out(f"tokenizer/{CORPUS}")),
    params:
        step="corpus.make_tokenizer",
    log:
        out("logs/tokenizer.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
