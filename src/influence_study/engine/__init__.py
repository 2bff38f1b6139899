"""The influence engine: tasks, module tracking, curvature factors, solvers and scores. It imports torch (and\nsafetensors for factor files), never the study."""
