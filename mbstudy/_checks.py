"""Input checks at the public boundary, run before anything is traced.

Every message says which argument, what was received, and what is expected.
The checks only read shapes and dtypes, so they also work on tracers when a
public function is called inside a user's own ``jit``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mbstudy.losses import LOSSES, REDUCTIONS


def _shape(a: Any) -> tuple[int, ...] | None:
    return tuple(a.shape) if hasattr(a, "shape") else None


def _as_array(name: str, a: Any) -> Any:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    if isinstance(a, (list, tuple)) or np.isscalar(a):
        return np.asarray(a)
    raise TypeError(f"{name}: expected an array; received {type(a).__name__}")


def check_model(model: Any) -> None:
    """A model of :mod:`mbstudy.model`'s protocol: init, apply, input_shape, n_outputs, and hashable."""
    needed = ("init", "apply", "input_shape", "n_outputs")
    if isinstance(model, type) or not all(hasattr(model, a) for a in needed):
        raise TypeError(
            f"model: expected an mbstudy.MLP, e.g. MLP((40, 100, 10)), or another model with "
            f"{', '.join(needed)} (see mbstudy.model); received {type(model).__name__}"
        )
    try:
        hash(model)
    except TypeError:
        raise TypeError(
            f"model: expected a hashable model (a frozen dataclass), since it is a static argument of jax.jit; "
            f"received an unhashable {type(model).__name__}"
        ) from None


def check_loss(loss_name: Any) -> None:
    if loss_name not in LOSSES:
        raise ValueError(f"loss_name: expected one of {sorted(LOSSES)}; received {loss_name!r}")


def check_reduction(reduction: Any) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(
            f"reduction: expected one of {list(REDUCTIONS)}; received {reduction!r}"
        )


def check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected a positive int; received {value!r}")
    if value <= 0:
        raise ValueError(f"{name}: expected a positive int (>= 1); received {value!r}")


def check_params(model: Any, params: Any) -> None:
    """Params as ``model.init`` makes them: one entry per parametrised layer, each checked by its layer."""
    layers = getattr(model, "param_layers", None)
    if layers is None:  # a protocol-only model: compare with the structure its init gives
        want = jax.eval_shape(model.init, jax.random.key(0))
        same = jax.tree.structure(want) == jax.tree.structure(params) and all(
            tuple(w.shape) == _shape(p) for w, p in zip(jax.tree.leaves(want), jax.tree.leaves(params)))
        if not same:
            raise ValueError("params: expected the structure and shapes that model.init(key) returns; "
                             f"received {jax.tree.map(_shape, params)!r:.200}")
        return
    n_layers = len(layers)
    if not isinstance(params, (list, tuple)) or len(params) != n_layers:
        got = f"a {type(params).__name__} of length {len(params)}" if hasattr(params, "__len__") else type(params).__name__
        raise TypeError(
            f"params: expected a list of {n_layers} layers from model.init(key); received {got}"
        )
    for index, (layer, p) in enumerate(zip(layers, params)):
        msg = layer.check_params(p, index)
        if msg:
            raise (TypeError if "expected a dict" in msg else ValueError)(msg)


def check_batch(model: Any, loss_name: str, x: Any, y: Any) -> tuple[Any, Any]:
    """Check a batch ``x: (B, *input_shape)``, and its targets as the loss wants them
    (``y: (B, K)`` real for mse, ``(B,)`` int labels for cross_entropy)."""
    x = _as_array("x", x)
    y = _as_array("y", y)
    shape = tuple(model.input_shape)
    if x.ndim != len(shape) + 1:
        raise ValueError(
            f"x: expected a batch of shape (B, {', '.join(map(str, shape))}); received shape {tuple(x.shape)}. "
            f"For one example use x[None]."
        )
    if tuple(x.shape[1:]) != shape:
        what = f"{shape[0]} input features" if len(shape) == 1 else f"examples of shape {shape}"
        raise ValueError(
            f"x: expected {what} (the model's input shape is {shape}); "
            f"received shape {tuple(x.shape)}"
        )
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"x: expected a float array; received dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"x: the batch is empty (shape {tuple(x.shape)}); expected B >= 1 examples")
    if y.ndim == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x and y: expected the same batch size; received x {tuple(x.shape)} and y {tuple(y.shape)}"
        )
    # one example's outputs: (K,) for the MLP and the CNN, (T, K) for a sequence model (Network.output_shape)
    out = tuple(getattr(model, "output_shape", (model.n_outputs,)))
    B = x.shape[0]
    if jnp.issubdtype(jnp.dtype(LOSSES[loss_name].target_dtype), jnp.floating):
        if tuple(y.shape) != (B, *out):
            raise ValueError(
                f"y: {loss_name!r} expects real targets of shape (B, {', '.join(map(str, out))}) = "
                f"{(B, *out)}; received {tuple(y.shape)}"
            )
    else:
        want = (B, *out[:-1])  # one integer label per output vector
        if tuple(y.shape) != want or not jnp.issubdtype(y.dtype, jnp.integer):
            shape = "(B,)" if len(want) == 1 else f"(B, {', '.join(map(str, want[1:]))})"
            raise TypeError(
                f"y: {loss_name!r} expects integer labels of shape {shape} = {want}; "
                f"received shape {tuple(y.shape)} dtype {y.dtype}"
            )
    return x, y


_UNSET = object()


def check_all(model: Any, loss_name: Any, params: Any, x: Any, y: Any, reduction: Any = _UNSET) -> tuple[Any, Any]:
    """The checks shared by every gradient function; returns ``x, y`` as arrays."""
    check_model(model)
    check_loss(loss_name)
    if reduction is not _UNSET:
        check_reduction(reduction)
    check_params(model, params)
    x, y = check_batch(model, loss_name, x, y)
    return x, y

