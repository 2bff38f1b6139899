"""The influence engine: tasks, module tracking, curvature factors, solvers and scores. It imports torch (with
safetensors for factor files, tqdm for progress bars), never the study.

Modules, each importing only those above it:

- :mod:`~influence_study.engine.options` (``FactorArguments``, ``ScoreArguments``), :mod:`~.damping` (the paper's
  damping rule), :mod:`~.files` (atomic writes), :mod:`~.tasks`, :mod:`~.tracking`, :mod:`~.curvature`;
- :mod:`~.passes` (passes over a loader), :mod:`~.fit_passes` (the passes of a factor fit),
  :mod:`~.conventions` (the scoring conventions, recorded), :mod:`~.preconditioner` (the interface of every
  strategy), :mod:`~.functional` (the model as a function of the tracked parameters);
- :mod:`~.memory_plan` (the bytes of each stage, checked before it runs);
- the solvers :mod:`~.datainf`, :mod:`~.exact`, :mod:`~.lissa`, :mod:`~.pbrf`, made by :mod:`~.solvers`;
- :mod:`~.factors` (``fit_factors`` and the factor strategies) and :mod:`~.scoring` (``pairwise_scores``,
  ``self_scores``, ``query_gradients``).
"""
