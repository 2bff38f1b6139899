"""Which analyses a study plans: the one decision the workflow's targets, the findings report and the notebooks
follow (``workflow/rules/common.smk`` calls :func:`planned_analyses`; ``influence-study summary`` prints
:func:`analysis_plan`'s reasons for the others).

An analysis is planned when its inputs can exist for the config:

* the synthetic world's ground truth (relations of queries to documents, probes, schemas, themes, translations,
  quote copies) exists only when ``corpus.source`` is ``synthetic``: abstraction, math_code, cross_lingual,
  roleplay, memorisation and word_order need it;
* the LDS and the calibration retrain a model from scratch (:func:`~influence_study.stages.lds.lds_model`), so a
  family of imported checkpoints has neither; the calibration also needs queries of its family
  (``analyses.calibration.family``), which a corpus of one's own has only when its queries file names it;
* memorisation_sign needs memorised documents: measured by the LDS retrains, or known by construction (the
  synthetic world's canaries and quote copies);
* datainf and removal fine-tune on tasks they generate themselves (``finetune.tasks``), whatever the corpus;
* validation, approximations, sparsity, layers, keyword_overlap and fewer_parameters need only the models, their
  scores and the queries, so they run on any corpus (their per-family statistics group by the queries' families).
"""

from __future__ import annotations

from typing import Mapping

from influence_study.corpus.queries import query_families
from influence_study.stages.lds import lds_model

# Every analysis, in the paper's order (the order of the findings report).
ANALYSES = ("validation", "lds", "calibration", "approximations", "sparsity", "abstraction", "layers", "math_code",
            "cross_lingual", "roleplay", "memorisation", "word_order", "keyword_overlap", "datainf",
            "memorisation_sign", "fewer_parameters", "removal")

# The analyses that read the synthetic world's ground truth, with what they read.
SYNTHETIC_ONLY = {
    "abstraction": "the relations of queries to documents (same fact, same schema, lexical overlap ...)",
    "math_code": "the schemas of the math and code queries and documents",
    "cross_lingual": "the translated facts queries",
    "roleplay": "the themes of the role-play documents",
    "memorisation": "the copies of the quotes",
    "word_order": "the order-flip and translation probes",
}


def analysis_plan(config: Mapping) -> dict[str, str | None]:
    """Every analysis of :data:`ANALYSES` (in that order) -> ``None`` when the validated ``config`` plans it, else
    why it does not (one sentence). For a corpus of one's own it reads the queries file (``queries.source``), whose
    families decide the calibration; a bad file raises :class:`~influence_study.corpus.loaders.CorpusError`."""
    synthetic = config["corpus"]["source"] == "synthetic"
    # a corpus of one's own: its queries file is read (a bad one raises CorpusError, naming queries.source)
    families = [] if synthetic else query_families(config["queries"]["source"])
    retrained = lds_model(config)
    finetune = config["finetune"]
    reasons: dict[str, str | None] = {}
    for name in ANALYSES:
        reason = None
        if name in SYNTHETIC_ONLY and not synthetic:
            reason = f"needs the synthetic world's ground truth ({SYNTHETIC_ONLY[name]}); corpus.source is " \
                     f"{config['corpus']['source']!r}"
        elif name in ("lds", "calibration") and retrained is None:
            reason = "retrains a model from scratch, and every model of `models` is an imported checkpoint"
        elif name == "calibration" and not synthetic:
            family = config["analyses"]["calibration"]["family"]
            if family not in families:
                reason = f"analyses.calibration.family {family!r} is no family of the queries in " \
                         f"{config['queries']['source']} (they have {', '.join(families)}); name one of them"
        elif name == "memorisation_sign" and not synthetic and retrained is None:
            reason = "needs memorised documents, measured by the LDS retrains (a model trained from scratch) or " \
                     "known by construction (the synthetic world's canaries and quote copies)"
        elif name == "datainf" and not finetune["tasks"]:
            reason = "finetune.tasks is empty"
        elif name == "removal" and finetune["removal"]["task"] not in finetune["tasks"]:
            reason = f"finetune.removal.task {finetune['removal']['task']!r} is not among finetune.tasks"
        reasons[name] = reason
    return reasons


def planned_analyses(config: Mapping) -> list[str]:
    """The analyses the validated ``config`` plans, in the paper's order (see :func:`analysis_plan`)."""
    return [name for name, reason in analysis_plan(config).items() if reason is None]
