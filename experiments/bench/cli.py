"""``python -m experiments.bench [--full | --smallest] [--only transformer] [--out DIR] [--no-mlflow]``: runs the measurements."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiments import bench
from experiments.bench.mlflow_cost import bench_logging
from experiments.bench.output import check_targets, log_to_mlflow, markdown
from experiments.bench.per_example import bench_per_example
from experiments.bench.timing import machine
from experiments.bench.training import bench_cnn_training, bench_lm_training, bench_permutation, bench_pow2, bench_training
from experiments.engine import store
from mbstudy import Transformer, load_dataset, mnist1d_cnn

NETS = {"128-64-10": (128, 64, 10), "40-100-100-10": (40, 100, 100, 10), "784-512-512-10": (784, 512, 512, 10)}
BATCHES = (1, 8, 32, 128, 512)
LM_PE_BATCHES = (1, 8, 32, 128)
RESULTS = store.ROOT / "results"


def bench_lm(mnist, budget: float) -> list[dict]:
    """The transformer's rows: per-example gradients at LM_PE_BATCHES, then the training step."""
    text = load_dataset("text")
    net = Transformer(vocab=text.n_outputs, context=text.n_inputs)
    rows = []
    for B in LM_PE_BATCHES:
        r = bench_per_example("transformer", net, B, budget, data=text, kind="per_example_lm")
        rows.append(r)
        print(f"  transformer     B={B:4d}: vmap {r['ratio/vmap_to_batch']:6.2f}x, fast {r['ratio/fast_to_batch']:6.2f}x,"
              f" norms {r['ratio/norms_to_batch']:5.2f}x, floor {r['ratio/floor_to_batch']:6.2f}x of the batch gradient;"
              f" fast / max(floor, batch) {r['ratio/fast_to_max_floor_batch']:.2f}", flush=True)
    return rows + bench_lm_training(text, mnist, budget)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench", description=bench.__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="longer timing budgets and every measurement")
    ap.add_argument("--smallest", action="store_true", help="the smallest mode (the tests, make study-quick): one net, two B, one power of two")
    ap.add_argument("--only", choices=("transformer",), help="only this part: the transformer's per-example and "
                    "training rows (with the MLP step they are compared with); written to bench-<device>-transformer.*, "
                    "not logged to MLflow (the report reads the newest whole session)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    if a.only and a.smallest:
        ap.error("--only transformer has no smallest mode; use it alone (quick) or with --full")
    mode = "full" if a.full else "smallest" if a.smallest else "quick"
    budget = {"full": 1.0, "quick": 0.25, "smallest": 0.02}[mode]
    info = machine()
    print(f"bench ({mode}) on {info['cpu']}, {info['cores']} cores, {info['device']}, torch {info['torch_version']}")
    if info["torch_version"] == "absent":
        print("  PyTorch peers skipped: torch is not installed (make setup-bench installs it)")
    data = load_dataset("mnist1d")
    rows: list[dict] = []
    t0 = time.perf_counter()
    nets = {"40-100-100-10": NETS["40-100-100-10"]} if a.smallest else {**NETS, "cnn-mnist1d": mnist1d_cnn()}
    batches = (8, 32) if a.smallest else BATCHES
    for name, net in ({} if a.only else nets).items():
        for B in batches:
            r = bench_per_example(name, net, B, budget)
            rows.append(r)
            print(f"  {name:15s} B={B:4d}: vmap {r['ratio/vmap_to_batch']:6.1f}x, fast {r['ratio/fast_to_batch']:6.1f}x,"
                  f" norms {r['ratio/norms_to_batch']:5.2f}x, floor {r['ratio/floor_to_batch']:6.1f}x of the batch gradient;"
                  f" fast/floor {r['ratio/fast_to_floor']:.2f}", flush=True)
    if not a.smallest:  # the transformer on the text (issue 24)
        rows += bench_lm(data, budget)
    if a.only:
        pass
    elif a.smallest:  # one power of two, so that the quick study's report has Q6's numbers too
        rows += bench_pow2(data, budget, (4,))
    else:
        rows.append(bench_permutation(budget))
        print(f"  permutation of 4000: jax {rows[-1]['s/jax_permutation'] * 1e6:.0f} µs, "
              f"numpy {rows[-1]['s/numpy_permutation'] * 1e6:.0f} µs", flush=True)
        rows += bench_training(data, budget)
        rows += bench_cnn_training(data, budget)
        rows += bench_pow2(data, budget, range(4, 10) if a.full else (4, 5, 6, 7, 8, 9))
        rows.append(bench_logging(data))
    targets = check_targets(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    tag = (info["device"].replace(":", "-").replace(" ", "_") or "device") + (f"-{a.only}" if a.only else "")
    (a.out / f"bench-{tag}.json").write_text(json.dumps({"machine": info, "mode": mode, "rows": rows,
                                                         "targets": targets}, indent=1))
    (a.out / f"bench-{tag}.md").write_text(markdown(rows, info) + "\n" + "\n".join(f"- {t}" for t in targets) + "\n")
    if not (a.no_mlflow or a.only):
        session = log_to_mlflow(rows, info, mode)
        print(f"logged to {store.tracking_uri()}, experiment 'benchmarks', session {session}")
    print("\n".join(targets))
    print(f"wrote {a.out / f'bench-{tag}.md'} and .json in {time.perf_counter() - t0:.0f} s")
    return 0
