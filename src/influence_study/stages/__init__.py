"""The functions the workflow's rules call, and the only code that reads the config.

:mod:`~influence_study.stages.registry` maps each rule's ``step`` to its function; the modules, in the order of the
workflow:

- ``corpus``, ``models``: the synthetic world and its tokenizer; training, evaluation, the learning table;
- ``influence`` (with ``influence_inputs`` and ``sharded_scores``): factors, BM25 candidates, sharded scores,
  token scores, the BM25 recall table and the explorer;
- one module per analysis (``validation``, ``lds``, ``calibration``, ``approximations``, ``sparsity``,
  ``abstraction``, ``layers``, ``math_code``, ``cross_lingual``, ``roleplay``, ``memorisation``, ``word_order``,
  ``keyword_overlap``, ``datainf``, ``memorisation_sign``, ``fewer_parameters``, ``removal``): its fitting,
  scoring or retraining jobs and its ``run`` step, which reads the rule's files and the config, calls the pure
  functions of :mod:`influence_study.analyses.<name>` and writes the outputs; ``finetune`` (the DataInf
  fine-tunes) and ``retrain`` (retraining for the LDS and the calibration) serve several of them, and ``tables``
  reads the study's tables and writes an analysis's outputs;
- ``reports``: the executed notebooks and ``reports/findings.md``.
"""
