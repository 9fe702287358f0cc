"""Input checks at the public boundary, run before anything is traced.

Every message says which argument, what was received, and what is expected.
The checks only read shapes and dtypes, so they also work on tracers when a
public function is called inside a user's own ``jit``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from mbstudy.losses import LOSSES, REDUCTIONS
from mbstudy.model import MLP


def _shape(a: Any) -> tuple[int, ...] | None:
    return tuple(a.shape) if hasattr(a, "shape") else None


def _as_array(name: str, a: Any) -> Any:
    if hasattr(a, "shape") and hasattr(a, "dtype"):
        return a
    if isinstance(a, (list, tuple)) or np.isscalar(a):
        return np.asarray(a)
    raise TypeError(f"{name}: expected an array; received {type(a).__name__}")


def check_model(model: Any) -> None:
    if not isinstance(model, MLP):
        raise TypeError(
            f"model: expected an mbstudy.MLP, e.g. MLP((40, 100, 10)); "
            f"received {type(model).__name__}"
        )


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


def check_params(model: MLP, params: Any) -> None:
    n_layers = len(model.sizes) - 1
    if not isinstance(params, (list, tuple)) or len(params) != n_layers:
        got = f"a {type(params).__name__} of length {len(params)}" if hasattr(params, "__len__") else type(params).__name__
        raise TypeError(
            f"params: expected a list of {n_layers} layers from model.init(key); received {got}"
        )
    for l, (layer, n_in, n_out) in enumerate(zip(params, model.sizes[:-1], model.sizes[1:])):
        if not isinstance(layer, dict) or set(layer) != {"w", "b"}:
            raise TypeError(f"params[{l}]: expected a dict with keys 'w' and 'b'; received {layer!r:.80}")
        if _shape(layer["w"]) != (n_in, n_out) or _shape(layer["b"]) != (n_out,):
            raise ValueError(
                f"params[{l}]: expected w {(n_in, n_out)} and b {(n_out,)} for model sizes "
                f"{model.sizes}; received w {_shape(layer['w'])} and b {_shape(layer['b'])}"
            )


def check_batch(model: MLP, loss_name: str, x: Any, y: Any) -> tuple[Any, Any]:
    """Check a batch ``x: (B, n_in)``, ``y: (B, K)`` (mse) or ``(B,)`` int (cross_entropy)."""
    x = _as_array("x", x)
    y = _as_array("y", y)
    if x.ndim != 2:
        raise ValueError(
            f"x: expected a batch of shape (B, {model.n_inputs}); received shape {tuple(x.shape)}. "
            f"For one example use x[None]."
        )
    if x.shape[1] != model.n_inputs:
        raise ValueError(
            f"x: expected {model.n_inputs} input features (model sizes {model.sizes}); "
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
    if loss_name == "mse":
        if tuple(y.shape) != (x.shape[0], model.n_outputs):
            raise ValueError(
                f"y: 'mse' expects real targets of shape (B, {model.n_outputs}) = "
                f"{(x.shape[0], model.n_outputs)}; received {tuple(y.shape)}"
            )
    else:
        if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
            raise TypeError(
                f"y: 'cross_entropy' expects integer labels of shape (B,) = ({x.shape[0]},); "
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

