"""Gradient-noise statistics (McCandlish et al. 2018, arXiv:1812.06162).

With ``G`` the full-data gradient and ``Sigma`` the per-example gradient
covariance, a batch of B examples drawn without replacement from N has

    E ||G_B||^2 = ||G||^2 + tr(Sigma) (1/B - 1/N)         (1/N -> 0: with replacement)

and the simple noise scale is ``B_simple = tr(Sigma) / ||G||^2``: roughly the
batch size above which a bigger batch stops reducing the number of steps.
Here ``tr(Sigma) = sum_i ||g_i - G||^2 / (N - 1)``, the finite-population
variance that makes the identity above exact.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from mbstudy import _checks, per_example
from mbstudy.model import Params

Model = Any  # a mbstudy.model.Network: the noise statistics need its layers' inputs and output gradients


class NoiseStats(NamedTuple):
    """Noise statistics; every field a scalar array.

    g_norm_sq: ``||G_B||^2``, the squared norm of the batch-mean gradient.
    trace_cov: an unbiased estimate of ``tr(Sigma)``.
    g_true_sq: an unbiased estimate of ``||G||^2`` (``||G_B||^2`` minus the noise term).
    b_simple: ``trace_cov / g_true_sq``.
    """

    g_norm_sq: jax.Array
    trace_cov: jax.Array
    g_true_sq: jax.Array
    b_simple: jax.Array


def _check_population(population_size, b: int, name: str = "batch size") -> None:
    if population_size is None:
        return
    _checks.check_positive_int("population_size", population_size)
    if population_size < b:
        raise ValueError(
            f"population_size: expected N >= the {name} ({b}); received {population_size}. "
            "Pass the training-set size, or None for sampling with replacement."
        )


def sampling_factor(b, population_size):
    """``1/B - 1/N`` (``1/B`` when N is None)."""
    return 1.0 / b - (0.0 if population_size is None else 1.0 / population_size)


def noise_stats(params, x, y, finite_population_correction, *, model, loss_name, per_layer=False):
    """Noise statistics from ONE batched forward and backward pass (traceable; the public
    :func:`grad_noise_stats` checks its inputs and calls the compiled version).

    The same layer inputs and deltas give every ``||g_i||^2`` and the batch-mean
    gradient's squared norm, through each layer's rule (:mod:`mbstudy.per_example`;
    for a dense layer ``(||a_i||^2 + 1) ||delta_i||^2`` and ``a^T delta / B``, ``mean(delta)``).
    ``finite_population_correction`` is ``1/B - 1/N`` (``1/B`` with replacement).
    ``per_layer=True`` returns ``(totals, layers)``, ``layers`` a :class:`NoiseStats`
    of arrays of shape ``(n_layers,)`` from the same per-layer terms (see :func:`grad_noise_stats`).
    """
    rules = per_example.rules_for(model)  # first: a model without layers gets its clear message
    inputs, deltas = per_example.layer_inputs_and_deltas(model, loss_name, params, x, y)
    B = x.shape[0]
    sq = sum(rule.sq_norms(a, d) for rule, a, d in zip(rules, inputs, deltas))
    gbar_sq = sum(rule.mean_grad_sq_norm(a, d) for rule, a, d in zip(rules, inputs, deltas))
    trace_cov = (jnp.sum(sq) - B * gbar_sq) / (B - 1)
    g_true_sq = gbar_sq - trace_cov * finite_population_correction
    totals = NoiseStats(gbar_sq, trace_cov, g_true_sq, trace_cov / g_true_sq)
    if not per_layer:
        return totals
    # The per-layer terms are recomputed from the same layer inputs and deltas behind an optimization
    # barrier: shared with the totals' terms, they changed how XLA fused the totals and moved their last
    # float32 bits (tests/test_fingerprint.py). The rules are cheap next to the forward and backward pass.
    inputs, deltas = jax.lax.optimization_barrier((inputs, deltas))
    gbar_l = jnp.stack([rule.mean_grad_sq_norm(a, d) for rule, a, d in zip(rules, inputs, deltas)])
    sum_sq_l = jnp.stack([jnp.sum(rule.sq_norms(a, d)) for rule, a, d in zip(rules, inputs, deltas)])
    trace_l = (sum_sq_l - B * gbar_l) / (B - 1)
    g_true_l = gbar_l - trace_l * finite_population_correction
    return totals, NoiseStats(gbar_l, trace_l, g_true_l, trace_l / g_true_l)


noise_stats_jit = jax.jit(noise_stats, static_argnames=("model", "loss_name", "per_layer"))


def grad_noise_stats(
    model: Model, loss_name: str, params: Params, x, y, *, population_size: int | None = None,
    per_layer: bool = False,
) -> NoiseStats | tuple[NoiseStats, NoiseStats]:
    """Noise statistics from ONE batch of B >= 2 examples, exactly, with no B x P tensor.

    With ``gbar`` the batch-mean gradient and ``||g_i||^2`` from
    :func:`mbstudy.per_sample_grad_norms`:

        trace_cov = (sum_i ||g_i||^2 - B ||gbar||^2) / (B - 1)
        g_true_sq = ||gbar||^2 - trace_cov (1/B - 1/N)
        b_simple  = trace_cov / g_true_sq

    ``population_size`` N applies the finite-population correction (the batch
    is a sample without replacement from N examples); ``None`` means sampling
    with replacement. When the batch IS the whole set (B = N), ``gbar = G``
    and ``b_simple`` is exact. ``g_true_sq`` can be negative on a small,
    noisy batch; ``b_simple`` is then meaningless (negative).

    ``per_layer=True`` returns ``(totals, layers)``: ``totals`` as above, and
    ``layers`` a :class:`NoiseStats` whose every field has shape ``(n_layers,)``,
    entry l the same statistics for parametrised layer l's parameters alone
    (per-layer noise scales, Gray et al. 2024, arXiv:2411.00999), from the same
    single pass. ``g_norm_sq``, ``trace_cov`` and ``g_true_sq`` sum over the
    layers to the totals (the squared norms and the trace are sums over
    parameters); ``b_simple`` does not (it is a ratio).

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, grad_noise_stats
    >>> net = MLP((4, 8, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (64, 4)); y = jnp.arange(64) % 3
    >>> s = grad_noise_stats(net, "cross_entropy", params, x, y, population_size=64)
    >>> bool(s.b_simple > 0), bool(jnp.allclose(s.g_true_sq, s.g_norm_sq))
    (True, True)
    >>> s, layers = grad_noise_stats(net, "cross_entropy", params, x, y, per_layer=True)
    >>> layers.trace_cov.shape, bool(jnp.allclose(layers.trace_cov.sum(), s.trace_cov))
    ((2,), True)
    """
    x, y = _checks.check_all(model, loss_name, params, x, y)
    B = x.shape[0]
    if B < 2:
        raise ValueError(f"x: grad_noise_stats needs B >= 2 examples to estimate a variance; received B={B}")
    _check_population(population_size, B)
    if not isinstance(per_layer, bool):
        raise TypeError(f"per_layer: expected True or False; received {per_layer!r}")
    per_example.rules_for(model)
    dtype = jnp.result_type(x.dtype, *(leaf.dtype for leaf in jax.tree.leaves(params)))
    factor = jnp.asarray(sampling_factor(B, population_size), dtype)
    return noise_stats_jit(params, x, y, factor, model=model, loss_name=loss_name, per_layer=per_layer)


def layers_of_type(model: Model, *types: type) -> tuple[int, ...]:
    """The indices (into the params list, and into a per-layer :class:`NoiseStats`) of ``model``'s parametrised
    layers of the given types, e.g. ``layers_of_type(net, LayerNorm)``."""
    if not types or not all(isinstance(t, type) for t in types):
        raise TypeError(f"types: expected one or more layer classes, e.g. mbstudy.transformer.LayerNorm; received {types!r}")
    found = tuple(i for i, layer in enumerate(model.param_layers) if isinstance(layer, types))
    if not found:
        raise ValueError(f"model: {type(model).__name__} has no parametrised layer of type "
                         f"{[t.__name__ for t in types]}; its layers are {[type(l).__name__ for l in model.param_layers]}")
    return found


def subset_noise(layers: NoiseStats, indices) -> NoiseStats:
    """The noise statistics of the parameters of some layers only, from per-layer statistics.

    ``layers`` is the per-layer :class:`NoiseStats` of ``grad_noise_stats(...,
    per_layer=True)`` (each field ``(n_layers, ...)``: any trailing axes, such as
    evaluations, are kept); ``indices`` picks layers (:func:`layers_of_type`).
    Squared norms and traces are sums over parameters, so the subset's are the
    sums of its layers'; its ``b_simple`` is their ratio. Gray et al. (2024,
    arXiv:2411.00999) report that the LayerNorm parameters' noise scale alone
    tracks a transformer's total.

    >>> import jax, jax.numpy as jnp
    >>> from mbstudy import MLP, grad_noise_stats
    >>> net = MLP((4, 8, 3)); params = net.init(jax.random.key(0))
    >>> x = jax.random.normal(jax.random.key(1), (64, 4)); y = jnp.arange(64) % 3
    >>> total, layers = grad_noise_stats(net, "cross_entropy", params, x, y, per_layer=True)
    >>> both = subset_noise(layers, [0, 1])
    >>> bool(jnp.allclose(both.b_simple, total.b_simple)), bool(subset_noise(layers, [1]).trace_cov < total.trace_cov)
    (True, True)
    """
    idx = jnp.asarray(indices, jnp.int32)
    if idx.ndim != 1 or idx.size == 0:
        raise ValueError(f"indices: expected a non-empty sequence of layer indices; received {indices!r}")
    g, tr, gt = (jnp.sum(jnp.asarray(f)[idx], axis=0) for f in (layers.g_norm_sq, layers.trace_cov, layers.g_true_sq))
    return NoiseStats(g, tr, gt, tr / gt)


def two_batch_noise(
    g_small_sq, b_small: int, g_big_sq, b_big: int, *, population_size: int | None = None
) -> NoiseStats:
    """The two-batch estimator: ``||G||^2`` and ``tr(Sigma)`` from two squared norms.

    From ``E||G_B||^2 = ||G||^2 + tr(Sigma) u_B`` with ``u_B = 1/B - 1/N``:

        tr(Sigma) = (|G_small|^2 - |G_big|^2) / (u_small - u_big)
        ||G||^2   = (u_small |G_big|^2 - u_big |G_small|^2) / (u_small - u_big)

    which, for N = None (u_B = 1/B), is McCandlish et al.'s (2018, appendix A)
    ``||G||^2 = (B_big|G_big|^2 - B_small|G_small|^2) / (B_big - B_small)``.
    ``g_norm_sq`` of the result holds ``|G_big|^2``.

    >>> from mbstudy import two_batch_noise
    >>> s = two_batch_noise(3.0, 1, 1.5, 4)          # ||G||^2 = 1, tr = 2 gives 3 and 1.5
    >>> round(float(s.g_true_sq), 6), round(float(s.trace_cov), 6), round(float(s.b_simple), 6)
    (1.0, 2.0, 2.0)
    """
    for name, b in (("b_small", b_small), ("b_big", b_big)):
        _checks.check_positive_int(name, b)
    if b_small >= b_big:
        raise ValueError(f"b_small, b_big: expected b_small < b_big; received {b_small} and {b_big}")
    _check_population(population_size, b_big, "big batch size")
    u_s, u_b = sampling_factor(b_small, population_size), sampling_factor(b_big, population_size)
    s = jnp.asarray(g_small_sq)
    b = jnp.asarray(g_big_sq)
    trace_cov = (s - b) / (u_s - u_b)
    g_true_sq = (u_s * b - u_b * s) / (u_s - u_b)
    return NoiseStats(b, trace_cov, g_true_sq, trace_cov / g_true_sq)
