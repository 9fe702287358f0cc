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
import os
import threading
from collections import Counter
from dataclasses import dataclass, field

from experiments.engine import grid as grids
from experiments.engine import tracking

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


# ------------------------------------------------------------------ training


@functools.cache
def _dataset(name: str, seed: int):
    from mbstudy import load_dataset

    return load_dataset(name, seed=seed)


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


def train_config(cfg):
    """Train one configuration (in a worker process, a Ray task, or this process), with the compilation cache."""
    from mbstudy.train import train

    use_compilation_cache()
    return train(cfg, _dataset(cfg.dataset, cfg.data_seed))


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


@dataclass(frozen=True)
class RunRecord:
    """What became of one configuration: ``status`` is ``trained``, ``skipped`` or ``failed``."""

    cfg_hash: str
    status: str
    outcome: str = ""
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class SweepCounts:
    """Runs trained, skipped (already FINISHED), diverged and failed in one sweep, and their summed timings."""

    trained: int = 0
    skipped: int = 0
    diverged: int = 0
    failed: int = 0
    stale: int = 0  # RUNNING runs of a dead sweep, marked KILLED before this one started
    times: Counter = field(default_factory=Counter)

    def add(self, record: RunRecord) -> None:
        if record.status == "trained":
            self.trained += 1
            self.diverged += record.outcome == "diverged"
            self.times.update(record.timings)
        elif record.status == "skipped":
            self.skipped += 1
        else:
            self.failed += 1


def start_run(ctx: SweepContext, cfg) -> str:
    """Create the configuration's child run, RUNNING, under the sweep's parent; returns its id."""
    with store_write():
        return tracking.start_child(ctx.experiment_id, ctx.parent_id, cfg.run_name(), cfg.hash(),
                                    cfg.hash(without=("seed",)), ctx.sweep, executor=ctx.executor)


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
    """The whole lifecycle in this process: start, train, finish (an exception in training fails the run only)."""
    run_id = start_run(ctx, cfg)
    try:
        result = train_config(cfg)
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the others
        return finish_run(ctx, run_id, cfg, error=e)
    return finish_run(ctx, run_id, cfg, result)
