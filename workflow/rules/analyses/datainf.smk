# DataInf (Kwon et al. 2023): LoRA fine-tunes of family models on generated tasks (one job per model, task and
# rank), each scored by every influence method on the LoRA parameters; the analysis compares the methods.
FINETUNE = config["finetune"]
FINETUNE_MODELS = FINETUNE["models"] or model_names()
FINETUNE_TASKS = list(FINETUNE["tasks"])
FINETUNE_DIR = out("finetune/{model}/{task}/rank-{rank}")
# each file of every fine-tune
FINETUNE_FILES = {
    name: expand(f"{FINETUNE_DIR}/{name}", model=FINETUNE_MODELS, task=FINETUNE_TASKS, rank=FINETUNE["ranks"])
    for name in ("influence.parquet", "pairwise.parquet", "summary.json")
}


if "datainf" in PLANNED_ANALYSES:
    ANALYSES["datainf"] = analysis_outputs("datainf", "correlations", "mislabel", "curves", "classes", "times")
    FIGURES["datainf"] = figure_outputs("datainf")

    rule finetune_tasks:
        output:
            tasks=out("finetune/tasks.parquet"),
        params:
            step="finetune.make_tasks",
            config_slice=config_slice("seed", "finetune.tasks"),
        resources:
            **SMALL_JOB,
        log:
            out("logs/finetune/tasks.log"),
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule datainf_finetune:
        input:
            model_dir=out("models/{model}"),
            tasks=out("finetune/tasks.parquet"),
        output:
            influence=f"{FINETUNE_DIR}/influence.parquet",
            pairwise=f"{FINETUNE_DIR}/pairwise.parquet",
            summary=f"{FINETUNE_DIR}/summary.json",
        params:
            step="finetune.finetune_and_score",
            model_name=lambda wildcards: wildcards.model,
            task=lambda wildcards: wildcards.task,
            rank=lambda wildcards: int(wildcards.rank),
            config_slice=config_slice("seed", "device", "finetune.methods", "finetune.lora", "finetune.training",
                                      "finetune.influence"),
        wildcard_constraints:
            task="|".join(FINETUNE_TASKS),
            rank=r"\d+",
        threads: FINETUNE["threads"]
        resources:
            **TRAINING_JOB,
            gpu=GPU,
        log:
            out("logs/finetune/{model}/{task}/rank-{rank}.log"),
        benchmark:
            out("benchmarks/finetune/{model}/{task}/rank-{rank}.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule analysis_datainf:
        input:
            influence=FINETUNE_FILES["influence.parquet"],
            pairwise=FINETUNE_FILES["pairwise.parquet"],
            finetunes=FINETUNE_FILES["summary.json"],
            tasks=out("finetune/tasks.parquet"),
        output:
            **ANALYSES["datainf"],
        params:
            step="datainf.run",
            config_slice=config_slice("seed", "finetune.ranks", "finetune.detection_rank"),
        resources:
            **TABLE_JOB,
        log:
            out("logs/analyses/datainf.log"),
        benchmark:
            out("benchmarks/analyses/datainf.tsv")
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT

    rule fig_datainf:
        input:
            correlations=ANALYSES["datainf"]["correlations"],
            mislabel=ANALYSES["datainf"]["mislabel"],
            curves=ANALYSES["datainf"]["curves"],
            classes=ANALYSES["datainf"]["classes"],
            times=ANALYSES["datainf"]["times"],
            summary=ANALYSES["datainf"]["summary"],
        output:
            **report_figure("datainf", "DataInf"),
        params:
            step="datainf.figure",
        resources:
            **SMALL_JOB,
        log:
            out("logs/figures/datainf.log"),
        conda:
            STUDY_ENV
        script:
            STEP_SCRIPT
