"""The network description and the offline data sets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb


def test_mlp_is_frozen_and_hashable():
    a, b = mb.MLP([128, 64, 10]), mb.MLP((128, 64, 10))
    assert a == b and hash(a) == hash(b) and a.sizes == (128, 64, 10)
    with pytest.raises(Exception):
        a.sizes = (1, 2)


@pytest.mark.parametrize("make_key", [jax.random.key, jax.random.PRNGKey], ids=["key", "PRNGKey"])
def test_init_accepts_both_key_kinds(make_key):
    net = mb.MLP((5, 7, 3))
    p1 = net.init(make_key(0), dtype=jnp.float32)
    p2 = net.init(make_key(0), dtype=jnp.float32)
    assert [l["w"].shape for l in p1] == [(5, 7), (7, 3)]
    assert all(bool(jnp.all(u == v)) for u, v in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)))
    assert p1[0]["w"].dtype == jnp.float32
    assert not bool(jnp.all(net.init(make_key(1))[0]["w"] == p1[0]["w"]))


def test_init_scale():
    w = mb.MLP((400, 300, 2)).init(jax.random.key(0))[0]["w"]
    assert abs(float(jnp.var(w)) * 400 - 1.0) < 0.05  # LeCun for tanh
    w = mb.MLP((400, 300, 2), activation="relu").init(jax.random.key(0))[0]["w"]
    assert abs(float(jnp.var(w)) * 400 - 2.0) < 0.1  # He for relu


def test_apply_one_example_and_batch_agree():
    net = mb.MLP((5, 7, 3), activation="relu")
    params = net.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 5))
    batch = net.apply(params, x)
    singles = jnp.stack([net.apply(params, x[i]) for i in range(4)])
    assert batch.shape == (4, 3) and net.apply(params, x[0]).shape == (3,)
    np.testing.assert_allclose(batch, singles, rtol=1e-12)


def test_num_params():
    assert mb.MLP((40, 100, 100, 10)).num_params == 40 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert mb.MLP((784, 512, 512, 10)).num_params == 669_706


@pytest.mark.parametrize(
    "name,task,n_in,n_train,n_test",
    [("mnist1d", "classification", 40, 4000, 1000), ("digits", "classification", 64, 1438, 359), ("teacher", "regression", 128, 1000, 500),
     ("teacher_5x3", "regression", 5, 1000, 500)],
)
def test_datasets(name, task, n_in, n_train, n_test):
    np.random.seed(1234)
    before = np.random.get_state()[1].copy()
    d = mb.load_dataset(name)
    assert np.array_equal(np.random.get_state()[1], before), "the caller's NumPy global RNG must be left alone"
    assert (mb.DATASETS[name].n_train, mb.DATASETS[name].task) == (n_train, task)
    assert d.task == task and d.n_inputs == n_in and d.n_outputs == (3 if name == "teacher_5x3" else 10)
    assert d.x_train.shape == (n_train, n_in) and d.x_test.shape == (n_test, n_in)
    assert d.x_train.dtype == np.float32
    if task == "classification":
        assert d.y_train.dtype == np.int32 and set(np.unique(d.y_train)) == set(range(10))
        assert d.loss_name == "cross_entropy"
    else:
        assert d.y_train.shape == (n_train, d.n_outputs) and d.loss_name == "mse"
    assert not d.x_train.flags.writeable
    assert len(d.digest) == 64
    assert mb.load_dataset(name).digest == d.digest
    assert mb.load_dataset(name, seed=1).digest != d.digest


def test_mnist1d_never_downloads(monkeypatch):
    import mnist1d.data

    def boom(*a, **k):
        raise AssertionError("get_dataset() downloads; load_dataset must not call it")

    monkeypatch.setattr(mnist1d.data, "get_dataset", boom)
    monkeypatch.setattr("urllib.request.urlopen", boom)
    d = mb.load_dataset("mnist1d")
    assert d.x_train.shape == (4000, 40)


def test_digits_standardised():
    d = mb.load_dataset("digits")
    assert np.allclose(d.x_train.mean(axis=0), 0, atol=1e-5)


def test_unknown_dataset():
    with pytest.raises(ValueError, match=r"name: unknown data set 'mnist'; available: mnist1d, digits, teacher, teacher_5x3, text"):
        mb.load_dataset("mnist")
    with pytest.raises(ValueError, match=r"seed: expected a non-negative int; received -1"):
        mb.load_dataset("digits", seed=-1)
