"""Evaluation: the metrics of the current parameters, in one compiled program.

Full-set losses (training, or its first ``eval_train`` examples for a large
data set; validation when there is a validation split; and test), each
loss's extra metrics on the validation and test sets (accuracy for
cross-entropy, next-token accuracy), the gradient-noise statistics of the noise
batch (:mod:`mbstudy.noise`), in total and per parametrised layer
(``grad/layer{i}/...``, from the same pass), and the parameters' norm; the
names are those of :mod:`mbstudy.metrics`.
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
    ``x_val, y_val``: the validation split, zero rows when there is none (then no
    ``val/`` metric is computed and the programs are those of a data set without one).
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


def _validation(params, data: EvalData, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """``val/loss`` and the loss's extra metrics on the validation split; nothing when there is none."""
    if data.x_val.shape[0] == 0:
        return {}
    loss = LOSSES[loss_name]
    out = model.apply(params, data.x_val)
    metrics = {"val/loss": jnp.mean(loss(out, data.y_val))}
    for name, metric in loss.metrics.items():
        metrics[f"val/{name}"] = jnp.mean(metric(out, data.y_val))
    return metrics


def training_loss(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """What targets and divergence read, between full evaluations: the loss on the full training set, and
    the validation metrics when there is a validation split."""
    return {"train/loss": jnp.mean(LOSSES[loss_name](model.apply(params, data.x_eval), data.y_eval)),
            **_validation(params, data, model, loss_name)}


def evaluate(params, data: EvalData, *, model: Any, loss_name: str) -> dict[str, jax.Array]:
    """Metrics of the current parameters (see the module docstring)."""
    loss = LOSSES[loss_name]
    out_test = model.apply(params, data.x_test)
    metrics = {
        "train/loss": jnp.mean(loss(model.apply(params, data.x_eval), data.y_eval)),
        "test/loss": jnp.mean(loss(out_test, data.y_test)),
    }
    for name, metric in loss.metrics.items():
        metrics[f"test/{name}"] = jnp.mean(metric(out_test, data.y_test))
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
