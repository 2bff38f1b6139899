# The influence study: corpus -> tokenizer -> model family -> factors -> BM25 candidates -> sharded scores ->
# token scores -> explorer -> analyses, their figures and executed notebooks -> reports/findings.md.
# All logic lives in src/influence_study; the rules under workflow/rules only wire files to its steps.
import sys

from influence_study.corpus.loaders import CorpusError
from influence_study.stages.plan import planned_analyses
from influence_study.study.config import ConfigError, check_config, validate_config


# config.yaml is the default study; `--configfile other.yaml` replaces it (no merging of the two).
if not workflow.configfiles:

    configfile: "config.yaml"


try:
    _source = ", ".join(map(str, workflow.configfiles)) or "config"
    if workflow.is_main_process:
        # Before any job: the hub ids are checked too (offline, against the local cache), and the warnings are
        # printed once (the jobs, which re-read this file, only validate).
        _validated, _warnings = check_config(config, source=_source)
        for _warning in _warnings:
            print(f"influence_study: warning: {_warning}", file=sys.stderr)
    else:
        _validated = validate_config(config, source=_source)
    # The analyses this config plans, in the paper's order (influence_study.stages.plan decides: the synthetic
    # world's analyses only on the synthetic world, the LDS and the calibration only with a model trained from
    # scratch, ...; a corpus of one's own has its queries file read here, so a bad one stops the run before any job).
    # `rule all`, the notebooks and the findings report take only these (workflow/rules/common.smk).
    PLANNED_ANALYSES = planned_analyses(_validated)
except (ConfigError, CorpusError) as error:
    sys.exit(f"influence_study: invalid configuration: {error}")
config.clear()
config.update(_validated)


scattergather:
    shards=config["influence"]["shards"],


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/factors.smk"
include: "workflow/rules/candidates.smk"
include: "workflow/rules/scores.smk"
include: "workflow/rules/explorer.smk"
include: "workflow/rules/figures.smk"
# The analyses, in the paper's order (reports/findings.md follows it).
include: "workflow/rules/analyses/validation.smk"
include: "workflow/rules/analyses/lds.smk"
include: "workflow/rules/analyses/calibration.smk"
include: "workflow/rules/analyses/approximations.smk"
include: "workflow/rules/analyses/sparsity.smk"
include: "workflow/rules/analyses/abstraction.smk"
include: "workflow/rules/analyses/layers.smk"
include: "workflow/rules/analyses/math_code.smk"
include: "workflow/rules/analyses/cross_lingual.smk"
include: "workflow/rules/analyses/roleplay.smk"
include: "workflow/rules/analyses/memorisation.smk"
include: "workflow/rules/analyses/word_order.smk"
include: "workflow/rules/analyses/keyword_overlap.smk"
# The second seed of the study: DataInf on LoRA fine-tuning.
include: "workflow/rules/analyses/datainf.smk"
# The third seed: memorisation and the sign of influence, influence on fewer parameters, influence-guided removal.
include: "workflow/rules/analyses/memorisation_sign.smk"
include: "workflow/rules/analyses/fewer_parameters.smk"
include: "workflow/rules/analyses/removal.smk"
include: "workflow/rules/notebooks.smk"
include: "workflow/rules/findings.smk"


report: "workflow/report/workflow.rst"


rule all:
    input:
        corpus_outputs().values(),
        model_dirs(),
        learning_table_outputs().values(),
        loss_figure_outputs().values(),
        influence_outputs(),
        analysis_targets(),
    default_target: True
