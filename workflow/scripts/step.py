# Snakemake script shared by every rule: it calls influence_study.stages.steps.<params.step> with the rule's files.
from influence_study.stages.runner import run_step

run_step(snakemake)  # noqa: F821 (injected by Snakemake)
