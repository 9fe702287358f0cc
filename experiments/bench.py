"""``make bench``: what per-example gradients and training steps cost, measured in one process.

Every timing: warm-up calls first (compilation excluded), then repeated calls
until a time budget is spent, each waited for (``block_until_ready``); the
median is reported. The per-example methods are timed round-robin (each
once per round), so the ratios compare like with like on a shared, noisy
machine. Per-call times include JAX's dispatch from Python (tens of µs),
which dominates the smallest problems.

1. Per-example gradients (Q3) on MLPs 128-64-10, 40-100-100-10 and
   784-512-512-10, B in {1, 8, 32, 128, 512}, cross-entropy: the batch-mean
   gradient; ``per_sample_grads`` (vmap, the B x P tensor returned, so it
   exists); ``per_sample_grads_fast``; ``per_sample_grad_norms``; a Python loop
   of B single-example gradients (seed 004's method); the memory-write floor
   (writing B x P float32 numbers); the outer products alone, from given
   layer inputs and deltas; torch.func's ``vmap(grad)`` as a peer.
   Peak memory of each compiled program from XLA's memory analysis.
2. XLA's fusion: ``mean(vmap(grad))`` under one jit against the batch gradient.
3. Training-step throughput (MNIST-1D MLP, SGD + momentum 0.9): mbstudy's
   compiled ``lax.scan`` loop, the leanest possible scan (gradient and update
   only: mbstudy's overhead is the difference), a Python loop over a jitted
   step, and a PyTorch eager loop, all on the same batches. Also a
   permutation of 4000 indices in XLA against NumPy.
4. Step time at B = 2^k - 1, 2^k, 2^k + 1 (Q6).
5. MLflow logging cost per run as a fraction of its training time.

Results go to ``results/bench-<device>.json`` and ``.md``, to the MLflow
experiment ``benchmarks`` (one run per row, machine details as tags), and
the figures to ``report/figures``. The implementations timed are the
library's own (``mbstudy.grads``), not copies.

Usage: ``python -m experiments.bench [--full]``. Quick mode: about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.engine import tracking
from mbstudy import MLP, load_dataset
from mbstudy import grads as G
from mbstudy.losses import LOSSES
from mbstudy.train import Hyper, Spec, TrainConfig, batch_indices, init_state, run_chunk

NETS = {"128-64-10": (128, 64, 10), "40-100-100-10": (40, 100, 100, 10), "784-512-512-10": (784, 512, 512, 10)}
BATCHES = (1, 8, 32, 128, 512)
TRAIN_BATCHES = (1, 8, 32, 64, 128, 512)
RESULTS = tracking.ROOT / "results"


# ------------------------------------------------------------------ timing


def timeit(fn, *, budget: float, min_reps: int = 3, warmup: int = 2) -> float:
    """Median seconds per call of ``fn()`` (which must wait for its result)."""
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget and len(times) < 10_000):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timeit_interleaved(fns: dict, *, budget: float, min_rounds: int = 5, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each ``fns[name]()``, timed in rounds: every function once per round.

    On a shared machine the load drifts; interleaving makes every method see
    the same drift, so their ratios are stable even when absolute times move.
    """
    for _ in range(warmup):
        for f in fns.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    rounds = 0
    while rounds < min_rounds or (time.perf_counter() - start < budget and rounds < 10_000):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
        rounds += 1
    return {k: statistics.median(v) for k, v in times.items()}


def _peak_bytes(jitted, *args, **static) -> int:
    m = jitted.lower(*args, **static).compile().memory_analysis()
    return int(m.temp_size_in_bytes + m.output_size_in_bytes)


def machine() -> dict[str, str]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "cpu": cpu, "cores": str(os.cpu_count()), "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
        "python": platform.python_version(), "jax_version": jax.__version__, "optax_version": optax.__version__,
        "torch_version": _torch_version(),
    }


def _torch_version() -> str:
    try:
        import torch

        return torch.__version__
    except ImportError:
        return "absent"


# ------------------------------------------------------- 1, 2: per-example


def bench_per_example(name: str, sizes, B: int, budget: float) -> dict:
    model = MLP(sizes)
    P = model.num_params
    rng = np.random.default_rng(0)
    params = model.init(jax.random.key(0), dtype=jnp.float32)
    x = jnp.asarray(rng.normal(size=(B, sizes[0])), jnp.float32)
    y = jnp.asarray(rng.integers(0, sizes[-1], B), jnp.int32)
    kw = {"model": model, "loss_name": "cross_entropy"}
    row: dict = {"kind": "per_example", "net": name, "P": P, "B": B}

    def run(f, *a, **k):
        return lambda: jax.block_until_ready(f(*a, **k))

    fill = jax.jit(lambda s: jnp.full((B, P), s, jnp.float32))
    # the outer products of per_sample_grads_fast alone, given the layer inputs and deltas
    inputs, deltas = jax.jit(G._inputs_and_deltas, static_argnums=(0, 1))(model, "cross_entropy", params, x, y)
    outer = jax.jit(lambda a_s, d_s: [{"w": jnp.einsum("bi,bo->bio", a, d), "b": d} for a, d in zip(a_s, d_s)])
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

    row["bytes/batch"] = _peak_bytes(G._batch_grad, params, x, y, reduction="mean", **kw)
    row["bytes/vmap"] = _peak_bytes(G._per_sample_grads, params, x, y, **kw)
    row["bytes/fast"] = _peak_bytes(G._per_sample_grads_fast, params, x, y, **kw)
    row["bytes/norms"] = _peak_bytes(G._per_sample_grad_norms, params, x, y, squared=False, **kw)
    row["bytes/floor"] = B * P * 4

    torch_s = _torch_per_example(sizes, np.asarray(x), np.asarray(y), budget)
    if torch_s is not None:
        row["s/torch_vmap"] = torch_s
    for k in ("vmap", "fast", "norms", "floor", "loop", "fused_mean_vmap", "torch_vmap"):
        if f"s/{k}" in row:
            row[f"ratio/{k}_to_batch"] = row[f"s/{k}"] / row["s/batch"]
    row["ratio/fast_to_floor"] = row["s/fast"] / row["s/floor"]
    row["ratio/outer_to_floor"] = row["s/outer"] / row["s/floor"]
    row["ratio/vmap_to_floor"] = row["s/vmap"] / row["s/floor"]
    return row


def _torch_mlp(sizes):
    import torch

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Tanh())
    return torch.nn.Sequential(*layers)


def _torch_per_example(sizes, x, y, budget):
    try:
        import torch
        from torch.func import functional_call, grad, vmap
    except ImportError:
        return None
    model = _torch_mlp(sizes)
    params = {k: v.detach() for k, v in model.named_parameters()}
    xt, yt = torch.from_numpy(np.array(x)), torch.from_numpy(np.array(y)).long()

    def loss_one(p, xi, yi):
        out = functional_call(model, p, (xi[None],))
        return torch.nn.functional.cross_entropy(out, yi[None])

    psg = vmap(grad(loss_one), in_dims=(None, 0, 0))
    return timeit(lambda: psg(params, xt, yt), budget=budget)


# -------------------------------------------------- 3, 4: training steps


def _train_setup(B: int, data):
    cfg = TrainConfig(optimizer="momentum", learning_rate=0.01, batch_size=B)
    model, loss = cfg.model(data), cfg.loss_name(data)
    spec = Spec(model, loss, cfg.reduction, cfg.optimizer, B)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    hyper = Hyper(*(jnp.float32(v) for v in (cfg.learning_rate, cfg.momentum, cfg.eps)))
    state = init_state(cfg, model, hyper)
    return cfg, model, loss, spec, x, y, hyper, state


def compiled_step_time(B: int, data, budget: float, n_steps: int = 200) -> float:
    """Seconds per step of mbstudy's compiled loop (a chunk of n_steps in one lax.scan)."""
    cfg, *_, spec, x, y, hyper, state = _train_setup(B, data)
    chunk = jax.jit(lambda s, idx: run_chunk(s, hyper, x, y, idx, spec=spec))

    def run():  # what train() does per chunk: host-side batch indices, then the compiled scan
        idx = batch_indices(cfg.seed, 0, n_steps, data.n_train, B)
        jax.block_until_ready(chunk(state, idx))

    return timeit(run, budget=budget) / n_steps


def lean_scan_step_time(B: int, data, budget: float, n_steps: int = 200) -> float:
    """Seconds per step of the leanest scan: gradient and optax update only, indices given."""
    cfg, model, loss, _, x, y, hyper, state = _train_setup(B, data)
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


def torch_step_time(B: int, data, budget: float, n_steps: int = 200) -> float | None:
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(0)
    model = _torch_mlp((data.n_inputs, 100, 100, data.n_outputs))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xt, yt = torch.from_numpy(np.array(data.x_train)), torch.from_numpy(np.array(data.y_train)).long()
    idx = torch.from_numpy(batch_indices(0, 0, n_steps, data.n_train, B).astype(np.int64))
    batches = [(xt[i], yt[i]) for i in idx]
    lossf = torch.nn.CrossEntropyLoss()

    def run():
        for xb, yb in batches:
            opt.zero_grad()
            lossf(model(xb), yb).backward()
            opt.step()

    return timeit(run, budget=budget, min_reps=2) / n_steps


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


# ------------------------------------------------------- 5: logging cost


def bench_logging(data) -> dict:
    """Train one default-sweep run and log it into a scratch SQLite store; compare the times."""
    from mbstudy.train import train

    from experiments.engine import grid as grids

    cfg = TrainConfig(batch_size=64, optimizer="momentum", learning_rate=0.01, target_loss=0.7)
    train(cfg, data)  # compile
    result = train(cfg, data)
    with tempfile.TemporaryDirectory() as d:
        old = os.environ.get("MLFLOW_TRACKING_URI")
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{d}/mlflow.db"
        try:
            exp = tracking.get_or_create_experiment("bench-logging")
            prov = tracking.provenance()
            times = []
            for i in range(5):
                t0 = time.perf_counter()
                rid = tracking.start_child(exp, "", f"r{i}", grids.config_hash(cfg), "g", "bench")
                tracking.log_result(rid, result, grids.config_dict(cfg), prov)
                times.append(time.perf_counter() - t0)
        finally:
            if old is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = old
    run_s = result.timings["train_s"] + result.timings["eval_s"]
    log_s = statistics.median(times)
    return {"kind": "logging", "s/log_per_run": log_s, "s/train_eval_per_run": run_s,
            "ratio/log_to_train_eval": log_s / run_s}


# ----------------------------------------------------------------- output


def markdown(rows: list[dict], info: dict) -> str:
    out = [f"Machine: {info['cpu']}, {info['cores']} cores, {info['device']}; jax {info['jax_version']}, "
           f"torch {info['torch_version']}. Medians; ratios within this run.", ""]
    pe = [r for r in rows if r["kind"] == "per_example"]
    if pe:
        out += ["**Per-example gradients**, time relative to the batch-mean gradient "
                "(floor: writing B × P float32):", "",
                "| net | P | B | batch µs | vmap | fast | norms | floor | fast/floor | outer products/floor | Python loop | torch.func vmap | mean(vmap) fused | peak MB vmap / fast / norms |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in pe:
            tv = f"{r['ratio/torch_vmap_to_batch']:.1f}" if "ratio/torch_vmap_to_batch" in r else "–"
            out.append(
                f"| {r['net']} | {r['P']:,} | {r['B']} | {r['s/batch'] * 1e6:.0f} | {r['ratio/vmap_to_batch']:.1f} | "
                f"{r['ratio/fast_to_batch']:.1f} | {r['ratio/norms_to_batch']:.2f} | {r['ratio/floor_to_batch']:.1f} | "
                f"{r['ratio/fast_to_floor']:.2f} | {r['ratio/outer_to_floor']:.2f} | {r['ratio/loop_to_batch']:.0f} | {tv} | {r['ratio/fused_mean_vmap_to_batch']:.2f} | "
                f"{r['bytes/vmap'] / 1e6:.1f} / {r['bytes/fast'] / 1e6:.1f} / {r['bytes/norms'] / 1e6:.2f} |")
        out.append("")
    tr = [r for r in rows if r["kind"] == "train"]
    if tr:
        out += ["**Training step** (MNIST-1D MLP 40-100-100-10, SGD + momentum), µs per step:", "",
                "| B | mbstudy compiled loop | leanest scan | Python loop over jitted step | PyTorch eager | torch / compiled |",
                "|---|---|---|---|---|---|"]
        for r in tr:
            t = f"{r['s/torch_eager'] * 1e6:.1f}" if "s/torch_eager" in r else "–"
            rt = f"{r['ratio/torch_to_compiled']:.1f}×" if "ratio/torch_to_compiled" in r else "–"
            out.append(f"| {r['B']} | {r['s/compiled'] * 1e6:.1f} | {r['s/lean_scan'] * 1e6:.1f} | "
                       f"{r['s/python_loop'] * 1e6:.1f} | {t} | {rt} |")
        out.append("")
    p2 = [r for r in rows if r["kind"] == "pow2"]
    if p2:
        out += ["**Powers of two** (compiled loop), µs per step:", "", "| k | 2^k − 1 | 2^k | 2^k + 1 |", "|---|---|---|---|"]
        out += [f"| {r['k']} | {r['us/pow2_minus_1']:.1f} | {r['us/pow2']:.1f} | {r['us/pow2_plus_1']:.1f} |" for r in p2]
        out.append("")
    pm = [r for r in rows if r["kind"] == "permutation"]
    if pm:
        r = pm[0]
        out.append(f"**Permutation of {r['n']} indices**: jax.random.permutation {r['s/jax_permutation'] * 1e6:.0f} µs, "
                   f"NumPy {r['s/numpy_permutation'] * 1e6:.0f} µs ({r['ratio/jax_to_numpy']:.0f}×).\n")
    lg = [r for r in rows if r["kind"] == "logging"]
    if lg:
        r = lg[0]
        out.append(f"**MLflow logging** of one default-sweep run: {r['s/log_per_run'] * 1e3:.0f} ms, "
                   f"{r['ratio/log_to_train_eval']:.1%} of its training and evaluation time.")
    return "\n".join(out) + "\n"


def check_targets(rows: list[dict]) -> list[str]:
    """The issue's targets, read off this run's numbers: one line each, met or missed and by how much."""
    lines = []
    big = [r for r in rows if r["kind"] == "per_example" and r["net"] == "784-512-512-10" and r["B"] >= 32]
    if big:
        worst = max(r["ratio/fast_to_floor"] for r in big)
        lines.append(f"{'MET ' if worst <= 1.3 else 'MISSED'} fast <= 1.3 x floor (670k net, B >= 32): worst {worst:.2f}")
    pe = [r for r in rows if r["kind"] == "per_example"]
    if pe:
        worst = max(r["ratio/norms_to_batch"] for r in pe)
        w = max(pe, key=lambda r: r["ratio/norms_to_batch"])
        lines.append(f"{'MET ' if worst <= 1.2 else 'MISSED'} norms <= 1.2 x batch gradient (every B): worst {worst:.2f} "
                     f"({w['net']}, B={w['B']})")
    tr = [r for r in rows if r["kind"] == "train" and r["B"] <= 64 and "ratio/torch_to_compiled" in r]
    if tr:
        worst = min(r["ratio/torch_to_compiled"] for r in tr)
        lines.append(f"{'MET ' if worst >= 4 else 'MISSED'} compiled loop >= 4 x faster than PyTorch eager (B <= 64): "
                     f"worst {worst:.1f}x")
    elif any(r["kind"] == "train" for r in rows):
        lines.append("SKIPPED compiled vs PyTorch: torch is not installed (make setup-bench)")
    return lines


def log_to_mlflow(rows: list[dict], info: dict, mode: str) -> str:
    from mlflow.entities import Metric, Param, RunTag

    exp = tracking.get_or_create_experiment("benchmarks", "make bench: cost of per-example gradients and training steps")
    c = tracking.client()
    prov = tracking.provenance()
    session = c.create_run(exp, run_name=f"bench-{mode}-{time.strftime('%Y%m%d-%H%M%S')}",
                           tags={"mbstudy.kind": "bench_session", **prov, **info}).info.run_id
    for r in rows:
        rid = c.create_run(exp, tags={"mbstudy.kind": "bench", "mlflow.parentRunId": session, "bench_session": session,
                                      **prov, **info}).info.run_id
        params = {k: v for k, v in r.items() if isinstance(v, str) or k in ("P", "B", "k")}
        params["device"] = info["device"]
        metrics = [Metric(k, float(v), 0, 0) for k, v in r.items() if k not in params and isinstance(v, (int, float))]
        c.log_batch(rid, metrics=metrics, params=[Param(k, str(v)) for k, v in params.items()],
                    tags=[RunTag("mode", mode)])
        c.set_terminated(rid, "FINISHED")
    c.set_terminated(session, "FINISHED")
    return session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m experiments.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="longer timing budgets and every measurement")
    ap.add_argument("--smallest", action="store_true", help="the smallest mode, for the tests: one net, two B")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-mlflow", action="store_true")
    a = ap.parse_args(argv)
    mode = "full" if a.full else "smallest" if a.smallest else "quick"
    budget = {"full": 1.0, "quick": 0.25, "smallest": 0.02}[mode]
    info = machine()
    print(f"bench ({mode}) on {info['cpu']}, {info['cores']} cores, {info['device']}, torch {info['torch_version']}")
    if info["torch_version"] == "absent":
        print("  PyTorch peers skipped: torch is not installed (make setup-bench installs it)")
    data = load_dataset("mnist1d")
    rows: list[dict] = []
    t0 = time.perf_counter()
    nets = {"40-100-100-10": NETS["40-100-100-10"]} if a.smallest else NETS
    batches = (8, 32) if a.smallest else BATCHES
    for name, sizes in nets.items():
        for B in batches:
            r = bench_per_example(name, sizes, B, budget)
            rows.append(r)
            print(f"  {name:15s} B={B:4d}: vmap {r['ratio/vmap_to_batch']:6.1f}x, fast {r['ratio/fast_to_batch']:6.1f}x,"
                  f" norms {r['ratio/norms_to_batch']:5.2f}x, floor {r['ratio/floor_to_batch']:6.1f}x of the batch gradient;"
                  f" fast/floor {r['ratio/fast_to_floor']:.2f}", flush=True)
    if not a.smallest:
        rows.append(bench_permutation(budget))
        print(f"  permutation of 4000: jax {rows[-1]['s/jax_permutation'] * 1e6:.0f} µs, "
              f"numpy {rows[-1]['s/numpy_permutation'] * 1e6:.0f} µs", flush=True)
        rows += bench_training(data, budget)
        rows += bench_pow2(data, budget, range(4, 10) if a.full else (4, 5, 6, 7, 8, 9))
        rows.append(bench_logging(data))
    targets = check_targets(rows)
    a.out.mkdir(parents=True, exist_ok=True)
    tag = info["device"].replace(":", "-").replace(" ", "_") or "device"
    (a.out / f"bench-{tag}.json").write_text(json.dumps({"machine": info, "mode": mode, "rows": rows,
                                                         "targets": targets}, indent=1))
    (a.out / f"bench-{tag}.md").write_text(markdown(rows, info) + "\n" + "\n".join(f"- {t}" for t in targets) + "\n")
    if not a.no_mlflow:
        session = log_to_mlflow(rows, info, mode)
        print(f"logged to {tracking.tracking_uri()}, experiment 'benchmarks', session {session}")
    print("\n".join(targets))
    print(f"wrote {a.out / f'bench-{tag}.md'} and .json in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
