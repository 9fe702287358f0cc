"""A small decoder-only transformer, written for ONE sequence, from layers in the style of :mod:`mbstudy.layers`.

One example is a sequence of ``T`` token ids ``x: (T,)`` (carried as floats, as
every input of the library is: exact up to 2^24); the outputs are the logits
``(T, vocab)`` of the next token at every position, and the per-example loss
is their cross-entropy averaged over the positions
(:func:`mbstudy.losses.token_cross_entropy`). Any leading axes of ``x`` are
batch axes.

The architecture (GPT-2's, pre-LayerNorm; Radford et al. 2019), as a
:class:`~mbstudy.model.Network`::

    Embedding -> PositionEmbedding
    -> [ Residual(LayerNorm -> Dense d->3d (q, k, v) -> CausalSelfAttention -> Dense d->d (o))
         Residual(LayerNorm -> Dense d->r d -> ReLU -> Dense r d->d) ] x n_blocks
    -> LayerNorm -> Dense d->vocab

with every dense layer a :class:`PositionwiseDense` (the same weights at every
position). Each parametrised layer gets one entry of the params list, in that
order, and a per-example rule (:mod:`mbstudy.per_example_seq`): the one
backward pass of :func:`mbstudy.per_example.layer_inputs_and_deltas` gives
every layer's input and output gradient, from which each example's gradient,
its norm and the noise statistics follow as for the MLP.

>>> import jax
>>> from mbstudy.transformer import Transformer
>>> net = Transformer()
>>> net.num_params, net.input_shape, net.n_outputs
(22112, (32,), 128)
>>> params = net.init(jax.random.key(0))
>>> net.apply(params, jax.numpy.zeros((4, 32))).shape
(4, 32, 128)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mbstudy.layers import Activation, Dense, Residual, _shape
from mbstudy.model import Network

__all__ = ["CausalSelfAttention", "Embedding", "LayerNorm", "PositionEmbedding", "PositionwiseDense", "Transformer"]


def _check_dict(params: Any, index: int, want: dict[str, tuple[int, ...]]) -> str | None:
    if not isinstance(params, dict) or set(params) != set(want):
        return f"params[{index}]: expected a dict with keys {sorted(want)}; received {params!r:.80}"
    got = {k: _shape(params[k]) for k in want}
    if got != want:
        return f"params[{index}]: expected shapes {want}; received {got}"
    return None


@dataclasses.dataclass(frozen=True)
class Embedding:
    """Token embedding: ids ``x: (T,)`` to ``z: (T, d)``, ``z_t = W[x_t]`` with ``W: (vocab, d)``.

    Chain rule, for one sequence: ``dL/dW[v] = sum_{t: x_t = v} delta_t``, the
    deltas scatter-added at the ids (rows of tokens that do not occur get
    zero); the ids are discrete, so nothing flows back to ``x``. Weights start
    at N(0, std^2).
    """

    vocab: int
    d: int
    std: float = 1.0

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        return {"w": jax.random.normal(key, (self.vocab, self.d), dtype) * jnp.asarray(self.std, dtype)}

    def apply(self, params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
        return params["w"][x.astype(jnp.int32)]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape, self.d)

    def num_params(self) -> int:
        return self.vocab * self.d

    def check_params(self, params: Any, index: int) -> str | None:
        return _check_dict(params, index, {"w": (self.vocab, self.d)})


@dataclasses.dataclass(frozen=True)
class PositionEmbedding:
    """``z_t = a_t + P_t`` for ``a: (T, d)``, ``P: (T, d)`` one learned vector per position.

    Chain rule, for one sequence: ``dL/dP = delta`` (row t is ``delta_t``: each
    position has its own parameters, so nothing is summed over positions;
    over a batch, the examples' deltas add up); ``dL/da = delta``. Starts at N(0, std^2).
    """

    context: int
    d: int
    std: float = 1.0

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        return {"w": jax.random.normal(key, (self.context, self.d), dtype) * jnp.asarray(self.std, dtype)}

    def apply(self, params: dict[str, jax.Array], a: jax.Array) -> jax.Array:
        return a + params["w"]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if tuple(input_shape[-2:]) != (self.context, self.d):
            raise ValueError(f"PositionEmbedding({self.context}, {self.d}): expected inputs (..., {self.context}, "
                             f"{self.d}); received {tuple(input_shape)}")
        return tuple(input_shape)

    def num_params(self) -> int:
        return self.context * self.d

    def check_params(self, params: Any, index: int) -> str | None:
        return _check_dict(params, index, {"w": (self.context, self.d)})


def normalise(a: jax.Array, eps: float) -> jax.Array:
    """``(a - mean(a)) / sqrt(var(a) + eps)`` over the last axis: LayerNorm's ``n``, shared with its rule."""
    mu = jnp.mean(a, axis=-1, keepdims=True)
    c = a - mu
    return c * jax.lax.rsqrt(jnp.mean(c * c, axis=-1, keepdims=True) + eps)


@dataclasses.dataclass(frozen=True)
class LayerNorm:
    """``z = g * n + b`` with ``n = (a - mean(a)) / sqrt(var(a) + eps)`` over the last axis (Ba et al. 2016).

    Chain rule, at one position with ``delta = dL/dz``: ``dL/dg = n * delta``,
    ``dL/db = delta``, and with ``h = g * delta``,
    ``dL/da = (h - mean(h) - n mean(h * n)) / sqrt(var(a) + eps)``. Applied at
    every position of a sequence, the parameter gradients are those sums over
    positions: ``sum_t n_t * delta_t`` and ``sum_t delta_t``. Starts at g = 1, b = 0.
    """

    d: int
    eps: float = 1e-5

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        return {"g": jnp.ones((self.d,), dtype), "b": jnp.zeros((self.d,), dtype)}

    def apply(self, params: dict[str, jax.Array], a: jax.Array) -> jax.Array:
        return normalise(a, self.eps) * params["g"] + params["b"]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def num_params(self) -> int:
        return 2 * self.d

    def check_params(self, params: Any, index: int) -> str | None:
        return _check_dict(params, index, {"g": (self.d,), "b": (self.d,)})


@dataclasses.dataclass(frozen=True)
class PositionwiseDense(Dense):
    """A :class:`~mbstudy.layers.Dense` layer applied at every position: ``z_t = a_t W + b`` for ``a: (T, n_in)``.

    Chain rule, for one sequence: ``dL/dW = sum_t a_t (outer) delta_t``,
    ``dL/db = sum_t delta_t``, ``dL/da_t = W delta_t``; a convolution of kernel
    1. Its own type (same parameters, same initialisation) so that its
    per-example rule sums over positions (:mod:`mbstudy.per_example_seq`).
    The positions (and any batch axes) are flattened into one axis of rows
    for the matmul: XLA's CPU backend then computes the weight gradient
    ``a^T delta`` as one matrix product over all rows, which at B = 128
    sequences of 32 made a training step about 1.4x faster than the
    broadcasting ``a @ W``.
    """

    def apply(self, params: dict[str, jax.Array], a: jax.Array) -> jax.Array:
        rows = a.reshape(-1, a.shape[-1]) @ params["w"] + params["b"]
        return rows.reshape(*a.shape[:-1], self.n_out)


@dataclasses.dataclass(frozen=True)
class CausalSelfAttention:
    """Causal multi-head self-attention of one sequence, ``u: (T, 3d)`` (queries, keys, values) to ``o: (T, d)``.

    No parameters: the projections before and after it are :class:`PositionwiseDense`
    layers (``d -> 3d`` for q, k, v and ``d -> d`` for the output). Head j
    takes columns ``j dh : (j+1) dh`` (``dh = d / n_heads``) of each of q, k, v;
    ``S = q k^T / sqrt(dh)``, ``A = softmax(S)`` over the keys ``s <= t``
    (later keys get weight 0), ``o = A v``, the heads' outputs side by side.

    Chain rule, per head, with ``delta = dL/do``: ``dL/dv = A^T delta``,
    ``dL/dA = delta v^T``, ``dL/dS = A * (dL/dA - rowsum(A * dL/dA))``,
    ``dL/dq = dL/dS k / sqrt(dh)``, ``dL/dk = (dL/dS)^T q / sqrt(dh)``; the
    masked entries have ``A = 0`` and pass nothing back.
    """

    d: int
    n_heads: int

    def init(self, key: jax.Array, dtype: Any) -> None:
        return None

    def apply(self, params: None, u: jax.Array) -> jax.Array:
        *batch, T, _ = u.shape
        dh = self.d // self.n_heads
        q, k, v = (t.reshape(*batch, T, self.n_heads, dh) for t in jnp.split(u, 3, axis=-1))
        s = jnp.einsum("...thc,...shc->...hts", q, k) / jnp.sqrt(jnp.asarray(dh, u.dtype))
        causal = jnp.tril(jnp.ones((T, T), bool))
        a = jax.nn.softmax(jnp.where(causal, s, -jnp.inf), axis=-1)
        return jnp.einsum("...hts,...shc->...thc", a, v).reshape(*batch, T, self.d)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        if input_shape[-1] != 3 * self.d:
            raise ValueError(f"CausalSelfAttention(d={self.d}): expected inputs (..., T, {3 * self.d}) "
                             f"(q, k, v side by side); received {tuple(input_shape)}")
        return (*input_shape[:-1], self.d)

    def num_params(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class Transformer(Network):
    """A decoder-only, pre-LayerNorm transformer over a vocabulary of ``vocab`` tokens (see the module docstring).

    Args:
      vocab: number of token ids (outputs per position); 128 for ASCII text.
      context: T, the sequence length (one example is ``(context,)`` token ids).
      d_model: the width of the residual stream; a multiple of ``n_heads``.
      n_heads: attention heads per block.
      n_blocks: transformer blocks.
      mlp_ratio: the MLP's hidden width is ``mlp_ratio * d_model``.

    Initialisation: embeddings N(0, 1); dense layers LeCun, N(0, 1 / n_in)
    (He, N(0, 2 / n_in), before the ReLU); biases zero; LayerNorm gains one.
    """

    vocab: int = 128
    context: int = 32
    d_model: int = 32
    n_heads: int = 4
    n_blocks: int = 1
    mlp_ratio: int = 4

    def __post_init__(self) -> None:
        for name in ("vocab", "context", "d_model", "n_heads", "n_blocks", "mlp_ratio"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Transformer: {name} must be a positive int; received {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"Transformer: d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads}); "
                             f"choose n_heads among {[h for h in range(1, self.d_model + 1) if self.d_model % h == 0]}")

    @property
    def layers(self) -> tuple[Any, ...]:
        d, h = self.d_model, self.d_model * self.mlp_ratio
        block = (
            Residual((LayerNorm(d), PositionwiseDense(d, 3 * d), CausalSelfAttention(d, self.n_heads),
                      PositionwiseDense(d, d))),
            Residual((LayerNorm(d), PositionwiseDense(d, h, 2.0), Activation("relu"), PositionwiseDense(h, d))),
        )
        return (Embedding(self.vocab, d), PositionEmbedding(self.context, d), *block * self.n_blocks,
                LayerNorm(d), PositionwiseDense(d, self.vocab))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.context,)

    @property
    def n_outputs(self) -> int:
        return self.vocab
