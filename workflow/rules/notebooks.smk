# One executed notebook per analysis: notebooks/{name}.ipynb run with papermill on the analysis's outputs.


rule notebook:
    input:
        notebook=f"{workflow.basedir}/notebooks/{{name}}.ipynb",
        analysis=lambda wildcards: ANALYSES[wildcards.name].values(),
    output:
        **notebook_outputs("{name}"),
    params:
        step="reports.run_notebook",
        config_slice=config_slice("seed", "tiny"),
    resources:
        **TABLE_JOB,
    wildcard_constraints:
        name="|".join(PLANNED_ANALYSES) or "none",
    log:
        out("logs/notebooks/{name}.log"),
    benchmark:
        out("benchmarks/notebooks/{name}.tsv")
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
