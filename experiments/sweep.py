"""Run a sweep: ``python -m experiments.sweep GRID [--set key=value ...]``.

GRID is a definition's name (``smoke``, ``default``, ``science``, ``seeds``: the
files in ``experiments/grids/``) or a path to a TOML file; see
``experiments/engine/grid.py`` for the format. ``--set`` replaces a field everywhere
(``--set steps=500``, ``--set "seed=[0,1]"``); unknown or ill-typed keys are
errors.

What happens, in order:
1. the definition is expanded and checked: any problem exits with status 2,
   listing every problem, before MLflow is touched;
2. the store must answer within 10 s (``MLFLOW_TRACKING_URI``: a server or a
   database); if it does not, the sweep exits with status 3 and writes nothing;
3. the store and the experiment are created (once, here);
4. runs left RUNNING by a dead sweep are marked KILLED, and configurations
   that already have a FINISHED run (same ``cfg_hash``) are skipped; if any
   are left, the sweep's parent run is created, before any worker or task starts
   (with Ray, after connecting to the cluster, so one that does not answer
   leaves no parent behind);
5. the rest are trained by the executor:
   - ``--executor local`` (default): ``--workers`` processes (default: the
     number of cores; 1 trains in this process). Each run is created RUNNING
     when it is handed to a worker, logged by this process when its result
     comes back, and only then set FINISHED. At most ``2 x workers`` runs are
     in flight.
   - ``--executor ray``: Ray tasks, each training a unit of up to
     ``--unit-size`` runs that share one compiled program and logging them
     itself; ``RAY_ADDRESS`` selects a cluster. See ``experiments/engine/ray_executor.py``.

Ctrl-C marks the runs in flight KILLED and exits with 130; rerunning the same
command, with either executor, resumes. Exit status: 0 done, 1 some runs
failed, 2 bad definition or option, 3 the store is unreachable.
Why processes, not ``vmap`` over runs: ``python -m experiments.measure_batching``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import multiprocessing as mp
import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from experiments.engine import grid as grids
from experiments.engine import ray_executor, tracking


# ------------------------------------------------------------------- workers


@functools.cache
def _dataset(name: str, seed: int):
    from mbstudy import load_dataset

    return load_dataset(name, seed=seed)


def train_config(cfg):
    """Train one configuration (in a worker process or in this one)."""
    from mbstudy.train import train

    return train(cfg, _dataset(cfg.dataset, cfg.data_seed))


def _worker_init() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C and stops the pool


class InlineExecutor(cf.Executor):
    """``--workers 1``: train in this process, when the result is asked for."""

    def submit(self, fn, /, *args, **kwargs):
        f: cf.Future = cf.Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001 - reported as a failed run
            f.set_exception(e)
        return f


def make_executor(workers: int) -> cf.Executor:
    if workers == 1:
        return InlineExecutor()
    return cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init)


# -------------------------------------------------------------------- driver


@dataclass
class Tally:
    trained: int = 0
    skipped: int = 0
    diverged: int = 0
    failed: int = 0
    stale: int = 0
    times: Counter = field(default_factory=Counter)


def _order(configs):
    """Group runs of the same compiled shape together, so a worker compiles each shape once."""
    return sorted(configs, key=lambda c: (c.dataset, c.hidden, c.optimizer, c.reduction, c.batch_size, c.learning_rate, c.seed))


def _fmt(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def run_sweep(sweep: grids.Sweep, *, workers: int, executor: str = "local", unit_size: int = 0,
              max_retries: int = 3, progress: bool = True) -> tuple[int, Tally, str]:
    """Train every configuration not yet FINISHED; returns (exit status, tally, parent run id).

    ``unit_size`` (Ray only): runs per task; 0 picks :func:`experiments.engine.ray_executor.default_unit_size`.
    """
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    exp_id = tracking.get_or_create_experiment(sweep.name, sweep.description)
    tally = Tally(stale=tracking.mark_stale_runs_killed(exp_id))
    done = tracking.finished_hashes(exp_id)
    todo = _order(c for c in sweep.configs if grids.config_hash(c) not in done)
    tally.skipped = len(sweep.configs) - len(todo)
    if not todo:  # a rerun of a complete sweep writes nothing
        tally.times["wall_s"] = time.perf_counter() - t_start
        return 0, tally, ""
    prov = tracking.provenance()
    if executor == "ray":  # connect before the parent run exists, so a cluster that does not answer leaves nothing
        ray = ray_executor.connect(workers)
    parent = tracking.start_parent(exp_id, sweep.name, sweep.source, len(sweep.configs), prov, executor)
    bar = tqdm(total=len(todo), desc=f"sweep {sweep.name} ({executor})", unit="run", disable=not progress,
               dynamic_ncols=True)
    try:
        if executor == "ray":
            ctx = ray_executor.UnitContext(tracking.tracking_uri(), exp_id, parent, sweep.name, prov)
            size = unit_size or ray_executor.default_unit_size(len(todo), workers)
            status = ray_executor.run(ray, todo, ctx, unit_size=size, max_retries=max_retries, bar=bar, tally=tally)
        else:
            status = _run_local(todo, exp_id, parent, sweep.name, prov, workers=workers, bar=bar, tally=tally)
    except (KeyboardInterrupt, _WorkerDied) as e:
        bar.close()
        tracking.end_run(parent, "KILLED")
        interrupted = isinstance(e, KeyboardInterrupt)
        print(f"\n{'interrupted' if interrupted else 'a worker process died'}: the runs in flight are marked KILLED; "
              f"rerun the same command to resume ({tally.trained} finished this time).", file=sys.stderr)
        return (130 if interrupted else 1), tally, parent
    bar.close()
    tally.times["wall_s"] = time.perf_counter() - t_start
    _log_parent_summary(parent, tally)
    tracking.end_run(parent, "FINISHED" if status == 0 else "FAILED")
    return status, tally, parent


class _WorkerDied(Exception):
    """A local worker process died: the pool is broken and the sweep stops."""


def _run_local(todo, exp_id: str, parent: str, sweep_name: str, prov: dict[str, str], *, workers: int, bar,
               tally: Tally) -> int:
    """The local executor: processes train, this process logs. Returns the exit status."""
    in_flight: dict[str, object] = {}  # run id -> config, from creation until FINISHED
    futures: dict[cf.Future, str] = {}
    pending = iter(todo)
    executor = make_executor(workers)
    status = 0

    def submit_next() -> bool:
        cfg = next(pending, None)
        if cfg is None:
            return False
        run_id = tracking.start_child(
            exp_id, parent, grids.run_name(cfg), grids.config_hash(cfg),
            grids.config_hash(cfg, without=("seed",)), sweep_name,
        )
        in_flight[run_id] = cfg
        futures[executor.submit(train_config, cfg)] = run_id
        return True

    try:
        for _ in range(2 * workers):
            if not submit_next():
                break
        while futures:
            finished, _ = cf.wait(list(futures), return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                run_id = futures.pop(fut)
                cfg = in_flight[run_id]
                try:
                    result = fut.result()
                except cf.process.BrokenProcessPool:
                    raise
                except Exception as e:  # noqa: BLE001 - one bad run must not stop the sweep
                    tracking.fail_child(run_id, f"{type(e).__name__}: {e}")
                    tally.failed += 1
                    status = 1
                else:
                    log_s = tracking.log_result(run_id, result, grids.config_dict(cfg), prov)
                    tally.trained += 1
                    tally.diverged += result.outcome == "diverged"
                    tally.times.update({**result.timings, "log_s": log_s})
                del in_flight[run_id]
                bar.update(1)
                bar.set_postfix(diverged=tally.diverged, failed=tally.failed, refresh=False)
                submit_next()
    except (KeyboardInterrupt, cf.process.BrokenProcessPool) as e:
        _shutdown(executor)
        for run_id in in_flight:
            _kill_if_running(run_id)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise _WorkerDied() from e
    _shutdown(executor)
    return status


def _shutdown(executor: cf.Executor) -> None:
    if isinstance(executor, cf.ProcessPoolExecutor):
        for p in list(getattr(executor, "_processes", {}).values()):
            p.terminate()
    executor.shutdown(wait=False, cancel_futures=True)


def _kill_if_running(run_id: str) -> None:
    c = tracking.client()
    if c.get_run(run_id).info.status == "RUNNING":
        c.set_terminated(run_id, "KILLED")


def _log_parent_summary(parent: str, tally: Tally) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    values = {
        "runs/trained": tally.trained, "runs/skipped": tally.skipped, "runs/diverged": tally.diverged,
        "runs/failed": tally.failed, **{f"time/{k}": v for k, v in tally.times.items()},
    }
    tracking.client().log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])


def _browse_hint(uri: str) -> str:
    if uri.startswith("http"):
        return f"open {uri}"  # a tracking server serves the UI itself
    if uri.startswith("sqlite:"):
        return "make ui   (then open http://127.0.0.1:5000)"
    return f"MLFLOW_TRACKING_URI={uri} make ui"


def summary_text(sweep: grids.Sweep, tally: Tally, parent: str, status: int) -> str:
    t = tally.times
    lines = [
        f"sweep '{sweep.name}' ({sweep.source}): {len(sweep.configs)} configurations",
        f"  trained {tally.trained} · skipped {tally.skipped} (already finished) · diverged {tally.diverged}"
        f" · failed {tally.failed}" + (f" · stale runs marked KILLED {tally.stale}" if tally.stale else ""),
        f"  wall {_fmt(t['wall_s'])} · summed over runs: compile {_fmt(t['compile_s'])}, train {_fmt(t['train_s'])},"
        f" eval {_fmt(t['eval_s'])}, log {_fmt(t['log_s'])}",
        f"  store {tracking.tracking_uri()} · experiment '{sweep.name}'" + (f" · parent run {parent}" if parent else " · nothing to do"),
        f"  browse: {_browse_hint(tracking.tracking_uri())}",
    ]
    if status:
        lines.append("  some runs failed: their error is the run's 'error' tag; rerun the command to retry them")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
                                 epilog=f"sweeps: {', '.join(grids.available())}")
    ap.add_argument("grid", metavar="GRID", help="a sweep name or a path to a .toml definition")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    ap.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local: worker processes on this machine (default); ray: Ray tasks (RAY_ADDRESS selects a cluster)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="local: worker processes (default: cores; 1: in-process); ray: CPUs of the local instance")
    ap.add_argument("--unit-size", type=int, default=0, metavar="N",
                    help="ray: runs per task, sharing one compiled program (default: 0, chosen from the sweep's size)")
    ap.add_argument("--max-retries", type=int, default=3, metavar="N",
                    help="ray: how often Ray retries a task whose worker died (default: 3)")
    ap.add_argument("--dry-run", action="store_true", help="list the configurations and exit")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        bad = [f"{flag}: expected {what}; received {value}" for flag, value, ok, what in (
            ("--workers", args.workers, args.workers >= 1, "a positive int"),
            ("--unit-size", args.unit_size, args.unit_size >= 0, "a positive int, or 0 to choose one"),
            ("--max-retries", args.max_retries, args.max_retries >= 0, "an int >= 0"),
        ) if not ok]
        if bad:
            raise grids.GridError("options", bad)
        sweep = grids.load(args.grid, args.set)
    except grids.GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        for c in sweep.configs:
            print(grids.config_hash(c), grids.run_name(c))
        print(f"{len(sweep.configs)} configurations")
        return 0
    try:
        if args.executor == "ray":
            ray_executor.check_store_for_cluster()
        tracking.check_reachable()
    except tracking.StoreUnreachable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    try:
        status, tally, parent = run_sweep(sweep, workers=args.workers, executor=args.executor,
                                          unit_size=args.unit_size, max_retries=args.max_retries,
                                          progress=not args.no_progress)
    except ray_executor.RayUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if status != 130:
        print(summary_text(sweep, tally, parent, status))
    return status


if __name__ == "__main__":
    sys.exit(main())
