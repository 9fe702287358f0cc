"""The compiled training loop: state, mini-batches, and one ``lax.scan`` of steps.

What changes the compiled program is static (:class:`Program`: model, loss,
reduction, optimizer kind, batch size, micro-batches per step; and the chunk length, through the
shape of the batch indices); what does not (the optimizer's hyper-parameters,
the random key) is an ordinary argument, so a learning-rate grid compiles
once per shape. :meth:`mbstudy.config.TrainConfig.program_key` names the
configuration fields behind a Program.

Mini-batches come in one of the orders of :data:`ORDERS` (``TrainConfig.data_order``):

- ``"shuffle"`` (the default): each epoch draws a fresh permutation of the N
  training examples (NumPy, seeded by ``(seed, epoch)``) and cuts it into
  ``N // B`` batches of exactly B examples, sampling without replacement. The
  last ``N mod B`` examples of each epoch's permutation are dropped (a
  different few each epoch), so every step sees exactly B examples and the
  sum reduction's scale is the same at every step.
- ``"sequential"``: the training set walked in its stored order, epoch after
  epoch, the same order every epoch and whatever the seed: step t takes
  examples ``t*B .. t*B + B - 1`` modulo N, so every example is seen once per
  N examples. This is the MNIST-1D paper's loop (its ``train.py`` slices
  ``x[(t*B) % N : (t*B) % N + B]``), exactly where B divides N (its B = 100,
  N = 4000); where it does not, that loop takes a short last batch and starts
  the next pass part-way in, skipping examples, while this one wraps around to
  keep B examples a step.

Divergence: if a step's batch loss is NaN or inf, that step's update and all
later ones are skipped (parameters stay at the values that produced the
first non-finite loss). Only the scalar loss is checked in the loop: a check
of every parameter at every step was, on 2 CPU cores, as expensive as the
rest of a small-batch step (``make bench`` reports the step against the
leanest possible scan).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mbstudy import losses as _losses
from mbstudy.optimizers import OPTIMIZERS

DATA_ORDER = 0xDA7A  # a constant that keeps the data-order stream apart from other uses of a seed


class TrainState(NamedTuple):
    params: Any
    opt_state: Any
    step: jax.Array  # int32: steps taken (counting skipped ones after divergence)
    diverged: jax.Array  # bool


@dataclasses.dataclass(frozen=True)
class Program:
    """The static part of a configuration: what the compiled training step depends on."""

    model: Any
    loss_name: str
    reduction: str
    optimizer: str
    batch_size: int
    accumulation: int = 1  # micro-batches per step (gradient accumulation)
    static_hyper: tuple[tuple[str, Any], ...] = ()  # the optimizer's static values (TrainConfig.static_hyper)


def make_optimizer(kind: str, hyper: Mapping[str, Any]) -> optax.GradientTransformation:
    """The registered optimizer ``kind`` (:data:`mbstudy.optimizers.OPTIMIZERS`) at these (possibly traced) values."""
    if kind not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}; received {kind!r}")
    return OPTIMIZERS[kind].make(hyper)


def traced_hyper(optimizer: str, values: Mapping[str, float]) -> dict[str, jax.Array]:
    """The optimizer's traced hyper-parameters as float32 (int32 for an int) scalars: arguments, not constants,
    of the compiled loop."""
    return {h.name: (jnp.int32 if h.kind is int else jnp.float32)(values[h.name])
            for h in OPTIMIZERS[optimizer].hyper if not h.static}


def batch_indices(seed: int, step0: int, n_steps: int, n: int, batch_size: int, order: str = "shuffle"
                  ) -> np.ndarray:
    """The example indices of steps ``step0 .. step0 + n_steps - 1``, shape ``(n_steps, B)``, in the data order
    ``order`` (:data:`ORDERS`); the same indices however the steps are cut into chunks.

    >>> batch_indices(0, 3, 2, 10, 4, "sequential").tolist()
    [[2, 3, 4, 5], [6, 7, 8, 9]]
    """
    if order not in ORDERS:
        raise ValueError(f"order: expected one of {list(ORDERS)}; received {order!r}")
    return ORDERS[order](seed, step0, n_steps, n, batch_size)


def shuffled(seed: int, step0: int, n_steps: int, n: int, batch_size: int) -> np.ndarray:
    """``"shuffle"``: step t uses slice ``t mod (N // B)`` of epoch ``t // (N // B)``'s permutation,
    drawn by NumPy from ``SeedSequence([seed, DATA_ORDER, epoch])``: the same
    indices however the steps are cut into chunks. They are made on the host
    because a permutation in XLA on a CPU is a sort, many times slower than
    NumPy's shuffle (``make bench`` prints both), and a large B needs one every
    N // B steps.
    """
    per_epoch = n // batch_size
    t = np.arange(step0, step0 + n_steps)
    epoch, pos = t // per_epoch, t % per_epoch
    out = np.empty((n_steps, batch_size), np.int32)
    cols = np.arange(batch_size)
    for e in np.unique(epoch):
        perm = _permutation(int(seed), int(e), int(n))
        rows = np.nonzero(epoch == e)[0]
        out[rows] = perm[pos[rows, None] * batch_size + cols]
    return out


@functools.lru_cache(maxsize=16)
def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """Epoch ``epoch``'s permutation of ``range(n)`` (read-only), drawn once: a run at a large B cut into chunks of
    a few steps reads the same epoch's in several chunks."""
    perm = np.random.default_rng([seed, DATA_ORDER, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def sequential(seed: int, step0: int, n_steps: int, n: int, batch_size: int) -> np.ndarray:
    """``"sequential"``: step t uses examples ``(t*B + j) mod N``, j < B: the stored order, every epoch (no seed)."""
    t = np.arange(step0, step0 + n_steps, dtype=np.int64)
    return ((t[:, None] * batch_size + np.arange(batch_size)) % n).astype(np.int32)


# the data orders TrainConfig.data_order can name: (seed, step0, n_steps, N, B) -> indices (n_steps, B)
ORDERS = {"shuffle": shuffled, "sequential": sequential}


def init_state(model: Any, optimizer: str, hyper: Mapping[str, Any], *, seed: int,
               init_perturbation: float = 0.0, static_hyper: tuple = ()) -> TrainState:
    """Initial parameters (float32) and optimizer state from ``seed`` (the data order: :func:`batch_indices`)."""
    # three keys: the middle one once drew the data order; kept so initial weights stay as logged
    k_init, _, k_perturb = jax.random.split(jax.random.key(seed), 3)
    params = model.init(k_init, dtype=jnp.float32)
    if init_perturbation:
        leaves, tree = jax.tree.flatten(params)
        keys = jax.random.split(k_perturb, len(leaves))
        leaves = [l + init_perturbation * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
        params = jax.tree.unflatten(tree, leaves)
    opt_state = make_optimizer(optimizer, {**hyper, **dict(static_hyper)}).init(params)
    return TrainState(params, opt_state, jnp.int32(0), jnp.bool_(False))


def run_chunk(state: TrainState, hyper, x, y, idx, *, program: Program):
    """One training step per row of ``idx: (n_steps, B)``, in one ``lax.scan``.

    Returns the new state and the batch losses.
    """
    opt = make_optimizer(program.optimizer, {**hyper, **dict(program.static_hyper)})
    loss_fn = _losses.LOSSES[program.loss_name]

    def batch_loss(params, xb, yb):
        return _losses.reduce(loss_fn(program.model.apply(params, xb), yb), program.reduction)

    def accumulated(params, idx):
        # k micro-batches of B/k examples in turn, each contributing its SUM loss and gradient, divided by B
        # once for the mean: mbstudy.grads.accumulated_grad's weighting (the batch's examples, in its order)
        k = program.accumulation
        micro = idx.reshape(k, program.batch_size // k)

        def add(total, i):
            lg = jax.value_and_grad(lambda p: _losses.reduce(loss_fn(program.model.apply(p, x[i]), y[i]), "sum"))(params)
            return jax.tree.map(jnp.add, total, lg), None

        zeros = (jnp.zeros((), jnp.float32), jax.tree.map(jnp.zeros_like, params))
        (loss, g), _ = jax.lax.scan(add, zeros, micro)
        if program.reduction == "mean":
            loss, g = loss / program.batch_size, jax.tree.map(lambda t: t / program.batch_size, g)
        return loss, g

    def step(s: TrainState, idx):
        if program.accumulation == 1:
            loss, g = jax.value_and_grad(batch_loss)(s.params, x[idx], y[idx])
        else:
            loss, g = accumulated(s.params, idx)
        updates, opt_state = opt.update(g, s.opt_state, s.params)
        params = optax.apply_updates(s.params, updates)
        diverged = s.diverged | ~jnp.isfinite(loss)
        keep = lambda new, old: jnp.where(diverged, old, new)  # noqa: E731
        params = jax.tree.map(keep, params, s.params)
        opt_state = jax.tree.map(keep, opt_state, s.opt_state)
        return TrainState(params, opt_state, s.step + 1, diverged), loss

    return jax.lax.scan(step, state, idx)


run_chunk_jit = jax.jit(run_chunk, static_argnames=("program",))
