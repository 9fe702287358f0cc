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

How a dense or convolutional layer draws its initial weights and biases is a
scheme of :data:`INITS`, named by the layer's ``init_scheme`` (one entry per scheme):
``"he_normal"``, the study's default, and ``"torch_default"``, PyTorch's.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "tanh": jnp.tanh,
    "relu": jax.nn.relu,
}


def _shape(a: Any) -> tuple[int, ...] | None:
    return tuple(a.shape) if hasattr(a, "shape") else None


def he_normal(key: jax.Array, w_shape: tuple[int, ...], fan_in: int, gain: float, dtype: Any
              ) -> tuple[jax.Array, jax.Array]:
    """Weights from N(0, gain / fan_in), biases zero: the study's default.

    Gain 2 is He's (a ReLU follows the layer), gain 1 LeCun's (tanh, or the
    last, linear layer). The weights are drawn from ``key`` itself, as they
    always were, so every stored run starts where it did.
    """
    w = jax.random.normal(key, w_shape, dtype) * jnp.sqrt(gain / fan_in).astype(dtype)
    return w, jnp.zeros((w_shape[-1],), dtype)


def torch_default(key: jax.Array, w_shape: tuple[int, ...], fan_in: int, gain: float, dtype: Any
                  ) -> tuple[jax.Array, jax.Array]:
    """PyTorch's default for ``nn.Linear`` and ``nn.Conv1d``: weights and biases from U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    ``reset_parameters`` draws the weights by ``kaiming_uniform_(a=sqrt(5))``,
    whose bound ``sqrt(2 / (1 + a^2)) * sqrt(3 / fan_in)`` is ``1 / sqrt(fan_in)``
    (a variance of ``1 / (3 fan_in)``, a sixth of He's), and the biases from
    the same interval (``fan_in``: ``n_in`` for a dense layer, ``kernel * c_in``
    for a convolution). ``gain`` is not read: PyTorch's default does not know
    which activation follows.
    """
    bound = 1.0 / math.sqrt(fan_in)
    k_w, k_b = jax.random.split(key)
    w = jax.random.uniform(k_w, w_shape, dtype, -bound, bound)
    return w, jax.random.uniform(k_b, (w_shape[-1],), dtype, -bound, bound)


# (key, weight shape, fan_in, gain, dtype) -> (weights, biases); the schemes a layer's ``init`` can name
INITS = {"he_normal": he_normal, "torch_default": torch_default}


def _check_init(layer: Any) -> None:
    if layer.init_scheme not in INITS:
        raise ValueError(f"{type(layer).__name__}: init_scheme must be one of {list(INITS)}; "
                         f"received {layer.init_scheme!r}")


@dataclasses.dataclass(frozen=True)
class Dense:
    """``z = a W + b`` with ``W: (n_in, n_out)``, ``b: (n_out,)``.

    Chain rule, for one example: ``dL/dW = a (outer) delta``, ``dL/db = delta``,
    ``dL/da = W delta``. Initial values: the scheme ``init_scheme`` of :data:`INITS`
    with ``fan_in = n_in``; by default weights from N(0, gain / n_in) (gain 1:
    LeCun, 2: He) and biases zero, ``"torch_default"`` PyTorch's ``nn.Linear``.
    """

    n_in: int
    n_out: int
    gain: float = 1.0
    init_scheme: str = "he_normal"

    def __post_init__(self) -> None:
        _check_init(self)

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        w, b = INITS[self.init_scheme](key, (self.n_in, self.n_out), self.n_in, self.gain, dtype)
        return {"w": w, "b": b}

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


def conv_patches(x: jax.Array, kernel: int, stride: int, padding: int) -> jax.Array:
    """im2col: ``x: (..., L, C)`` to the patches ``(..., L_out, kernel * C)``, ``L_out = (L + 2p - k) // s + 1``.

    ``x`` is zero-padded by ``padding`` positions on both sides of the length
    axis; patch ``t`` is ``x_pad[t*s : t*s + k]`` flattened row-major, kernel
    offset major and channel minor (entry ``j * C + c`` is ``x_pad[t*s + j, c]``),
    the order of ``w.reshape(k * C, c_out)`` for ``w: (k, C, c_out)``. Built
    from ``k`` strided slices, one per kernel offset. The one helper that
    :class:`Conv1D` and its per-example rule (:mod:`mbstudy.per_example`) share.
    """
    L, C = x.shape[-2], x.shape[-1]
    if padding:
        x = jnp.pad(x, [(0, 0)] * (x.ndim - 2) + [(padding, padding), (0, 0)])
    L_out = (L + 2 * padding - kernel) // stride + 1
    cols = [x[..., j : j + stride * (L_out - 1) + 1 : stride, :] for j in range(kernel)]  # each (..., L_out, C)
    return jnp.stack(cols, axis=-2).reshape(*x.shape[:-2], L_out, kernel * C)


@dataclasses.dataclass(frozen=True)
class Conv1D:
    """1-D convolution (cross-correlation) of one example ``a: (L, c_in)`` to ``z: (L_out, c_out)``.

    ``z_t = sum_{j, c} a_pad[t*s + j, c] w[j, c, :] + b = patch_t W + b`` with
    ``W = w.reshape(k * c_in, c_out)`` and ``patch_t`` the t-th row of
    :func:`conv_patches` (zero padding ``p`` on both sides; ``L_out = (L + 2p - k) // s + 1``).
    It is computed that way (im2col: strided slices, then one matmul), which on
    XLA's CPU backend was ~5x faster than ``lax.conv_general_dilated``.

    Chain rule, for one example, with ``delta_t = dL/dz_t``: a dense layer per
    position sharing W, so ``dL/dW = sum_t patch_t (outer) delta_t``,
    ``dL/db = sum_t delta_t``, and ``dL/dpatch_t = W delta_t``, scattered back
    (summed) onto the input positions it was read from. Initial values: the
    scheme ``init_scheme`` of :data:`INITS` with ``fan_in = k * c_in``; by default
    weights from N(0, gain / fan_in) (gain 2: He, for a ReLU after it; 1:
    LeCun) and biases zero, ``"torch_default"`` PyTorch's ``nn.Conv1d``.
    """

    c_in: int
    c_out: int
    kernel: int
    stride: int = 1
    padding: int = 0
    gain: float = 2.0
    init_scheme: str = "he_normal"

    def __post_init__(self) -> None:
        _check_init(self)
        for name in ("c_in", "c_out", "kernel", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Conv1D: {name} must be a positive int; received {v!r}")
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"Conv1D: padding must be a non-negative int; received {self.padding!r}")

    def out_length(self, length: int) -> int:
        return (length + 2 * self.padding - self.kernel) // self.stride + 1

    def init(self, key: jax.Array, dtype: Any) -> dict[str, jax.Array]:
        w, b = INITS[self.init_scheme](key, (self.kernel, self.c_in, self.c_out), self.kernel * self.c_in, self.gain,
                                       dtype)
        return {"w": w, "b": b}

    def apply(self, params: dict[str, jax.Array], a: jax.Array) -> jax.Array:
        patches = conv_patches(a, self.kernel, self.stride, self.padding)
        return patches @ params["w"].reshape(self.kernel * self.c_in, self.c_out) + params["b"]

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        L, C = input_shape[-2:]
        if C != self.c_in or self.out_length(L) < 1:
            raise ValueError(f"Conv1D(c_in={self.c_in}, kernel={self.kernel}, stride={self.stride}, "
                             f"padding={self.padding}): cannot take an input of shape (L, C) = {(L, C)}")
        return (*input_shape[:-2], self.out_length(L), self.c_out)

    def num_params(self) -> int:
        return self.kernel * self.c_in * self.c_out + self.c_out

    def check_params(self, params: Any, index: int) -> str | None:
        if not isinstance(params, dict) or set(params) != {"w", "b"}:
            return f"params[{index}]: expected a dict with keys 'w' and 'b'; received {params!r:.80}"
        want = (self.kernel, self.c_in, self.c_out)
        if _shape(params["w"]) != want or _shape(params["b"]) != (self.c_out,):
            return (f"params[{index}]: expected w {want} and b {(self.c_out,)}; "
                    f"received w {_shape(params['w'])} and b {_shape(params['b'])}")
        return None


@dataclasses.dataclass(frozen=True)
class Flatten:
    """One example's ``(L, C)`` to ``(L * C,)``, row-major (index ``t * C + c``); batch axes kept. No parameters.

    Chain rule: ``dL/dx = delta.reshape(L, C)``. (PyTorch's channels-first
    ``(C, L)`` flattens in the other order, ``c * L + t``.)
    """

    def init(self, key: jax.Array, dtype: Any) -> None:
        return None

    def apply(self, params: None, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[:-2], input_shape[-2] * input_shape[-1])

    def num_params(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class Reshape:
    """One example's ``in_shape`` to ``out_shape`` (same size, row-major); batch axes kept. No parameters.

    Chain rule: ``dL/dx = delta.reshape(in_shape)``.
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]

    def init(self, key: jax.Array, dtype: Any) -> None:
        return None

    def apply(self, params: None, x: jax.Array) -> jax.Array:
        return x.reshape(*x.shape[: x.ndim - len(self.in_shape)], *self.out_shape)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*input_shape[: len(input_shape) - len(self.in_shape)], *self.out_shape)

    def num_params(self) -> int:
        return 0


@dataclasses.dataclass(frozen=True)
class Residual:
    """``y = x + f(x)``, ``f`` the inner ``layers`` applied in order; ``f`` must keep the shape of ``x``.

    Chain rule: ``dL/dx = delta + J_f(x)^T delta`` (the skip passes ``delta``
    through unchanged); each inner layer's parameter gradient is its own rule's,
    with ``delta`` entering ``f`` at its output. A :class:`~mbstudy.model.Network`
    walks into the wrapper: the inner parametrised layers are entries of its
    params list and of ``param_layers``, in order, so the per-example rules
    apply to them unchanged. On its own, ``init`` and ``apply`` take the inner
    parametrised layers' params as a flat list in the same order (nested
    residuals included).
    """

    layers: tuple[Any, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(self.layers))

    def n_param_layers(self) -> int:
        """How many entries of a params list the inner layers take (nested residuals counted through)."""
        return sum(layer.n_param_layers() if isinstance(layer, Residual) else int(hasattr(layer, "check_params"))
                   for layer in self.layers)

    def init(self, key: jax.Array, dtype: Any) -> list[Any]:
        keys = iter(jax.random.split(key, len(self.layers)))
        out: list[Any] = []
        for layer in self.layers:
            k = next(keys)
            if isinstance(layer, Residual):
                out += layer.init(k, dtype)
            elif hasattr(layer, "check_params"):
                out.append(layer.init(k, dtype))
        return out

    def apply(self, params: list[Any], x: jax.Array) -> jax.Array:
        a, i = x, 0
        for layer in self.layers:
            if isinstance(layer, Residual):
                n = layer.n_param_layers()
                a = layer.apply(params[i : i + n], a)
                i += n
            elif hasattr(layer, "check_params"):
                a = layer.apply(params[i], a)
                i += 1
            else:
                a = layer.apply(None, a)
        return x + a

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        if shape != tuple(input_shape):
            raise ValueError(f"Residual: the inner layers map {tuple(input_shape)} to {shape}; y = x + f(x) needs the same shape")
        return shape

    def num_params(self) -> int:
        return sum(layer.num_params() for layer in self.layers)
