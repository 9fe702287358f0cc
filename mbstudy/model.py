"""Models: compositions of the layers of :mod:`mbstudy.layers`, written for ONE example.

The protocol every gradient function relies on is small: a model is a frozen,
hashable object (so it can be a static argument of ``jax.jit``) with

- ``init(key, *, dtype=None) -> params`` and ``apply(params, x) -> outputs``,
  where ``x`` is one example or a batch (leading axis B);
- ``input_shape`` (one example's shape) and ``n_outputs``; ``num_params``.

That is enough for :func:`mbstudy.batch_grad`, :func:`mbstudy.per_sample_grads`
(``vmap(grad)``), accumulation and sharding. The fast per-example recipes,
the per-example norms and the noise statistics need more: one batched
backward pass that exposes, for every parametrised layer, its input ``a`` and
the gradient ``delta`` of its output. A :class:`Network` (a model composed of
layers) provides it through :meth:`Network.forward`; :class:`MLP` is one.

The parameters are a plain pytree: a list with one entry per parametrised
layer, in order (for a dense layer ``{"w": (n_in, n_out), "b": (n_out,)}``, for a
1-D convolution ``{"w": (kernel, c_in, c_out), "b": (c_out,)}``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mbstudy.layers import ACTIVATIONS, INITS, Activation, Conv1D, Dense, Flatten, Reshape, Residual

Params = list[dict[str, jax.Array]]

__all__ = ["ACTIVATIONS", "CNN", "INITS", "MLP", "Network", "Params", "mnist1d_cnn"]


class Network:
    """A model composed of layers: subclasses define ``layers`` (a tuple) and ``input_shape``.

    Layers with parameters (``check_params``) get one entry of the params list
    each; the others (activations) get none. A :class:`~mbstudy.layers.Residual`
    wrapper is walked into: its inner parametrised layers get entries, in order.
    """

    layers: tuple[Any, ...]
    input_shape: tuple[int, ...]

    @property
    def param_layers(self) -> tuple[Any, ...]:
        def walk(layers):
            for layer in layers:
                if isinstance(layer, Residual):
                    yield from walk(layer.layers)
                elif hasattr(layer, "check_params"):
                    yield layer
        return tuple(walk(self.layers))

    @property
    def num_params(self) -> int:
        """P, the number of scalar parameters."""
        return sum(layer.num_params() for layer in self.layers)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One example's outputs: ``(n_outputs,)``, or ``(T, n_outputs)`` for a sequence model."""
        shape = tuple(self.input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        return shape

    @property
    def n_outputs(self) -> int:
        return self.output_shape[-1]

    def init(self, key: jax.Array, *, dtype: Any = None) -> Params:
        """Draw initial parameters from a PRNG key (``jax.random.key`` or ``PRNGKey``); one key per parametrised layer.

        ``dtype`` defaults to JAX's default float type (float32, or float64
        when ``jax_enable_x64`` is on).
        """
        dtype = jnp.dtype(dtype) if dtype is not None else jnp.zeros(()).dtype
        if not jnp.issubdtype(dtype, jnp.floating):
            raise TypeError(f"{type(self).__name__}.init: dtype must be a float type; received {dtype}")
        keys = jax.random.split(key, len(self.param_layers))
        return [layer.init(k, dtype) for k, layer in zip(keys, self.param_layers)]

    def apply(self, params: Params, x: jax.Array) -> jax.Array:
        """Outputs for one example ``x: input_shape`` or a batch ``x: (B, *input_shape)``."""
        return self.forward(params, x)[0]

    def forward(
        self, params: Params, x: jax.Array, perturb: list[jax.Array] | None = None
    ) -> tuple[jax.Array, list[jax.Array]]:
        """Outputs, and the input ``a_l`` of every parametrised layer.

        ``perturb`` (one array per parametrised layer, shaped like its output
        ``z_l``) is added to each ``z_l``. It is always zero in use: its gradient
        is ``delta_l = dL/dz_l``, the quantity that :mod:`mbstudy.per_example`
        needs from one backward pass.
        """
        inputs: list[jax.Array] = []

        def run(layers, a, index):
            for layer in layers:
                if isinstance(layer, Residual):
                    out, index = run(layer.layers, a, index)
                    a = a + out
                elif hasattr(layer, "check_params"):
                    inputs.append(a)
                    a = layer.apply(params[index], a)
                    if perturb is not None:
                        a = a + perturb[index]
                    index += 1
                else:
                    a = layer.apply(None, a)
            return a, index

        return run(self.layers, x, 0)[0], inputs

    def output_shapes(self, x_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
        """The shape of every parametrised layer's output ``z_l`` for an input of ``x_shape``."""
        shapes: list[tuple[int, ...]] = []

        def walk(layers, shape):
            for layer in layers:
                if isinstance(layer, Residual):
                    walk(layer.layers, shape)
                if hasattr(layer, "check_params"):
                    shapes.append(layer.output_shape(shape))
                shape = layer.output_shape(shape)
            return shape

        walk(self.layers, tuple(x_shape))
        return shapes


@dataclasses.dataclass(frozen=True)
class MLP(Network):
    """A fully connected network ``sizes[0] -> sizes[1] -> ... -> sizes[-1]``.

    Dense layers with the activation after every hidden one; the last layer
    is linear (it returns logits or regression outputs). By default weights are
    drawn from N(0, gain / fan_in) with gain 1 for tanh (LeCun) and 2 for relu
    (He), the last layer's with gain 1; biases start at zero.

    Args:
      sizes: layer widths, input first, output last; at least two entries.
      activation: ``"tanh"`` or ``"relu"``, applied after every hidden layer.
      init_scheme: how every layer draws its initial values, a scheme of
        :data:`mbstudy.layers.INITS` (``"torch_default"``: PyTorch's ``nn.Linear``).

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
    init_scheme: str = "he_normal"

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
        if self.init_scheme not in INITS:
            raise ValueError(f"MLP: init_scheme must be one of {list(INITS)}; received {self.init_scheme!r}")
        object.__setattr__(self, "sizes", sizes)

    @property
    def layers(self) -> tuple[Any, ...]:
        gain = 2.0 if self.activation == "relu" else 1.0
        out: list[Any] = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            if out:
                out.append(Activation(self.activation))
            out.append(Dense(n_in, n_out, gain, self.init_scheme))
        return tuple(out)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.sizes[0],)

    @property
    def n_inputs(self) -> int:
        return self.sizes[0]

    @property
    def n_outputs(self) -> int:
        return self.sizes[-1]


@dataclasses.dataclass(frozen=True)
class CNN(Network):
    """The MNIST-1D paper's convolutional network (Greydanus 2020, arXiv:2011.14439), for one example ``(input_length,)``.

    The example is reshaped to one channel ``(L, 1)``; then three convolutions
    with ReLU after each: ``1 -> channels`` (kernel 5, stride 2, padding 1),
    ``channels -> channels`` (kernel 3, stride 2, padding 1) twice; then the
    ``(L3, channels)`` activations are flattened row-major (position major,
    channel minor; PyTorch's channels-first model flattens channel major) and
    a dense layer gives ``n_classes`` logits. With the defaults the lengths are
    40 -> 19 -> 10 -> 5 and the dense layer is 125 -> 10 (5,210 parameters).

    Initialisation (``init_scheme``, a scheme of :data:`mbstudy.layers.INITS`):
    by default (``"he_normal"``) convolutions He, N(0, 2 / (k * c_in)) (a ReLU
    follows each), the last dense layer LeCun, N(0, 1 / n_in), biases zero;
    ``"torch_default"`` is the paper's code's, PyTorch's default for
    ``nn.Conv1d`` and ``nn.Linear``: weights and biases from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    >>> import jax
    >>> from mbstudy import mnist1d_cnn
    >>> net = mnist1d_cnn()
    >>> [s[-2:] for s in net.output_shapes((8, 40))][:3], net.num_params, net.n_outputs
    ([(19, 25), (10, 25), (5, 25)], 5210, 10)
    >>> params = net.init(jax.random.key(0))
    >>> [p["w"].shape for p in params]
    [(5, 1, 25), (3, 25, 25), (3, 25, 25), (125, 10)]
    >>> net.apply(params, jax.numpy.ones((8, 40))).shape, net.apply(params, jax.numpy.ones(40)).shape
    ((8, 10), (10,))
    """

    input_length: int = 40
    channels: int = 25
    n_classes: int = 10
    init_scheme: str = "he_normal"

    def __post_init__(self) -> None:
        for name in ("input_length", "channels", "n_classes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"CNN: {name} must be a positive int; received {v!r}")
        if self.init_scheme not in INITS:
            raise ValueError(f"CNN: init_scheme must be one of {list(INITS)}; received {self.init_scheme!r}")
        L = self.input_length
        for conv in self._convs():
            L = conv.out_length(L)
        if L < 1:
            raise ValueError(
                f"CNN: an input of length {self.input_length} is too short for three stride-2 convolutions "
                f"(kernels 5, 3, 3, padding 1); expected input_length >= 3")

    def _convs(self) -> tuple[Conv1D, Conv1D, Conv1D]:
        c, init = self.channels, self.init_scheme
        return (Conv1D(1, c, 5, 2, 1, init_scheme=init), Conv1D(c, c, 3, 2, 1, init_scheme=init),
                Conv1D(c, c, 3, 2, 1, init_scheme=init))

    @property
    def layers(self) -> tuple[Any, ...]:
        out: list[Any] = [Reshape((self.input_length,), (self.input_length, 1))]
        L = self.input_length
        for conv in self._convs():
            out += [conv, Activation("relu")]
            L = conv.out_length(L)
        return (*out, Flatten(), Dense(L * self.channels, self.n_classes, 1.0, self.init_scheme))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.input_length,)


def mnist1d_cnn(input_length: int = 40, channels: int = 25, n_classes: int = 10, *,
                init_scheme: str = "he_normal") -> CNN:
    """The MNIST-1D paper's CNN (:class:`CNN`); the defaults are the paper's but the initialisation
    (``init_scheme="torch_default"`` is its code's)."""
    return CNN(input_length, channels, n_classes, init_scheme)
