"""One run's lifecycle, the same under every executor, and the order runs are handed out in.

A run goes: named and hashed, created RUNNING (:func:`start_run`), trained
(:func:`train_config`, in a worker), then logged and set FINISHED, or marked
FAILED with its error (:func:`finish_run`), and counted
(:meth:`SweepCounts.add`). The local executor starts a run when it hands the
configuration to a worker and finishes it when the result comes back; a Ray
task does both itself (:func:`run_one`). The schema is ``tracking.py``'s.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import multiprocessing as mp
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

from experiments.engine import grid as grids
from experiments.engine import tracking
from mbstudy import metrics

class Terminated(KeyboardInterrupt):
    """SIGTERM (what ``timeout``, Slurm and Kubernetes send): handled exactly like Ctrl-C, exit status 143."""


STOP = threading.Event()  # set by the driver's SIGTERM handler


class _StoreWrites(threading.local):
    depth = 0  # how many store_write blocks this thread is in
    pending: type[BaseException] | None = None  # an interrupt that arrived inside one


_WRITES = _StoreWrites()


@contextlib.contextmanager
def store_write():
    """A block of store writes that Ctrl-C and SIGTERM do not cut in half.

    An exception raised in the middle of a SQLite transaction leaves the store
    locked for the cleanup that follows; the driver's signal handlers therefore
    only note an interrupt that arrives in here (:func:`defer_interrupt`), and it
    is raised when the block ends.
    """
    _WRITES.depth += 1
    try:
        yield
    finally:
        _WRITES.depth -= 1
    if _WRITES.depth == 0 and _WRITES.pending is not None:
        pending, _WRITES.pending = _WRITES.pending, None
        raise pending()


def defer_interrupt(exc: type[BaseException]) -> bool:
    """Called by a signal handler: True (and ``exc`` kept for later) when inside :func:`store_write`."""
    if _WRITES.depth > 0:
        _WRITES.pending = _WRITES.pending or exc
        return True
    return False


def raise_if_stopped() -> None:
    """Raise :class:`Terminated` if SIGTERM arrived. Executors call this between runs: the handler raises too,
    but an exception raised inside a finalizer or a library callback is swallowed, and this one must not be."""
    if STOP.is_set():
        raise Terminated()


def program_key(cfg) -> tuple:
    """What the compiled training program depends on (:meth:`mbstudy.config.TrainConfig.program_key`)."""
    return cfg.program_key()


def dispatch_order(configs) -> list:
    """Runs of one compiled program next to each other (a worker compiles each once), then by rate and seed.

    >>> from mbstudy.config import TrainConfig
    >>> cs = [TrainConfig(batch_size=b, learning_rate=lr) for lr in (0.2, 0.1) for b in (8, 4)]
    >>> [(c.batch_size, c.learning_rate) for c in dispatch_order(cs)]
    [(4, 0.1), (4, 0.2), (8, 0.1), (8, 0.2)]
    """
    return sorted(configs, key=lambda c: (program_key(c), c.learning_rate, c.seed))


# ------------------------------------------------------------------- pruning
#
# Steps-to-target (Shallue et al.) is, per seed, a minimum over learning rates.
# A run that has not reached the target by the step where another run of its
# group already did cannot change that minimum, so the sweep gives it up there
# (outcome ``pruned``, ``mbstudy.train.train``'s ``give_up``): exact, not a
# heuristic. With two targets (training loss and validation) a run is given
# up only once that holds for every target it has not reached. The analysis
# reads a pruned run as "not reached by step S".

TARGETS = metrics.TARGETS  # a target and its summary metric


@functools.lru_cache(maxsize=1 << 16)  # a hash of the whole configuration, asked for several times per dispatch
def prune_group(cfg) -> str | None:
    """The runs a steps-to-target minimum is taken over: the configuration without its learning rate.

    None for a run that does not stop at a target: its later history is wanted, so it is never given up.

    >>> from mbstudy.config import TrainConfig
    >>> a, b = (TrainConfig(learning_rate=lr, target_loss=0.7, stop_at_target=True) for lr in (0.1, 0.2))
    >>> prune_group(a) == prune_group(b), prune_group(TrainConfig(target_loss=0.7))
    (True, None)
    """
    if not (cfg.stop_at_target and (cfg.target_loss is not None or cfg.target_val is not None)):
        return None
    return cfg.hash(without=("learning_rate",))


def _family(cfg) -> tuple:
    """The arm a group belongs to across batch sizes: where the previous batch size's best rate is a guess."""
    return (cfg.dataset, cfg.model, cfg.optimizer, cfg.reduction, cfg.seed)


class PruneBoard:
    """The best steps to each target so far of every prune group of a sweep, in memory shared with the workers.

    ``steps`` is an array of int64 (-1: none yet) in shared memory, one pair per
    group (``slot * 2 + k`` for the k-th target of :data:`TARGETS`), that the
    local executor's worker processes read at every evaluation
    (so a run in flight is given up as soon as another run of its group finishes
    earlier). The driver alone writes it (:meth:`record`). It starts from the
    store's finished runs, so pruning holds across a resume.
    """

    def __init__(self, configs, finished_runs=()):
        from mbstudy.config import TrainConfig

        groups = sorted({g for c in configs if (g := prune_group(c)) is not None})
        self.slots = {g: i for i, g in enumerate(groups)}
        self.steps = mp.get_context("spawn").Array("q", [-1] * max(2, 2 * len(groups)), lock=False)
        self.best_lr: dict[str, float] = {}
        self.latest_lr: dict[tuple, float] = {}
        for r in finished_runs:
            reached = {t: int(r.data.metrics[m]) for t, m in TARGETS.items() if m in r.data.metrics}
            if not reached or r.data.tags.get("outcome") not in ("completed", "pruned"):
                continue
            tag = r.data.tags.get("prune_group")  # older runs have none: their group is computed from the params
            if tag is not None and tag not in self.slots:
                continue
            try:
                cfg = TrainConfig.from_params(r.data.params)
            except Exception:  # noqa: BLE001 - a run this version cannot read does not prune anything
                continue
            self.record(cfg, reached)

    def slot(self, cfg) -> int | None:
        g = prune_group(cfg)
        return None if g is None else self.slots.get(g)

    def limit(self, cfg) -> dict[str, int] | None:
        i = self.slot(cfg)
        return None if i is None else board_limit(self.steps, i)

    def record(self, cfg, reached: dict[str, int]) -> None:
        """A run of ``cfg`` (completed or pruned) reached the targets ``reached`` ({"loss": steps, ...})."""
        i = self.slot(cfg)
        if i is None or not reached:
            return
        g = prune_group(cfg)
        for k, target in enumerate(TARGETS):
            steps = reached.get(target)
            if steps is None:
                continue
            j = 2 * i + k
            if self.steps[j] < 0 or steps < self.steps[j]:
                self.steps[j] = steps
                if target == ("loss" if cfg.target_loss is not None else "val"):  # the rate guess follows one target
                    self.best_lr[g] = cfg.learning_rate
        if g in self.best_lr:
            self.latest_lr[_family(cfg)] = self.best_lr[g]

    def record_result(self, cfg, result) -> None:
        if result is not None and result.outcome in ("completed", "pruned"):
            self.record(cfg, {t: s for t, m in TARGETS.items() if (s := getattr(result, m)) is not None})

    def guess(self, cfg, rates) -> float:
        """The likely best rate of ``cfg``'s group: its best so far, else the best of the arm's latest group
        (the previous batch size, in dispatch order), else the middle of ``rates`` (in log)."""
        g = prune_group(cfg)
        if g in self.best_lr:
            return self.best_lr[g]
        if _family(cfg) in self.latest_lr:
            return self.latest_lr[_family(cfg)]
        logs = sorted(math.log(r) for r in rates if r > 0)
        return math.exp(logs[(len(logs) - 1) // 2]) if logs else 1.0


class Dispatcher:
    """Hands out a sweep's configurations, one compiled program's runs together (:func:`dispatch_order`).

    ``lanes``: how many programs are handed out at once, in turn (the local
    executor: one per worker), so that each program is compiled by one worker
    and a run of it that another worker takes loads it from the persistent
    compilation cache, instead of both workers compiling the same program at
    the same time. With a :class:`PruneBoard`, within a program the rate
    nearest its group's likely best goes first, so that the runs after it are
    given up early.
    """

    def __init__(self, todo, board: PruneBoard | None = None, lanes: int = 1):
        self.waiting = [list(b) for _, b in itertools.groupby(dispatch_order(todo), key=program_key)]
        self.active: list[list] = []  # the programs being handed out, one per lane
        self.board = board
        self.lanes = max(1, lanes)
        self.turn = 0

    def __iter__(self):
        return self

    def __next__(self):
        for i, block in enumerate(self.active):  # a finished program's lane goes to the next program
            if not block and self.waiting:
                self.active[i] = self.waiting.pop(0)
        self.active = [b for b in self.active if b]
        while len(self.active) < self.lanes and self.waiting:
            self.active.append(self.waiting.pop(0))
        if not self.active:
            raise StopIteration
        lane = self.turn % len(self.active)
        self.turn += 1
        return self._take(self.active[lane])

    def _take(self, block: list):
        if self.board is None or all(prune_group(c) is None for c in block):
            return block.pop(0)
        rates: dict[str | None, list[float]] = {}
        for c in block:
            rates.setdefault(prune_group(c), []).append(c.learning_rate)

        def distance(i: int) -> tuple:
            c = block[i]
            if prune_group(c) is None or c.learning_rate <= 0:
                return (math.inf, i)
            guess = self.board.guess(c, rates[prune_group(c)])
            return (abs(math.log(c.learning_rate) - math.log(guess)), i)

        return block.pop(min(range(len(block)), key=distance))


# ------------------------------------------------------------------ training


@functools.cache
def _dataset(name: str, seed: int, n_train: int = 0):
    from mbstudy import load_dataset

    return load_dataset(name, seed=seed, n_train=n_train or None)


@functools.cache
def use_compilation_cache() -> str:
    """Keep compiled programs on disk (``<project>/.cache/jax``, or ``JAX_COMPILATION_CACHE_DIR``), once per process.

    A rerun, a second worker process or a Ray task with the same shapes then loads
    what an earlier one compiled instead of compiling again (measured: the smallest
    MNIST-1D run's compile time 3.7 s cold, 0.4 s warm). The programs are the same,
    so the numbers are too.
    """
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(tracking.ROOT / ".cache" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


_BOARD_STEPS = None  # this process's view of the PruneBoard's shared steps (set_board_steps)


def set_board_steps(steps) -> None:
    """The local executor's worker initializer (and, with one worker, the driver) keep the board's array here."""
    global _BOARD_STEPS
    _BOARD_STEPS = steps


def board_limit(steps, slot: int) -> dict[str, int]:
    """The give-up steps a board's array holds for group ``slot``: ``{target: steps}`` of the targets reached."""
    return {t: int(v) for k, t in enumerate(TARGETS) if (v := steps[2 * slot + k]) >= 0}


def train_config(cfg, slot: int | None = None, give_up_after: dict[str, int] | None = None):
    """Train one configuration (in a worker process, a Ray task, or this process), with the compilation cache.

    ``slot``: its group's slot of the shared :class:`PruneBoard` (read at every evaluation);
    ``give_up_after``: fixed give-up steps per target (a Ray task's, read from the store).
    """
    from mbstudy.train import train

    use_compilation_cache()
    give_up = None
    if slot is not None and _BOARD_STEPS is not None:
        steps = _BOARD_STEPS

        def give_up():
            return board_limit(steps, slot)
    elif give_up_after:
        give_up = give_up_after
    return train(cfg, _dataset(cfg.dataset, cfg.data_seed, cfg.n_train), give_up=give_up)


# ----------------------------------------------------------------- lifecycle


@dataclass(frozen=True)
class SweepContext:
    """What every run of a sweep shares: where it is logged, under which parent, by which executor."""

    tracking_uri: str
    experiment_id: str
    parent_id: str
    sweep: str
    provenance: dict[str, str]
    executor: str = "local"
    prune: bool = True  # give up runs that can no longer win (see "pruning" above); --no-prune turns it off


@dataclass(frozen=True)
class RunRecord:
    """What became of one configuration: ``status`` is ``trained``, ``skipped`` or ``failed``."""

    cfg_hash: str
    status: str
    outcome: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepCounts:
    """Runs trained, skipped (already FINISHED), diverged, pruned and failed in one sweep, and their summed timings."""

    trained: int = 0
    skipped: int = 0
    diverged: int = 0
    pruned: int = 0
    failed: int = 0
    stale: int = 0  # RUNNING runs of a dead sweep, marked KILLED before this one started
    times: Counter = field(default_factory=Counter)

    def add(self, record: RunRecord) -> None:
        if record.status == "trained":
            self.trained += 1
            self.diverged += record.outcome == "diverged"
            self.pruned += record.outcome == "pruned"
            self.times.update(record.timings)
        elif record.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


def start_run(ctx: SweepContext, cfg) -> str:
    """Create the configuration's child run, RUNNING, under the sweep's parent; returns its id."""
    with store_write():
        return tracking.start_child(ctx.experiment_id, ctx.parent_id, cfg.run_name(), cfg.hash(),
                                    cfg.hash(without=("seed",)), ctx.sweep, executor=ctx.executor,
                                    prune_group=prune_group(cfg))


def finish_run(ctx: SweepContext, run_id: str, cfg, result=None, error: BaseException | None = None) -> RunRecord:
    """Log ``result`` into the run and set it FINISHED, or, given ``error``, mark it FAILED with the error."""
    h = cfg.hash()
    with store_write():
        if error is not None:
            tracking.fail_child(run_id, f"{type(error).__name__}: {error}")
            return RunRecord(h, "failed")
        log_s = tracking.log_result(run_id, result, cfg.to_params(), ctx.provenance)
    return RunRecord(h, "trained", result.outcome, {**result.timings, "log_s": log_s})


def run_one(ctx: SweepContext, cfg) -> RunRecord:
    """The whole lifecycle in this process: start, train, finish (an exception in training fails the run only).

    With pruning, the run is given up at the best steps-to-target its group has in the store when it starts.
    """
    group = prune_group(cfg) if ctx.prune else None
    give_up_after = None if group is None else tracking.best_steps_to_target(ctx.experiment_id, group)
    run_id = start_run(ctx, cfg)
    try:
        result = train_config(cfg, give_up_after=give_up_after)
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the others
        return finish_run(ctx, run_id, cfg, error=e)
    return finish_run(ctx, run_id, cfg, result)
