"""How to train many runs fast on this machine: measured, not assumed.

Trains the same R runs (one shape, R learning rates, the compiled chunk that
train() runs, no evaluation) three ways and prints the wall time of each:
  sequential  one process, one run after another (compiled once);
  vmap        one process, the R runs batched with jax.vmap over (state, hyper);
  processes   W worker processes at once, R/W runs each; the slowest worker's
              timed loop (compilation excluded, as in a long sweep).

The runs share one data order here (vmap over learning rates only), which
favours vmap.
Usage: python -m experiments.measure_batching [--steps 500] [--runs 8] [--workers 2]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import multiprocessing as mp
import time


@functools.cache
def _data():
    from mbstudy import load_dataset

    return load_dataset("mnist1d")


def _setup(batch_size: int, steps: int):
    import jax.numpy as jnp

    from mbstudy.config import TrainConfig
    from mbstudy.step import Program, batch_indices
    from mbstudy.train import eval_data

    data = _data()
    cfg = TrainConfig(batch_size=batch_size, steps=steps)
    model, loss = cfg.build_model(data), cfg.loss_name(data)
    spec = Program(model, loss, cfg.reduction, cfg.optimizer, batch_size)
    x, y = eval_data(cfg, data, loss)[:2]
    idx = jnp.asarray(batch_indices(0, 0, steps, data.n_train, batch_size))
    return cfg, model, spec, x, y, idx


def _hyper(lr):
    from mbstudy.step import traced_hyper

    return traced_hyper("sgd", {"learning_rate": lr})


def _sequential(batch_size: int, lrs: list[float], steps: int) -> float:
    """The same compiled chunk as train() runs, one run after another (no evaluation)."""
    import jax

    from mbstudy.step import init_state, run_chunk

    cfg, model, spec, x, y, idx = _setup(batch_size, steps)
    f = jax.jit(lambda s, h: run_chunk(s, h, x, y, idx, program=spec))
    runs = [(init_state(model, cfg.optimizer, _hyper(lr), seed=cfg.seed), _hyper(lr)) for lr in lrs]
    jax.block_until_ready(f(*runs[0]))  # compile outside the timing
    t0 = time.perf_counter()
    for s, h in runs:
        jax.block_until_ready(f(s, h))
    return time.perf_counter() - t0


def _vmapped(batch_size: int, lrs: list[float], steps: int) -> float:
    """The R runs batched with jax.vmap over (state, hyper-parameters)."""
    import jax
    import jax.numpy as jnp

    from mbstudy.step import init_state, run_chunk

    cfg, model, spec, x, y, idx = _setup(batch_size, steps)
    hypers = [_hyper(lr) for lr in lrs]
    state = jax.tree.map(lambda *a: jnp.stack(a), *[init_state(model, cfg.optimizer, h, seed=cfg.seed) for h in hypers])
    hyper = jax.tree.map(lambda *a: jnp.stack(a), *hypers)
    f = jax.jit(jax.vmap(lambda s, h: run_chunk(s, h, x, y, idx, program=spec)))
    jax.block_until_ready(f(state, hyper))
    t0 = time.perf_counter()
    jax.block_until_ready(f(state, hyper))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 256, 1024])
    a = ap.parse_args()
    lrs = [10 ** (-3 + 3 * i / max(a.runs - 1, 1)) for i in range(a.runs)]
    print(f"{a.runs} runs x {a.steps} steps, MNIST-1D MLP 40-100-100-10, SGD")
    print(f"{'B':>6} {'sequential s':>13} {'vmap s':>8} {'processes s':>12} {'vmap/seq':>9} {'proc/seq':>9}")
    ctx = mp.get_context("spawn")
    for B in a.batch_sizes:
        seq = _sequential(B, lrs, a.steps)
        vm = _vmapped(B, lrs, a.steps)
        with cf.ProcessPoolExecutor(a.workers, mp_context=ctx) as pool:
            # each worker compiles, then times its share; they run at the same time, so the
            # slowest worker's loop is the wall time of the parallel part (compilation excluded,
            # as in a long sweep where every worker reuses its compiled programs)
            chunks = [lrs[i :: a.workers] for i in range(a.workers)]
            pr = max(pool.map(_sequential, [B] * a.workers, chunks, [a.steps] * a.workers))
        print(f"{B:>6} {seq:>13.2f} {vm:>8.2f} {pr:>12.2f} {vm / seq:>9.2f} {pr / seq:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
