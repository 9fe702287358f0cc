"""Per-example losses, and the explicit reduction over the batch.

A loss here is a function of ONE example's outputs ``o: (K,)`` and target.

- ``"mse"``: ``L = (1/K) sum_j (o_j - y_j)^2`` (seed 000), target ``y: (K,)`` real.
  Local chain rule: ``dL/do_j = 2 (o_j - y_j) / K``.
- ``"cross_entropy"``: ``L = logsumexp(o) - o_y``, target ``y`` an int label.
  Local chain rule: ``dL/do = softmax(o) - onehot(y)``.

The batch loss is ``mean_i L_i`` or ``sum_i L_i``; by linearity its gradient
is the mean or sum of the per-example gradients, which is the identity the
study checks.

>>> import jax.numpy as jnp
>>> from mbstudy.losses import LOSSES, reduce
>>> float(LOSSES["mse"](jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0])))
5.0
>>> float(reduce(jnp.array([2.0, 4.0]), "sum")), float(reduce(jnp.array([2.0, 4.0]), "mean"))
(6.0, 3.0)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def mse(out: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over output units of the squared error, for one example."""
    return jnp.mean((out - y) ** 2, axis=-1)


def cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Softmax cross-entropy with an integer label, for one example."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.expand_dims(label, -1).astype(jnp.int32), axis=-1)
    return logz - picked[..., 0]


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}
REDUCTIONS = ("mean", "sum")


def reduce(per_example: jax.Array, reduction: str) -> jax.Array:
    """Reduce per-example losses (or any leading batch axis) by ``"mean"`` or ``"sum"``."""
    if reduction == "mean":
        return jnp.mean(per_example, axis=0)
    if reduction == "sum":
        return jnp.sum(per_example, axis=0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}; received {reduction!r}")
