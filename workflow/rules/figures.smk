# Figures: one target rule per figure, so `snakemake --cores all fig_loss_curves` rebuilds just that one.


rule fig_loss_curves:
    input:
        model_dirs=model_dirs(),
    output:
        png=report(loss_figure_outputs()["png"], caption=f"{workflow.basedir}/workflow/report/loss_curves.rst",
                   category="Models"),
        pdf=loss_figure_outputs()["pdf"],
    params:
        step="models.loss_figure",
    resources:
        **SMALL_JOB,
    log:
        out("logs/fig_loss_curves.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
