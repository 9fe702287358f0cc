"""Per-example gradient rules, one per layer type, from ONE batched backward pass.

For a parametrised layer with input ``a`` and output gradient ``delta``
(both with a leading batch axis B, from :func:`layer_inputs_and_deltas`), a
rule says how to get

- ``grads(a, d)``: every example's gradient of the layer's parameters (a leading B axis);
- ``sq_norms(a, d)``: ``||g_i||^2`` of the layer's parameters, shape ``(B,)``,
  without building the B x P tensor;
- ``mean_grad_sq_norm(a, d)``: ``||(1/B) sum_i g_i||^2`` of the layer's parameters.

The engine (:mod:`mbstudy.grads`, :mod:`mbstudy.noise`) looks a layer's
rule up by its type and never branches on a layer; a layer without a rule
fails with a message that names it (Opacus's ``grad_sample`` registry works
the same way). Adding a layer type to the fast recipes is one
:func:`register_rule` call.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from mbstudy.layers import Dense
from mbstudy.losses import LOSSES
from mbstudy.trees import sq_norm


@dataclasses.dataclass(frozen=True)
class PerExampleRule:
    grads: Callable[[jax.Array, jax.Array], Any]
    sq_norms: Callable[[jax.Array, jax.Array], jax.Array]
    mean_grad_sq_norm: Callable[[jax.Array, jax.Array], jax.Array]


RULES: dict[type, PerExampleRule] = {}


def register_rule(layer_type: type, rule: PerExampleRule) -> PerExampleRule:
    """Use ``rule`` for every layer of ``layer_type``; returns it."""
    RULES[layer_type] = rule
    return rule


# Dense: g_i = (a_i outer delta_i, delta_i) (Goodfellow 2015, arXiv:1510.01799), and
# ||a outer delta||_F^2 = ||a||^2 ||delta||^2, so ||g_i||^2 = (||a_i||^2 + 1) ||delta_i||^2.
register_rule(Dense, PerExampleRule(
    grads=lambda a, d: {"w": jnp.einsum("bi,bo->bio", a, d), "b": d},
    sq_norms=lambda a, d: (jnp.sum(a * a, axis=1) + 1.0) * jnp.sum(d * d, axis=1),
    mean_grad_sq_norm=lambda a, d: sq_norm(a.T @ d / a.shape[0]) + sq_norm(jnp.mean(d, axis=0)),
))


def rules_for(model: Any) -> list[PerExampleRule]:
    """The rule of every parametrised layer of ``model``, in order; a clear error when one is missing."""
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
    return [RULES[type(layer)] for layer in model.param_layers]


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
