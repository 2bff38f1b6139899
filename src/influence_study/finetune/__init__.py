"""The DataInf part of the study: generated fine-tuning tasks, LoRA fine-tuning through peft, influence on the LoRA
parameters by several methods, and influence-guided removal."""
