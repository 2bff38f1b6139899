# The findings report: every analysis's findings and verdicts, in reports/findings.md.


rule findings:
    input:
        summaries=[outputs["summary"] for outputs in planned_outputs().values()],
    output:
        report=out("reports/findings.md"),
    params:
        step="reports.findings_report",
        config_slice=config_slice("models", "tiny"),
    resources:
        **SMALL_JOB,
    log:
        out("logs/findings.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
