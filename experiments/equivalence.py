"""The equivalence experiment (Q1, Q2, Q7): every identity of the core library, measured.

For each setting (seed 000's 128-64-10 MSE net, seed 001's 5-16-16-3 MSE net,
the MNIST-1D 40-100-100-10 cross-entropy net) and each precision (float32,
float64), one MLflow run in the experiment ``equivalence`` logs the relative
error ``||a - b|| / ||b||`` of each identity as a metric ``err/<name>``:

- ``per_sample_mean_vs_batch``: mean of ``vmap(grad)`` against ``grad`` of the mean loss;
- ``sum_vs_B_mean``: ``grad`` of the sum against B times ``grad`` of the mean;
- ``accumulated_equal``, ``accumulated_unequal``: micro-batches of B/4, and of 7 (last one smaller);
- ``accumulated_equal_weights_mistake``: averaging unequal micro-batch MEANS (wrong on purpose);
- ``sharded``: data-parallel over 4 CPU devices (B not divisible by 4);
- ``fast_vs_vmap``, ``norms_vs_vmap``: the one-backward-pass recipes against vmap;
- ``b_simple_vs_direct``: the noise scale from norms against per-example gradients;
- ``single_output_vs_true`` (Q2): seed 000's mistaken chain rule against the true gradient;
- ``true_vs_finite_difference`` (float64 only): central differences on a subset of weights.

Usage: ``python -m experiments.equivalence`` (``make equivalence``); about a minute.
"""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mbstudy as mb  # noqa: E402
from mbstudy.trees import flatten, relative_error  # noqa: E402
from experiments.engine import provenance, run_writer, store  # noqa: E402

SETTINGS = {
    "seed000_teacher_128-64-10_mse": ("teacher", (128, 64, 10), "tanh", 32),
    "seed001_teacher_5-16-16-3_mse": ("teacher_5x3", (5, 16, 16, 3), "tanh", 32),
    "mnist1d_40-100-100-10_ce": ("mnist1d", (40, 100, 100, 10), "tanh", 37),
}


def measure(dataset: str, sizes, activation: str, B: int, dtype) -> dict[str, float]:
    """Every identity's relative error for one setting and precision."""
    data = mb.load_dataset(dataset)
    model = mb.MLP(sizes, activation)
    loss = data.loss_name
    params = model.init(jax.random.key(0), dtype=dtype)
    x = jnp.asarray(data.x_train[:B], dtype)
    y = jnp.asarray(data.y_train[:B], dtype if loss == "mse" else jnp.int32)
    args = (model, loss, params, x, y)

    g_mean = mb.batch_grad(*args, "mean")
    g_sum = mb.batch_grad(*args, "sum")
    per = mb.per_sample_grads(*args)
    err = {
        "per_sample_mean_vs_batch": relative_error(jax.tree.map(lambda t: t.mean(0), per), g_mean),
        "sum_vs_B_mean": relative_error(g_sum, jax.tree.map(lambda t: B * t, g_mean)),
        "accumulated_equal": relative_error(mb.accumulated_grad(*args, micro_batch_size=max(B // 4, 1)), g_mean)
        if B % 4 == 0 else np.nan,
        "accumulated_unequal": relative_error(mb.accumulated_grad(*args, micro_batch_size=7), g_mean),
        "accumulated_unequal_sum": relative_error(mb.accumulated_grad(*args, micro_batch_size=7, reduction="sum"), g_sum),
        "accumulated_equal_weights_mistake": relative_error(
            mb.accumulated_grad(*args, micro_batch_size=B - 1, equal_weights=True), g_mean),
        "sharded": relative_error(mb.sharded_grad(*args[:3], x[: B - 1], y[: B - 1]), mb.batch_grad(*args[:3], x[: B - 1], y[: B - 1])),
        "fast_vs_vmap": relative_error(mb.per_sample_grads_fast(*args), per, batch_axis=True),
        "norms_vs_vmap": float(np.max(np.abs(np.asarray(mb.per_sample_grad_norms(*args), np.float64)
                                             - np.linalg.norm(flatten(per, True), axis=1))
                                      / np.linalg.norm(flatten(per, True), axis=1))),
        "single_output_vs_true": relative_error(mb.single_output_grad(*args), g_mean),
    }
    P = flatten(per, True)
    gbar = P.mean(0)
    tr = np.sum((P - gbar) ** 2) / (B - 1)
    direct = tr / (gbar @ gbar - tr / B)
    err["b_simple_vs_direct"] = abs(float(mb.grad_noise_stats(*args).b_simple) - direct) / abs(direct)
    if dtype == jnp.float64:
        err["true_vs_finite_difference"] = _finite_difference_error(model, loss, params, x, y, g_mean)
    err = {k: v for k, v in err.items() if np.isfinite(v)}
    return err


def _finite_difference_error(model, loss, params, x, y, g_mean, n: int = 40, h: float = 1e-6) -> float:
    """Central differences on n weights of the first layer (float64)."""
    def L(p):
        return float(jnp.mean(mb.LOSSES[loss](model.apply(p, x), y)))

    w = np.asarray(params[0]["w"])
    rng = np.random.default_rng(0)
    idx = [tuple(rng.integers(0, s) for s in w.shape) for _ in range(n)]
    fd, true = [], []
    for i in idx:
        plus, minus = w.copy(), w.copy()
        plus[i] += h
        minus[i] -= h
        fd.append((L([{**params[0], "w": jnp.asarray(plus)}, *params[1:]]) -
                   L([{**params[0], "w": jnp.asarray(minus)}, *params[1:]])) / (2 * h))
        true.append(float(g_mean[0]["w"][i]))
    fd, true = np.array(fd), np.array(true)
    return float(np.linalg.norm(fd - true) / np.linalg.norm(true))


def main(argv=None) -> int:
    from experiments.engine.cli import no_options

    no_options("python -m experiments.equivalence", __doc__, argv)
    exp = store.get_or_create_experiment("equivalence", __doc__.split("\n\n")[0])
    prov = provenance.provenance()
    for name, (dataset, sizes, act, B) in SETTINGS.items():
        for dtype_name, dtype in (("float32", jnp.float32), ("float64", jnp.float64)):
            with jax.enable_x64(dtype == jnp.float64):
                err = measure(dataset, sizes, act, B, dtype)
            params = {"setting": name, "dataset": dataset, "sizes": ",".join(map(str, sizes)),
                      "activation": act, "batch_size": B, "dtype": dtype_name, "n_devices": len(jax.devices())}
            run_writer.write_run(exp, name=f"{name}-{dtype_name}", params=params, timestamp=0,
                               tags={"mbstudy.kind": "equivalence", **prov, "mbstudy.setting": name},
                               metrics={f"err/{k}": v for k, v in err.items()})
            print(f"{name:34s} {dtype_name}: " + ", ".join(f"{k}={v:.1e}" for k, v in err.items()), flush=True)
    print(f"logged to {store.tracking_uri()}, experiment 'equivalence'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
