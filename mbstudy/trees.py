"""Small helpers over pytrees of arrays: squared norm (traceable), and host-side flattening and relative error.

>>> import numpy as np
>>> from mbstudy.trees import relative_error
>>> relative_error({"w": np.array([1.0, 1.0])}, {"w": np.array([1.0, 0.0])})
1.0
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def sq_norm(tree) -> jax.Array:
    """``||tree||^2``, summed over every leaf (in ``jax.tree.leaves`` order)."""
    return sum(jnp.sum(leaf * leaf) for leaf in jax.tree.leaves(tree))


def flatten(tree, batch_axis: bool = False) -> np.ndarray:
    """Every leaf as float64, concatenated: one vector, or ``(B, P)`` rows when the leaves share a leading batch axis."""
    leaves = [np.asarray(leaf, np.float64) for leaf in jax.tree.leaves(tree)]
    if batch_axis:
        return np.concatenate([leaf.reshape(leaf.shape[0], -1) for leaf in leaves], axis=1)
    return np.concatenate([leaf.ravel() for leaf in leaves])


def relative_error(a, b, batch_axis: bool = False) -> float:
    """``||a - b|| / ||b||`` over every leaf, computed in float64 on the host."""
    a, b = flatten(a, batch_axis), flatten(b, batch_axis)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))
