"""Per-example losses, one registry entry each, and the explicit reduction over the batch.

A loss here is a function of ONE example's outputs ``o: (K,)`` and target (it
also broadcasts over a leading batch axis).

- ``"mse"``: ``L = (1/K) sum_j (o_j - y_j)^2`` (seed 000), target ``y: (K,)`` real.
  Local chain rule: ``dL/do_j = 2 (o_j - y_j) / K``.
- ``"cross_entropy"``: ``L = logsumexp(o) - o_y``, target ``y`` an int label.
  Local chain rule: ``dL/do = softmax(o) - onehot(y)``.
- ``"token_cross_entropy"``: next-token prediction, for one sequence's logits
  ``o: (T, K)`` and next tokens ``y: (T,)``: ``L = (1/T) sum_t (logsumexp(o_t) - o_{t, y_t})``.
  Local chain rule: ``dL/do_t = (softmax(o_t) - onehot(y_t)) / T``.

The batch loss is ``mean_i L_i`` or ``sum_i L_i``; by linearity its gradient
is the mean or sum of the per-example gradients, which is the identity the
study checks.

Adding a loss is one :func:`register_loss` call: the function, the task it
fits (``"classification"`` or ``"regression"``), the dtype of its targets, and
any extra per-example metrics that evaluation reports on the test set
(cross-entropy's accuracy is one).

>>> import jax.numpy as jnp
>>> from mbstudy.losses import LOSSES, reduce
>>> float(LOSSES["mse"](jnp.array([1.0, 3.0]), jnp.array([0.0, 0.0])))
5.0
>>> float(reduce(jnp.array([2.0, 4.0]), "sum")), float(reduce(jnp.array([2.0, 4.0]), "mean"))
(6.0, 3.0)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp

TASKS = ("classification", "regression", "next_token")


@dataclasses.dataclass(frozen=True)
class Loss:
    """One registered loss.

    fn: ``fn(outputs, target) -> L`` for one example (broadcasting over a batch axis).
    task: the kind of data it fits; a configuration's ``loss="auto"`` picks the
      first registered loss of its data set's task.
    target_dtype: the dtype targets are converted to (``"int32"`` labels, ``"float32"`` values).
    metrics: extra per-example metrics ``m(outputs, target) -> value``, averaged over
      the test set at every evaluation and logged as ``test/<name>`` (best: max).
    val_target: what a configuration's ``target_val`` is compared with: ``"error"``,
      one minus the validation accuracy (``metrics["acc"]``), or ``"loss"``, the
      validation loss; None: the error where the loss has an accuracy, else the loss.
    """

    name: str
    fn: Callable[[jax.Array, jax.Array], jax.Array]
    task: str
    target_dtype: str
    metrics: Mapping[str, Callable[[jax.Array, jax.Array], jax.Array]] = dataclasses.field(default_factory=dict)
    val_target: str | None = None

    def validation_error(self, metrics: Mapping[str, float]) -> float:
        """The number ``target_val`` is compared with, from an evaluation's ``val/`` metrics (see ``val_target``)."""
        on = self.val_target or ("error" if "acc" in self.metrics else "loss")
        return 1.0 - float(metrics["val/acc"]) if on == "error" else float(metrics["val/loss"])

    def __call__(self, out: jax.Array, y: jax.Array) -> jax.Array:
        return self.fn(out, y)


def mse(out: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over output units of the squared error, for one example."""
    return jnp.mean((out - y) ** 2, axis=-1)


def cross_entropy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Softmax cross-entropy with an integer label, for one example."""
    logz = jax.nn.logsumexp(logits, axis=-1)
    picked = jnp.take_along_axis(logits, jnp.expand_dims(label, -1).astype(jnp.int32), axis=-1)
    return logz - picked[..., 0]


def accuracy(logits: jax.Array, label: jax.Array) -> jax.Array:
    """1 where the largest logit is the label's, else 0."""
    return jnp.argmax(logits, axis=-1) == label


def token_cross_entropy(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Next-token cross-entropy of one sequence, ``logits: (T, K)``, ``tokens: (T,)``: averaged over the T positions."""
    return jnp.mean(cross_entropy(logits, tokens), axis=-1)


def token_accuracy(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """The fraction of a sequence's positions whose largest logit is the next token's."""
    return jnp.mean(accuracy(logits, tokens), axis=-1)


LOSSES: dict[str, Loss] = {}
REDUCTIONS = ("mean", "sum")


def register_loss(loss: Loss) -> Loss:
    """Add a loss to :data:`LOSSES` (by its name); returns it."""
    if loss.val_target not in (None, "error", "loss") or (loss.val_target == "error" and "acc" not in loss.metrics):
        raise ValueError(f"Loss {loss.name!r}: val_target must be None, 'loss', or 'error' (with an 'acc' metric); "
                         f"received {loss.val_target!r}")
    if loss.task not in TASKS:
        raise ValueError(f"Loss {loss.name!r}: task must be one of {TASKS}; received {loss.task!r}")
    if loss.name in LOSSES or loss.name == "auto":
        raise ValueError(f"Loss {loss.name!r}: that name is taken; choose another")
    LOSSES[loss.name] = loss
    return loss


register_loss(Loss("mse", mse, task="regression", target_dtype="float32"))
register_loss(Loss("cross_entropy", cross_entropy, task="classification", target_dtype="int32",
                   metrics={"acc": accuracy}))
register_loss(Loss("token_cross_entropy", token_cross_entropy, task="next_token", target_dtype="int32",
                   metrics={"acc": token_accuracy}, val_target="loss"))


def loss_for_task(task: str) -> str:
    """The loss that ``loss="auto"`` picks for a data set of ``task``: the first registered for it."""
    for name, loss in LOSSES.items():
        if loss.task == task:
            return name
    raise ValueError(f"task {task!r}: no registered loss fits it; register one with mbstudy.losses.register_loss")


def reduce(per_example: jax.Array, reduction: str) -> jax.Array:
    """Reduce per-example losses (or any leading batch axis) by ``"mean"`` or ``"sum"``."""
    if reduction == "mean":
        return jnp.mean(per_example, axis=0)
    if reduction == "sum":
        return jnp.sum(per_example, axis=0)
    raise ValueError(f"reduction must be one of {REDUCTIONS}; received {reduction!r}")
