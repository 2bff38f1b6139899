# Linear datamodeling score (Park et al. 2023): the smallest model retrained from scratch on random subsets of the
# training documents, one job per subset; the LDS compares each strategy's summed scores with what retraining did.
from influence_study.stages.lds import lds_model

LDS = config["analyses"]["lds"]
LDS_MODEL = lds_model(config)  # None when every model is an imported checkpoint: nothing to retrain
LDS_MEASUREMENTS = expand(out("lds/{model}/subset-{subset}/measurements.parquet"), model=LDS_MODEL,
                          subset=range(LDS["subsets"]))
# the log-likelihood of every training document under each retrain (read by the memorisation analysis)
LDS_DOCUMENT_LOSSES = expand(out("lds/{model}/subset-{subset}/documents.parquet"), model=LDS_MODEL,
                             subset=range(LDS["subsets"])) if LDS_MODEL is not None else []


if "lds" in PLANNED_ANALYSES:
    ANALYSES["lds"] = analysis_outputs("lds", "per_query", "families", "points")
    FIGURES["lds"] = figure_outputs("lds")

    rule lds_subsets:
        input:
            documents=corpus_outputs()["documents"],
        output:
            subsets=out("lds/subsets.parquet"),
        params:
            step="lds.make_subsets",
            n_subsets=LDS["subsets"],
            fraction=LDS["fraction"],
            config_slice=config_slice("seed"),
        resources:
            **SMALL_JOB,
        log:
            out("logs/lds/subsets.log"),
        benchmark:
            out("benchmarks/lds/subsets.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule lds_retrain:
        input:
            documents=corpus_outputs()["documents"],
            tokenizer_dir=out(f"tokenizer/{CORPUS}"),
            queries=corpus_outputs()["queries"],
            subsets=out("lds/subsets.parquet"),
        output:
            measurements=out("lds/{model}/subset-{subset}/measurements.parquet"),
            document_losses=out("lds/{model}/subset-{subset}/documents.parquet"),
        params:
            step="lds.retrain_subset",
            model_name=lambda wildcards: wildcards.model,
            subset=lambda wildcards: int(wildcards.subset),
            config_slice=model_config_slice("seed", "device", "dtype", "evaluation.batch_size",
                                            "analyses.lds.fraction"),
        wildcard_constraints:
            subset=r"\d+",
        threads: lambda wildcards: config["training"]["threads"]
        resources:
            **TRAINING_JOB,
            gpu=GPU,
        log:
            out("logs/lds/{model}/subset-{subset}.log"),
        benchmark:
            out("benchmarks/lds/{model}/subset-{subset}.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule analysis_lds:
        input:
            pairwise=expand(out("scores/{model}/{strategy}/pairwise.parquet"), model=LDS_MODEL, strategy=STRATEGIES),
            subsets=out("lds/subsets.parquet"),
            measurements=LDS_MEASUREMENTS,
            queries=corpus_outputs()["queries"],
        output:
            **ANALYSES["lds"],
        params:
            step="lds.run",
            config_slice=config_slice("seed", "analyses.lds"),
        resources:
            **TABLE_JOB,
        log:
            out("logs/analyses/lds.log"),
        benchmark:
            out("benchmarks/analyses/lds.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule fig_lds:
        input:
            families=ANALYSES["lds"]["families"],
            points=ANALYSES["lds"]["points"],
            summary=ANALYSES["lds"]["summary"],
        output:
            **report_figure("lds", "Validation"),
        params:
            step="lds.figure",
        resources:
            **SMALL_JOB,
        log:
            out("logs/figures/lds.log"),
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT
