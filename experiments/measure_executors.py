"""What Ray costs against the local executor: ``python -m experiments.measure_executors [GRID] [--server URL]``.

Runs the same sweep back to back, each into a fresh store, so the ratios
share one stretch of the machine's load:

1. ``--executor local`` into a new SQLite file;
2. ``--executor ray`` (a local Ray instance) into a new SQLite file;
3. with ``--server URL`` (a running ``make server``): ``--executor ray`` into it.

Each sweep runs under a name of its own (a copy of the grid file), so a
server that already holds the grid trains it afresh. Times are the whole
command as a user waits for it (start-up, Ray's start, training, logging).
It then checks that every store holds the same runs and metric histories.
Prints a Markdown table; writes nothing else outside a temporary directory.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from experiments.engine import grid as grids
from experiments.engine import store
from mbstudy.metrics import is_timing


def _histories(uri: str, experiment: str) -> dict[str, dict[str, list]]:
    from mlflow import MlflowClient

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name(experiment)
    return {r.data.tags["cfg_hash"]: {k: [(m.step, m.value) for m in c.get_metric_history(r.info.run_id, k)]
                                      for k in r.data.metrics if not is_timing(k)}
            for r in store.search_all(c, exp.experiment_id, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.measure_executors", description=__doc__.split("\n\n")[0])
    ap.add_argument("grid", nargs="?", default="smoke", help="a sweep name or .toml path (default: smoke)")
    ap.add_argument("--server", metavar="URL", help="also Ray into this running tracking server")
    args = ap.parse_args(argv)
    try:
        source = grids.resolve(args.grid)
    except grids.GridError as e:
        print("\n".join(f"error: {line}" for line in e.lines()), file=sys.stderr)
        return 2
    n = len(grids.load(str(source)).configs)
    with tempfile.TemporaryDirectory() as d:
        stamp = time.strftime("%Y%m%d%H%M%S")
        cases = [("local", "SQLite", f"sqlite:///{d}/local.db"), ("ray", "SQLite", f"sqlite:///{d}/ray.db")]
        if args.server:
            cases.append(("ray", "server", args.server))
        rows, stores = [], []
        for i, (executor, kind, uri) in enumerate(cases):
            name = f"measure_{source.stem}_{stamp}_{i}"
            grid = Path(d) / f"{name}.toml"
            grid.write_text(source.read_text())
            env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"MLFLOW_TRACKING_URI": uri}
            t0 = time.perf_counter()
            p = subprocess.run([sys.executable, "-m", "experiments.sweep", str(grid), "--executor", executor,
                                "--no-progress"], cwd=store.ROOT, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if p.returncode != 0:
                print(f"error: the {executor} sweep into {kind} failed:\n{p.stderr[-2000:]}", file=sys.stderr)
                return 1
            rows.append((executor, kind, wall))
            stores.append((uri, name))
        same = [_histories(*s) for s in stores]
        identical = all(h == same[0] for h in same[1:])
    base = rows[0][2]
    print(f"sweep '{source.stem}', {n} runs, back to back on {os.cpu_count()} cores:\n")
    print("| executor | store | wall | vs local |\n|---|---|---|---|")
    for executor, kind, wall in rows:
        print(f"| {executor} | {kind} | {wall:.1f} s | {wall / base:.2f}x |")
    points = sum(len(v) for h in same[0].values() for v in h.values())
    print(f"\nruns and metric histories identical across the {len(rows)} stores: {identical} ({points} points each)")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
