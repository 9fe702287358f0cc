"""1, 2: per-example gradients against the batch gradient, the memory-write floor and XLA's fusion (MLPs, the
CNN, and the transformer on windows of the text data set).

Every ``G._...`` call of the benchmark is here: they are mbstudy's own jitted
functions, looked up at call time (the tests spy on them).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench.timing import peak_bytes, timeit, timeit_interleaved
from experiments.bench.torch_peer import torch_per_example
from mbstudy import MLP
from mbstudy import grads as G
from mbstudy import per_example


def bench_per_example(name: str, model, B: int, budget: float, *, data=None, kind: str = "per_example") -> dict:
    """One model at one B: every recipe's time and peak memory, round-robin; ``model`` an MLP's sizes or any model.

    Without ``data`` the batch is random inputs and class labels (cross-entropy); with it, B examples drawn
    from its training set, and its loss (the transformer's windows of text, ``kind="per_example_lm"``).
    """
    sizes = tuple(model) if isinstance(model, (tuple, list)) else None
    model = MLP(sizes) if sizes is not None else model
    P = model.num_params
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), dtype=jnp.float32)
    if data is None:
        x = jnp.asarray(rng.normal(size=(B, *model.input_shape)), jnp.float32)
        y = jnp.asarray(rng.integers(0, model.n_outputs, B), jnp.int32)
        loss = "cross_entropy"
    else:
        pick = rng.choice(data.n_train, B, replace=False)
        x, y, loss = jnp.asarray(data.x_train[pick]), jnp.asarray(data.y_train[pick]), data.loss_name
    kw = {"model": model, "loss_name": loss}
    row: dict = {"kind": kind, "net": name, "P": P, "B": B}

    def run(f, *a, **k):
        return lambda: jax.block_until_ready(f(*a, **k))

    fill = jax.jit(lambda s: jnp.full((B, P), s, jnp.float32))
    # the per-layer products of per_sample_grads_fast alone (dense: outer products), given the inputs and deltas
    inputs, deltas = jax.jit(per_example.layer_inputs_and_deltas, static_argnums=(0, 1))(model, loss, params, x, y)
    rules = per_example.rules_for(model)
    outer = jax.jit(lambda a_s, d_s: [rule.grads(a, d) for rule, a, d in zip(rules, a_s, d_s)])
    fused = jax.jit(lambda p, xx, yy: jax.tree.map(lambda t: t.mean(0), G._per_sample_grads(p, xx, yy, **kw)))
    fns = {
        "batch": run(G._batch_grad, params, x, y, reduction="mean", **kw),
        "vmap": run(G._per_sample_grads, params, x, y, **kw),
        "fast": run(G._per_sample_grads_fast, params, x, y, **kw),
        "norms": run(G._per_sample_grad_norms, params, x, y, squared=False, **kw),
        "floor": run(fill, jnp.float32(1.0)),
        "outer": run(outer, inputs, deltas),
        "fused_mean_vmap": run(fused, params, x, y),
    }
    row.update({f"s/{k}": v for k, v in timeit_interleaved(fns, budget=budget).items()})

    x1 = [x[i : i + 1] for i in range(B)]
    y1 = [y[i : i + 1] for i in range(B)]

    def loop():
        acc = None
        for xi, yi in zip(x1, y1):
            g = G._batch_grad(params, xi, yi, reduction="sum", **kw)
            acc = g if acc is None else jax.tree.map(jnp.add, acc, g)
        return jax.block_until_ready(acc)

    row["s/loop"] = timeit(loop, budget=budget, min_reps=1, warmup=1)

    row["bytes/batch"] = peak_bytes(G._batch_grad, params, x, y, reduction="mean", **kw)
    row["bytes/vmap"] = peak_bytes(G._per_sample_grads, params, x, y, **kw)
    row["bytes/fast"] = peak_bytes(G._per_sample_grads_fast, params, x, y, **kw)
    row["bytes/norms"] = peak_bytes(G._per_sample_grad_norms, params, x, y, squared=False, **kw)
    row["bytes/floor"] = B * P * 4

    torch_s = torch_per_example(sizes, np.asarray(x), np.asarray(y), budget) if sizes is not None else None
    if torch_s is not None:
        row["s/torch_vmap"] = torch_s
    for k in ("vmap", "fast", "norms", "floor", "loop", "fused_mean_vmap", "torch_vmap"):
        if f"s/{k}" in row:
            row[f"ratio/{k}_to_batch"] = row[f"s/{k}"] / row["s/batch"]
    row["ratio/fast_to_floor"] = row["s/fast"] / row["s/floor"]
    row["ratio/outer_to_floor"] = row["s/outer"] / row["s/floor"]
    row["ratio/vmap_to_floor"] = row["s/vmap"] / row["s/floor"]
    if kind != "per_example":  # issue 24's measure: the per-example gradients against the larger of the two costs
        row["ratio/fast_to_max_floor_batch"] = row["s/fast"] / max(row["s/floor"], row["s/batch"])
    return row
