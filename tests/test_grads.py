"""The gradient identities of the study (Q1, Q2, Q7), in float64 and float32.

float64 identities hold to 1e-12 relative (norm-wise over the whole pytree);
measured: 1e-16 to 4e-16 (``make equivalence``).

float32 tolerance, F32_RTOL = 2e-6: float32 has eps = 1.2e-7. The two sides of
each identity sum the same B (<= 37) terms in different orders and, for the
per-example recipes, go through tanh/exp/softmax separately, so they differ
by a few eps; measured: 8e-8 to 1.8e-7 (``make equivalence``). 2e-6 (~17 eps)
leaves room for another CPU's summation order without hiding a real error,
which is O(1) (the single-output rule: 1.0; equal-weight accumulation: 1.0-2.7).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import grads as _grads
from mbstudy import trees
from tests import reference_numpy as ref

F64_RTOL = 1e-12
F32_RTOL = 2e-6


flat = trees.flatten
rel_err = trees.relative_error


# seed 000's net on teacher-like data (mse), and the MNIST-1D net (cross-entropy)
NETS = {
    "mse": (128, 64, 10),
    "cross_entropy": (40, 100, 100, 10),
}


def problem(loss, activation="tanh", B=32, dtype=jnp.float64, seed=0, sizes=None):
    """A model, params drawn like ``model.init`` does, and a random batch.

    NumPy draws the numbers, so that each new shape does not compile a JAX
    random kernel (``model.init`` itself is tested in test_model_data.py).
    """
    model = mb.MLP(sizes or NETS[loss], activation=activation)
    rng = np.random.default_rng(seed)
    gain = 2.0 if activation == "relu" else 1.0
    params = [
        {
            "w": jnp.asarray(rng.normal(0, np.sqrt(gain / i), (i, o)), dtype),
            "b": jnp.asarray(rng.normal(0, 0.1, (o,)), dtype),
        }
        for i, o in zip(model.sizes[:-1], model.sizes[1:])
    ]
    x = jnp.asarray(rng.normal(0, 1, (B, model.n_inputs)), dtype)
    if loss == "mse":
        y = jnp.asarray(rng.normal(0, 1, (B, model.n_outputs)), dtype)
    else:
        y = jnp.asarray(rng.integers(0, model.n_outputs, B), jnp.int32)
    return model, params, x, y


CASES = [(loss, act) for loss in ("mse", "cross_entropy") for act in ("tanh", "relu")]
PRECISIONS = [(jnp.float64, F64_RTOL), (jnp.float32, F32_RTOL)]


@pytest.fixture(params=CASES, ids=lambda c: f"{c[0]}-{c[1]}")
def case(request):
    return request.param


@pytest.fixture(params=PRECISIONS, ids=["f64", "f32"])
def precision(request):
    return request.param


def assert_dtype(tree, dtype):
    for leaf in jax.tree.leaves(tree):
        assert leaf.dtype == dtype, f"result dtype {leaf.dtype}, expected {dtype}"


# ------------------------------------------------------------------- Q1 identities


@pytest.mark.parametrize("B", [1, 32, 37])
def test_mean_of_per_sample_equals_batch_mean(case, precision, B):
    (loss, act), (dtype, rtol) = case, precision
    model, params, x, y = problem(loss, act, B, dtype)
    per = mb.per_sample_grads(model, loss, params, x, y)
    g = mb.batch_grad(model, loss, params, x, y, "mean")
    assert_dtype(g, dtype)
    mean_of_per = jax.tree.map(lambda t: t.mean(axis=0), per)
    assert rel_err(mean_of_per, g) < rtol


def test_sum_equals_B_times_mean(case, precision):
    (loss, act), (dtype, rtol) = case, precision
    B = 37
    model, params, x, y = problem(loss, act, B, dtype)
    g_sum = mb.batch_grad(model, loss, params, x, y, "sum")
    g_mean = mb.batch_grad(model, loss, params, x, y, "mean")
    assert rel_err(g_sum, jax.tree.map(lambda t: B * t, g_mean)) < rtol


@pytest.mark.parametrize("B,k", [(32, 8), (37, 8), (37, 36), (5, 10)])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_accumulated_equals_batch(case, precision, B, k, reduction):
    (loss, act), (dtype, rtol) = case, precision
    model, params, x, y = problem(loss, act, B, dtype)
    acc = mb.accumulated_grad(model, loss, params, x, y, micro_batch_size=k, reduction=reduction)
    g = mb.batch_grad(model, loss, params, x, y, reduction)
    assert_dtype(acc, dtype)
    assert rel_err(acc, g) < rtol


def test_equal_weight_accumulation_is_wrong_for_unequal_micro_batches():
    """The common mistake: averaging micro-batch means. Exact for equal sizes, wrong otherwise."""
    model, params, x, y = problem("cross_entropy", B=33)
    g = mb.batch_grad(model, "cross_entropy", params, x, y)
    naive = mb.accumulated_grad(model, "cross_entropy", params, x, y, micro_batch_size=16, equal_weights=True)
    # micro-batches of 16, 16, 1: the single example gets weight 1/3 instead of 1/33
    assert rel_err(naive, g) > 0.1
    equal = mb.accumulated_grad(model, "cross_entropy", params, x[:32], y[:32], micro_batch_size=16, equal_weights=True)
    assert rel_err(equal, mb.batch_grad(model, "cross_entropy", params, x[:32], y[:32])) < F64_RTOL


@pytest.mark.parametrize("B", [1, 7, 32])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_sharded_equals_batch(case, precision, B, reduction):
    assert len(jax.devices()) == 4, "conftest sets 4 host devices"
    (loss, act), (dtype, rtol) = case, precision
    model, params, x, y = problem(loss, act, B, dtype)
    s = mb.sharded_grad(model, loss, params, x, y, reduction)
    g = mb.batch_grad(model, loss, params, x, y, reduction)
    assert_dtype(s, dtype)
    assert rel_err(s, g) < rtol


def test_sharded_runs_on_every_device():
    model, params, x, y = problem("cross_entropy", B=37)
    from mbstudy import parallel

    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    hlo = parallel._sharded_grad.lower(
        params, x, y, model=model, loss_name="cross_entropy", reduction="mean", mesh=mesh
    ).compile().as_text()
    assert "all-reduce" in hlo, "the shards must be combined by an XLA all-reduce"


def test_sharded_on_a_subset_of_devices():
    model, params, x, y = problem("mse", B=10)
    s = mb.sharded_grad(model, "mse", params, x, y, devices=jax.devices()[:3])
    assert rel_err(s, mb.batch_grad(model, "mse", params, x, y)) < F64_RTOL


# --------------------------------------------------------------- per-example recipes


@pytest.mark.parametrize("B", [1, 32])
def test_fast_equals_vmap_recipe(case, precision, B):
    (loss, act), (dtype, rtol) = case, precision
    model, params, x, y = problem(loss, act, B, dtype)
    fast = mb.per_sample_grads_fast(model, loss, params, x, y)
    slow = mb.per_sample_grads(model, loss, params, x, y)
    assert jax.tree.structure(fast) == jax.tree.structure(slow)
    assert [l.shape for l in jax.tree.leaves(fast)] == [l.shape for l in jax.tree.leaves(slow)]
    assert_dtype(fast, dtype)
    # per example, not only overall
    err = np.linalg.norm(flat(fast, True) - flat(slow, True), axis=1) / np.linalg.norm(flat(slow, True), axis=1)
    assert err.max() < rtol


def test_norms_equal_norms_of_vmap_recipe(case, precision):
    (loss, act), (dtype, rtol) = case, precision
    model, params, x, y = problem(loss, act, 37, dtype)
    norms = mb.per_sample_grad_norms(model, loss, params, x, y)
    sq = mb.per_sample_grad_norms(model, loss, params, x, y, squared=True)
    direct = np.linalg.norm(flat(mb.per_sample_grads(model, loss, params, x, y), True), axis=1)
    assert norms.shape == (37,) and norms.dtype == dtype
    np.testing.assert_allclose(np.asarray(norms), direct, rtol=rtol)
    np.testing.assert_allclose(np.asarray(sq), direct**2, rtol=2 * rtol)


def test_norms_never_build_a_B_by_P_tensor():
    model, params, x, y = problem("cross_entropy", B=512, dtype=jnp.float32)
    lowered = _grads._per_sample_grad_norms.lower(params, x, y, model=model, loss_name="cross_entropy", squared=False)
    mem = lowered.compile().memory_analysis()
    assert mem.temp_size_in_bytes < 512 * model.num_params * 4 / 10


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("act", ["tanh", "relu"])
def test_numpy_reference(loss, act):
    """Seed 000's net (128-64-10), independent NumPy backprop, float64, to 1e-10."""
    model, params, x, y = problem(loss, act, 16, jnp.float64, sizes=(128, 64, 10))
    layers = [(np.asarray(p["w"]), np.asarray(p["b"])) for p in params]
    want = ref.per_example_grads(layers, act, loss, np.asarray(x), np.asarray(y))
    for fn in (mb.per_sample_grads, mb.per_sample_grads_fast):
        got = fn(model, loss, params, x, y)
        for i in range(16):
            for l in range(2):
                for key, w in zip(("w", "b"), want[i][l]):
                    np.testing.assert_allclose(np.asarray(got[l][key][i]), w, rtol=1e-10, atol=1e-14)
    mean_ref = [
        {"w": np.mean([want[i][l][0] for i in range(16)], axis=0), "b": np.mean([want[i][l][1] for i in range(16)], axis=0)}
        for l in range(2)
    ]
    assert rel_err(mb.batch_grad(model, loss, params, x, y), mean_ref) < 1e-12


# ------------------------------------------------------------ Q2: finite differences


@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_batch_grad_against_finite_differences(loss, reduction):
    model, params, x, y = problem(loss, "tanh", 6, jnp.float64, sizes=(3, 4, 2))
    layers = [(np.asarray(p["w"]), np.asarray(p["b"])) for p in params]
    red = np.mean if reduction == "mean" else np.sum

    def L(ls):
        return red(ref.example_loss(ls, "tanh", loss, np.asarray(x), np.asarray(y)))

    h = 1e-6
    fd = []
    for l in range(len(layers)):
        for j in range(2):
            arr = layers[l][j]
            g = np.zeros_like(arr)
            for idx in np.ndindex(arr.shape):
                plus = [list(t) for t in layers]
                minus = [list(t) for t in layers]
                plus[l][j] = arr.copy(); plus[l][j][idx] += h
                minus[l][j] = arr.copy(); minus[l][j][idx] -= h
                g[idx] = (L(plus) - L(minus)) / (2 * h)
            fd.append(g)
    fd_tree = [{"w": fd[0], "b": fd[1]}, {"w": fd[2], "b": fd[3]}]
    true = mb.batch_grad(model, loss, params, x, y, reduction)
    assert rel_err(true, fd_tree) < 1e-8
    wrong = mb.single_output_grad(model, loss, params, x, y, reduction)
    assert rel_err(wrong, fd_tree) > 0.3, "the single-output rule must be visibly wrong"


def test_single_output_grad_is_one_term_of_the_chain_rule():
    """Summing the single-output terms over every (example, output) gives the true gradient."""
    model, params, x, y = problem("mse", B=3, sizes=(5, 4, 3))
    total = jax.tree.map(jnp.zeros_like, params)
    for i in range(3):
        for j in range(3):
            term = mb.single_output_grad(model, "mse", params, x, y, output_index=(i, j))
            total = jax.tree.map(jnp.add, total, term)
    assert rel_err(total, mb.batch_grad(model, "mse", params, x, y)) < F64_RTOL


# ---------------------------------------------------------------- Q7: noise scale


def per_example_matrix(model, loss, params, x, y):
    return flat(mb.per_sample_grads(model, loss, params, x, y), True)


@pytest.mark.parametrize("population_size", [None, 37, 1000])
def test_b_simple_matches_direct_computation(case, population_size):
    loss, act = case
    model, params, x, y = problem(loss, act, 37)
    s = mb.grad_noise_stats(model, loss, params, x, y, population_size=population_size)
    G = per_example_matrix(model, loss, params, x, y)
    gbar = G.mean(axis=0)
    tr = np.sum((G - gbar) ** 2) / (37 - 1)
    fpc = 1 / 37 - (0 if population_size is None else 1 / population_size)
    g_true = gbar @ gbar - tr * fpc
    np.testing.assert_allclose(float(s.g_norm_sq), gbar @ gbar, rtol=F64_RTOL)
    np.testing.assert_allclose(float(s.trace_cov), tr, rtol=F64_RTOL)
    np.testing.assert_allclose(float(s.g_true_sq), g_true, rtol=1e-11)
    np.testing.assert_allclose(float(s.b_simple), tr / g_true, rtol=1e-11)


def test_two_batch_estimator_recovers_truth_exactly():
    """Exact expectations by enumerating every batch of a 7-example set (without replacement)."""
    from itertools import combinations

    model, params, x, y = problem("cross_entropy", B=7)
    G = per_example_matrix(model, "cross_entropy", params, x, y)
    N = 7
    Gfull = G.mean(axis=0)
    tr = np.sum((G - Gfull) ** 2) / (N - 1)

    def expected_sq(b):
        return np.mean([np.sum(G[list(c)].mean(axis=0) ** 2) for c in combinations(range(N), b)])

    s = mb.two_batch_noise(expected_sq(2), 2, expected_sq(5), 5, population_size=N)
    np.testing.assert_allclose(float(s.g_true_sq), Gfull @ Gfull, rtol=1e-10)
    np.testing.assert_allclose(float(s.trace_cov), tr, rtol=1e-10)
    # the one-batch estimator on the whole set is exact too
    one = mb.grad_noise_stats(model, "cross_entropy", params, x, y, population_size=N)
    np.testing.assert_allclose(float(one.b_simple), tr / (Gfull @ Gfull), rtol=1e-10)


# ----------------------------------------------------------------- compilation


PUBLIC = [
    (mb.batch_grad, _grads._batch_grad, {}),
    (mb.per_sample_grads, _grads._per_sample_grads, {}),
    (mb.per_sample_grads_fast, _grads._per_sample_grads_fast, {}),
    (mb.per_sample_grad_norms, _grads._per_sample_grad_norms, {}),
    (mb.accumulated_grad, _grads._accumulated_grad, {"micro_batch_size": 4}),
    (mb.single_output_grad, _grads._single_output_grad, {}),
]


@pytest.mark.parametrize("fn,jitted,kw", PUBLIC, ids=lambda v: getattr(v, "__name__", ""))
def test_second_call_does_not_recompile(fn, jitted, kw):
    model, params, x, y = problem("cross_entropy", B=13, seed=5)
    fn(model, "cross_entropy", params, x, y, **kw)
    n = jitted._cache_size()
    _, params2, x2, y2 = problem("cross_entropy", B=13, seed=6)  # new values, same shapes
    fn(mb.MLP(NETS["cross_entropy"]), "cross_entropy", params2, x2, y2, **kw)  # an equal, new model
    assert jitted._cache_size() == n


def test_sharded_second_call_does_not_recompile():
    from mbstudy import parallel

    model, params, x, y = problem("mse", B=9, seed=5)
    mb.sharded_grad(model, "mse", params, x, y)
    n = parallel._sharded_grad._cache_size()
    _, params2, x2, y2 = problem("mse", B=9, seed=6)
    mb.sharded_grad(model, "mse", params2, x2, y2)
    assert parallel._sharded_grad._cache_size() == n
