"""Every gradient the study compares, jit-compiled.

All functions take ``(model, loss_name, params, x, y, ...)`` with a batch
``x: (B, *model.input_shape)``, check their inputs before tracing (see ``_checks``), and
return pytrees shaped like ``params``; per-example results carry a leading
batch axis ``B``. ``model``, ``loss_name`` and the options are static: a
second call with the same shapes does not recompile.

Notation: ``L_i`` is example i's loss, ``g_i = dL_i/dtheta`` its gradient,
``a_l`` the input of parametrised layer l, ``z_l`` its output and
``delta_l = dL/dz_l``. For one example the local chain rule of a dense layer
``z_l = a_l W_l + b_l`` is ``dL/dW_l = a_l (outer) delta_l`` and
``dL/db_l = delta_l``; each layer type's rule is in :mod:`mbstudy.per_example`.

``model`` is any model of :mod:`mbstudy.model`'s protocol (``init``/``apply``);
the one-backward-pass recipes (:func:`per_sample_grads_fast`,
:func:`per_sample_grad_norms`) also need its layers (a :class:`mbstudy.model.Network`).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from mbstudy import _checks, per_example
from mbstudy.losses import LOSSES, reduce
from mbstudy.model import Params

_STATIC = ("model", "loss_name")
Model = Any  # anything of mbstudy.model's protocol


def _losses(params: Params, x: jax.Array, y: jax.Array, *, model: Model, loss_name: str) -> jax.Array:
    """``L_i`` for one example, or ``(L_1, ..., L_B)`` from one batched forward pass."""
    return LOSSES[loss_name](model.apply(params, x), y)


# --------------------------------------------------------------------------- batch


@functools.partial(jax.jit, static_argnames=_STATIC + ("reduction",))
def _batch_grad(params, x, y, *, model, loss_name, reduction):
    def loss(p):
        return reduce(_losses(p, x, y, model=model, loss_name=loss_name), reduction)

    return jax.grad(loss)(params)


def batch_grad(model: Model, loss_name: str, params: Params, x, y, reduction: str = "mean") -> Params:
    """Gradient of the reduced batch loss: ONE scalar back-propagated.

    ``mean``: ``grad (1/B) sum_i L_i = (1/B) sum_i g_i``;
    ``sum``: ``grad sum_i L_i = sum_i g_i = B * mean``.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, batch_grad, per_sample_grads
    >>> net = MLP((4, 8, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (16, 4)); y = jnp.arange(16) % 3
    >>> g = batch_grad(net, "cross_entropy", params, x, y)
    >>> G = per_sample_grads(net, "cross_entropy", params, x, y)
    >>> bool(jnp.allclose(g[0]["w"], G[0]["w"].mean(axis=0), atol=1e-6))
    True
    """
    x, y = _checks.check_all(model, loss_name, params, x, y, reduction)
    return _batch_grad(params, x, y, model=model, loss_name=loss_name, reduction=reduction)


# ----------------------------------------------------------------- per-example (vmap)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _per_sample_grads(params, x, y, *, model, loss_name):
    g = jax.grad(functools.partial(_losses, model=model, loss_name=loss_name))
    return jax.vmap(g, in_axes=(None, 0, 0))(params, x, y)


def per_sample_grads(model: Model, loss_name: str, params: Params, x, y) -> Params:
    """The reference recipe ``vmap(grad(L_i))``: every ``g_i``, shape ``(B, *param.shape)``.

    It materialises B x P numbers. Under an outer ``jit``, XLA fuses
    ``mean(per_sample_grads(...))`` back into the batch gradient, so measure its
    cost with the per-example tensor returned, not reduced.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, per_sample_grads
    >>> net = MLP((128, 64, 10)); params = net.init(jax.random.key(0))
    >>> x = jnp.ones((32, 128)); y = jnp.zeros((32, 10))
    >>> [g["w"].shape for g in per_sample_grads(net, "mse", params, x, y)]
    [(32, 128, 64), (32, 64, 10)]
    """
    x, y = _checks.check_all(model, loss_name, params, x, y)
    return _per_sample_grads(params, x, y, model=model, loss_name=loss_name)


# ------------------------------------------------- per-example (one backward pass)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _per_sample_grads_fast(params, x, y, *, model, loss_name):
    inputs, deltas = per_example.layer_inputs_and_deltas(model, loss_name, params, x, y)
    return [rule.grads(a, d) for rule, a, d in zip(per_example.rules_for(model), inputs, deltas)]


def per_sample_grads_fast(model: Model, loss_name: str, params: Params, x, y) -> Params:
    """Every ``g_i`` from ONE batched backward pass plus per-layer outer products.

    ``dL_i/dW_l = a_{l,i} (outer) delta_{l,i}`` and ``dL_i/db_l = delta_{l,i}``
    (Goodfellow 2015, arXiv:1510.01799); for a 1-D convolution, with the patches
    ``P_t`` of its input (im2col), ``dL_i/dW = sum_t P_{i,t} (outer) delta_{i,t}`` and
    ``dL_i/db = sum_t delta_{i,t}`` (:mod:`mbstudy.per_example`). The outer products cost the same FLOPs
    as the batch weight gradient; what is extra is writing B x P floats, which
    is the floor that ``make bench`` measures this against.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, per_sample_grads, per_sample_grads_fast
    >>> net = MLP((5, 16, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (32, 5)); y = jnp.zeros((32, 3))
    >>> a = per_sample_grads_fast(net, "mse", params, x, y)
    >>> b = per_sample_grads(net, "mse", params, x, y)
    >>> all(bool(jnp.allclose(u, v, atol=1e-6)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    True
    """
    x, y = _checks.check_all(model, loss_name, params, x, y)
    per_example.rules_for(model)
    return _per_sample_grads_fast(params, x, y, model=model, loss_name=loss_name)


@functools.partial(jax.jit, static_argnames=_STATIC + ("squared",))
def _per_sample_grad_norms(params, x, y, *, model, loss_name, squared):
    inputs, deltas = per_example.layer_inputs_and_deltas(model, loss_name, params, x, y)
    sq = sum(rule.sq_norms(a, d) for rule, a, d in zip(per_example.rules_for(model), inputs, deltas))
    return sq if squared else jnp.sqrt(sq)


def per_sample_grad_norms(model: Model, loss_name: str, params: Params, x, y, *, squared: bool = False) -> jax.Array:
    """``||g_i||`` for every example, shape ``(B,)``, with no B x P tensor.

    For a dense layer ``||a (outer) delta||_F^2 = ||a||^2 ||delta||^2``, and the
    bias adds ``||delta||^2``; so ``||g_i||^2 = sum_l (||a_{l,i}||^2 + 1) ||delta_{l,i}||^2``
    over dense layers. A 1-D convolution uses the ghost norm
    ``sum_{t,s} (P_t . P_s)(delta_t . delta_s)`` or its per-example weight gradient,
    whichever intermediate is smaller (every layer type's formula: :mod:`mbstudy.per_example`).
    ``squared=True`` returns ``||g_i||^2``.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, per_sample_grad_norms, per_sample_grads
    >>> net = MLP((5, 16, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (8, 5)); y = jnp.arange(8) % 3
    >>> n = per_sample_grad_norms(net, "cross_entropy", params, x, y)
    >>> G = per_sample_grads(net, "cross_entropy", params, x, y)
    >>> ref = jnp.sqrt(sum(jnp.sum(g.reshape(8, -1) ** 2, axis=1) for g in jax.tree.leaves(G)))
    >>> n.shape, bool(jnp.allclose(n, ref, rtol=1e-5))
    ((8,), True)
    """
    x, y = _checks.check_all(model, loss_name, params, x, y)
    if not isinstance(squared, bool):
        raise TypeError(f"squared: expected True or False; received {squared!r}")
    per_example.rules_for(model)
    return _per_sample_grad_norms(params, x, y, model=model, loss_name=loss_name, squared=squared)


# ------------------------------------------------------------------ accumulation


@functools.partial(jax.jit, static_argnames=_STATIC + ("reduction", "micro_batch_size", "equal_weights"))
def _accumulated_grad(params, x, y, *, model, loss_name, reduction, micro_batch_size, equal_weights):
    B = x.shape[0]
    k = micro_batch_size
    n_full, rem = divmod(B, k)
    n_micro = n_full + (rem > 0)

    def micro_grad(xm, ym):
        # Equal weights (the mistake): each micro-batch contributes its MEAN.
        # Size weights (correct): each contributes its SUM; divide by B once.
        red = "mean" if equal_weights else "sum"
        return jax.grad(lambda p: reduce(_losses(p, xm, ym, model=model, loss_name=loss_name), red))(params)

    total = jax.tree.map(jnp.zeros_like, params)
    if n_full:
        xs = x[: n_full * k].reshape((n_full, k) + x.shape[1:])
        ys = y[: n_full * k].reshape((n_full, k) + y.shape[1:])

        def body(acc, xy):
            return jax.tree.map(jnp.add, acc, micro_grad(*xy)), None

        total, _ = jax.lax.scan(body, total, (xs, ys))
    if rem:
        total = jax.tree.map(jnp.add, total, micro_grad(x[n_full * k :], y[n_full * k :]))
    if equal_weights:
        return jax.tree.map(lambda t: t / n_micro, total)
    if reduction == "mean":
        return jax.tree.map(lambda t: t / B, total)
    return total


def accumulated_grad(
    model: Model,
    loss_name: str,
    params: Params,
    x,
    y,
    *,
    micro_batch_size: int,
    reduction: str = "mean",
    equal_weights: bool = False,
) -> Params:
    """Gradient accumulation over micro-batches of ``micro_batch_size`` examples.

    The batch is cut into ``ceil(B/k)`` micro-batches in order, the last one
    smaller when k does not divide B. Each micro-batch contributes its SUM
    gradient ``sum_{i in m} g_i``; ``sum`` returns the total, ``mean`` divides
    by B once. This weights each micro-batch mean by its size, which is what
    makes the result equal :func:`batch_grad` for unequal micro-batches.

    ``equal_weights=True`` computes the common mistake instead: the plain
    average of micro-batch MEAN gradients (only with ``reduction="mean"``).
    It is right only when all micro-batches have the same size.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, accumulated_grad, batch_grad
    >>> net = MLP((4, 8, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (10, 4)); y = jnp.arange(10) % 3
    >>> a = accumulated_grad(net, "cross_entropy", params, x, y, micro_batch_size=4)
    >>> b = batch_grad(net, "cross_entropy", params, x, y)
    >>> bool(jnp.allclose(a[0]["w"], b[0]["w"], atol=1e-6))
    True
    """
    x, y = _checks.check_all(model, loss_name, params, x, y, reduction)
    _checks.check_positive_int("micro_batch_size", micro_batch_size)
    if not isinstance(equal_weights, bool):
        raise TypeError(f"equal_weights: expected True or False; received {equal_weights!r}")
    if equal_weights and reduction != "mean":
        raise ValueError(
            "equal_weights: the equal-weight average of micro-batch means is defined for "
            f"reduction='mean' only; received reduction={reduction!r}. Use equal_weights=False."
        )
    return _accumulated_grad(
        params, x, y, model=model, loss_name=loss_name, reduction=reduction,
        micro_batch_size=int(micro_batch_size), equal_weights=equal_weights,
    )


# ------------------------------------------------------- seed 000's mistaken rule


@functools.partial(jax.jit, static_argnames=_STATIC + ("reduction", "output_index"))
def _single_output_grad(params, x, y, *, model, loss_name, reduction, output_index):
    out, vjp = jax.vjp(lambda p: model.apply(p, x), params)
    dL_do = jax.grad(lambda o: reduce(LOSSES[loss_name](o, y), reduction))(out)
    only = jnp.zeros_like(dL_do).at[output_index].set(dL_do[output_index])
    return vjp(only)[0]


def single_output_grad(
    model: Model,
    loss_name: str,
    params: Params,
    x,
    y,
    reduction: str = "mean",
    *,
    output_index: tuple[int, int] = (0, 0),
) -> Params:
    """Seed 000's MISTAKEN chain rule: only output ``o_{11}`` contributes.

    The batch loss depends on every output ``o_{ij}``, so the chain rule sums
    over all of them: ``dL/dw = sum_{i,j} dL/do_{ij} * do_{ij}/dw``. Keeping
    only the term of ``output_index = (i, j)`` (default example 1, output 1,
    i.e. ``(0, 0)``) gives ``dL/do_{ij} * do_{ij}/dw``, which this returns so the
    study can set it beside the true gradient and finite differences.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, batch_grad, single_output_grad
    >>> net = MLP((128, 64, 10)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (8, 128)); y = jnp.zeros((8, 10))
    >>> wrong = single_output_grad(net, "mse", params, x, y)
    >>> right = batch_grad(net, "mse", params, x, y)
    >>> bool(jnp.linalg.norm(wrong[0]["w"] - right[0]["w"]) > 0.5 * jnp.linalg.norm(right[0]["w"]))
    True
    """
    x, y = _checks.check_all(model, loss_name, params, x, y, reduction)
    idx = tuple(output_index) if isinstance(output_index, (tuple, list)) else None
    if (
        idx is None or len(idx) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in idx)
        or not (0 <= idx[0] < x.shape[0] and 0 <= idx[1] < model.n_outputs)
    ):
        raise ValueError(
            f"output_index: expected (example, output) with 0 <= example < {x.shape[0]} and "
            f"0 <= output < {model.n_outputs}; received {output_index!r}"
        )
    return _single_output_grad(
        params, x, y, model=model, loss_name=loss_name, reduction=reduction, output_index=idx
    )
