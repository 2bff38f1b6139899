# Snakemake script shared by every rule: it runs the step params.step names (influence_study.stages.registry.STEPS)
# with the rule's files.
from influence_study.stages.runner import run_step

run_step(snakemake)  # noqa: F821 (injected by Snakemake)
