"""Run a sweep: ``python -m experiments.sweep GRID [--set key=value ...]``.

GRID is a definition's name (``smoke``, ``default``, ``science``,
``generalisation``, ``seeds``, ``published``: the files in ``experiments/grids/``) or a path to a TOML file; see
``experiments/engine/grid.py`` for the format. ``--set`` replaces a field everywhere
(``--set steps=500``, ``--set "seed=[0,1]"``); ``--only`` keeps the
configurations whose field has that value (``--only model=mlp``, ``--only
'dataset=["digits", "teacher"]'``); unknown or ill-typed keys are errors.

What happens, in order:
1. the definition is expanded and checked: any problem exits with status 2,
   listing every problem, before MLflow is touched;
2. the store must answer within 10 s (``MLFLOW_TRACKING_URI``: a server or a
   database), and the executor must be able to run (Ray installed; with
   ``RAY_ADDRESS``, a store that is not a local file); if not, the sweep exits
   with status 3 and writes nothing;
3. the store and the experiment are created (once, here);
4. runs left RUNNING by a dead sweep are marked KILLED, and configurations
   that already have a FINISHED run (same ``cfg_hash``) are skipped; if any
   are left, the executor connects (Ray: to the cluster, so one that does not
   answer leaves no parent behind) and the sweep's parent run is created,
   before any worker or task starts;
5. the rest are trained by the executor, runs of one compiled program one
   after another:
   - ``--executor local`` (default): ``--workers`` processes (default: the
     number of cores; 1 trains in this process). Each run is created RUNNING
     when it is handed to a worker, logged by this process when its result
     comes back, and only then set FINISHED. At most ``workers + 1`` runs
     are in flight. See ``experiments/engine/executors/local.py``.
   - ``--executor ray``: Ray tasks, each training a unit of up to
     ``--unit-size`` runs that share one compiled program and logging them
     itself; ``RAY_ADDRESS`` selects a cluster. See ``experiments/engine/executors/ray.py``.
6. in a grid whose runs stop at a target, a run that has not reached it by
   the step at which another learning rate of its group (same configuration
   but the rate) did is given up there: outcome ``pruned``, with ``pruned_at``.
   Steps-to-target is a minimum over rates, so it, and the B_crit fitted to it,
   are the same as without pruning; runs are handed out likely best rate first
   (nearest the previous batch size's best) so that the rest stop early. The
   local executor's workers see a better result the moment it comes back; a
   Ray task reads its group's best from the store when a run starts. The
   store's finished runs count too, so a resumed sweep prunes the same way.
   ``--no-prune`` (or ``prune = false`` in the definition) trains every run to its target or its budget.
7. a grid with ``[search.learning_rate]`` lists no rates: each cell (the
   configuration without its rate) searches them, its runs proposed as the
   results of its earlier ones come back, chains of cells in ascending
   batch size each starting from the previous best (``experiments/engine/search.py``
   decides; ``chains.py`` keeps the state, rebuilt from the store's finished
   runs). The progress bar's total is the runs expected so far; the summary
   counts the cells, the rates tried and the edge optima (a best rate at the
   range's ``min`` or ``max``), listing each.

Ctrl-C marks the runs in flight and the parent run KILLED and exits with 130;
SIGTERM (what ``timeout``, Slurm and Kubernetes send) does the same and exits
with 143. Rerunning the same command, with either executor, resumes. Exit
status: 0 done, 1 some runs failed, 2 bad definition or option, 3 the store
is unreachable or the executor cannot run, 130/143 stopped by Ctrl-C/SIGTERM.

``--dry-run`` stops after step 1: it lists the configurations (a search grid's
cells, and the runs it expects: 5 per cell, or the mean of the cells the store
has finished), says how many
the store already holds (reading it, if it exists, through a read-only
connection) and estimates the wall time from the store's past runs of the
sweep; it creates and changes nothing (a SQLite reader may leave the empty
``-wal``/``-shm`` side files that any reader of a WAL database leaves).

This file is the command line. The order above is ``experiments/engine/driver.py``;
the steps of one run, shared by both executors, are ``experiments/engine/lifecycle.py``.
Why processes, not ``vmap`` over runs: ``python -m experiments.measure_batching``.
"""

from __future__ import annotations

import argparse
import os
import sys

from experiments.engine import grid as grids
from experiments.engine import store
from experiments.engine.driver import dry_run_text, preflight, run_sweep, summary_text
from experiments.engine.executors import EXECUTORS, ExecutorUnavailable
from experiments.engine.interrupts import interrupted_status, sigterm_as_interrupt
from mbstudy.config.checks import did_you_mean


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.sweep", description=__doc__.split("\n\n")[0],
                                 epilog=f"sweeps: {', '.join(grids.available())}")
    ap.add_argument("grid", metavar="GRID", help="a sweep name or a path to a .toml definition")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field (repeatable)")
    ap.add_argument("--only", action="append", default=[], metavar="KEY=VALUE",
                    help="keep only the configurations whose field is that value, or one of a list (repeatable)")
    ap.add_argument("--executor", default="local", metavar="{" + ",".join(EXECUTORS) + "}",
                    help="local: worker processes on this machine (default); ray: Ray tasks (RAY_ADDRESS selects a cluster)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="local: worker processes (default: cores; 1: in-process); ray: CPUs of the local instance")
    for executor_class in EXECUTORS.values():  # each executor's own options (ray: --unit-size, --max-retries)
        executor_class.add_options(ap)
    ap.add_argument("--dry-run", action="store_true",
                    help="check and list the configurations, say how many the store holds and estimate the time; "
                         "writes nothing")
    ap.add_argument("--no-prune", action="store_true",
                    help="train every run of a grid that stops at a target to the end, instead of giving up a run "
                         "once another learning rate of its group has reached the target in fewer steps (exact: "
                         "steps-to-target and B_crit are the same either way)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    try:
        bad = [f"--workers: expected a positive int; received {args.workers}"] if args.workers < 1 else []
        if args.executor not in EXECUTORS:
            bad.append(f"--executor: expected one of {list(EXECUTORS)}; received {args.executor!r}"
                       f"{did_you_mean(args.executor, EXECUTORS)}")
        bad += [p for executor_class in EXECUTORS.values() for p in executor_class.option_problems(args)]
        if bad:
            raise grids.GridError("options", bad)
        sweep = grids.load(args.grid, args.set, args.only)
    except grids.GridError as e:
        for line in e.lines():  # one line per problem, the file named once
            print(f"error: {line}", file=sys.stderr)
        return 2
    if args.dry_run:
        try:
            print(dry_run_text(sweep, args.workers))
        except store.StoreUnreachable as e:
            print(f"error: {e}", file=sys.stderr)
            return 3
        return 0
    executor = EXECUTORS[args.executor].from_options(args)
    try:
        with sigterm_as_interrupt():
            preflight(executor)
            status, counts, parent = run_sweep(sweep, executor, progress=not args.no_progress,
                                               prune=sweep.prune and not args.no_prune)
    except (store.StoreUnreachable, ExecutorUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:  # outside the executor's run (before it, or while ending the sweep)
        print("\nstopped; runs left RUNNING are marked KILLED when the same command is run again, which resumes",
              file=sys.stderr)
        return interrupted_status(e)
    if status not in (130, 143):
        print(summary_text(sweep, counts, parent, status))
    return status


if __name__ == "__main__":
    sys.exit(main())
