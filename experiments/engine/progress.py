"""The sweep's progress bar, whose ETA weighs each remaining run by its expected cost.

tqdm's own ETA is the runs left divided by the runs per second so far. A
sweep hands its runs out one compiled program after another (``dispatch.py``),
the small batches of a program group first, so the runs left are rarely like
the runs done: at 13 of 36 runs of a grid over B, tqdm said 24-38 s left and
the other 23 took 1m53s (issue 26). Here each run weighs its expected cost
(:func:`experiments.engine.cost.expected_cost`: steps x B x its model's FLOPs,
evaluations, ...), as much of it as the runs done foretell it will use, and
the pace comes from the runs already done::

    seconds left = (cost of the runs left - f) x (seconds since the first run ended + w x p0)
                                                / (cost the runs done since used + f + w)

(near the end, the time until the last run ends when the runs left go in
hand-out order to the first free worker: :meth:`RemainingCost.seconds_left`)

where ``p0 = 1 / (0.75 x workers)`` is the cost model's own pace (two worker
processes on two cores do about 1.5 runs' worth of work at once) and ``w`` is
:data:`PRIOR_SHARE` of the sweep's cost: the model's pace counts while little
is done and fades as runs finish, so the machine's speed and its load are
learnt. The pace is measured from the first run's end, so that starting the
workers (seconds, once) is not taken for a slow machine, and ``f`` is the part
of the runs in flight already done: half of the next ``workers`` runs in
hand-out order (the order the bar is given its runs in: the executor's
``hand_out_order``; the local executor hands one compiled program per worker
out in turn, and with each program's runs together instead the bar counted a
long B = 1024 run as not begun while it was all but done, saying 4.0 s for the
last 0.7 s of a live ``make sweep``). Near the end the time left counts, of each run in flight,
its expected seconds less those since it began (when a run ended and freed
its worker), at least a tenth of them.

What the cost model cannot foresee is learnt from each run that ends, as the
executor tells the bar (``SweepCounts.took``: the steps it took, and its
worker's seconds compiling, training and evaluating it):

- the share of its expected cost a run uses: a run that diverges stops early
  (in the default grid a third of the runs, after 100 of 2000 steps, and half
  of those of its last third). A run left is expected to use the share that
  the runs done of its :func:`kin` used at the nearest learning rate: the same
  configuration but its seed, learning rate and reduction, the rate times B
  for a sum over the batch of an optimizer whose step scales with the gradient
  (SGD's and momentum's: the sum is then the mean at B times the rate, the
  same run), so a sum's divergence at large B is foretold by the mean's at the
  same B; or the same but at any batch size, where that has a nearer rate
  done (the runs go out small B first, and a sum at B = 1024 diverges at the
  rate the small batches' runs diverged at; without it the ETA said +31% at a
  third of a quiet ``make sweep``); with none done, the share all the runs
  done used; or, where that is more than :data:`FARTHER` (half a decade)
  nearer, another optimizer's at the same steady step (the rate over
  1 - momentum for heavy ball, whose steps add up to that; optimizers whose
  step does not scale with the gradient, Adam's, only among themselves): the
  default grid trains SGD after momentum, and without it the ETA said +34% at
  a third of a quiet ``make sweep``, the SGD runs at large rates foretold to
  train in full until SGD's own diverged;
- the seconds per unit of cost of its :func:`kind` (the configuration but its
  seed, rate, reduction and optimizer, then with its optimizer): the model
  leaves out compiling and gets small batches' fixed costs wrong, so on two
  shared cores a run at B = 1024 took 1.4 s per unit and one at B = 1 2.3 s.
  A kind's is shrunk towards the coarser kind's, and that towards all the
  runs', by :data:`KIND_PRIOR`.

Runs the bar cannot name, or whose steps it is not told, count at their
expected cost; anything that fails in the learning falls back to the expected
costs (an ETA is never worth stopping a sweep for). Measured on ``make
sweep`` (the default grid, 756 runs, 2 workers on two shared cores, from a
cold compilation cache): see the README's "Sweeps"; ``tests/test_progress.py``
replays a recorded one on a fake clock.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections.abc import Callable, Hashable, Mapping

PARALLEL = 0.75  # runs' worth of work per worker process at once (1.3-1.7 measured for 2 workers on 2 cores)
PRIOR_SHARE = 0.02  # the weight of the cost model's own pace, as a share of the sweep's expected cost
KIND_PRIOR = 0.01  # the weight of a coarser kind's seconds per unit in a finer one's, as a share of the sweep's cost
# how many decades farther the rates done of each of kin's groups (fine to coarse) count: another optimizer's runs
# (the third group) are weaker evidence of a run's divergence than its own optimizer's at another batch size
FARTHER = (0.0, 0.0, 0.5)


def clock(seconds: float) -> str:
    """``12m03s``, ``45s``, ``1h02m``; under 10 s to a tenth (``4.2s``: the last seconds of a sweep).

    >>> clock(723.4), clock(45.0), clock(3725), clock(4.24), clock(9.96)
    ('12m03s', '45s', '1h02m', '4.2s', '10s')
    """
    if seconds < 9.95:
        return f"{max(seconds, 0.0):.1f}s"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class RemainingCost:
    """Seconds left in a sweep whose runs (by key) have the expected ``costs``; :meth:`done` as each ends.

    What each run left is expected to use of its cost is learnt from the runs done (the module's docstring):
    ``kin``, each run's (group, rate), or (groups fine to coarse, rate): it takes the share of its expected steps
    that the runs done of its group took at the nearest rate (of the group with the nearest rate done, the finer
    on a tie; the share all the runs done took if no group has any; 1 before any); ``fixed``, the
    share of its cost a run pays whatever its steps; ``kind``, each run's kinds, coarse to fine: its cost is
    weighed by the worker seconds per unit of cost its kind's runs done took, over all the runs done's.

    >>> eta = RemainingCost({"a": 1.0, "b": 1.0, "c": 1.0}, kin={"a": ("g", -1.0), "b": ("g", 1.0), "c": ("g", 0.7)})
    >>> eta.done("a", share=1.0); eta.done("b", share=0.05)   # b, at a rate 100x a's, diverged after 5% of its steps
    >>> eta.share("c"), eta.share("x")  # c is nearest b's rate; x, of no group done, takes all the runs done's share
    (0.05, 0.525)
    >>> t = [0.0]
    >>> eta = RemainingCost({"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0, "e": 8.0}, workers=1, clock=lambda: t[0])
    >>> t[0] = 5.0; eta.done("a")                  # the first run ends (the worker took 4 s to start)
    >>> t[0] = 8.0; eta.done("b"); eta.done("c")   # two more in 3 s, with d half done: about 1.2 s per unit
    >>> round(eta.seconds_left(), 1)                 # all of d (it began as c ended) and of e: 9 units
    10.9
    """

    def __init__(self, costs: Mapping[str, float], *, workers: int = 1, clock: Callable[[], float] = time.monotonic,
                 kin: Mapping[str, tuple[Hashable, float]] | None = None,
                 kind: Mapping[str, tuple[Hashable, ...]] | None = None, fixed: Mapping[str, float] | None = None):
        self.costs = {k: max(float(v), 1e-9) for k, v in costs.items()}  # in hand-out order
        self.fixed = {k: min(1.0, max(0.0, float(v))) for k, v in (fixed or {}).items()}
        self.workers = max(1, workers)
        self.total = sum(self.costs.values())
        self.finished = 0.0  # the cost the runs done really used (their expected cost where it is not known)
        self.prior_pace = 1.0 / (PARALLEL * max(1, workers))
        self.clock = clock
        self.start = clock()
        self.first: tuple[float, float] | None = None  # (when the first run ended, its cost)
        self.kin = dict(kin or {})
        self.kind = dict(kind or {})
        self.shares: dict[Hashable, dict[float, list[float]]] = {}  # group -> rate -> shares of their steps taken
        self.used = [0.0, 0.0]  # the share of their steps taken, times their cost, and the cost of the runs done
        self.seconds: dict[tuple, list[float]] = {}  # kind -> [worker seconds, cost used] of its runs done (): all
        self._left: list[float] | None = None  # the expected cost of each run left, by share (None: to be computed)
        self.started = {k: self.start for k in itertools.islice(self.costs, self.workers)}  # in flight -> began

    def done(self, key: str | None = None, share: float | None = None, seconds: float | None = None) -> None:
        """The run ``key`` ended (trained, failed or given up), having taken ``share`` of the steps it was expected
        to take and ``seconds`` of its worker, where known; None: some run, of the average cost left."""
        if key in self.costs:
            cost = self.costs.pop(key)
        elif key is None and self.costs:
            cost = sum(self.left_costs()) / len(self.costs)
            self.costs.pop(next(iter(self.costs)))
            key = None
        else:
            return
        self._left = None
        if share is not None and math.isfinite(share) and share >= 0:
            self.used[0] += cost * share
            self.used[1] += cost
            if key in self.kin:
                groups, rate = self.kin[key]
                for group in (groups if isinstance(groups, tuple) else (groups,)):
                    self.shares.setdefault(group, {}).setdefault(rate, []).append(share)
            cost *= self._used(key, share)
            if seconds is not None and math.isfinite(seconds) and seconds >= 0:
                kinds = self.kind.get(key, ())
                for k in (kinds[:i] for i in range(len(kinds) + 1)):
                    seen = self.seconds.setdefault(k, [0.0, 0.0])
                    seen[0] += seconds
                    seen[1] += cost
        self.finished += cost
        now = self.clock()
        if self.first is None:
            self.first = (now, cost)
        flying = itertools.islice(self.costs, self.workers)  # the run that ended is no longer among them
        self.started = {k: self.started.get(k, now) for k in flying}  # a worker freed takes the next run

    def _used(self, key: str | None, share: float) -> float:
        """The share of its expected cost a run uses taking ``share`` of its steps (some is paid whatever its steps)."""
        fixed = self.fixed.get(key, 0.0)
        return fixed + (1.0 - fixed) * share

    def share(self, key: str) -> float:
        """The share of the steps it is expected to take that the run ``key`` will take (see the class)."""
        groups, rate = self.kin.get(key, (None, 0.0))
        best = None  # (distance to the nearest rate done, the group's shares there), finer groups first on a tie
        for level, group in enumerate(groups if isinstance(groups, tuple) else (groups,)):
            seen = self.shares.get(group)
            if seen:
                nearest = min(abs(r - rate) for r in seen)
                far = nearest + FARTHER[min(level, len(FARTHER) - 1)]
                if best is None or far < best[0] - 1e-9:
                    best = (far, [x for r, shares in seen.items() if abs(r - rate) <= nearest + 1e-9
                                  for x in shares])
        if best is None:
            return self.used[0] / self.used[1] if self.used[1] > 0 else 1.0
        return sum(best[1]) / len(best[1])

    def slowness(self, key: str) -> float:
        """Worker seconds per unit of cost of the runs done of ``key``'s kind, over all the runs done's (1: none).

        Each finer kind's is shrunk towards the coarser one's (all the runs' first), by :data:`KIND_PRIOR`."""
        seconds, cost = self.seconds.get((), (0.0, 0.0))
        if seconds <= 0 or cost <= 0:
            return 1.0
        prior, ratio = KIND_PRIOR * self.total, seconds / cost
        kinds = self.kind.get(key, ())
        for i in range(1, len(kinds) + 1):
            k_seconds, k_cost = self.seconds.get(kinds[:i], (0.0, 0.0))
            if k_cost + prior > 0:
                ratio = (k_seconds + prior * ratio) / (k_cost + prior)
        return ratio / (seconds / cost)

    def left_costs(self) -> list[float]:
        """The expected cost of each run left, in hand-out order, by the share it is expected to use."""
        if self._left is None:
            try:
                self._left = [c * self._used(k, self.share(k)) * self.slowness(k) for k, c in self.costs.items()]
            except Exception:  # noqa: BLE001 - an ETA is never worth stopping a sweep for: the expected costs
                self._left = list(self.costs.values())
        return self._left

    def in_flight(self) -> float:
        """The cost of the runs in flight already done, for the pace: half the next ``workers`` runs'."""
        return 0.5 * sum(self.left_costs()[:self.workers])

    def pace(self) -> float:
        """Wall seconds per unit of expected cost: the runs done since the first one, shrunk towards the model's."""
        w = PRIOR_SHARE * self.total
        if self.first is None:  # nothing done yet: the time so far counts against the first runs
            return (self.clock() - self.start + w * self.prior_pace) / w
        since, first_cost = self.first
        return (self.clock() - since + w * self.prior_pace) / (self.finished - first_cost + self.in_flight() + w)

    def seconds_left(self) -> float:
        """The runs left handed out in order to the first free worker (the first ``workers`` in flight,
        each with its expected seconds less those since it began), each worker taking ``pace x workers`` seconds
        per unit: the time until the last one ends. With many runs left it is their cost times the pace; near the
        end it counts the workers left idle while the last long runs finish."""
        if not self.costs:
            return 0.0
        left, w, pace, now = self.left_costs(), self.workers, self.pace(), self.clock()
        free = []  # each worker's seconds until it is free
        for k, c in zip(self.costs, left[:w]):
            expected, since = c * pace * w, now - self.started.get(k, now)
            free.append(max(expected - since, 0.1 * expected))  # one past its expected time: a tenth of it left
        free += [0.0] * max(0, w - len(left))
        heapq.heapify(free)
        for c in left[w:]:
            heapq.heappush(free, heapq.heappop(free) + c * pace * w)
        return max(free)


def kin(cfg) -> tuple[tuple[Hashable, ...], float]:
    """(groups, rate) of a run for :class:`RemainingCost`: the configuration but its seed, learning rate and
    reduction, then also but its batch size, then also but its optimizer (with its hyper-parameters; whether the
    optimizer's update scales with the gradient kept); log10 of its steady step: the learning rate, times B for a
    sum over the batch of an optimizer whose update scales with the gradient (SGD's: the sum is B times the mean,
    so the same run as the mean at B times the rate; not Adam's), over 1 - momentum for an optimizer with a
    ``momentum`` (heavy ball's steps add up to that multiple of the gradient's).

    >>> from mbstudy.config import TrainConfig
    >>> [kin(TrainConfig(optimizer=o, reduction=r, batch_size=100, learning_rate=0.01))[1] for o, r in
    ...  (("sgd", "mean"), ("sgd", "sum"), ("adam", "sum"), ("momentum", "mean"))]
    [-2.0, 0.0, -2.0, -1.0]
    """
    from mbstudy.optimizers import OPTIMIZERS

    opt = OPTIMIZERS[cfg.optimizer]
    rate = cfg.learning_rate
    if cfg.reduction == "sum" and not opt.scale_invariant:
        rate *= cfg.batch_size
    if "momentum" in opt.fields and 0 <= cfg.momentum < 1:
        rate /= 1 - cfg.momentum  # heavy ball's steady step: lr / (1 - momentum) times the gradient
    return ((cfg.hash(without=("seed", "learning_rate", "reduction")),
             cfg.hash(without=("seed", "learning_rate", "reduction", "batch_size")),
             (opt.scale_invariant, _but_optimizer(cfg, "batch_size"))),
            round(math.log10(max(rate, 1e-30)), 6))


def _but_optimizer(cfg, *also: str) -> str:
    """The hash of the configuration but its seed, learning rate, reduction, optimizer and every optimizer's
    hyper-parameter fields, and ``also``."""
    import dataclasses

    optimizer = tuple(f.name for f in dataclasses.fields(cfg) if f.metadata.get("role") == "optimizer")
    return cfg.hash(without=("seed", "learning_rate", "reduction", "optimizer", *optimizer, *also))


def kind(cfg) -> tuple[str, str]:
    """A run's kinds for :class:`RemainingCost`, coarse to fine: the configuration but its seed, learning rate,
    reduction and optimizer (with the optimizer's hyper-parameters), the work of one step, which the cost model
    gets wrong alike; then with its optimizer, whose update's work the model leaves out."""
    return _but_optimizer(cfg), cfg.hash(without=("seed", "learning_rate", "reduction"))


class CostBar:
    """The bar an executor updates (``update``, ``set_postfix``, ``close``): runs done of the sweep's, and about how
    long is left by :class:`RemainingCost`. The runs that ended are read from ``counts.ended`` (``SweepCounts.add``
    records each, before the executor moves the bar), the steps and seconds each took from ``counts.took``.
    ``todo``: the runs in the order the executor hands them out (``Executor.hand_out_order``; ``costs``, if given,
    in the same order)."""

    FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"

    def __init__(self, todo, counts, *, desc: str, workers: int, disable: bool = False, prune: bool = True,
                 clock: Callable[[], float] = time.monotonic, costs: Mapping[str, float] | None = None, **tqdm_args):
        from tqdm.auto import tqdm

        self.configs: dict[str, object] = {}  # the runs whose share of their cost can be known, by cfg_hash
        kins, kinds, fixed = {}, {}, {}
        if costs is None and disable:  # a bar nobody sees needs no costs (they load each workload's data set once)
            costs = {c.hash(): 1.0 for c in todo}
        else:
            try:
                from experiments.engine.cost import cost_at, expected_cost

                costs = costs if costs is not None else {c.hash(): expected_cost(c, prune=prune) for c in todo}
                kins, kinds = {c.hash(): kin(c) for c in todo}, {c.hash(): kind(c) for c in todo}
                fixed = {c.hash(): cost_at(c, 0) / expected_cost(c, prune=prune) for c in todo}
                self.configs = {c.hash(): c for c in todo}
            except Exception:  # noqa: BLE001 - an ETA is never worth stopping a sweep for: tqdm's, equal costs
                costs = costs if costs is not None else {c.hash(): 1.0 for c in todo}
        self.prune = prune
        self.eta = RemainingCost(costs, workers=workers, clock=clock, kin=kins, kind=kinds, fixed=fixed)
        self.counts = counts
        self.seen = len(counts.ended)
        self.extra: dict = {}
        self.bar = tqdm(total=len(todo), desc=desc, unit="run", disable=disable, dynamic_ncols=True,
                        bar_format=self.FORMAT, **tqdm_args)

    def _catch_up(self, n: int) -> None:
        ours = [key for key in self.counts.ended[self.seen:] if key in self.eta.costs]
        self.seen = len(self.counts.ended)
        for key in ours:
            self.eta.done(key, *self._took(key))
        for _ in range(max(0, n - len(ours))):  # the bar moved for a run it cannot name: one of average cost
            self.eta.done(None)

    def _took(self, key: str) -> tuple[float | None, float | None]:
        """(the share of the steps it was expected to take that the run ``key`` took; its worker's seconds), or
        None for what is not known."""
        took, cfg = getattr(self.counts, "took", {}).get(key), self.configs.get(key)
        if took is None or cfg is None:
            return None, None
        from experiments.engine.cost import expected_steps

        try:
            return took[0] / expected_steps(cfg, prune=self.prune), took[1]
        except Exception:  # noqa: BLE001 - an ETA is never worth stopping a sweep for
            return None, None

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
