"""Sweep throughput, old against new: ``python -m experiments.measure_throughput [GRID ...] [--baseline COMMIT]``.

For each grid (default: version 1's science grid, ``experiments/throughput/science_v1.toml``,
which the old code can read, then ``default``) the same sweep runs
twice, back to back, each into a fresh SQLite store with a cold JAX
compilation cache of its own, so both share one stretch of the machine's load:

1. **old**: the code at ``--baseline`` (default ``fa30feb``, the last commit
   before the throughput work: no compilation cache, SQLite in its default
   journal mode, each run logged with several MLflow ``log_batch`` calls, no
   pruning, the full statistics at every evaluation), extracted with
   ``git archive`` into a temporary directory and run with its own copy of
   the grid;
2. **new**: this checkout, exactly as ``make sweep GRID=...`` runs it.

``--set KEY=VALUE`` (repeatable) is passed to both sweeps, for example
``experiments/throughput/science_v1.toml --set seed=0`` to time one seed of that grid. Times are the
whole command as a user waits for it. It prints, as Markdown,
the wall time of each, their ratio, and each sweep's own summary (seconds
summed over runs). It then checks the answers: every (optimizer, batch size,
seed)'s steps-to-target, the fewest steps over learning rates (so the
analysis' steps-to-target, their median over seeds, too), must be identical,
and every run that both trained to its end must have the same outcome, the
same steps-to-target and the same final training loss. The runs are read
from the two stores directly (``experiments/engine/store.py``). Exit status 1 if any
differs, 2 for a bad argument or a missing baseline.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.engine import grid as grids
from experiments.engine import store
from mbstudy.config import TrainConfig

SCIENCE_V1 = Path(__file__).resolve().parent / "throughput" / "science_v1.toml"  # a grid the old code can read

BASELINE = "fa30feb"
KEY = ["optimizer", "reduction", "batch_size", "learning_rate", "seed"]


def _extract(commit: str, into: Path) -> None:
    """The tree of ``commit`` (git archive) into ``into``."""
    archive = subprocess.run(["git", "archive", commit], cwd=store.ROOT, capture_output=True)
    if archive.returncode != 0:
        raise SystemExit(f"error: --baseline {commit}: git archive failed ({archive.stderr.decode().strip()}); "
                         "this needs a git clone with the project's history (git fetch --unshallow)")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)


def _sweep(tree: Path, grid: str, uri: str, cache: Path, workers: int, sets: list[str]) -> tuple[float, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PYTHONPATH")}
    env |= {"MLFLOW_TRACKING_URI": uri, "JAX_COMPILATION_CACHE_DIR": str(cache)}
    t0 = time.perf_counter()
    overrides = [a for kv in sets for a in ("--set", kv)]
    p = subprocess.run([sys.executable, "-m", "experiments.sweep", grid, *overrides, "--workers", str(workers),
                        "--no-progress"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"error: the sweep {grid} in {tree} failed (exit {p.returncode}):\n{p.stderr[-3000:]}")
    return wall, p.stdout


def _runs(uri: str, experiment: str) -> dict[tuple, dict]:
    """Every FINISHED run of ``experiment`` in the store at ``uri``, by its ``KEY`` fields: its outcome,
    steps to target and final training loss (None where it has none)."""
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = store.search_all(c, exp.experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
    return {tuple(TrainConfig.parse_param(k, r.data.params[k]) for k in KEY): {
        "outcome": r.data.tags.get("outcome"), "steps_to_target": r.data.metrics.get("steps_to_target"),
        "final/train/loss": r.data.metrics.get("final/train/loss")} for r in runs}


def fewest_steps(runs: dict[tuple, dict]) -> dict[tuple, float]:
    """Each (optimizer, batch size, seed)'s fewest steps to the target over learning rates and reductions (inf:
    no rate reached it). A pruned run did not reach it by where it stopped, so pruning leaves these unchanged.

    >>> fewest_steps({("sgd", "mean", 8, 0.1, 0): {"steps_to_target": 300.0},
    ...               ("sgd", "mean", 8, 1.0, 0): {"steps_to_target": None}})
    {('sgd', 8, 0): 300.0}
    """
    out: dict[tuple, float] = {}
    for (optimizer, _, batch_size, _, seed), r in runs.items():
        steps = r["steps_to_target"]
        key = (optimizer, batch_size, seed)
        out[key] = min(out.get(key, math.inf), math.inf if steps is None else steps)
    return out


def compare(old: dict[tuple, dict], new: dict[tuple, dict]) -> list[str]:
    """What differs between two sweeps' answers (empty: nothing)."""
    problems = []
    if set(old) != set(new):
        return [f"the sweeps trained different configurations ({len(old)} old, {len(new)} new)"]
    a, b = fewest_steps(old), fewest_steps(new)
    differ = sorted(k for k in a if a[k] != b[k])
    if differ:
        problems.append("steps-to-target per (optimizer, batch size, seed) differs for " + ", ".join(
            f"{k}: {a[k]} old, {b[k]} new" for k in differ[:5]) + (" ..." if len(differ) > 5 else ""))
    both = sorted(k for k, r in new.items() if r["outcome"] != "pruned")
    for col in ("outcome", "steps_to_target", "final/train/loss"):
        differ = [k for k in both if old[k][col] != new[k][col]]
        if differ:
            problems.append(f"{col} differs for {len(differ)} of {len(both)} runs, e.g. {differ[:3]}")
    return problems


def _summary(stdout: str) -> str:
    m = re.search(r"wall .*", stdout)
    return m.group(0) if m else "(no summary)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.measure_throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("grids", nargs="*", default=[str(SCIENCE_V1), "default"], metavar="GRID",
                    help="sweep names or .toml paths (default: science default)")
    ap.add_argument("--baseline", default=BASELINE, help=f"the old code's commit (default {BASELINE})")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: cores)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a field in both sweeps")
    args = ap.parse_args(argv)
    try:
        sources = [grids.resolve(g) for g in args.grids]
        for source in sources:
            grids.load(str(source), args.set)  # a bad override is an error before anything runs
    except grids.GridError as e:
        print("\n".join(f"error: {line}" for line in e.lines()), file=sys.stderr)
        return 2
    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix="mbstudy-throughput-") as d:
        old_tree = Path(d) / "old"
        old_tree.mkdir()
        _extract(args.baseline, old_tree)
        for source in sources:
            n = len(grids.load(str(source), args.set).configs)
            old_grid = old_tree / "experiments" / "grids" / source.name
            if not old_grid.exists():  # a grid the old code does not ship: run this one there
                old_grid.write_text(source.read_text())
            times, outs, runs = {}, {}, {}
            for which, tree, grid in (("old", old_tree, str(old_grid)), ("new", store.ROOT, str(source))):
                uri = f"sqlite:///{d}/{source.stem}-{which}.db"
                times[which], outs[which] = _sweep(tree, grid, uri, Path(d) / f"jax-{source.stem}-{which}", args.workers,
                                                   args.set)
                runs[which] = _runs(uri, source.stem)
                print(f"{source.stem} {which}: {times[which]:.1f} s", file=sys.stderr)
            problems = compare(runs["old"], runs["new"])
            failed |= bool(problems)
            pruned = sum(r["outcome"] == "pruned" for r in runs["new"].values())
            rows.append((source.stem, n, times, outs, pruned, problems))
    sets = f" with {' '.join('--set ' + kv for kv in args.set)}" if args.set else ""
    print(f"Sweep throughput, old ({args.baseline}) against new (this checkout){sets}, back to back, "
          f"{args.workers} worker(s) on {os.cpu_count()} cores:\n")
    print("| sweep | runs | old | new | new / old | speed-up | pruned | answers |\n|---|---|---|---|---|---|---|---|")
    for name, n, t, _, pruned, problems in rows:
        print(f"| {name} | {n} | {t['old']:.1f} s | {t['new']:.1f} s | {t['new'] / t['old']:.2f} | "
              f"{t['old'] / t['new']:.2f}x | {pruned} | {'identical' if not problems else 'DIFFER'} |")
    for name, _, _, outs, _, problems in rows:
        print(f"\n{name}, the sweeps' own summaries (seconds summed over runs):")
        print(f"- old: {_summary(outs['old'])}\n- new: {_summary(outs['new'])}")
        for p in problems:
            print(f"- DIFFERS: {p}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
