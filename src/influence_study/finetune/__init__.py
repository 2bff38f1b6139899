"""The DataInf part of the study: generated fine-tuning tasks, LoRA fine-tuning through peft, influence on the LoRA
parameters by several methods, and influence-guided removal."""

from __future__ import annotations

from typing import Mapping


def detection_rank(config: Mapping) -> int:
    """The LoRA rank of the detection statistics, the wall times and the removal experiment:
    ``finetune.detection_rank``, else the largest of ``finetune.ranks``."""
    section = config["finetune"]
    return int(section["detection_rank"] or max(section["ranks"]))
