# Influence-guided removal (Kounavis et al. 2023): per fine-tuned model, drop the k most harmful training examples
# of one task (by DataInf-stage influence on half of its test examples), fine-tune again from the base model, and
# compare the other half's loss with dropping k random examples and dropping none, over several seeds.
from influence_study.stages.finetune import detection_rank

REMOVAL = FINETUNE["removal"]


if "removal" in PLANNED_ANALYSES:
    REMOVAL_RANK = detection_rank(config)
    REMOVAL_RUNS = out("finetune/{model}/removal.parquet")
    ANALYSES["removal"] = analysis_outputs("removal", "per_run", "conditions", "differences")
    FIGURES["removal"] = figure_outputs("removal")

    rule removal_finetunes:
        input:
            model_dir=out("models/{model}"),
            tasks=out("finetune/tasks.parquet"),
            pairwise=out(f"finetune/{{model}}/{REMOVAL['task']}/rank-{REMOVAL_RANK}/pairwise.parquet"),
        output:
            runs=REMOVAL_RUNS,
        params:
            step="removal.run_removal",
            model_name=lambda wildcards: wildcards.model,
            config_slice=config_slice("seed", "device", "finetune.removal", "finetune.lora", "finetune.training",
                                      "finetune.ranks", "finetune.detection_rank"),
        wildcard_constraints:
            model=r"[^/]+",
        threads: FINETUNE["threads"]
        resources:
            **TRAINING_JOB,
            gpu=GPU,
        log:
            out("logs/finetune/{model}/removal.log"),
        benchmark:
            out("benchmarks/finetune/{model}/removal.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule analysis_removal:
        input:
            runs=expand(REMOVAL_RUNS, model=FINETUNE_MODELS),
        output:
            **ANALYSES["removal"],
        params:
            step="removal.run",
            config_slice=config_slice("seed"),
        resources:
            **TABLE_JOB,
        log:
            out("logs/analyses/removal.log"),
        benchmark:
            out("benchmarks/analyses/removal.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule fig_removal:
        input:
            per_run=ANALYSES["removal"]["per_run"],
            conditions=ANALYSES["removal"]["conditions"],
        output:
            **report_figure("removal", "Removal"),
        params:
            step="removal.figure",
        resources:
            **SMALL_JOB,
        log:
            out("logs/figures/removal.log"),
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT
