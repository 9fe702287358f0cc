"""The sweep engine: definitions into configurations, the MLflow store, executors, the tracking server.

The studies themselves (the grids in ``experiments/grids/``, ``equivalence``,
``reduction``, ``bench``, ``measure_*``) live one level up, in ``experiments/``.
"""
