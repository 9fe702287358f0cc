"""One run's lifecycle, the same under every executor.

A run goes: named and hashed, created RUNNING (:func:`start_run`), trained
(:func:`train_config`, in a worker), then logged and set FINISHED, or marked
FAILED with its error (:func:`finish_run`), and counted
(:meth:`SweepCounts.add`). The local executor starts a run when it hands the
configuration to a worker and finishes it when the result comes back; a Ray
task does both itself (:func:`run_one`). What a run holds is ``run_writer.py``'s
schema; when a run is given up, ``pruning.py``; the order runs go in, ``dispatch.py``.
"""

from __future__ import annotations

import functools
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from experiments.engine import pruning, run_writer, store
from experiments.engine.interrupts import store_write
from mbstudy.metrics import TARGETS


# ------------------------------------------------------------------ training


@functools.cache
def _dataset(name: str, seed: int, n_train: int = 0, options: tuple = ()):
    """A worker loads each data set once (its arrays are read-only), at the configuration's options (the text's context)."""
    from mbstudy import load_dataset

    return load_dataset(name, seed=seed, n_train=n_train or None, **dict(options))


@functools.cache
def use_compilation_cache() -> str:
    """Keep compiled programs on disk (``<project>/.cache/jax``, or ``JAX_COMPILATION_CACHE_DIR``), once per process.

    A rerun, a second worker process or a Ray task with the same shapes then loads
    what an earlier one compiled instead of compiling again (measured: the smallest
    MNIST-1D run's compile time 3.7 s cold, 0.4 s warm). The programs are the same,
    so the numbers are too.
    """
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or str(store.ROOT / ".cache" / "jax")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def train_config(cfg, slot: int | None = None, give_up_after: dict[str, int] | None = None):
    """Train one configuration (in a worker process, a Ray task, or this process), with the compilation cache.

    ``slot``: its group's slot of the shared :class:`~experiments.engine.pruning.PruneBoard` (read at every
    evaluation); ``give_up_after``: fixed give-up steps per target (a Ray task's, read from the store).
    """
    from mbstudy.train import train

    use_compilation_cache()
    give_up = pruning.worker_give_up(slot) or give_up_after or None
    return train(cfg, _dataset(cfg.dataset, cfg.data_seed, cfg.n_train, tuple(sorted(cfg.data_options().items()))),
                 give_up=give_up)


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
    prune: bool = True  # give up runs that can no longer win (pruning.py); --no-prune turns it off


@dataclass(frozen=True)
class RunRecord:
    """What became of one configuration: ``status`` is ``trained``, ``skipped`` or ``failed``; ``reached``: the
    steps to each target (``{"loss": 120, "val": None}``), what a learning-rate search reads; ``steps``: the steps
    a trained run took (fewer than its budget if it diverged or was given up), what the progress bar's ETA reads."""

    cfg_hash: str
    status: str
    outcome: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    run_id: str = ""
    reached: dict[str, int | None] = field(default_factory=dict)
    steps: int | None = None


def stored_record(run) -> RunRecord:
    """The record of a configuration the store holds FINISHED (``skipped``: this sweep did not train it)."""
    m = run.data.metrics
    return RunRecord(run.data.tags.get("cfg_hash", ""), "skipped", run.data.tags.get("outcome", ""),
                     run_id=run.info.run_id, reached={t: None if k not in m else int(m[k]) for t, k in TARGETS.items()})


WORKER_TIMINGS = ("compile_s", "train_s", "eval_s")  # a run's timings spent in its worker (log_s: in the driver)


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
    search: dict[str, Any] | None = None  # a search grid's summary (chains.SearchWork.summary)
    ended: list[str] = field(default_factory=list)  # cfg_hash of each run added, in order (the progress bar's ETA)
    # cfg_hash -> (steps, seconds) each trained run took: its steps, and its worker's seconds compiling, training and
    # evaluating it (the progress bar's ETA too)
    took: dict[str, tuple[int, float]] = field(default_factory=dict)

    def add(self, record: RunRecord) -> None:
        self.ended.append(record.cfg_hash)
        if record.status == "trained":
            if record.steps is not None:
                self.took[record.cfg_hash] = (record.steps, sum(record.timings.get(k, 0.0) for k in WORKER_TIMINGS))
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
        return run_writer.start_child(ctx.experiment_id, ctx.parent_id, cfg.run_name(), cfg.hash(),
                                      cfg.hash(without=("seed",)), ctx.sweep, executor=ctx.executor,
                                      prune_group=pruning.prune_group(cfg))


def finish_run(ctx: SweepContext, run_id: str, cfg, result=None, error: BaseException | None = None) -> RunRecord:
    """Log ``result`` into the run and set it FINISHED, or, given ``error``, mark it FAILED with the error."""
    h = cfg.hash()
    with store_write():
        if error is not None:
            run_writer.fail_child(run_id, f"{type(error).__name__}: {error}")
            return RunRecord(h, "failed", run_id=run_id)
        log_s = run_writer.log_result(run_id, result, cfg.to_params(), ctx.provenance)
    steps = result.history["step"]
    return RunRecord(h, "trained", result.outcome, {**result.timings, "log_s": log_s}, run_id,
                     {t: getattr(result, k) for t, k in TARGETS.items()}, int(steps[-1]) if len(steps) else 0)


def run_one(ctx: SweepContext, cfg) -> RunRecord:
    """The whole lifecycle in this process: start, train, finish (an exception in training fails the run only).

    With pruning, the run is given up at the best steps-to-target its group has in the store when it starts.
    """
    group = pruning.prune_group(cfg) if ctx.prune else None
    give_up_after = None if group is None else pruning.best_steps_to_target(ctx.experiment_id, group)
    run_id = start_run(ctx, cfg)
    try:
        result = train_config(cfg, give_up_after=give_up_after)
    except Exception as e:  # noqa: BLE001 - one bad run must not stop the others
        return finish_run(ctx, run_id, cfg, error=e)
    return finish_run(ctx, run_id, cfg, result)
