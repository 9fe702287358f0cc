"""What an executor is: the one interface the driver (``experiments/engine/driver.py``) knows."""

from __future__ import annotations

from experiments.engine.lifecycle import SweepContext, SweepCounts


class ExecutorUnavailable(RuntimeError):
    """The executor cannot run here (a missing package, a cluster that does not answer): exit status 3."""


class SweepAborted(Exception):
    """The executor cannot go on (a local worker process died); its runs in flight are already ended."""


class Executor:
    """Trains a sweep's configurations; the driver calls, in order, ``preflight``, ``connect``, ``run`` (or, for a
    grid whose learning rate is searched, ``run_search``).

    ``run`` goes through :mod:`experiments.engine.lifecycle` for every run. On
    ``KeyboardInterrupt`` it ends the runs it has in flight (KILLED) and
    re-raises; the driver then ends the parent. An executor with settings of
    its own (Ray's ``--unit-size``) adds them to the command line
    (:meth:`add_options`), checks them (:meth:`option_problems`) and reads them
    (:meth:`from_options`).
    """

    name = ""

    def __init__(self, *, workers: int):
        self.workers = workers

    @classmethod
    def add_options(cls, parser) -> None:
        """Add this executor's own options to the ``argparse`` parser of ``experiments/sweep.py``; none here."""

    @classmethod
    def option_problems(cls, args) -> list[str]:
        """What is wrong with this executor's options in the parsed ``args``, one message each (exit status 2)."""
        return []

    @classmethod
    def from_options(cls, args) -> Executor:
        """The executor the parsed command line ``args`` asks for."""
        return cls(workers=args.workers)

    def preflight(self) -> None:
        """Checks that need no store, before anything is written; raise ExecutorUnavailable or
        ``store.StoreUnreachable`` (both exit 3)."""

    def connect(self) -> None:
        """Get ready to train; called before the parent run exists, so a failure leaves nothing behind."""

    def hand_out_order(self, todo: list) -> list:
        """The order :meth:`run` hands ``todo`` (in dispatch order) out in, as far as it is known before any result:
        the progress bar's ETA counts the first ``workers`` runs left in it as in flight. ``todo`` itself here."""
        return list(todo)

    def run(self, todo: list, ctx: SweepContext, *, bar, counts: SweepCounts, board=None) -> int:
        """Train ``todo`` (in dispatch order), updating ``counts`` and the progress ``bar``; the exit status.

        ``board``: the sweep's :class:`~experiments.engine.pruning.PruneBoard` (None: no pruning)."""
        raise NotImplementedError

    def run_search(self, work, ctx: SweepContext, *, bar, counts: SweepCounts, board=None) -> int:
        """Train a search grid's runs as its searches propose them (``work``: a
        :class:`~experiments.engine.chains.SearchWork`); the exit status.

        This default trains them wave by wave through :meth:`run`: every run the
        searches want now, then each one's result read back from the store, then
        the runs those results call for. The local and Ray executors instead hand
        out each run as soon as a result calls for it (``work.ready``,
        ``work.hand_out``, ``work.finished``).
        """
        status = 0
        while wave := work.take_all():
            status = max(status, self.run(wave, ctx, bar=bar, counts=counts, board=board))
            work.read_back(wave, ctx.experiment_id)
        return status
