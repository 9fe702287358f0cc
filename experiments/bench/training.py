"""3, 4: training-step throughput (mbstudy's compiled loop, the leanest scan, a Python loop, PyTorch; the CNN's
and the transformer's against the MLP's FLOP rate), a permutation in XLA against NumPy, and step time around
powers of two.

Every call into mbstudy's training internals (``Program``, ``traced_hyper``, ``init_state``,
``run_chunk``, ``LOSSES``) is in the first four functions here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.bench.timing import timeit, timeit_interleaved
from experiments.bench.torch_peer import torch_step_time
from mbstudy.losses import LOSSES
from mbstudy.config import TrainConfig
from mbstudy.step import Program, batch_indices, init_state, run_chunk, traced_hyper
from mbstudy.transformer import Transformer

TRAIN_BATCHES = (1, 8, 32, 64, 128, 512)
CNN_BATCHES = (1, 16, 64, 256)
LM_BATCHES = (1, 8, 16, 32, 64, 128)


def _train_setup(B: int, data, model="mlp", optimizer: str = "momentum"):
    """A training step's pieces; ``model`` a registered name (built by the configuration) or a model itself."""
    if isinstance(model, str):
        cfg = TrainConfig(optimizer=optimizer, learning_rate=0.01, batch_size=B, model=model)
        model, loss = cfg.build_model(data), cfg.loss_name(data)
    else:
        cfg = TrainConfig(optimizer=optimizer, learning_rate=0.01, batch_size=B, dataset=data.name)
        loss = cfg.loss_name(data)
    spec = Program(model, loss, cfg.reduction, cfg.optimizer, B, static_hyper=cfg.static_hyper())
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    hyper = traced_hyper(cfg.optimizer, cfg.hyper())
    state = init_state(model, cfg.optimizer, hyper, seed=cfg.seed, static_hyper=spec.static_hyper)
    return cfg, model, loss, spec, x, y, hyper, state


def compiled_step_time(B: int, data, budget: float, n_steps: int = 200, model="mlp", optimizer: str = "momentum") -> float:
    """Seconds per step of mbstudy's compiled loop (a chunk of n_steps in one lax.scan)."""
    cfg, *_, spec, x, y, hyper, state = _train_setup(B, data, model, optimizer)
    chunk = jax.jit(lambda s, idx: run_chunk(s, hyper, x, y, idx, program=spec))

    def run():  # what train() does per chunk: host-side batch indices, then the compiled scan
        idx = batch_indices(cfg.seed, 0, n_steps, data.n_train, B)
        jax.block_until_ready(chunk(state, idx))

    return timeit(run, budget=budget) / n_steps


def lean_scan_step_time(B: int, data, budget: float, n_steps: int = 200, model="mlp") -> float:
    """Seconds per step of the leanest scan: gradient and optax update only, indices given."""
    cfg, model, loss, _, x, y, hyper, state = _train_setup(B, data, model)
    opt = optax.sgd(cfg.learning_rate, momentum=cfg.momentum)
    loss_fn = LOSSES[loss]
    idx = jnp.asarray(batch_indices(cfg.seed, 0, n_steps, data.n_train, B))

    def step(carry, i):
        p, o = carry
        g = jax.grad(lambda q: jnp.mean(loss_fn(model.apply(q, x[i]), y[i])))(p)
        u, o = opt.update(g, o, p)
        return (optax.apply_updates(p, u), o), None

    f = jax.jit(lambda p, o: jax.lax.scan(step, (p, o), idx)[0])
    p0, o0 = state.params, opt.init(state.params)
    return timeit(lambda: jax.block_until_ready(f(p0, o0)), budget=budget) / n_steps


def python_loop_step_time(B: int, data, budget: float, n_steps: int = 200) -> float:
    """Seconds per step of a Python loop over one jitted step (batches pre-sliced)."""
    cfg, model, loss, _, x, y, hyper, state = _train_setup(B, data)
    opt = optax.sgd(cfg.learning_rate, momentum=cfg.momentum)
    loss_fn = LOSSES[loss]

    @jax.jit
    def step(params, opt_state, xb, yb):
        g = jax.grad(lambda p: jnp.mean(loss_fn(model.apply(p, xb), yb)))(params)
        updates, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    batches = [(x[i], y[i]) for i in batch_indices(cfg.seed, 0, n_steps, data.n_train, B)]
    params, opt_state = state.params, opt.init(state.params)

    def run():
        p, o = params, opt_state
        for xb, yb in batches:
            p, o = step(p, o, xb, yb)
        jax.block_until_ready(p)

    return timeit(run, budget=budget) / n_steps


def bench_training(data, budget: float) -> list[dict]:
    rows = []
    for B in TRAIN_BATCHES:
        row = {"kind": "train", "B": B, "s/compiled": compiled_step_time(B, data, budget),
               "s/lean_scan": lean_scan_step_time(B, data, budget),
               "s/python_loop": python_loop_step_time(B, data, budget)}
        row["ratio/compiled_to_lean_scan"] = row["s/compiled"] / row["s/lean_scan"]
        t = torch_step_time(B, data, budget)
        if t is not None:
            row["s/torch_eager"] = t
            row["ratio/torch_to_compiled"] = t / row["s/compiled"]
        row["ratio/python_loop_to_compiled"] = row["s/python_loop"] / row["s/compiled"]
        rows.append(row)
        print(f"  train B={B:4d}: compiled {row['s/compiled'] * 1e6:7.1f} µs/step (leanest scan "
              f"{row['s/lean_scan'] * 1e6:.1f}), python loop "
              f"{row['s/python_loop'] * 1e6:7.1f}, torch eager {row.get('s/torch_eager', float('nan')) * 1e6:7.1f}",
              flush=True)
    return rows


def step_flops(B: int, data, model="mlp") -> float:
    """XLA's count of floating-point operations in one training step (gradient and update) at batch B."""
    cfg, net, loss, _, x, y, hyper, state = _train_setup(B, data, model)
    opt = optax.sgd(cfg.learning_rate, momentum=cfg.momentum)
    loss_fn = LOSSES[loss]

    def step(p, o, xb, yb):
        g = jax.grad(lambda q: jnp.mean(loss_fn(net.apply(q, xb), yb)))(p)
        u, o = opt.update(g, o, p)
        return optax.apply_updates(p, u), o

    cost = jax.jit(step).lower(state.params, opt.init(state.params), x[:B], y[:B]).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost.get("flops", float("nan")))


def bench_cnn_training(data, budget: float) -> list[dict]:
    """The MNIST-1D CNN's training step: mbstudy's compiled loop against the leanest scan, and its FLOP rate
    against the MLP's at the same B (both measured here, in this run)."""
    rows = []
    for B in CNN_BATCHES:
        row = {"kind": "train_cnn", "B": B,
               "s/compiled": compiled_step_time(B, data, budget, model="cnn"),
               "s/lean_scan": lean_scan_step_time(B, data, budget, model="cnn"),
               "s/mlp_compiled": compiled_step_time(B, data, budget),
               "flops/step": step_flops(B, data, "cnn"), "flops/mlp_step": step_flops(B, data)}
        row["ratio/compiled_to_lean_scan"] = row["s/compiled"] / row["s/lean_scan"]
        row["gflops/cnn"] = row["flops/step"] / row["s/compiled"] / 1e9
        row["gflops/mlp"] = row["flops/mlp_step"] / row["s/mlp_compiled"] / 1e9
        row["ratio/cnn_to_mlp_flop_rate"] = row["gflops/cnn"] / row["gflops/mlp"]
        rows.append(row)
        print(f"  train CNN B={B:4d}: compiled {row['s/compiled'] * 1e6:7.1f} µs/step (leanest scan "
              f"{row['s/lean_scan'] * 1e6:.1f}), {row['gflops/cnn']:.1f} GFLOP/s against the MLP's "
              f"{row['gflops/mlp']:.1f}", flush=True)
    return rows


def bench_lm_training(text, mnist, budget: float, batches=LM_BATCHES) -> list[dict]:
    """The transformer's training step on the text (issue 24): mbstudy's compiled loop (SGD + momentum, and Adam)
    against the leanest scan, and its FLOP rate against the MNIST-1D MLP's at the same B, both measured here."""
    net = Transformer(vocab=text.n_outputs, context=text.n_inputs)
    rows = []
    for B in batches:
        n = max(10, min(200, 2000 // B))  # a chunk of about the same work at every B
        row = {"kind": "train_lm", "B": B, "P": net.num_params,
               "s/compiled": compiled_step_time(B, text, budget, n, model=net),
               "s/adam_compiled": compiled_step_time(B, text, budget, n, model=net, optimizer="adam"),
               "s/lean_scan": lean_scan_step_time(B, text, budget, n, model=net),
               "s/mlp_compiled": compiled_step_time(B, mnist, budget),
               "flops/step": step_flops(B, text, net), "flops/mlp_step": step_flops(B, mnist)}
        row["ratio/compiled_to_lean_scan"] = row["s/compiled"] / row["s/lean_scan"]
        row["gflops/lm"] = row["flops/step"] / row["s/compiled"] / 1e9
        row["gflops/mlp"] = row["flops/mlp_step"] / row["s/mlp_compiled"] / 1e9
        row["ratio/lm_to_mlp_flop_rate"] = row["gflops/lm"] / row["gflops/mlp"]
        rows.append(row)
        print(f"  train transformer B={B:4d}: compiled {row['s/compiled'] * 1e6:7.1f} µs/step (Adam "
              f"{row['s/adam_compiled'] * 1e6:.1f}, leanest scan {row['s/lean_scan'] * 1e6:.1f}), "
              f"{row['gflops/lm']:.1f} GFLOP/s against the MLP's {row['gflops/mlp']:.1f}: "
              f"{row['ratio/lm_to_mlp_flop_rate']:.0%}", flush=True)
    return rows


def bench_pow2(data, budget: float, ks) -> list[dict]:
    rows = []
    for k in ks:
        row = {"kind": "pow2", "k": k}
        for name, B in (("pow2_minus_1", 2**k - 1), ("pow2", 2**k), ("pow2_plus_1", 2**k + 1)):
            row[f"us/{name}"] = compiled_step_time(B, data, budget) * 1e6
        row["ratio/minus_to_pow2"] = row["us/pow2_minus_1"] / row["us/pow2"]
        row["ratio/plus_to_pow2"] = row["us/pow2_plus_1"] / row["us/pow2"]
        rows.append(row)
        print(f"  pow2 k={k}: {row['us/pow2_minus_1']:.1f} / {row['us/pow2']:.1f} / {row['us/pow2_plus_1']:.1f} µs/step", flush=True)
    return rows


def bench_permutation(budget: float, n: int = 4000) -> dict:
    """A permutation of n indices: XLA on this device against NumPy on the host (why batch_indices uses NumPy)."""
    key = jax.random.key(0)
    perm = jax.jit(lambda k: jax.random.permutation(k, n))
    rng = np.random.default_rng(0)
    t = timeit_interleaved({"jax": lambda: jax.block_until_ready(perm(key)), "numpy": lambda: rng.permutation(n)},
                           budget=budget)
    return {"kind": "permutation", "n": n, "s/jax_permutation": t["jax"], "s/numpy_permutation": t["numpy"],
            "ratio/jax_to_numpy": t["jax"] / t["numpy"]}
