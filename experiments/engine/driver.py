"""The sweep driver: the order of work, the same under every executor (``experiments/sweep.py`` documents it).

:func:`preflight` checks the store and the executor before anything is
written; :func:`run_sweep` creates the experiment, ends stale runs, skips
finished configurations, connects the executor, creates the parent run and
hands the rest to the executor (``experiments/engine/executors/``), which
takes every run through ``experiments/engine/lifecycle.py``.
"""

from __future__ import annotations

import sys
import time

from experiments.engine import grid as grids
from experiments.engine import tracking
from experiments.engine.executors import Executor, SweepAborted
from experiments.engine.lifecycle import SweepContext, SweepCounts, dispatch_order


def preflight(executor: Executor) -> None:
    """The store answers within 10 s, and the executor can run; else raises (exit 3), having written nothing."""
    tracking.check_reachable()
    executor.preflight()


def run_sweep(sweep: grids.Sweep, executor: Executor, *, progress: bool = True) -> tuple[int, SweepCounts, str]:
    """Train every configuration not yet FINISHED; returns (exit status, counts, parent run id)."""
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    exp_id = tracking.get_or_create_experiment(sweep.name, sweep.description)
    counts = SweepCounts(stale=tracking.mark_stale_runs_killed(exp_id))
    done = tracking.finished_hashes(exp_id)
    todo = dispatch_order(c for c in sweep.configs if grids.config_hash(c) not in done)
    counts.skipped = len(sweep.configs) - len(todo)
    if not todo:  # a rerun of a complete sweep writes nothing
        counts.times["wall_s"] = time.perf_counter() - t_start
        return 0, counts, ""
    prov = tracking.provenance()
    executor.connect()  # before the parent run exists, so a cluster that does not answer leaves nothing
    parent = tracking.start_parent(exp_id, sweep.name, sweep.source, len(sweep.configs), prov, executor.name)
    ctx = SweepContext(tracking.tracking_uri(), exp_id, parent, sweep.name, prov, executor.name)
    bar = tqdm(total=len(todo), desc=f"sweep {sweep.name} ({executor.name})", unit="run", disable=not progress,
               dynamic_ncols=True)
    # The one place where a sweep stops early. A signal handler (SIGTERM) belongs here too: have it raise a
    # KeyboardInterrupt subclass, which every executor already answers by ending its runs in flight.
    try:
        status = executor.run(todo, ctx, bar=bar, counts=counts)
    except (KeyboardInterrupt, SweepAborted) as e:
        bar.close()
        tracking.end_run(parent, "KILLED")
        interrupted = isinstance(e, KeyboardInterrupt)
        print(f"\n{'interrupted' if interrupted else e}: the runs in flight are marked KILLED; "
              f"rerun the same command to resume ({counts.trained} finished this time).", file=sys.stderr)
        return (130 if interrupted else 1), counts, parent
    bar.close()
    counts.times["wall_s"] = time.perf_counter() - t_start
    summary = {
        "runs/trained": counts.trained, "runs/skipped": counts.skipped, "runs/diverged": counts.diverged,
        "runs/failed": counts.failed, **{f"time/{k}": v for k, v in counts.times.items()},
    }
    with tracking.writing_run(run_id=parent, status="FINISHED" if status == 0 else "FAILED") as run:
        run.log(metrics=summary)
    return status, counts, parent


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _browse_hint(uri: str) -> str:
    if uri.startswith("http"):
        return f"open {uri}"  # a tracking server serves the UI itself
    if uri.startswith("sqlite:"):
        return "make ui   (then open http://127.0.0.1:5000)"
    return f"MLFLOW_TRACKING_URI={uri} make ui"


def summary_text(sweep: grids.Sweep, counts: SweepCounts, parent: str, status: int) -> str:
    t = counts.times
    lines = [
        f"sweep '{sweep.name}' ({sweep.source}): {len(sweep.configs)} configurations",
        f"  trained {counts.trained} · skipped {counts.skipped} (already finished) · diverged {counts.diverged}"
        f" · failed {counts.failed}" + (f" · stale runs marked KILLED {counts.stale}" if counts.stale else ""),
        f"  wall {_duration(t['wall_s'])} · summed over runs: compile {_duration(t['compile_s'])},"
        f" train {_duration(t['train_s'])}, eval {_duration(t['eval_s'])}, log {_duration(t['log_s'])}",
        f"  store {tracking.tracking_uri()} · experiment '{sweep.name}'" + (f" · parent run {parent}" if parent else " · nothing to do"),
        f"  browse: {_browse_hint(tracking.tracking_uri())}",
    ]
    if status:
        lines.append("  some runs failed: their error is the run's 'error' tag; rerun the command to retry them")
    return "\n".join(lines)
