"""Per-example rules for the transformer's layers (:mod:`mbstudy.transformer`), one :func:`register_rule` each.

Each rule takes the layer's input ``a`` and output gradient ``d`` of a batch
of sequences, from ONE batched backward pass
(:func:`mbstudy.per_example.layer_inputs_and_deltas`), ``a: (B, T, n_in)``
and ``d: (B, T, n_out)`` (a token embedding's input is the ids ``(B, T)``).
A layer applied at every position shares its parameters across positions, so
example i's gradient is a sum over positions; its squared norm either
materialises that layer's per-example gradient (B x its own parameters, never
the whole model's B x P) or takes the Gram-matrix ("ghost") form

    ||sum_t a_t (outer) d_t||^2 = sum_{t,s} (a_t . a_s)(d_t . d_s),

whichever needs fewer multiply-adds for the layer's shapes (``method="auto"``;
both can be asked for by name, which the tests do).

- :class:`PositionwiseDense`: ``g_i(W) = sum_t a_{i,t} (outer) d_{i,t}``, ``g_i(b) = sum_t d_{i,t}``;
  ghost ``B T^2 (n_in + n_out)`` against per-example ``B T n_in n_out``.
- :class:`Embedding`: ``g_i(W)[v] = sum_{t: x_{i,t} = v} d_{i,t}`` (a scatter-add,
  here a one-hot matmul); ghost ``sum_{t,s} [x_t = x_s] (d_t . d_s)``, ``B T^2 d`` against ``B T vocab d``.
- :class:`PositionEmbedding`: ``g_i(P) = d_i``, row t of P gets position t's delta
  (no sum: each position has its own row); ``||g_i||^2 = sum_t ||d_{i,t}||^2``.
- :class:`LayerNorm`: ``g_i(g) = sum_t n_{i,t} * d_{i,t}`` with ``n`` the normalised
  input (recomputed from ``a``), ``g_i(b) = sum_t d_{i,t}``: B x 2d numbers, materialised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from mbstudy.per_example import PerExampleRule, register_rule
from mbstudy.transformer import Embedding, LayerNorm, PositionEmbedding, PositionwiseDense, normalise
from mbstudy.trees import sq_norm

METHODS = ("auto", "ghost", "per_example")


def _seq(t: jax.Array) -> jax.Array:
    """``(B, ..., n)`` as ``(B, T, n)``: every axis between the batch and the features is a position."""
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _method(method: str, ghost_cost: int, per_example_cost: int) -> str:
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}; received {method!r}")
    if method == "auto":
        return "ghost" if ghost_cost < per_example_cost else "per_example"
    return method


# ----------------------------------------------------------------------- dense at every position


def _dense_grads(layer, a, d):
    a, d = _seq(a), _seq(d)
    return {"w": jnp.einsum("bti,bto->bio", a, d), "b": jnp.sum(d, axis=1)}


def dense_sq_norms(layer: PositionwiseDense, a, d, method: str = "auto") -> jax.Array:
    """``||g_i||^2`` of a :class:`PositionwiseDense` layer's parameters, shape ``(B,)``; see the module docstring."""
    a, d = _seq(a), _seq(d)
    T = a.shape[1]
    method = _method(method, T * T * (layer.n_in + layer.n_out), T * layer.n_in * layer.n_out)
    if method == "ghost":
        w_sq = jnp.sum(jnp.einsum("bti,bsi->bts", a, a) * jnp.einsum("bto,bso->bts", d, d), axis=(1, 2))
    else:
        w_sq = jnp.sum(jnp.einsum("bti,bto->bio", a, d) ** 2, axis=(1, 2))
    db = jnp.sum(d, axis=1)
    return w_sq + jnp.sum(db * db, axis=1)


def _dense_mean_grad_sq_norm(layer, a, d):
    a, d = _seq(a), _seq(d)
    B = a.shape[0]
    return sq_norm(jnp.einsum("bti,bto->io", a, d) / B) + sq_norm(jnp.sum(d, axis=(0, 1)) / B)


register_rule(PositionwiseDense, PerExampleRule(_dense_grads, dense_sq_norms, _dense_mean_grad_sq_norm))


# ----------------------------------------------------------------------- token embedding


def _one_hot(layer: Embedding, a, dtype):
    return jax.nn.one_hot(a.astype(jnp.int32), layer.vocab, dtype=dtype)  # (B, T, vocab)


def _embedding_grads(layer, a, d):
    return {"w": jnp.einsum("btv,btd->bvd", _one_hot(layer, a, d.dtype), d)}


def embedding_sq_norms(layer: Embedding, a, d, method: str = "auto") -> jax.Array:
    """``||g_i||^2`` of an :class:`Embedding`'s table, shape ``(B,)``: the ghost form compares the ids instead
    of the inputs, ``sum_{t,s} [x_t = x_s] (d_t . d_s)``."""
    T = a.shape[1]
    method = _method(method, T * T * layer.d, T * layer.vocab * layer.d)
    if method == "ghost":
        ids = a.astype(jnp.int32)
        same = (ids[:, :, None] == ids[:, None, :]).astype(d.dtype)
        return jnp.sum(same * jnp.einsum("btd,bsd->bts", d, d), axis=(1, 2))
    return jnp.sum(_embedding_grads(layer, a, d)["w"] ** 2, axis=(1, 2))


def _embedding_mean_grad_sq_norm(layer, a, d):
    return sq_norm(jnp.einsum("btv,btd->vd", _one_hot(layer, a, d.dtype), d) / a.shape[0])


register_rule(Embedding, PerExampleRule(_embedding_grads, embedding_sq_norms, _embedding_mean_grad_sq_norm))


# ----------------------------------------------------------------------- position embedding

register_rule(PositionEmbedding, PerExampleRule(
    grads=lambda layer, a, d: {"w": d},
    sq_norms=lambda layer, a, d: jnp.sum(d * d, axis=(1, 2)),
    mean_grad_sq_norm=lambda layer, a, d: sq_norm(jnp.mean(d, axis=0)),
))


# ----------------------------------------------------------------------- layer norm


def _layer_norm_grads(layer, a, d):
    a, d = _seq(a), _seq(d)
    return {"g": jnp.sum(normalise(a, layer.eps) * d, axis=1), "b": jnp.sum(d, axis=1)}


def _layer_norm_sq_norms(layer, a, d):
    g = _layer_norm_grads(layer, a, d)
    return jnp.sum(g["g"] ** 2, axis=1) + jnp.sum(g["b"] ** 2, axis=1)


def _layer_norm_mean_grad_sq_norm(layer, a, d):
    g = _layer_norm_grads(layer, a, d)
    return sq_norm(jax.tree.map(lambda t: jnp.mean(t, axis=0), g))


register_rule(LayerNorm, PerExampleRule(_layer_norm_grads, _layer_norm_sq_norms, _layer_norm_mean_grad_sq_norm))
