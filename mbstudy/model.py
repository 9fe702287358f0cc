"""The network: a multi-layer perceptron written for ONE example.

A layer computes ``z = a @ W + b`` and, except for the last, ``a' = act(z)``.
Because ``apply`` only uses ``@`` and broadcasting, the same code runs on one
example ``x: (n_in,)`` and on a batch ``x: (B, n_in)``; the gradient recipes in
:mod:`mbstudy.grads` batch the single-example version with ``jax.vmap``.

The description (:class:`MLP`) is a frozen, hashable dataclass, so it can be a
static argument of ``jax.jit``; the parameters are a plain pytree, a list of
``{"w": (n_in, n_out), "b": (n_out,)}`` dicts, one per layer.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Params = list[dict[str, jax.Array]]

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class MLP:
    """A fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    The last layer is linear (it returns logits or regression outputs).
    Weights are drawn from N(0, gain / fan_in) with gain 1 for tanh (LeCun)
    and 2 for relu (He); biases start at zero.

    Args:
      sizes: layer widths, input first, output last; at least two entries.
      activation: ``"tanh"`` or ``"relu"``, applied after every hidden layer.

    Example (seed 000's 128-64-10 net, and seed 001's 5-h-3 net):

    >>> import jax
    >>> from mbstudy import MLP
    >>> net = MLP((128, 64, 10))
    >>> params = net.init(jax.random.key(0))
    >>> [p["w"].shape for p in params]
    [(128, 64), (64, 10)]
    >>> net.num_params
    8906
    >>> MLP((5, 16, 16, 3), activation="relu").apply(
    ...     MLP((5, 16, 16, 3), activation="relu").init(jax.random.key(1)),
    ...     jax.numpy.ones((32, 5))).shape
    (32, 3)
    """

    sizes: tuple[int, ...]
    activation: str = "tanh"

    def __post_init__(self) -> None:
        sizes = self.sizes
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(
                f"MLP: sizes must be a sequence of layer widths such as (40, 100, 10); "
                f"received {sizes!r}"
            )
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"MLP: sizes needs at least an input and an output width, e.g. (128, 10); "
                f"received {sizes!r}"
            )
        for s in sizes:
            if isinstance(s, bool) or not isinstance(s, int) or s <= 0:
                raise ValueError(
                    f"MLP: every layer width must be a positive int; received {sizes!r}"
                )
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"MLP: activation must be one of {sorted(ACTIVATIONS)}; "
                f"received {self.activation!r}"
            )
        object.__setattr__(self, "sizes", sizes)

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]

    @property
    def num_params(self) -> int:
        """P, the number of scalar parameters (weights and biases)."""
        return sum(i * o + o for i, o in zip(self.sizes[:-1], self.sizes[1:]))

    def init(self, key: jax.Array, *, dtype: Any = None) -> Params:
        """Draw initial parameters from a PRNG key (``jax.random.key`` or ``PRNGKey``).

        ``dtype`` defaults to JAX's default float type (float32, or float64
        when ``jax_enable_x64`` is on).
        """
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"MLP.init: dtype must be a float type; received {dtype}")
        gain = 2.0 if self.activation == "relu" else 1.0
        keys = jax.random.split(key, len(self.sizes) - 1)
        params = []
        for k, n_in, n_out in zip(keys, self.sizes[:-1], self.sizes[1:]):
            w = jax.random.normal(k, (n_in, n_out), dtype) * jnp.sqrt(gain / n_in).astype(dtype)
            params.append({"w": w, "b": jnp.zeros((n_out,), dtype)})
        return params

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """Outputs for one example ``x: (n_in,)`` or a batch ``x: (B, n_in)``."""
        return self.forward(params, x)[0]

    def forward(
        self, params: Params, x: jax.Array, perturb: list[jax.Array] | None = None
    ) -> tuple[jax.Array, list[jax.Array]]:
        """Outputs, and the input ``a_l`` of every layer.

        ``perturb`` (one array per layer, shaped like that layer's
        pre-activation) is added to each ``z_l``. It is always zero in use:
        its gradient is ``delta_l = dL/dz_l``, the quantity that
        :func:`mbstudy.per_sample_grads_fast` needs from one backward pass.
        """
        act = ACTIVATIONS[self.activation]
        inputs = []
        a = x
        last = len(params) - 1
        for l, layer in enumerate(params):
            inputs.append(a)
            z = a @ layer["w"] + layer["b"]
            if perturb is not None:
                z = z + perturb[l]
            a = z if l == last else act(z)
        return a, inputs
