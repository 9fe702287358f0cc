"""How to train many runs fast on this machine: measured, not assumed.

Trains the same R runs (one shape, R learning rates) three ways and prints
the wall time of each:
  sequential  one process, one run after another (compiled once);
  vmap        one process, the R runs batched with jax.vmap over (state, hyper);
  processes   W worker processes, R/W runs each (each compiles once, warmed
              up before the timing, as in a long sweep).

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


def _sequential(batch_size: int, lrs: list[float], steps: int) -> float:
    from mbstudy.train import TrainConfig, train

    data = _data()
    cfgs = [TrainConfig(batch_size=batch_size, learning_rate=lr, steps=steps, eval_every=steps) for lr in lrs]
    train(cfgs[0], data)  # compile outside the timing
    t0 = time.perf_counter()
    for c in cfgs:
        train(c, data)
    return time.perf_counter() - t0


def _vmapped(batch_size: int, lrs: list[float], steps: int) -> float:
    import jax
    import jax.numpy as jnp

    from mbstudy import load_dataset
    from mbstudy.train import Hyper, Spec, TrainConfig, _device_data, batch_indices, init_state, run_chunk

    data = load_dataset("mnist1d")
    cfg = TrainConfig(batch_size=batch_size, steps=steps)
    model, loss = cfg.model(data), cfg.loss_name(data)
    spec = Spec(model, loss, cfg.reduction, cfg.optimizer, batch_size)
    x, y = _device_data(cfg, data, loss)[:2]
    hyper = Hyper(jnp.asarray(lrs, jnp.float32), jnp.full(len(lrs), 0.9, jnp.float32), jnp.full(len(lrs), 1e-8, jnp.float32))
    states = [init_state(cfg, model, Hyper(*(h[i] for h in hyper)), data.n_train) for i in range(len(lrs))]
    state = jax.tree.map(lambda *a: jnp.stack(a), *states)
    idx = jnp.asarray(batch_indices(0, 0, steps, data.n_train, batch_size))
    f = jax.jit(jax.vmap(lambda s, h: run_chunk(s, h, x, y, idx, spec=spec)))
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
            chunks = [lrs[i :: a.workers] for i in range(a.workers)]
            list(pool.map(_sequential, [B] * a.workers, [c[:1] for c in chunks], [a.steps] * a.workers))  # warm
            t0 = time.perf_counter()
            list(pool.map(_sequential, [B] * a.workers, chunks, [a.steps] * a.workers))
            pr = time.perf_counter() - t0
        print(f"{B:>6} {seq:>13.2f} {vm:>8.2f} {pr:>12.2f} {vm / seq:>9.2f} {pr / seq:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
