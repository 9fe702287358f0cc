"""Per-example gradient rules, one per layer type, from ONE batched backward pass.

For a parametrised layer with input ``a`` and output gradient ``delta``
(both with a leading batch axis B, from :func:`layer_inputs_and_deltas`), a
rule says how to get (each function is registered as ``f(layer, a, d)``, the
layer instance first, and the engine calls it bound to its layer, as ``f(a, d)``)

- ``grads(a, d)``: every example's gradient of the layer's parameters (a leading B axis);
- ``sq_norms(a, d)``: ``||g_i||^2`` of the layer's parameters, shape ``(B,)``,
  without building the B x P tensor;
- ``mean_grad_sq_norm(a, d)``: ``||(1/B) sum_i g_i||^2`` of the layer's parameters.

The engine (:mod:`mbstudy.grads`, :mod:`mbstudy.noise`) looks a layer's
rule up by its type and never branches on a layer; a layer without a rule
fails with a message that names it (Opacus's ``grad_sample`` registry works
the same way). Adding a layer type to the fast recipes is one
:func:`register_rule` call. Rules exist here for :class:`~mbstudy.layers.Dense`
and :class:`~mbstudy.layers.Conv1D`, and in :mod:`mbstudy.per_example_seq` for
the transformer's layers (embeddings, LayerNorm, dense at every position).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mbstudy.layers import Conv1D, Dense, conv_patches
from mbstudy.losses import LOSSES
from mbstudy.trees import sq_norm


@dataclasses.dataclass(frozen=True)
class PerExampleRule:
    """A layer type's recipes; each function takes ``(layer, a, d)``, the layer instance first
    (a convolution's kernel, stride and padding). :func:`rules_for` binds them to a model's layers,
    so the engine calls ``rule.grads(a, d)``."""

    grads: Callable[[Any, jax.Array, jax.Array], Any]
    sq_norms: Callable[[Any, jax.Array, jax.Array], jax.Array]
    mean_grad_sq_norm: Callable[[Any, jax.Array, jax.Array], jax.Array]

    def bind(self, layer: Any) -> PerExampleRule:
        """The rule with ``layer`` filled in: functions of ``(a, d)``."""
        return PerExampleRule(*(functools.partial(f, layer) for f in (self.grads, self.sq_norms, self.mean_grad_sq_norm)))


RULES: dict[type, PerExampleRule] = {}


def register_rule(layer_type: type, rule: PerExampleRule) -> PerExampleRule:
    """Use ``rule`` for every layer of ``layer_type``; returns it."""
    if layer_type in RULES:  # replacing a rule would change the numbers of every model with such a layer
        raise ValueError(f"register_rule: {layer_type.__name__} has a rule already")
    RULES[layer_type] = rule
    return rule


# Dense: g_i = (a_i outer delta_i, delta_i) (Goodfellow 2015, arXiv:1510.01799), and
# ||a outer delta||_F^2 = ||a||^2 ||delta||^2, so ||g_i||^2 = (||a_i||^2 + 1) ||delta_i||^2.
register_rule(Dense, PerExampleRule(
    grads=lambda layer, a, d: {"w": jnp.einsum("bi,bo->bio", a, d), "b": d},
    sq_norms=lambda layer, a, d: (jnp.sum(a * a, axis=1) + 1.0) * jnp.sum(d * d, axis=1),
    mean_grad_sq_norm=lambda layer, a, d: sq_norm(a.T @ d / a.shape[0]) + sq_norm(jnp.mean(d, axis=0)),
))


# Conv1D: a dense layer per output position t sharing its weights, on the patches of
# layers.conv_patches (a: (B, L, c_in) -> P: (B, T, K), K = kernel * c_in; d: (B, T, c_out)):
#   g_i(W) = sum_t P_{i,t} (outer) d_{i,t}   (K x c_out),   g_i(b) = sum_t d_{i,t}.
def _patches(layer: Conv1D, a: jax.Array) -> jax.Array:
    return conv_patches(a, layer.kernel, layer.stride, layer.padding)


def _conv_grads(layer: Conv1D, a, d):
    gw = jnp.einsum("btk,bto->bko", _patches(layer, a), d)
    return {"w": gw.reshape(d.shape[0], layer.kernel, layer.c_in, layer.c_out), "b": jnp.sum(d, axis=1)}


def conv_sq_norms(layer: Conv1D, a, d, method: str = "auto") -> jax.Array:
    """``||g_i||^2`` of a Conv1D's parameters, shape ``(B,)``, without a B x P tensor for the whole model.

    ``"ghost"`` (ghost clipping, Goodfellow 2015; Li et al. 2022, arXiv:2110.05679):
    ``||sum_t P_t (outer) d_t||_F^2 = sum_{t,s} (P_t . P_s)(d_t . d_s)``, two
    ``T x T`` Gram matrices per example: ``B T^2 (K + c_out)`` flops, ``B T^2`` memory.
    ``"patch"``: each example's ``(K, c_out)`` weight gradient, squared and summed
    at once: ``B T K c_out`` flops, ``B K c_out`` memory (this layer's share of B x P).
    ``"auto"`` takes the ghost norm when ``T^2 < K c_out`` (the smaller intermediate);
    for the MNIST-1D CNN: patch for the first convolution (T = 19, K c_out = 125),
    ghost for the other two (T = 10 and 5, K c_out = 1875). The bias adds ``||sum_t d_t||^2``.
    """
    P = _patches(layer, a)
    T, K = P.shape[-2], P.shape[-1]
    if method == "auto":
        method = "ghost" if T * T < K * layer.c_out else "patch"
    if method == "ghost":
        w_sq = jnp.sum(jnp.einsum("btk,bsk->bts", P, P) * jnp.einsum("bto,bso->bts", d, d), axis=(1, 2))
    elif method == "patch":
        w_sq = jnp.sum(jnp.einsum("btk,bto->bko", P, d) ** 2, axis=(1, 2))
    else:
        raise ValueError(f"method: expected 'auto', 'ghost' or 'patch'; received {method!r}")
    db = jnp.sum(d, axis=1)
    return w_sq + jnp.sum(db * db, axis=1)


def _conv_mean_grad_sq_norm(layer: Conv1D, a, d):
    B = d.shape[0]
    return sq_norm(jnp.einsum("btk,bto->ko", _patches(layer, a), d) / B) + sq_norm(jnp.sum(d, axis=(0, 1)) / B)


register_rule(Conv1D, PerExampleRule(grads=_conv_grads, sq_norms=conv_sq_norms, mean_grad_sq_norm=_conv_mean_grad_sq_norm))


def rules_for(model: Any) -> list[PerExampleRule]:
    """The rule of every parametrised layer of ``model``, in order, bound to its layer; a clear error when one is missing."""
    if not hasattr(model, "forward") or not hasattr(model, "param_layers"):
        raise TypeError(
            f"model: {type(model).__name__} does not expose its layers' inputs and output gradients "
            "(mbstudy.model.Network.forward), which the fast per-example recipes, per-example norms and noise "
            "statistics need; use mbstudy.per_sample_grads (vmap of grad), or build the model from mbstudy.layers")
    missing = [type(layer).__name__ for layer in model.param_layers if type(layer) not in RULES]
    if missing:
        raise TypeError(
            f"model: no per-example rule for the layer type(s) {sorted(set(missing))}; use mbstudy.per_sample_grads "
            "(vmap of grad), which works for any layer, or register a rule with mbstudy.per_example.register_rule")
    return [RULES[type(layer)].bind(layer) for layer in model.param_layers]


def layer_inputs_and_deltas(model, loss_name: str, params, x, y) -> tuple[list[jax.Array], list[jax.Array]]:
    """Layer inputs ``a_l`` and ``delta_l = dL_i/dz_l`` of every parametrised layer, each with a batch axis.

    One batched backward pass of ``sum_i L_i``: since example i's loss depends
    only on row i of ``z_l``, row i of ``d(sum L)/dz_l`` is example i's delta.
    The gradient is taken with respect to a zero added to each ``z_l``.
    """
    dtype = jnp.result_type(x.dtype, *(leaf.dtype for leaf in jax.tree.leaves(params)))
    zeros = [jnp.zeros(shape, dtype) for shape in model.output_shapes(x.shape)]

    def total(perturb):
        out, inputs = model.forward(params, x, perturb)
        return jnp.sum(LOSSES[loss_name](out, y)), inputs

    deltas, inputs = jax.grad(total, has_aux=True)(zeros)
    return inputs, deltas
