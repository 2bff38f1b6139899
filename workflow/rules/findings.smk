# The findings report: every analysis's findings and verdicts, in reports/findings.md.


rule findings:
    input:
        summaries=[outputs["summary"] for outputs in ANALYSES.values()],
    output:
        report=out("reports/findings.md"),
    params:
        step="reports.findings_report",
    log:
        out("logs/findings.log"),
    conda:
        STUDY_ENV
    script:
        STEP_SCRIPT
