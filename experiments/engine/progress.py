"""The sweep's progress bar, whose ETA weighs each remaining run by its expected cost.

tqdm's own ETA is the runs left divided by the runs per second so far. A
sweep hands its runs out one compiled program after another (``dispatch.py``),
the small batches of a program group first, so the runs left are rarely like
the runs done: at 13 of 36 runs of a grid over B, tqdm said 24-38 s left and
the other 23 took 1m53s (issue 26). Here each run weighs its expected cost
(:func:`experiments.engine.cost.expected_cost`: steps x B x its model's FLOPs,
evaluations, ...) and the pace comes from the runs already done::

    seconds left = (cost of the runs left - f) x (seconds since the first run ended + w x p0)
                                                / (cost of the runs done since + f + w)

where ``p0 = 1 / (0.75 x workers)`` is the cost model's own pace (two worker
processes on two cores do about 1.5 runs' worth of work at once) and ``w`` is
:data:`PRIOR_SHARE` of the sweep's cost: the model's pace counts while little
is done and fades as runs finish, so the machine's speed, its load, and the
runs that diverge or stop early (which the model does not foresee) are learnt.
The pace is measured from the first run's end, so that starting the workers
(seconds, once) is not taken for a slow machine, and ``f`` is the part of the
runs in flight already done: half of the next ``workers`` runs in dispatch
order (which matters once few runs are left).

Measured on ``make sweep`` (the default grid, 756 runs, 2 workers on a shared
2-core machine, 8m27s): see the README's "Sweeps". The ETA errs on the slow
side: a grid whose later runs diverge more than its earlier ones (the default
grid's ``sum`` reduction at large B) ends sooner than the runs done foretell.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

PARALLEL = 0.75  # runs' worth of work per worker process at once (1.3-1.7 measured for 2 workers on 2 cores)
PRIOR_SHARE = 0.02  # the weight of the cost model's own pace, as a share of the sweep's expected cost


def clock(seconds: float) -> str:
    """``12m03s``, ``45s``, ``1h02m``.

    >>> clock(723.4), clock(45.0), clock(3725)
    ('12m03s', '45s', '1h02m')
    """
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class RemainingCost:
    """Seconds left in a sweep whose runs (by key) have the expected ``costs``; :meth:`done` as each ends.

    >>> t = [0.0]
    >>> eta = RemainingCost({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 8.0}, workers=1, clock=lambda: t[0])
    >>> t[0] = 5.0; eta.done("a")                  # the first run ends (the worker took 4 s to start)
    >>> t[0] = 8.0; eta.done("b"); eta.done("c")   # two more in 3 s, with d half done: about 1.2 s per unit
    >>> round(eta.seconds_left(), 1)                 # the rest of d and all of e: 8.5 units
    10.3
    """

    def __init__(self, costs: Mapping[str, float], *, workers: int = 1, clock: Callable[[], float] = time.monotonic):
        self.costs = {k: max(float(v), 1e-9) for k, v in costs.items()}  # in dispatch order
        self.workers = max(1, workers)
        self.total = sum(self.costs.values())
        self.left = self.total
        self.finished = 0.0
        self.prior_pace = 1.0 / (PARALLEL * max(1, workers))
        self.clock = clock
        self.start = clock()
        self.first: tuple[float, float] | None = None  # (when the first run ended, its cost)

    def done(self, key: str | None = None) -> None:
        """The run ``key`` ended (trained, failed or given up); None: some run, of the average cost left."""
        if key in self.costs:
            cost = self.costs.pop(key)
        elif key is None and self.costs:
            cost = self.left / len(self.costs)
            self.costs.pop(next(iter(self.costs)))
        else:
            return
        self.left = max(0.0, self.left - cost)
        self.finished += cost
        if self.first is None:
            self.first = (self.clock(), cost)

    def in_flight(self) -> float:
        """The cost of the runs in flight already done: half the next ``workers`` runs'."""
        return 0.5 * sum(c for c, _ in zip(self.costs.values(), range(self.workers)))

    def pace(self) -> float:
        """Wall seconds per unit of expected cost: the runs done since the first one, shrunk towards the model's."""
        w = PRIOR_SHARE * self.total
        if self.first is None:  # nothing done yet: the time so far counts against the first runs
            return (self.clock() - self.start + w * self.prior_pace) / w
        since, first_cost = self.first
        return (self.clock() - since + w * self.prior_pace) / (self.finished - first_cost + self.in_flight() + w)

    def seconds_left(self) -> float:
        return (self.left - self.in_flight()) * self.pace() if self.costs else 0.0


def _costs(todo, prune: bool) -> dict[str, float]:
    """Each run's expected cost by ``cfg_hash``; equal costs (tqdm's ETA) if the model cannot say."""
    from experiments.engine.cost import expected_cost

    try:
        return {c.hash(): expected_cost(c, prune=prune) for c in todo}
    except Exception:  # noqa: BLE001 - an ETA is never worth stopping a sweep for
        return {c.hash(): 1.0 for c in todo}


class CostBar:
    """The bar an executor updates (``update``, ``set_postfix``, ``close``): runs done of the sweep's, and about how
    long is left by :class:`RemainingCost`. The runs that ended are read from ``counts.ended`` (``SweepCounts.add``
    records each, before the executor moves the bar)."""

    FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, todo, counts, *, desc: str, workers: int, disable: bool = False, prune: bool = True,
                 clock: Callable[[], float] = time.monotonic, costs: Mapping[str, float] | None = None, **tqdm_args):
        from tqdm.auto import tqdm

        if costs is None:  # a bar nobody sees needs no costs (they load each workload's data set once)
            costs = {c.hash(): 1.0 for c in todo} if disable else _costs(todo, prune)
        self.eta = RemainingCost(costs, workers=workers, clock=clock)
        self.counts = counts
        self.seen = len(counts.ended)
        self.extra: dict = {}
        self.bar = tqdm(total=len(todo), desc=desc, unit="run", disable=disable, dynamic_ncols=True,
                        bar_format=self.FORMAT, **tqdm_args)

    def _catch_up(self, n: int) -> None:
        ours = [key for key in self.counts.ended[self.seen:] if key in self.eta.costs]
        self.seen = len(self.counts.ended)
        for key in ours:
            self.eta.done(key)
        for _ in range(max(0, n - len(ours))):  # the bar moved for a run it cannot name: one of average cost
            self.eta.done(None)

    def text(self) -> str:
        """The postfix: ``about 3m12s left`` (then the executor's own, ``diverged=2, failed=0``)."""
        left = f"about {clock(self.eta.seconds_left())} left" if self.eta.finished else "ETA after the first run"
        return ", ".join([left, *(f"{k}={v}" for k, v in self.extra.items())])

    def update(self, n: int = 1) -> None:
        self._catch_up(n)
        self.bar.set_postfix_str(self.text(), refresh=False)
        self.bar.update(n)

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        self.extra = {**(ordered_dict or {}), **kwargs}
        self.bar.set_postfix_str(self.text(), refresh=refresh)

    def close(self) -> None:
        self.bar.close()

    def __getattr__(self, name):  # n, total, disable, ... as tqdm has them
        if name == "bar":
            raise AttributeError(name)
        return getattr(self.bar, name)
