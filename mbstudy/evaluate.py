"""Evaluation: the metrics of the current parameters, in one compiled program.

Full-set losses (training, or its first ``eval_train`` examples for a large
data set; validation when there is a validation split, or ``eval_val`` of its
examples evenly spaced across it, :func:`validation_rows`; and test), each
loss's extra metrics on the validation and test sets (accuracy for
cross-entropy, next-token accuracy), the gradient-noise statistics of the noise
batch (:mod:`mbstudy.noise`), in total and per parametrised layer
(``grad/layer{i}/...``, from the same pass), and the parameters' norm; the
names are those of :mod:`mbstudy.metrics`.

A forward pass over many examples whose outputs are large (the transformer's
``(T, K)`` logits per window) runs in chunks of rows whose outputs hold at
most :data:`CHUNK_OUTPUTS` numbers, summed and divided by the number of
examples at the end: its intermediates then stay in the CPU's caches (the
text's 2005 validation windows: about 75 ms in chunks of 64 against 430 ms
in one pass, on two cores). Where all the outputs fit (the MLP's and the
CNN's evaluation sets) the program is the one pass it always was, so their
numbers do not move by a bit (tests/test_fingerprint.py).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from mbstudy.losses import LOSSES
from mbstudy.metrics import layer_metric_name
from mbstudy.noise import noise_stats_jit
from mbstudy.trees import sq_norm

CHUNK_OUTPUTS = 1 << 18  # output numbers per chunk of an evaluation's forward pass (1 MiB of float32)


class EvalData(NamedTuple):
    """The arrays an evaluation reads, on the device.

    ``x_noise, y_noise``: the fixed batch of the noise statistics (the first
    ``noise_batch`` training examples); ``finite_population_correction``:
    ``1/B_noise - 1/N``, zero when the noise batch is the whole training set.
    ``x_val, y_val``: the validation split (its ``eval_val`` rows, :func:`validation_rows`), zero rows when there
    is none (then no ``val/`` metric is computed and the programs are those of a data set without one).
    ``x_train, y_train`` are the whole training set (what the training loop draws
    from); ``x_eval, y_eval`` its first ``eval_train`` examples, on which
    ``train/loss`` is measured (the same arrays when that is all of them).
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    x_noise: jax.Array
    y_noise: jax.Array
    finite_population_correction: jax.Array
    x_val: jax.Array
    y_val: jax.Array
    x_eval: jax.Array
    y_eval: jax.Array


def validation_rows(n: int, k: int) -> np.ndarray:
    """The ``k`` of ``n`` validation examples an evaluation reads (``TrainConfig.eval_val``; 0 or ``n``: all):
    ``floor(i n / k)`` for i < k, evenly spaced across the split, from its first example. The text's validation
    windows are consecutive pieces of one block, so the rows sample the whole block rather than its beginning.

    >>> validation_rows(10, 4).tolist(), validation_rows(5, 0).tolist()
    ([0, 2, 5, 7], [0, 1, 2, 3, 4])
    """
    if k == 0 or k == n:
        return np.arange(n)
    if not 0 < k <= n:
        raise ValueError(f"eval_val: expected 0 (all {n} validation examples) or 1..{n}; received {k}")
    return np.arange(k) * n // k


def means(params, x, y, *, model: Any, fns) -> list[jax.Array]:
    """The mean over the examples of ``x`` of each per-example ``fn(outputs, y)`` of ``fns``, from one forward
    pass in chunks of at most :data:`CHUNK_OUTPUTS` output numbers (one pass where they all fit: the same
    program, and the same numbers, as ``jnp.mean(fn(model.apply(params, x), y))``)."""
    n = x.shape[0]
    per_example = math.prod(jax.eval_shape(model.apply, params, x[:1]).shape[1:])
    rows = max(1, CHUNK_OUTPUTS // per_example)
    if n <= rows:
        out = model.apply(params, x)
        return [jnp.mean(fn(out, y)) for fn in fns]

    def sums(xc, yc):  # each fn's sum over a chunk, in its own dtype
        out = model.apply(params, xc)
        return [jnp.sum(fn(out, yc)) for fn in fns]

    k = n // rows
    body = jax.lax.map(lambda c: sums(*c), (x[: k * rows].reshape(k, rows, *x.shape[1:]),
                                            y[: k * rows].reshape(k, rows, *y.shape[1:])))
    rest = sums(x[k * rows:], y[k * rows:]) if n > k * rows else [0] * len(fns)
    return [(jnp.sum(b) + r) / n for b, r in zip(body, rest)]


def _on_split(params, x, y, split: str, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """``<split>/loss`` and the loss's extra metrics (``<split>/<name>``) on one split."""
    loss = LOSSES[loss_name]
    names = ["loss", *loss.metrics]
    values = means(params, x, y, model=model, fns=[loss.fn, *loss.metrics.values()])
    return {f"{split}/{name}": v for name, v in zip(names, values)}


def _validation(params, data: EvalData, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """``val/loss`` and the loss's extra metrics on the validation split; nothing when there is none."""
    if data.x_val.shape[0] == 0:
        return {}
    return _on_split(params, data.x_val, data.y_val, "val", model, loss_name)


def training_loss(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """What targets and divergence read, between full evaluations: the loss on the full training set, and
    the validation metrics when there is a validation split."""
    (train,) = means(params, data.x_eval, data.y_eval, model=model, fns=[LOSSES[loss_name].fn])
    return {"train/loss": train, **_validation(params, data, model, loss_name)}


def evaluate(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """Metrics of the current parameters (see the module docstring)."""
    (train,) = means(params, data.x_eval, data.y_eval, model=model, fns=[LOSSES[loss_name].fn])
    metrics = {"train/loss": train, **_on_split(params, data.x_test, data.y_test, "test", model, loss_name)}
    metrics.update(_validation(params, data, model, loss_name))
    stats, layers = noise_stats_jit(params, data.x_noise, data.y_noise, data.finite_population_correction,
                                    model=model, loss_name=loss_name, per_layer=True)
    metrics["grad/g_norm_sq"] = stats.g_true_sq
    metrics["grad/trace_cov"] = stats.trace_cov
    metrics["grad/b_simple"] = stats.b_simple
    for i in range(layers.g_true_sq.shape[0]):  # parametrised layer i's own statistics
        metrics[layer_metric_name(i, "g_norm_sq")] = layers.g_true_sq[i]
        metrics[layer_metric_name(i, "trace_cov")] = layers.trace_cov[i]
        metrics[layer_metric_name(i, "b_simple")] = layers.b_simple[i]
    metrics["param/norm"] = jnp.sqrt(sq_norm(params))
    return metrics


evaluate_jit = jax.jit(evaluate, static_argnames=("model", "loss_name"))
training_loss_jit = jax.jit(training_loss, static_argnames=("model", "loss_name"))
