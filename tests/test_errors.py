"""Bad input raises before tracing, naming the argument, what came and what is expected."""

import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import grads as _grads

MODEL = mb.MLP((4, 8, 3))
PARAMS = [
    {"w": jnp.zeros((4, 8)), "b": jnp.zeros(8)},
    {"w": jnp.zeros((8, 3)), "b": jnp.zeros(3)},
]
X = jnp.ones((6, 4))
Y = jnp.arange(6, dtype=jnp.int32) % 3

FUNCS = {
    "batch_grad": mb.batch_grad,
    "per_sample_grads": mb.per_sample_grads,
    "per_sample_grads_fast": mb.per_sample_grads_fast,
    "per_sample_grad_norms": mb.per_sample_grad_norms,
    "accumulated_grad": lambda *a, **k: mb.accumulated_grad(*a, micro_batch_size=2, **k),
    "sharded_grad": mb.sharded_grad,
    "grad_noise_stats": mb.grad_noise_stats,
    "single_output_grad": mb.single_output_grad,
}
WITH_REDUCTION = ["batch_grad", "accumulated_grad", "sharded_grad", "single_output_grad"]


@pytest.fixture(params=list(FUNCS))
def fn(request):
    return FUNCS[request.param]


def no_new_compiles(jitted=_grads._batch_grad):
    return jitted._cache_size()


@pytest.mark.parametrize(
    "x,y,pattern",
    [
        (jnp.ones((6, 4)), jnp.arange(5, dtype=jnp.int32), r"x and y: .*same batch size.*\(6, 4\).*\(5,\)"),
        (jnp.ones((0, 4)), jnp.zeros((0,), jnp.int32), r"x: the batch is empty .*\(0, 4\).*B >= 1"),
        (jnp.ones((6, 5)), Y, r"x: expected 4 input features .*received shape \(6, 5\)"),
        (jnp.ones((4,)), Y, r"x: expected a batch of shape \(B, 4\); received shape \(4,\)"),
    ],
    ids=["batch-mismatch", "empty", "width", "unbatched"],
)
def test_bad_batches(fn, x, y, pattern):
    before = no_new_compiles()
    with pytest.raises(ValueError, match=pattern):
        fn(MODEL, "cross_entropy", PARAMS, x, y)
    assert no_new_compiles() == before


@pytest.mark.parametrize("name", WITH_REDUCTION)
@pytest.mark.parametrize("bad", ["avg", "MEAN", None, 1])
def test_bad_reduction(name, bad):
    with pytest.raises(ValueError, match=r"reduction: expected one of \['mean', 'sum'\]; received " + repr(bad).replace("(", r"\(")):
        FUNCS[name](MODEL, "cross_entropy", PARAMS, X, Y, reduction=bad)


@pytest.mark.parametrize("k,exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError), ("4", TypeError), (True, TypeError)])
def test_bad_micro_batch_size(k, exc):
    with pytest.raises(exc, match=r"micro_batch_size: expected a positive int.*received " + repr(k).replace(".", r"\.")):
        mb.accumulated_grad(MODEL, "cross_entropy", PARAMS, X, Y, micro_batch_size=k)


def test_equal_weights_needs_mean():
    with pytest.raises(ValueError, match="equal_weights: .*reduction='mean' only; received reduction='sum'"):
        mb.accumulated_grad(MODEL, "cross_entropy", PARAMS, X, Y, micro_batch_size=2, reduction="sum", equal_weights=True)


def test_bad_loss_name(fn):
    with pytest.raises(ValueError, match=r"loss_name: expected one of \['cross_entropy', 'mse', 'token_cross_entropy'\]; received 'l2'"):
        fn(MODEL, "l2", PARAMS, X, Y)


def test_mse_target_shape(fn):
    with pytest.raises(ValueError, match=r"y: 'mse' expects real targets of shape \(B, 3\) = \(6, 3\); received \(6,\)"):
        fn(MODEL, "mse", PARAMS, X, jnp.zeros(6))


def test_cross_entropy_needs_int_labels(fn):
    with pytest.raises(TypeError, match=r"y: 'cross_entropy' expects integer labels .*float"):
        fn(MODEL, "cross_entropy", PARAMS, X, jnp.zeros(6))


def test_wrong_params(fn):
    with pytest.raises(TypeError, match=r"params: expected a list of 2 layers"):
        fn(MODEL, "cross_entropy", PARAMS[:1], X, Y)
    bad = [PARAMS[0], {"w": jnp.zeros((8, 4)), "b": jnp.zeros(4)}]
    with pytest.raises(ValueError, match=r"params\[1\]: expected w \(8, 3\) and b \(3,\).*received w \(8, 4\)"):
        fn(MODEL, "cross_entropy", bad, X, Y)


def test_model_must_be_an_mlp(fn):
    with pytest.raises(TypeError, match=r"model: expected an mbstudy.MLP.*received tuple"):
        fn((4, 8, 3), "cross_entropy", PARAMS, X, Y)


def test_numpy_and_list_inputs_are_accepted():
    g = mb.batch_grad(MODEL, "cross_entropy", PARAMS, np.ones((6, 4), np.float32), [0, 1, 2, 0, 1, 2])
    assert g[0]["w"].shape == (4, 8)


def test_noise_stats_needs_two_examples():
    with pytest.raises(ValueError, match=r"x: grad_noise_stats needs B >= 2 .*received B=1"):
        mb.grad_noise_stats(MODEL, "cross_entropy", PARAMS, X[:1], Y[:1])
    with pytest.raises(ValueError, match=r"population_size: expected N >= the batch size \(6\); received 3"):
        mb.grad_noise_stats(MODEL, "cross_entropy", PARAMS, X, Y, population_size=3)


def test_two_batch_noise_order():
    with pytest.raises(ValueError, match=r"b_small, b_big: expected b_small < b_big; received 8 and 4"):
        mb.two_batch_noise(1.0, 8, 2.0, 4)


def test_single_output_index_range():
    with pytest.raises(ValueError, match=r"output_index: expected \(example, output\) with 0 <= example < 6 .*received \(6, 0\)"):
        mb.single_output_grad(MODEL, "cross_entropy", PARAMS, X, Y, output_index=(6, 0))


@pytest.mark.parametrize(
    "kwargs,exc,pattern",
    [
        ({"sizes": (4,)}, ValueError, r"sizes needs at least an input and an output"),
        ({"sizes": (4, 0, 3)}, ValueError, r"every layer width must be a positive int; received \(4, 0, 3\)"),
        ({"sizes": "4,3"}, TypeError, r"sizes must be a sequence"),
        ({"sizes": (4, 3), "activation": "sigmoid"}, ValueError, r"activation must be one of \['relu', 'tanh'\]; received 'sigmoid'"),
    ],
)
def test_bad_mlp(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        mb.MLP(**kwargs)
