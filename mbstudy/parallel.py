"""Data-parallel gradients: shard the batch over devices, all-reduce the sums.

Each device holds a slice of the batch and a full copy of the parameters,
computes ``sum_{i in shard} g_i`` and a ``psum`` over the device axis adds the
shards up; ``mean`` divides by the true B once. When the number of devices D
does not divide B, the batch is padded with zeros to a multiple of D and the
padded examples are masked out of the loss (weight 0), so their gradient is
exactly zero.

To try it on a CPU, start Python with
``XLA_FLAGS=--xla_force_host_platform_device_count=4`` (before importing JAX).
"""

from __future__ import annotations

import functools
from typing import Any
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from mbstudy import _checks
from mbstudy.losses import LOSSES
from mbstudy.model import Params

AXIS = "batch"


@functools.partial(jax.jit, static_argnames=("model", "loss_name", "reduction", "mesh"))
def _sharded_grad(params, x, y, *, model, loss_name, reduction, mesh):
    B = x.shape[0]
    n_dev = mesh.devices.size
    pad = (-B) % n_dev
    dtype = jnp.result_type(x.dtype, *(leaf.dtype for leaf in jax.tree.leaves(params)))
    mask = jnp.concatenate([jnp.ones((B,), dtype), jnp.zeros((pad,), dtype)])
    x = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1))
    y = jnp.pad(y, [(0, pad)] + [(0, 0)] * (y.ndim - 1))

    def shard_sum_grad(p, xs, ys, ms):
        def loss(q):
            return jnp.sum(ms * LOSSES[loss_name](model.apply(q, xs), ys))

        return jax.lax.psum(jax.grad(loss)(p), AXIS)  # the all-reduce

    total = jax.shard_map(
        shard_sum_grad,
        mesh=mesh,
        in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)),
        out_specs=P(),
        check_vma=False,  # the psum above is explicit; grads of replicated params are per-shard partial sums
    )(params, x, y, mask)
    if reduction == "mean":
        total = jax.tree.map(lambda t: t / B, total)
    return total


def sharded_grad(
    model: Any,
    loss_name: str,
    params: Params,
    x,
    y,
    reduction: str = "mean",
    *,
    devices: Sequence[jax.Device] | None = None,
) -> Params:
    """The batch gradient computed data-parallel over ``devices`` (default: all).

    ``sum``: ``psum_d sum_{i in shard d} g_i``; ``mean``: that over B. Equal to
    :func:`mbstudy.batch_grad` up to the order of floating-point additions,
    for any B (padding and masking handle a B that D does not divide).

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, batch_grad, sharded_grad
    >>> net = MLP((4, 8, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (7, 4)); y = jnp.arange(7) % 3
    >>> a = sharded_grad(net, "cross_entropy", params, x, y, "sum")
    >>> b = batch_grad(net, "cross_entropy", params, x, y, "sum")
    >>> bool(jnp.allclose(a[1]["b"], b[1]["b"], atol=1e-5))
    True
    """
    x, y = _checks.check_all(model, loss_name, params, x, y, reduction)
    devices = tuple(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("devices: expected at least one jax.Device; received an empty sequence")
    mesh = Mesh(np.array(devices), (AXIS,))
    return _sharded_grad(params, x, y, model=model, loss_name=loss_name, reduction=reduction, mesh=mesh)
