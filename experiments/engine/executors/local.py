"""The local executor (default): worker processes on this machine train, this process logs.

``--workers`` processes (default: the number of cores; 1 trains in this
process). Each run is created RUNNING when it is handed to a worker, logged by
this process when its result comes back, and only then set FINISHED. At most
``workers + 1`` runs are in flight, from ``workers`` compiled programs in
turn, so that each program is compiled once and loaded from the compilation
cache by the other workers (``dispatch.Dispatcher``). With pruning, the
workers read the prune board in shared memory at every evaluation, and runs
are handed out likely best rate first. A learning-rate search's runs are
handed out as its cells propose them (``dispatch.SearchDispatcher``): each
result is given to the search before the free workers get their next runs.

Within :func:`kept_pool` (``python -m experiments.study`` runs its sweeps in
it) the workers outlive a sweep: the next sweep with as many workers hands its
runs to the same processes, whose imports, data sets and compiled programs are
already in memory (8 small sweeps of the quick study: 0.79x the wall time,
paired, on two cores). The prune board's shared array is then the pool's own, refilled for each sweep
(:func:`_pool_for`). What a run computes does not depend on the process that
trains it, so the runs are those a fresh pool makes (tests/test_kept_pool.py).
"""

from __future__ import annotations

import concurrent.futures as cf
from concurrent.futures.process import BrokenProcessPool
import contextlib
import multiprocessing as mp
import signal

from experiments.engine import lifecycle, pruning, store
from experiments.engine.dispatch import Dispatcher, SearchDispatcher
from experiments.engine.interrupts import raise_if_stopped, store_write
from experiments.engine.executors.base import Executor, SweepAborted


def _worker_init(board_steps=None) -> None:
    # The driver handles Ctrl-C and SIGTERM (a batch system may send it to every process of the job) and
    # stops the pool itself, with SIGKILL; a worker that died first would look like a crash.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pruning.set_board_steps(board_steps)


class InProcessPool(cf.Executor):
    """``--workers 1``: train in this process, when the result is asked for."""

    def submit(self, fn, /, *args, **kwargs):
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - reported as a failed run
            f.set_exception(e)
        return f


def make_pool(workers: int, board_steps=None) -> cf.Executor:
    """``workers`` spawned processes that ignore Ctrl-C and SIGTERM, or this process for 1; each sees the
    prune board's shared ``board_steps``."""
    if workers == 1:
        pruning.set_board_steps(board_steps)
        return InProcessPool()
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                  initargs=(board_steps,))


BOARD_CAPACITY = 1 << 14  # a kept pool's board: int64 entries (two per prune group), grown for a larger sweep

_kept: dict | None = None  # inside kept_pool(): {"workers", "pool", "steps"} of the pool kept between sweeps, or {}


@contextlib.contextmanager
def kept_pool():
    """Keep the local executor's worker processes from one sweep to the next of this process (see the module's
    docstring); they are stopped when the block ends, however it ends."""
    global _kept
    outer, _kept = _kept, {}
    try:
        yield
    finally:
        if _kept:
            _shutdown(_kept["pool"])
        _kept = outer


KEPT_RSS_LIMIT = 3 << 30  # bytes: a kept worker holding more (its data sets and compiled programs) is not reused


def _healthy(pool: cf.Executor) -> bool:
    """Whether a kept pool can take the next sweep: none of its workers died (a dead worker, even an idle one,
    breaks a ``ProcessPoolExecutor``) and none holds more than :data:`KEPT_RSS_LIMIT` of memory (read from
    ``/proc`` where there is one): each keeps every data set and compiled program of the sweeps it served."""
    if getattr(pool, "_broken", False) or getattr(pool, "_shutdown_thread", False):
        return False
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if not proc.is_alive():
            return False
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                status = f.read()
        except OSError:
            continue
        rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
        if rss > KEPT_RSS_LIMIT:
            return False
    return True


def _pool_for(workers: int, board) -> tuple[cf.Executor, bool]:
    """The pool a sweep trains in, and whether it is kept after the sweep.

    Outside :func:`kept_pool` (or with one worker): a new pool that sees ``board``'s array. Inside: the kept pool
    when it has ``workers`` processes, its array holds ``board``'s entries and it is :func:`_healthy`, else a new
    one kept in its place; ``board.steps`` is then the pool's array, reset to -1 past the board's own entries
    (copied in), so no entry of an earlier sweep is read."""
    if _kept is None or workers == 1:
        return make_pool(workers, None if board is None else board.steps), False
    need = 0 if board is None else len(board.steps)
    if not _kept or _kept["workers"] != workers or len(_kept["steps"]) < need or not _healthy(_kept["pool"]):
        if _kept:
            _shutdown(_kept["pool"])
            _kept.clear()  # nothing kept until the new pool exists
        steps = mp.get_context("spawn").Array("q", [-1] * max(BOARD_CAPACITY, need), lock=False)
        _kept.update(workers=workers, pool=make_pool(workers, steps), steps=steps)
    steps = _kept["steps"]
    own = [] if board is None else list(board.steps)
    steps[:] = own + [-1] * (len(steps) - len(own))
    if board is not None:
        board.steps = steps
    return _kept["pool"], True


class LocalExecutor(Executor):
    """``--executor local``: a pool of ``workers`` processes (see the module's docstring)."""

    name = "local"

    def hand_out_order(self, todo) -> list:
        """One program per worker, in turn (:class:`Dispatcher`); a prune board reorders only within a program's
        runs, as results come back, so it is left out."""
        return list(Dispatcher(todo, None, lanes=self.workers))

    def run(self, todo, ctx, *, bar, counts, board=None) -> int:
        return self._train(Dispatcher(todo, board, lanes=self.workers), ctx, bar=bar, counts=counts, board=board)

    def run_search(self, work, ctx, *, bar, counts, board=None) -> int:
        return self._train(SearchDispatcher(work, lanes=self.workers), ctx, bar=bar, counts=counts, board=board,
                           work=work)

    def _train(self, pending, ctx, *, bar, counts, board=None, work=None) -> int:
        """Train what ``pending`` hands out (None from it: nothing now), telling ``work`` (a search) each result."""
        in_flight: dict[str, object] = {}  # run id -> config, from creation until FINISHED
        futures: dict[cf.Future, str] = {}
        pool, kept = _pool_for(self.workers, board)
        status = 0

        def submit_next() -> bool:
            cfg = next(pending, None)
            if cfg is None:
                return False
            with store_write():  # an interrupt is raised after the run is known to be in flight
                run_id = lifecycle.start_run(ctx, cfg)
                in_flight[run_id] = cfg
            futures[pool.submit(lifecycle.train_config, cfg, None if board is None else board.slot(cfg))] = run_id
            return True

        # one run queued beyond the workers keeps them busy while this process logs; more would start
        # before the results that could prune them
        capacity = self.workers + (self.workers > 1)
        try:
            while len(futures) < capacity and submit_next():
                pass
            while futures:
                finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
                for fut in finished:
                    run_id = futures.pop(fut)
                    cfg = in_flight[run_id]
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        raise
                    except Exception as e:  # noqa: BLE001 - one bad run must not stop the sweep
                        record = lifecycle.finish_run(ctx, run_id, cfg, error=e)
                    else:
                        record = lifecycle.finish_run(ctx, run_id, cfg, result)
                        if board is not None:
                            board.record_result(cfg, result)
                    if work is not None:
                        work.finished(cfg, record)
                    counts.add(record)
                    status = max(status, int(record.status == "failed"))
                    del in_flight[run_id]
                    bar.update(1)
                    bar.set_postfix(diverged=counts.diverged, failed=counts.failed, refresh=False)
                    raise_if_stopped()
                    while len(futures) < capacity and submit_next():
                        pass
        except BaseException as e:  # Ctrl-C, SIGTERM, a dead worker, or the store failing: end what is in flight
            _shutdown(pool)
            if kept:  # forget it: the next sweep starts a new one
                _kept.clear()
            for run_id in in_flight:
                _kill_if_running(run_id)
            if isinstance(e, BrokenProcessPool):
                raise SweepAborted("a worker process died") from e
            raise
        finally:
            pruning.set_board_steps(None)
        if not kept:
            _shutdown(pool)
        return status


def _shutdown(pool: cf.Executor) -> None:
    if isinstance(pool, cf.ProcessPoolExecutor):
        for p in list((getattr(pool, "_processes", None) or {}).values()):
            p.kill()  # the workers ignore SIGTERM
    pool.shutdown(wait=False, cancel_futures=True)


def _kill_if_running(run_id: str) -> None:
    try:
        c = store.client()
        if c.get_run(run_id).info.status == "RUNNING":
            c.set_terminated(run_id, "KILLED")
    except Exception:  # noqa: BLE001 - the store may be what failed; resuming marks such runs KILLED
        pass
