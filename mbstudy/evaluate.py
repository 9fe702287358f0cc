"""Evaluation: the metrics of the current parameters, in one compiled program.

Full-set losses (training and test), each loss's extra test metrics
(accuracy for cross-entropy), the gradient-noise statistics of the noise
batch (:mod:`mbstudy.noise`) and the parameters' norm; the names are those of
:mod:`mbstudy.metrics`. The same statistics per parametrised layer
(``grad/layer{i}/...``) come from a second compiled program,
:func:`evaluate_layers`: returned by the first, they changed how XLA fuses it
and with that the last bits of the float32 totals, which must stay as they
were recorded (``tests/test_fingerprint.py``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mbstudy.losses import LOSSES
from mbstudy.metrics import layer_metric_name
from mbstudy.noise import noise_stats_jit
from mbstudy.trees import sq_norm


class EvalData(NamedTuple):
    """The arrays an evaluation reads, on the device.

    ``x_noise, y_noise``: the fixed batch of the noise statistics (the first
    ``noise_batch`` training examples); ``finite_population_correction``:
    ``1/B_noise - 1/N``, zero when the noise batch is the whole training set.
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    x_noise: jax.Array
    y_noise: jax.Array
    finite_population_correction: jax.Array


def evaluate(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """Metrics of the current parameters (see the module docstring)."""
    loss = LOSSES[loss_name]
    out_test = model.apply(params, data.x_test)
    metrics = {
        "train/loss": jnp.mean(loss(model.apply(params, data.x_train), data.y_train)),
        "test/loss": jnp.mean(loss(out_test, data.y_test)),
    }
    for name, metric in loss.metrics.items():
        metrics[f"test/{name}"] = jnp.mean(metric(out_test, data.y_test))
    stats = noise_stats_jit(params, data.x_noise, data.y_noise, data.finite_population_correction,
                         model=model, loss_name=loss_name)
    metrics["grad/g_norm_sq"] = stats.g_true_sq
    metrics["grad/trace_cov"] = stats.trace_cov
    metrics["grad/b_simple"] = stats.b_simple
    metrics["param/norm"] = jnp.sqrt(sq_norm(params))
    return metrics


evaluate_jit = jax.jit(evaluate, static_argnames=("model", "loss_name"))


def evaluate_layers(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """Per-layer noise statistics of the noise batch (one pass: :func:`mbstudy.noise.noise_stats`),
    as ``grad/layer{i}/g_norm_sq`` (the unbiased ``||G_l||^2``), ``grad/layer{i}/trace_cov``, ``grad/layer{i}/b_simple``."""
    _, layers = noise_stats_jit(params, data.x_noise, data.y_noise, data.finite_population_correction,
                                model=model, loss_name=loss_name, per_layer=True)
    metrics = {}
    for i in range(layers.g_true_sq.shape[0]):
        metrics[layer_metric_name(i, "g_norm_sq")] = layers.g_true_sq[i]
        metrics[layer_metric_name(i, "trace_cov")] = layers.trace_cov[i]
        metrics[layer_metric_name(i, "b_simple")] = layers.b_simple[i]
    return metrics


evaluate_layers_jit = jax.jit(evaluate_layers, static_argnames=("model", "loss_name"))
