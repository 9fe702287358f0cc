"""Layers, each written for ONE example, from which models are composed.

A layer is a small frozen dataclass with

- ``init(key, dtype) -> params`` (``None`` for a layer without parameters),
- ``apply(params, x) -> y``: ``x`` is one example; any leading axes are batch
  axes and pass through unchanged (a dense layer is a matmul, which broadcasts),
- ``output_shape(input_shape) -> shape`` for one example,
- for a parametrised layer, ``check_params(params, index) -> message or None``.

Each docstring states the layer's local chain rule: with ``delta = dL/dy``
the gradient of its output, what ``dL/dparams`` and ``dL/dx`` are. The
per-example gradient recipes (:mod:`mbstudy.per_example`) need, for each
parametrised layer, its input ``a`` and the gradient ``delta`` of its output,
which :meth:`mbstudy.model.Network.forward` provides.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


def _shape(a: Any) -> tuple[int, ...] | None:
    return tuple(a.shape) if hasattr(a, "shape") else None


@dataclasses.dataclass(frozen=True)
class Dense:
    """``z = a W + b`` with ``W: (n_in, n_out)``, ``b: (n_out,)``.

    Chain rule, for one example: ``dL/dW = a (outer) delta``, ``dL/db = delta``,
    ``dL/da = W delta``. Weights start at N(0, gain / n_in) (gain 1: LeCun,
    2: He), biases at zero.
    """

    n_in: int
    n_out: int
    gain: float = 1.0

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        w = jax.random.normal(key, (self.n_in, self.n_out), dtype) * jnp.sqrt(self.gain / self.n_in).astype(dtype)
        return {"w": w, "b": jnp.zeros((self.n_out,), dtype)}

    def apply(self, params: dict[str, jax.Array], a: jax.Array) -> jax.Array:
        return a @ params["w"] + params["b"]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:-1], self.n_out)

    def num_params(self) -> int:
        return self.n_in * self.n_out + self.n_out

    def check_params(self, params: Any, index: int) -> str | None:
        if not isinstance(params, dict) or set(params) != {"w", "b"}:
            return f"params[{index}]: expected a dict with keys 'w' and 'b'; received {params!r:.80}"
        if _shape(params["w"]) != (self.n_in, self.n_out) or _shape(params["b"]) != (self.n_out,):
            return (f"params[{index}]: expected w {(self.n_in, self.n_out)} and b {(self.n_out,)}; "
                    f"received w {_shape(params['w'])} and b {_shape(params['b'])}")
        return None


@dataclasses.dataclass(frozen=True)
class Activation:
    """``y = act(z)`` elementwise, no parameters. Chain rule: ``dL/dz = act'(z) * delta``."""

    name: str

    def init(self, key: jax.Array, dtype: Any) -> None:
        return None

    def apply(self, params: None, z: jax.Array) -> jax.Array:
        return ACTIVATIONS[self.name](z)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return input_shape

    def num_params(self) -> int:
        return 0
