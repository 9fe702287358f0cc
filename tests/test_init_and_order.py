"""The MNIST-1D paper's recipe as options: PyTorch's default initialisation (``init="torch_default"``) against
PyTorch's own layers, and the sequential data order (``data_order="sequential"``) against the paper's loop.

Both are ``since=2`` fields whose defaults are what the study always did; ``tests/test_fingerprint.py`` and
``tests/test_grid_fingerprints.py`` hold the stored hashes and numbers that must not move.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.layers import INITS, Conv1D, Dense
from mbstudy.step import ORDERS, batch_indices
from mbstudy.train import train

torch = pytest.importorskip("torch")

DRAWS = 200  # layers drawn per side: about 10^5 weights and 10^3-10^4 biases each


def _ours(layer, n: int = DRAWS) -> tuple[np.ndarray, np.ndarray]:
    params = [layer.init(k, jnp.float32) for k in jax.random.split(jax.random.key(0), n)]
    return (np.concatenate([np.asarray(p["w"]).ravel() for p in params]),
            np.concatenate([np.asarray(p["b"]).ravel() for p in params]))


def _theirs(make, n: int = DRAWS) -> tuple[np.ndarray, np.ndarray]:
    torch.manual_seed(0)
    layers = [make() for _ in range(n)]
    return (np.concatenate([m.weight.detach().numpy().ravel() for m in layers]),
            np.concatenate([m.bias.detach().numpy().ravel() for m in layers]))


# (ours, PyTorch's, fan_in): the paper's CNN's four layers (ConvBase in the mnist1d repository's models.py)
LAYERS = {
    "conv1": (Conv1D(1, 25, 5, 2, 1, init_scheme="torch_default"), lambda: torch.nn.Conv1d(1, 25, 5, 2, 1), 5),
    "conv2": (Conv1D(25, 25, 3, 2, 1, init_scheme="torch_default"), lambda: torch.nn.Conv1d(25, 25, 3, 2, 1), 75),
    "linear": (Dense(125, 10, 1.0, "torch_default"), lambda: torch.nn.Linear(125, 10), 125),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_torch_default_draws_as_pytorchs_own_layers(name):
    """Weights and biases in PyTorch's interval [-1/sqrt(fan_in), 1/sqrt(fan_in)], filling it (a uniform's
    variance bound^2 / 3, its quartiles at -bound/2 and bound/2), as PyTorch's own nn.Conv1d / nn.Linear do."""
    layer, make, fan_in = LAYERS[name]
    bound = 1 / math.sqrt(fan_in)
    for part, a, b in zip(("weights", "biases"), _ours(layer), _theirs(make)):
        for side, x in (("ours", a), ("PyTorch's", b)):
            assert np.abs(x).max() <= bound * (1 + 1e-6), f"{name} {part} ({side}) beyond 1/sqrt(fan_in)"
            assert np.abs(x).max() > 0.97 * bound, f"{name} {part} ({side}) do not fill the interval"
            se = bound**2 * math.sqrt(4 / 45 / x.size)  # the standard error of a uniform's sample variance
            assert abs(x.var() - bound**2 / 3) < 5 * se, f"{name} {part} ({side}): variance {x.var():.3g}"
            np.testing.assert_allclose(np.quantile(x, [0.25, 0.5, 0.75]) / bound, [-0.5, 0, 0.5], atol=0.05)
        se = bound**2 * math.sqrt(4 / 45 * (1 / a.size + 1 / b.size))
        assert abs(a.var() - b.var()) < 5 * se, f"{name} {part}: ours {a.var():.4g} against PyTorch's {b.var():.4g}"


def test_torch_default_is_a_sixth_of_he_normals_variance_with_biases():
    """PyTorch's kaiming_uniform_(a=sqrt(5)) has variance 1 / (3 fan_in); He-normal's is 2 / fan_in."""
    conv = Conv1D(25, 25, 3, 2, 1)
    he_w, he_b = _ours(conv, 50)
    torch_w, torch_b = _ours(dataclasses.replace(conv, init_scheme="torch_default"), 50)
    assert not he_b.any() and torch_b.all(), "He-normal's biases are zero, PyTorch's are not"
    np.testing.assert_allclose(torch_w.var() / he_w.var(), 1 / 6, rtol=0.03)


def test_the_default_draws_what_it_always_drew():
    """he_normal takes the weights straight from the layer's key, as before the schemes existed."""
    key = jax.random.key(3)
    for layer, shape, fan_in, gain in ((Dense(40, 100, 2.0), (40, 100), 40, 2.0),
                                       (Conv1D(25, 25, 3, 2, 1), (3, 25, 25), 75, 2.0)):
        p = layer.init(key, jnp.float32)
        np.testing.assert_array_equal(p["w"], jax.random.normal(key, shape, jnp.float32)
                                      * jnp.sqrt(gain / fan_in).astype(jnp.float32))
        assert not np.asarray(p["b"]).any()
    assert mb.CNN() == mb.CNN(init_scheme="he_normal") == mb.mnist1d_cnn()


@pytest.mark.parametrize("net", [mb.CNN(init_scheme="torch_default"), mb.MLP((40, 100, 10), "relu", "torch_default")])
def test_every_layer_of_a_model_takes_its_scheme(net):
    params = net.init(jax.random.key(0), dtype=jnp.float32)
    for layer, p in zip(net.param_layers, params):
        fan_in = math.prod(p["w"].shape[:-1])
        assert layer.init_scheme == "torch_default"
        assert np.abs(p["w"]).max() <= 1 / math.sqrt(fan_in) + 1e-7 and np.asarray(p["b"]).all()


def test_a_scheme_that_does_not_exist_is_named():
    with pytest.raises(ValueError, match=r"init_scheme must be one of \['he_normal', 'torch_default'\]; received 'xavier'"):
        mb.CNN(init_scheme="xavier")
    with pytest.raises(ValueError, match=r"Dense: init_scheme must be one of"):
        Dense(3, 4, 1.0, "xavier")
    assert list(INITS) == ["he_normal", "torch_default"]


# ------------------------------------------------------------------ the data order


@pytest.mark.parametrize("B", [100, 128, 1, 4000])
def test_sequential_visits_every_example_once_per_epoch_in_order(B):
    n, steps = 4000, 3 * 4000 // B + 2
    idx = batch_indices(0, 0, steps, n, B, "sequential")
    assert idx.shape == (steps, B)
    np.testing.assert_array_equal(idx.ravel(), np.arange(steps * B) % n)
    for e in range(steps * B // n):  # each run of N examples is the training set once, in its order
        np.testing.assert_array_equal(idx.ravel()[e * n : (e + 1) * n], np.arange(n))
    np.testing.assert_array_equal(idx, batch_indices(7, 0, steps, n, B, "sequential"), "no seed in it")
    cuts = (0, 2, 3, steps)
    pieces = [batch_indices(0, a, b - a, n, B, "sequential") for a, b in zip(cuts[:-1], cuts[1:])]
    np.testing.assert_array_equal(np.concatenate(pieces), idx, "the same however the steps are chunked")


def test_sequential_is_the_papers_loop_where_b_divides_n():
    """notebooks/train.py of the mnist1d repository: bix = (step * B) % len(x_train); x_train[bix:bix + B]."""
    n, B, steps = 4000, 100, 8001
    paper = np.stack([np.arange(n)[(t * B) % n : (t * B) % n + B] for t in range(steps)])
    np.testing.assert_array_equal(batch_indices(0, 0, steps, n, B, "sequential"), paper)


def test_the_default_order_is_the_shuffle_it_always_was():
    np.testing.assert_array_equal(batch_indices(3, 5, 7, 1000, 32), batch_indices(3, 5, 7, 1000, 32, "shuffle"))
    assert list(ORDERS) == ["shuffle", "sequential"]
    with pytest.raises(ValueError, match=r"order: expected one of \['shuffle', 'sequential'\]; received 'random'"):
        batch_indices(0, 0, 1, 10, 2, "random")


# ------------------------------------------------------------------ as configuration fields


def test_the_fields_at_their_defaults_leave_the_hash_and_the_name():
    cfg = TrainConfig(model="cnn", optimizer="adam", learning_rate=1e-2, batch_size=100)
    paper = dataclasses.replace(cfg, init="torch_default", data_order="sequential")
    assert "init" not in cfg.as_dict() and "data_order" not in cfg.as_dict()
    assert cfg == TrainConfig(model="cnn", optimizer="adam", learning_rate=1e-2, batch_size=100, init="he_normal",
                              data_order="shuffle")
    assert len({cfg.hash(), paper.hash(), dataclasses.replace(cfg, init="torch_default").hash()}) == 3
    assert paper.program_key() != cfg.program_key(), "another model: another program"
    assert dataclasses.replace(cfg, data_order="sequential").program_key() == cfg.program_key(), "the host's order"
    assert TrainConfig.from_params(paper.to_params()) == paper
    with pytest.raises(ConfigError, match=r"init: expected one of \['he_normal', 'torch_default'\]; received 'x'"):
        TrainConfig(init="x")
    with pytest.raises(ConfigError, match=r"data_order: expected one of \['shuffle', 'sequential'\]"):
        TrainConfig(data_order="x")


def test_the_papers_recipe_trains_and_differs_from_the_default():
    base = TrainConfig(model="cnn", optimizer="adam", learning_rate=1e-2, batch_size=100, steps=40, eval_every=20)
    runs = {(i, o): train(dataclasses.replace(base, init=i, data_order=o))
            for i in ("he_normal", "torch_default") for o in ("shuffle", "sequential")}
    losses = {k: r.history["train/loss"] for k, r in runs.items()}
    for k, r in runs.items():
        assert r.outcome == "completed" and losses[k][-1] < losses[k][0], k
    assert losses[("he_normal", "shuffle")][0] == losses[("he_normal", "sequential")][0], "the same start"
    assert losses[("he_normal", "shuffle")][0] != losses[("torch_default", "shuffle")][0], "another start"
    assert losses[("he_normal", "shuffle")][-1] != losses[("he_normal", "sequential")][-1], "other batches"


def test_the_transformer_refuses_another_initialisation():
    cfg = TrainConfig(dataset="text", model="transformer", init="torch_default", batch_size=8, steps=1)
    with pytest.raises(ConfigError, match=r"the transformer draws its own initial values; init applies to the mlp"):
        train(cfg)
