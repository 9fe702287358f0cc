"""The executors, by the name ``--executor`` takes: this table is the only link between the driver and them.

Each is a subclass of :class:`~experiments.engine.executors.base.Executor` in a
module of its own; an executor that needs an optional package imports it in
``connect``, so this table costs nothing to import.
"""

from experiments.engine.executors.base import Executor, ExecutorUnavailable, SweepAborted
from experiments.engine.executors.local import LocalExecutor
from experiments.engine.executors.ray import RayExecutor

EXECUTORS: dict[str, type[Executor]] = {"local": LocalExecutor, "ray": RayExecutor}

__all__ = ["EXECUTORS", "Executor", "ExecutorUnavailable", "SweepAborted"]
