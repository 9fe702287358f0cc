"""The sweep driver: the order of work, the same under every executor (``experiments/sweep.py`` documents it).

:func:`preflight` checks the store and the executor before anything is
written; :func:`run_sweep` creates the experiment, ends stale runs, skips
finished configurations, connects the executor, creates the parent run and
hands the rest to the executor (``experiments/engine/executors/``), which
takes every run through ``experiments/engine/lifecycle.py``. Ctrl-C and SIGTERM: ``interrupts.py``.
A grid whose learning rate is searched goes the same way, its runs proposed
as results come back by ``chains.SearchWork`` (from the store's finished
runs on, so that a rerun resumes it) instead of listed up front.
"""

from __future__ import annotations

import sys
import time

from experiments.engine import grid as grids
from experiments.engine import chains, provenance, run_writer, store
from experiments.engine.chains import SearchWork
from experiments.engine.dispatch import dispatch_order
from experiments.engine.executors import Executor, SweepAborted
from experiments.engine.interrupts import Terminated, interrupted_status, raise_if_stopped, reclaim_sigterm, store_write
from experiments.engine.lifecycle import SweepContext, SweepCounts
from experiments.engine.progress import CostBar
from experiments.engine.pruning import PruneBoard


def preflight(executor: Executor) -> None:
    """The store answers within 10 s, and the executor can run; else raises (exit 3), having written nothing."""
    store.check_reachable()
    executor.preflight()


def run_sweep(sweep: grids.Sweep, executor: Executor, *, progress: bool = True,
              prune: bool = True) -> tuple[int, SweepCounts, str]:
    """Train every configuration not yet FINISHED; returns (exit status, counts, parent run id).

    ``prune``: give up runs that can no longer lower their group's steps-to-target (``pruning.py``).
    """
    t_start = time.perf_counter()
    exp_id = store.get_or_create_experiment(sweep.name, sweep.description)
    counts = SweepCounts(stale=provenance.mark_stale_runs_killed(exp_id))
    finished = store.finished_runs(exp_id)
    work, todo = None, []
    if sweep.cells:
        work = SearchWork(sweep.cells, finished)
        with store_write():
            work.tag_done()  # the tags of cells a killed sweep finished but did not tag (none: nothing written)
        counts.skipped, counts.search = work.reused, work.summary()
        left = round(work.expected_left())
    else:
        done = {r.data.tags.get("cfg_hash") for r in finished}
        todo = dispatch_order(c for c in sweep.configs if c.hash() not in done)
        counts.skipped = len(sweep.configs) - len(todo)
        left = len(todo)
    if work.complete() if work else not todo:  # a rerun of a complete sweep writes nothing
        counts.times["wall_s"] = time.perf_counter() - t_start
        return 0, counts, ""
    prov = provenance.provenance()
    executor.connect()  # before the parent run exists, so a cluster that does not answer leaves nothing
    reclaim_sigterm()
    parent = ""
    if work is None:
        # its ETA weighs each run left by its expected cost, the first `workers` left in hand-out order in flight
        bar = CostBar(executor.hand_out_order(todo), counts, desc=f"sweep {sweep.name} ({executor.name})",
                      workers=executor.workers, disable=not progress, prune=prune)
    else:  # a search proposes its runs as results come back: the bar's total is the runs it expects (chains.py)
        from tqdm.auto import tqdm

        bar = tqdm(total=left, desc=f"sweep {sweep.name} ({executor.name})", unit="run", disable=not progress,
                   dynamic_ncols=True)
    # The one place where a sweep stops early: Ctrl-C, SIGTERM (Terminated, see sigterm_as_interrupt) or a
    # dead worker. Every executor answers KeyboardInterrupt by ending its runs in flight.
    try:
        with store_write():  # an interrupt here is raised once the parent exists, so it is ended below
            parent = run_writer.start_parent(exp_id, sweep.name, sweep.source, len(sweep.configs) or
                                             counts.skipped + left, prov, executor.name)
        ctx = SweepContext(store.tracking_uri(), exp_id, parent, sweep.name, prov, executor.name, prune)
        if work is None:
            board = PruneBoard(todo, finished) if prune else None
            status = executor.run(todo, ctx, bar=bar, counts=counts, board=board)
        else:  # every cell is a prune group known up front: the board's slots are made now
            board = PruneBoard([c.template for c in sweep.cells], finished) if prune else None
            work.bar = bar
            status = executor.run_search(work, ctx, bar=bar, counts=counts, board=board)
            counts.search = work.summary()
        raise_if_stopped()  # a SIGTERM whose exception a library swallowed during the last runs
    except (KeyboardInterrupt, SweepAborted) as e:
        bar.close()
        if parent:
            run_writer.end_run(parent, "KILLED")
        reason = ("terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted"
                  if isinstance(e, KeyboardInterrupt) else str(e))
        print(f"\n{reason}: the runs in flight are marked KILLED; "
              f"rerun the same command to resume ({counts.trained} finished this time).", file=sys.stderr)
        return (interrupted_status(e) if isinstance(e, KeyboardInterrupt) else 1), counts, parent
    except Exception:  # the store or the executor failed: the parent ends FAILED, the error is shown as it is
        bar.close()
        try:
            if parent:
                run_writer.end_run(parent, "FAILED")
        except Exception:  # noqa: BLE001 - the store itself may be what failed
            pass
        raise
    bar.close()
    counts.times["wall_s"] = time.perf_counter() - t_start
    summary = {
        "runs/trained": counts.trained, "runs/skipped": counts.skipped, "runs/diverged": counts.diverged,
        "runs/pruned": counts.pruned, "runs/failed": counts.failed, **{f"time/{k}": v for k, v in counts.times.items()},
        **{f"search/{k}": float(v) for k, v in (counts.search or {}).items() if k != "edges" and v == v},
    }
    with store_write(), run_writer.writing_run(run_id=parent, status="FINISHED" if status == 0 else "FAILED") as run:
        run.log(metrics=summary)
    return status, counts, parent


def _duration(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}m{s:02d}s" if m else f"{seconds:.1f}s"


def _browse_hint(uri: str, experiment: str) -> str:
    """Where to see the runs: the experiment's page in the UI's model-training view (``store.ui_url``)."""
    try:
        exp = store.client().get_experiment_by_name(experiment)
    except Exception:  # noqa: BLE001 - a hint is never worth failing for
        exp = None
    page = (lambda base: store.ui_url(base, exp.experiment_id)) if exp else (lambda base: base)
    if uri.startswith("http"):
        return f"open {page(uri)}"  # a tracking server serves the UI itself
    if uri.startswith("sqlite:"):
        return f"make ui, then open {page('http://127.0.0.1:5000')}"
    return f"MLFLOW_TRACKING_URI={uri} make ui, then open {page('http://127.0.0.1:5000')}"


def summary_text(sweep: grids.Sweep, counts: SweepCounts, parent: str, status: int) -> str:
    t = counts.times
    lines = [
        f"sweep '{sweep.name}' ({sweep.source}): " + (f"{len(sweep.configs)} configurations" if not sweep.cells else
                                                      f"{len(sweep.cells)} cells, the learning rate searched"),
        f"  trained {counts.trained} · skipped {counts.skipped} (already finished) · diverged {counts.diverged}"
        + (f" · pruned {counts.pruned} (could no longer reach the target first)" if counts.pruned else "")
        + f" · failed {counts.failed}" + (f" · stale runs marked KILLED {counts.stale}" if counts.stale else ""),
        f"  wall {_duration(t['wall_s'])} · summed over runs: compile {_duration(t['compile_s'])},"
        f" train {_duration(t['train_s'])}, eval {_duration(t['eval_s'])}, log {_duration(t['log_s'])}",
        f"  store {store.tracking_uri()} · experiment '{sweep.name}'" + (f" · parent run {parent}" if parent else " · nothing to do"),
        f"  browse: {_browse_hint(store.tracking_uri(), sweep.name)}",
    ]
    if counts.search:
        lines += search_lines(counts.search)
    if status:
        lines.append("  some runs failed: their error is the run's 'error' tag; rerun the command to retry them")
    return "\n".join(lines)


def search_lines(s: dict) -> list[str]:
    """A search's summary (``chains.SearchWork.summary``): cells done, rates per cell, and each edge optimum."""
    lines = [f"  search: {s['done']} of {s['cells']} cells done, {s['rates']} rates tried"
             + (f" ({s['per_cell']:.1f} per cell)" if s["done"] else "")
             + f" · edge optima {s['edge']}" + (f" · {s['blocked']} chain(s) stopped by a failed run" if s["blocked"] else "")]
    lines += [f"    edge: {e}" for e in s["edges"][:20]]
    if len(s["edges"]) > 20:
        lines.append(f"    ... and {len(s['edges']) - 20} more (tag search/edge of their runs)")
    if s["edge"]:
        lines.append("    (an edge optimum's best rate is at min or max, or no rate reached a target: widen "
                     "[search.learning_rate] min/max, or raise the budget, and rerun to extend the search)")
    return lines


def dry_run_text(sweep: grids.Sweep, workers: int) -> str:
    """What ``--dry-run`` prints: every configuration, how many the store already holds (read only if the
    store exists: this writes nothing), and a wall-time estimate from the store's past runs of this sweep."""
    if sweep.cells:
        return _search_dry_run(sweep, workers)
    lines = [f"{c.hash()} {c.run_name()}" for c in sweep.configs]
    lines.append(f"{len(sweep.configs)} configurations in sweep '{sweep.name}' ({sweep.source})")
    if not store.store_exists():
        lines.append(f"store {store.tracking_uri()}: not created yet, so all {len(sweep.configs)} would train")
        lines.append(_model_estimate(sweep.configs, workers, sweep.prune))
        return "\n".join(lines)
    store.check_reachable()
    reader = store.reader()
    exp = reader.get_experiment_by_name(sweep.name)
    past = [] if exp is None else store.search_all(
        reader, exp.experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
    done = {r.data.tags.get("cfg_hash") for r in past}
    todo = [c for c in sweep.configs if c.hash() not in done]
    lines.append(f"store {store.tracking_uri()}: holds {len(sweep.configs) - len(todo)} of them FINISHED; "
                 f"{len(todo)} would train")
    lines.append(_estimate(todo, past, workers) if past else _model_estimate(todo, workers, sweep.prune))
    return "\n".join(lines)


def _search_dry_run(sweep: grids.Sweep, workers: int) -> str:
    """``--dry-run`` of a search grid: every cell, and the runs expected (from the store's finished cells if it
    has any; else :data:`chains.PRIOR_RUNS` per cell)."""
    work = SearchWork(sweep.cells)
    lines = []
    for chain in work.chains:
        for i, g in enumerate(chain):
            c = work.cells[g]
            start = f"{c.spec.rate(0):g}" if i == 0 else f"B = {work.cells[chain[i - 1]].template.batch_size}'s best"
            lines.append(f"{g} {c.name} (rates "
                         f"{c.spec.min:g} to {c.spec.max:g}, from {start}, steps of {c.spec.step:g} then "
                         f"{c.spec.refine:g} decades)")
    lines.append(f"{len(sweep.cells)} cells in sweep '{sweep.name}' ({sweep.source}), the learning rate searched")
    past = []
    if store.store_exists():
        store.check_reachable()
        reader = store.reader()
        exp = reader.get_experiment_by_name(sweep.name)
        past = [] if exp is None else store.search_all(
            reader, exp.experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
    work = SearchWork(sweep.cells, past)
    left, done = work.expected_by_cell(), work.done_cells()
    how = (f"{work.expected_per_cell():.1f} per cell, learned from the {len(done)} cell(s) the store has finished"
           if done else f"{chains.PRIOR_RUNS:g} per cell: no finished cell to learn from yet")
    lines.append(f"store {store.tracking_uri()}: " + ("not created yet" if not store.store_exists() else
                 f"holds {work.reused} of their runs FINISHED, {len(done)} of {len(sweep.cells)} cells done "
                 f"({work.summary()['edge']} at an edge)") + f"; about {round(sum(left.values()))} runs would train "
                 f"({how})")
    if store.store_exists():
        todo = [c.template for g, c in work.cells.items() for _ in range(round(left.get(g, 0)))]
        lines.append(_estimate(todo, past, workers))
    return "\n".join(lines)


def _model_estimate(todo: list, workers: int, prune: bool) -> str:
    """The wall time the cost model expects (``cost.py``), for a store with no past runs of the sweep."""
    from experiments.engine.cost import expected_cost, writing_nothing
    from experiments.engine.progress import PARALLEL

    if not todo:
        return "estimate: nothing to train"
    with writing_nothing():
        seconds = sum(expected_cost(c, prune=prune) for c in todo) / (PARALLEL * max(1, workers))
    return (f"estimate: about {_duration(seconds)} with {workers} worker(s), from the cost model "
            "(experiments/engine/cost.py: steps, batch size and the model's FLOPs; no past runs of this sweep to go by)")


def _estimate(todo: list, past: list, workers: int) -> str:
    """Seconds per run measured in the store's past runs (compile + train + evaluation + logging), by
    (optimizer, batch size) where the store has that group, else overall; summed over ``todo`` / workers."""
    import numpy as np

    parts = ("time/compile_s", "time/train_s", "time/eval_s", "time/log_s")
    seconds: dict[tuple, list[float]] = {}
    for r in past:
        m = r.data.metrics
        if all(p in m for p in parts):
            key = (r.data.params.get("optimizer"), r.data.params.get("batch_size"))
            seconds.setdefault(key, []).append(sum(m[p] for p in parts))
    if not todo:
        return "estimate: nothing to train"
    if not seconds:
        return "estimate: none (the store holds no finished runs of this sweep with timings)"
    overall = float(np.median([s for v in seconds.values() for s in v]))
    total = sum(float(np.median(seconds.get((c.optimizer, str(c.batch_size)), [overall]))) for c in todo)
    n = sum(len(v) for v in seconds.values())
    return (f"estimate: about {_duration(total / workers)} with {workers} worker(s) "
            f"(median seconds per run of {n} past runs, by optimizer and batch size)")
