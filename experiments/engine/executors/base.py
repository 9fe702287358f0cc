"""What an executor is: the one interface the driver (``experiments/engine/driver.py``) knows."""

from __future__ import annotations

from experiments.engine.lifecycle import SweepContext, SweepCounts


class ExecutorUnavailable(RuntimeError):
    """The executor cannot run here (a missing package, a cluster that does not answer): exit status 3."""


class SweepAborted(Exception):
    """The executor cannot go on (a local worker process died); its runs in flight are already ended."""


class Executor:
    """Trains a sweep's configurations; the driver calls, in order, ``preflight``, ``connect``, ``run``.

    ``run`` goes through :mod:`experiments.engine.lifecycle` for every run. On
    ``KeyboardInterrupt`` it ends the runs it has in flight (KILLED) and
    re-raises; the driver then ends the parent.
    """

    name = ""

    def __init__(self, *, workers: int, unit_size: int = 0, max_retries: int = 3):
        self.workers = workers
        self.unit_size = unit_size
        self.max_retries = max_retries

    def preflight(self) -> None:
        """Checks that need no store, before anything is written; raise ExecutorUnavailable or
        ``store.StoreUnreachable`` (both exit 3)."""

    def connect(self) -> None:
        """Get ready to train; called before the parent run exists, so a failure leaves nothing behind."""

    def run(self, todo: list, ctx: SweepContext, *, bar, counts: SweepCounts, board=None) -> int:
        """Train ``todo`` (in dispatch order), updating ``counts`` and the progress ``bar``; the exit status.

        ``board``: the sweep's :class:`~experiments.engine.pruning.PruneBoard` (None: no pruning)."""
        raise NotImplementedError
