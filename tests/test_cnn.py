"""The convolutional network (issue 12): layers, every gradient, per-layer noise statistics, training.

float64 identities hold to 1e-12 relative (norm-wise over the pytree), as in
test_grads.py; the independent NumPy reference (a per-example forward and
backward pass with explicit loops, no im2col, no JAX) agrees to 1e-10.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import grads as _grads
from mbstudy import noise as _noise
from mbstudy import per_example, trees
from mbstudy.config import TrainConfig
from mbstudy.layers import Activation, Conv1D, Dense, Flatten, Reshape, Residual
from mbstudy.model import Network

F64_RTOL = 1e-12
REF_RTOL = 1e-10
flat = trees.flatten
rel_err = trees.relative_error


@dataclasses.dataclass(frozen=True)
class ConvNet(Network):
    """Convolutions ``(c_in, c_out, kernel, stride, padding)`` each followed by ``act``, flatten, dense."""

    length: int
    convs: tuple[tuple[int, int, int, int, int], ...]
    n_out: int = 3
    act: str = "tanh"

    @property
    def layers(self):
        out, L = [Reshape((self.length,), (self.length, 1))], self.length
        for c_in, c_out, k, s, p in self.convs:
            conv = Conv1D(c_in, c_out, k, s, p)
            out += [conv, Activation(self.act)]
            L = conv.out_length(L)
        return (*out, Flatten(), Dense(L * self.convs[-1][1], self.n_out, 1.0))

    @property
    def input_shape(self):
        return (self.length,)


# (length, convs): kernels 1..5, strides 1..3 (3 does not divide 23 - 4 + 2 or 40 + 2 - 5), paddings 0..2
NETS = {
    "k3s1p0": (12, ((1, 4, 3, 1, 0),)),
    "k5s3p1-k2s2p2": (23, ((1, 3, 5, 3, 1), (3, 4, 2, 2, 2))),
    "k4s2p0-k1s1p0": (17, ((1, 2, 4, 2, 0), (2, 5, 1, 1, 0))),
}


def problem(model, loss="cross_entropy", B=13, dtype=jnp.float64, seed=0):
    """Params drawn by NumPy (biases non-zero, so the bias gradients are tested too), and a random batch."""
    rng = np.random.default_rng(seed)
    params = []
    for layer in model.param_layers:
        w_shape = (layer.kernel, layer.c_in, layer.c_out) if isinstance(layer, Conv1D) else (layer.n_in, layer.n_out)
        n_out = w_shape[-1]
        params.append({"w": jnp.asarray(rng.normal(0, np.sqrt(1.5 / np.prod(w_shape[:-1])), w_shape), dtype),
                       "b": jnp.asarray(rng.normal(0, 0.1, (n_out,)), dtype)})
    x = jnp.asarray(rng.normal(0, 1, (B, *model.input_shape)), dtype)
    if loss == "mse":
        y = jnp.asarray(rng.normal(0, 1, (B, model.n_outputs)), dtype)
    else:
        y = jnp.asarray(rng.integers(0, model.n_outputs, B), jnp.int32)
    return params, x, y


def models():
    out = {name: ConvNet(L, convs) for name, (L, convs) in NETS.items()}
    out["mnist1d_cnn"] = mb.mnist1d_cnn()
    out["mnist1d_cnn-c4"] = mb.CNN(40, 4, 10)
    return out


MODELS = models()


@pytest.fixture(params=list(MODELS), ids=list(MODELS))
def model(request):
    return MODELS[request.param]


# --------------------------------------------------------------------- NumPy reference


def _np_act(name, z):
    return np.tanh(z) if name == "tanh" else np.maximum(z, 0.0)


def _np_act_prime(name, z):
    return 1.0 - np.tanh(z) ** 2 if name == "tanh" else (z > 0).astype(z.dtype)


def numpy_per_example_grads(spec, act, params, x, y, loss):
    """Per-example gradients of Reshape -> [Conv1D -> act]* -> Flatten -> Dense, one example at a time.

    Forward: ``z[t, o] = sum_{j, c} x_pad[t*s + j, c] w[j, c, o] + b[o]`` with explicit loops over t.
    Backward: ``dw[j, c, o] = sum_t x_pad[t*s + j, c] d[t, o]``, ``db = sum_t d[t]``,
    ``dx_pad[t*s + j, c] += sum_o w[j, c, o] d[t, o]``, ``dx = dx_pad[p : p + L]``.
    """
    params = [{k: np.asarray(v) for k, v in p.items()} for p in params]
    x, y = np.asarray(x), np.asarray(y)
    out = []
    for i in range(x.shape[0]):
        h = x[i][:, None]  # (L, 1)
        cache = []
        for (c_in, c_out, k, s, p), prm in zip(spec, params):
            L = h.shape[0]
            hp = np.zeros((L + 2 * p, c_in))
            hp[p : p + L] = h
            T = (L + 2 * p - k) // s + 1
            z = np.empty((T, c_out))
            for t in range(T):
                z[t] = np.einsum("jc,jco->o", hp[t * s : t * s + k], prm["w"]) + prm["b"]
            cache.append((hp, z, L))
            h = _np_act(act, z)
        f = h.reshape(-1)  # row-major (t, c)
        Wd, bd = params[-1]["w"], params[-1]["b"]
        o = f @ Wd + bd
        if loss == "mse":
            d = 2.0 * (o - y[i]) / o.shape[0]
        else:
            q = np.exp(o - o.max())
            q /= q.sum()
            q[int(y[i])] -= 1.0
            d = q
        grads = [None] * (len(spec) + 1)
        grads[-1] = {"w": np.outer(f, d), "b": d.copy()}
        dh = (Wd @ d).reshape(h.shape)
        for l in reversed(range(len(spec))):
            (c_in, c_out, k, s, p), prm = spec[l], params[l]
            hp, z, L = cache[l]
            dz = dh * _np_act_prime(act, z)
            dw = np.zeros_like(prm["w"])
            dhp = np.zeros_like(hp)
            for t in range(z.shape[0]):
                dw += np.einsum("jc,o->jco", hp[t * s : t * s + k], dz[t])
                dhp[t * s : t * s + k] += np.einsum("jco,o->jc", prm["w"], dz[t])
            grads[l] = {"w": dw, "b": dz.sum(axis=0)}
            dh = dhp[p : p + L]
        out.append(grads)
    return out


def _spec(model):
    return [(l.c_in, l.c_out, l.kernel, l.stride, l.padding) for l in model.param_layers if isinstance(l, Conv1D)]


def _act_of(model):
    return next(l.name for l in model.layers if isinstance(l, Activation))


@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
def test_numpy_reference(model, loss):
    params, x, y = problem(model, loss, B=5)
    ref = numpy_per_example_grads(_spec(model), _act_of(model), params, x, y, loss)
    for fn in (mb.per_sample_grads, mb.per_sample_grads_fast):
        got = fn(model, loss, params, x, y)
        for i in range(x.shape[0]):
            mine = jax.tree.map(lambda g: np.asarray(g[i]), got)
            assert rel_err(mine, ref[i]) < REF_RTOL, (fn.__name__, i)


def test_shapes_and_lengths():
    net = mb.mnist1d_cnn()
    assert net.input_shape == (40,) and net.n_outputs == 10
    assert [s[-2:] for s in net.output_shapes((3, 40))[:3]] == [(19, 25), (10, 25), (5, 25)]
    assert net.param_layers[-1] == Dense(125, 10, 1.0)
    params = net.init(jax.random.key(0))
    assert net.num_params == sum(p.size for p in jax.tree.leaves(params)) == 5210
    assert all(float(jnp.abs(p["b"]).max()) == 0.0 for p in params)
    one = net.apply(params, jnp.ones(40))
    assert one.shape == (10,)
    np.testing.assert_allclose(net.apply(params, jnp.ones((2, 40)))[1], one, rtol=1e-12)
    hash(net)
    assert mb.CNN() == mb.mnist1d_cnn() and hash(mb.CNN()) == hash(mb.mnist1d_cnn())
    with pytest.raises(ValueError, match="too short"):
        mb.CNN(input_length=2)
    assert mb.CNN(input_length=3).output_shapes((3,))[:3] == [(1, 25)] * 3


def test_conv_matches_lax_conv():
    """The im2col convolution equals XLA's convolution, for a stride that does not divide the length."""
    conv = Conv1D(3, 4, 5, stride=3, padding=2)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(2, 23, 3)))
    p = conv.init(jax.random.key(0), jnp.float64)
    ref = jax.lax.conv_general_dilated(x, p["w"], (3,), [(2, 2)], dimension_numbers=("NWC", "WIO", "NWC"))
    assert conv.output_shape((2, 23, 3)) == ref.shape == (2, 8, 4)
    np.testing.assert_allclose(conv.apply(p, x), ref + p["b"], rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------- float64 identities


def test_mean_sum_accumulated_sharded_equal_batch(model):
    params, x, y = problem(model, B=13)
    g = mb.batch_grad(model, "cross_entropy", params, x, y, "mean")
    per = mb.per_sample_grads(model, "cross_entropy", params, x, y)
    assert rel_err(jax.tree.map(lambda t: t.mean(axis=0), per), g) < F64_RTOL
    g_sum = mb.batch_grad(model, "cross_entropy", params, x, y, "sum")
    assert rel_err(g_sum, jax.tree.map(lambda t: 13 * t, g)) < F64_RTOL
    for red, ref in (("mean", g), ("sum", g_sum)):
        acc = mb.accumulated_grad(model, "cross_entropy", params, x, y, micro_batch_size=5, reduction=red)  # 5, 5, 3
        assert rel_err(acc, ref) < F64_RTOL
        sharded = mb.sharded_grad(model, "cross_entropy", params, x, y, red)  # 13 on 4 devices: padded
        assert rel_err(sharded, ref) < F64_RTOL
    assert len(jax.devices()) == 4


def test_fast_and_norms_equal_vmap(model):
    params, x, y = problem(model, B=11)
    fast = mb.per_sample_grads_fast(model, "cross_entropy", params, x, y)
    slow = mb.per_sample_grads(model, "cross_entropy", params, x, y)
    assert jax.tree.structure(fast) == jax.tree.structure(slow)
    assert [l.shape for l in jax.tree.leaves(fast)] == [l.shape for l in jax.tree.leaves(slow)]
    err = np.linalg.norm(flat(fast, True) - flat(slow, True), axis=1) / np.linalg.norm(flat(slow, True), axis=1)
    assert err.max() < F64_RTOL
    direct = np.linalg.norm(flat(slow, True), axis=1)
    np.testing.assert_allclose(mb.per_sample_grad_norms(model, "cross_entropy", params, x, y), direct, rtol=F64_RTOL)
    sq = mb.per_sample_grad_norms(model, "cross_entropy", params, x, y, squared=True)
    np.testing.assert_allclose(sq, direct**2, rtol=2 * F64_RTOL)


def test_ghost_and_patch_norms_agree(model):
    params, x, y = problem(model, B=9)
    inputs, deltas = per_example.layer_inputs_and_deltas(model, "cross_entropy", params, x, y)
    per = mb.per_sample_grads(model, "cross_entropy", params, x, y)
    n_conv = 0
    for layer, a, d, g in zip(model.param_layers, inputs, deltas, per):
        if not isinstance(layer, Conv1D):
            continue
        n_conv += 1
        direct = np.sum(np.asarray(flat(g, True)) ** 2, axis=1)
        for method in ("ghost", "patch", "auto"):
            np.testing.assert_allclose(per_example.conv_sq_norms(layer, a, d, method), direct, rtol=F64_RTOL)
    assert n_conv == len(_spec(model))


def test_auto_norm_method_follows_the_shapes():
    """Patch for the first convolution of the MNIST-1D CNN (T^2 = 361 > K c_out = 125), ghost for the others."""
    net = mb.mnist1d_cnn()
    params, x, y = problem(net, B=4)
    inputs, deltas = per_example.layer_inputs_and_deltas(net, "cross_entropy", params, x, y)
    chosen = []
    for layer, a in zip(net.param_layers[:3], inputs):
        T = layer.out_length(a.shape[1])
        chosen.append("ghost" if T * T < layer.kernel * layer.c_in * layer.c_out else "patch")
    assert chosen == ["patch", "ghost", "ghost"]
    # the ghost path never forms a (B, K, c_out) tensor: the jaxpr of the second layer's norm has none
    layer, a, d = net.param_layers[1], inputs[1], deltas[1]
    jaxpr = jax.make_jaxpr(lambda a, d: per_example.conv_sq_norms(layer, a, d))(a, d)
    shapes = {tuple(v.aval.shape) for eqn in jaxpr.eqns for v in eqn.outvars}
    assert (4, 75, 25) not in shapes and (4, 10, 10) in shapes


@pytest.mark.parametrize("population_size", [None, 50])
def test_noise_stats_per_layer_sum_to_totals(model, population_size):
    params, x, y = problem(model, B=12)
    totals = mb.grad_noise_stats(model, "cross_entropy", params, x, y, population_size=population_size)
    again, layers = mb.grad_noise_stats(model, "cross_entropy", params, x, y, population_size=population_size,
                                        per_layer=True)
    n = len(model.param_layers)
    assert all(f.shape == (n,) for f in layers)
    for name in ("g_norm_sq", "trace_cov", "g_true_sq", "b_simple"):
        np.testing.assert_array_equal(getattr(again, name), getattr(totals, name))  # the same totals
    for name in ("g_norm_sq", "trace_cov", "g_true_sq"):
        np.testing.assert_allclose(float(getattr(layers, name).sum()), float(getattr(totals, name)), rtol=F64_RTOL)
    np.testing.assert_allclose(layers.b_simple, layers.trace_cov / layers.g_true_sq, rtol=F64_RTOL)
    # against the vmap recipe, layer by layer
    per = mb.per_sample_grads(model, "cross_entropy", params, x, y)
    B = x.shape[0]
    for l, g in enumerate(per):
        G = np.asarray(flat(g, True))
        gbar = G.mean(axis=0)
        trace = np.sum((G - gbar) ** 2) / (B - 1)
        np.testing.assert_allclose(float(layers.trace_cov[l]), trace, rtol=1e-11)
        np.testing.assert_allclose(float(layers.g_norm_sq[l]), gbar @ gbar, rtol=1e-11)


# ---------------------------------------------------------------------- errors, compilation


@dataclasses.dataclass(frozen=True)
class Scale:
    """A layer with no per-example rule: ``y = s * x``."""

    n: int

    def init(self, key, dtype):
        return {"s": jnp.ones((self.n,), dtype)}

    def apply(self, params, x):
        return params["s"] * x

    def output_shape(self, input_shape):
        return input_shape

    def num_params(self):
        return self.n

    def check_params(self, params, index):
        return None


@dataclasses.dataclass(frozen=True)
class Scaled(Network):
    @property
    def layers(self):
        return (Dense(4, 3), Scale(3))

    @property
    def input_shape(self):
        return (4,)


def test_a_layer_without_a_rule_is_named():
    net = Scaled()
    params = net.init(jax.random.key(0))
    x, y = jnp.ones((3, 4)), jnp.arange(3) % 3
    for fn in (mb.per_sample_grads_fast, mb.per_sample_grad_norms, mb.grad_noise_stats):
        with pytest.raises(TypeError, match=r"no per-example rule for the layer type\(s\) \['Scale'\].*per_sample_grads"):
            fn(net, "cross_entropy", params, x, y)
    assert mb.per_sample_grads(net, "cross_entropy", params, x, y)[1]["s"].shape == (3, 3)  # vmap works for any layer


def test_bad_params_are_refused():
    net = mb.mnist1d_cnn()
    params = net.init(jax.random.key(0))
    params[1] = {"w": params[1]["w"][:2], "b": params[1]["b"]}
    with pytest.raises(ValueError, match=r"params\[1\]: expected w \(3, 25, 25\)"):
        mb.batch_grad(net, "cross_entropy", params, jnp.ones((2, 40)), jnp.zeros(2, jnp.int32))


PUBLIC = [
    (mb.batch_grad, _grads._batch_grad, {}),
    (mb.per_sample_grads, _grads._per_sample_grads, {}),
    (mb.per_sample_grads_fast, _grads._per_sample_grads_fast, {}),
    (mb.per_sample_grad_norms, _grads._per_sample_grad_norms, {}),
    (mb.accumulated_grad, _grads._accumulated_grad, {"micro_batch_size": 4}),
    (mb.grad_noise_stats, _noise.noise_stats_jit, {"per_layer": True}),
]


@pytest.mark.parametrize("fn,jitted,kw", PUBLIC, ids=lambda v: getattr(v, "__name__", ""))
def test_second_call_does_not_recompile(fn, jitted, kw):
    net = mb.mnist1d_cnn()
    params, x, y = problem(net, B=10, seed=5)
    fn(net, "cross_entropy", params, x, y, **kw)
    n = jitted._cache_size()
    params2, x2, y2 = problem(net, B=10, seed=6)  # new values, same shapes
    fn(mb.mnist1d_cnn(), "cross_entropy", params2, x2, y2, **kw)  # an equal, new model
    assert jitted._cache_size() == n


# ------------------------------------------------------------------ configuration, training


def test_new_fields_leave_the_mlp_hashes_unchanged():
    """Hashes computed BEFORE the model and channels fields existed (commit 777f140)."""
    before = {
        TrainConfig(): ("b1a8df4b83a40721", "88783c6c3476e8fc"),
        TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=32): ("14269d28466688f4", "65c257c3fb226e7c"),
        TrainConfig(dataset="teacher", hidden=(64,), batch_size=10, steps=40, eval_every=20, learning_rate=0.01):
            ("654e10bdec000e5c", "2d3d5b77b5af2ff0"),
        TrainConfig(activation="relu", noise_batch=64, seed=3, target_loss=0.5): ("486f545086d5de2f", "ac557559737bda15"),
        TrainConfig(model="mlp", channels=25): ("b1a8df4b83a40721", "88783c6c3476e8fc"),  # defaults spelled out
    }
    for cfg, (h, group) in before.items():
        assert (cfg.hash(), cfg.hash(without=("seed",))) == (h, group), cfg
        assert "model" not in cfg.as_dict() and "channels" not in cfg.as_dict()
        assert cfg.to_params()["model"] == "mlp"
    cnn = TrainConfig(model="cnn")
    assert cnn.as_dict()["model"] == "cnn" and "channels" not in cnn.as_dict()
    assert cnn.hash() != TrainConfig().hash() != TrainConfig(channels=8).hash()
    assert dict(cnn.program_key())["model"] == "cnn" and dict(TrainConfig().program_key())["model"] == "mlp"
    assert TrainConfig.from_params(cnn.to_params()) == cnn
    assert TrainConfig.from_params({k: v for k, v in TrainConfig().to_params().items() if k != "model"}) == TrainConfig()


def test_config_checks_the_new_fields():
    with pytest.raises(mb.ConfigError) as e:
        TrainConfig(model="resnet", channels=0)
    assert e.value.problems == ["model: expected one of ['mlp', 'cnn', 'transformer']; received 'resnet'",
                                "channels: expected a positive int; received 0"]


def test_cnn_on_other_input_lengths():
    """The input length comes from the data: 128 (teacher) and 5 (teacher_5x3) work; 2 is refused, naming the field."""
    from mbstudy.data import from_arrays

    teacher = mb.load_dataset("teacher")
    net = TrainConfig(model="cnn", dataset="teacher", channels=3).build_model(teacher)
    assert net == mb.CNN(128, 3, 10) and net.output_shapes((1, 128))[2] == (1, 16, 3)
    small = mb.load_dataset("teacher_5x3")
    net = TrainConfig(model="cnn", dataset="teacher_5x3").build_model(small)
    assert net == mb.CNN(5, 25, 3) and net.output_shapes((1, 5))[:3] == [(1, 2, 25), (1, 1, 25), (1, 1, 25)]
    rng = np.random.default_rng(0)
    tiny = from_arrays("tiny", 0, "classification", rng.normal(size=(20, 2)), rng.integers(0, 3, 20),
                       rng.normal(size=(5, 2)), rng.integers(0, 3, 5), 3)
    with pytest.raises(mb.ConfigError, match=r"model: 'cnn' cannot take the tiny data \(2 inputs\).*too short"):
        mb.train(TrainConfig(model="cnn", batch_size=8, steps=2), tiny)


def test_cnn_trains_and_logs_per_layer_metrics():
    data = mb.load_dataset("mnist1d")
    cfg = TrainConfig(model="cnn", optimizer="adam", learning_rate=1e-2, batch_size=32, steps=60, eval_every=30,
                      noise_batch=256)
    r = mb.train(cfg, data)
    assert r.outcome == "completed" and r.model_params == 5210
    loss = r.history["train/loss"]
    assert loss[-1] < loss[0] - 0.1, loss
    s = r.summary()
    for i in range(4):
        for name in ("b_simple", "trace_cov", "g_norm_sq"):
            key = f"grad/layer{i}/{name}"
            assert r.history[key].shape == (3,) and np.all(np.isfinite(r.history[key]))
            assert f"final/{key}" in s and f"best/{key}" not in s
    assert "grad/layer4/b_simple" not in r.history
    layer_sum = sum(r.history[f"grad/layer{i}/trace_cov"] for i in range(4))
    np.testing.assert_allclose(layer_sum, r.history["grad/trace_cov"], rtol=1e-4)


# -------------------------------------------------------------------------- residual


@dataclasses.dataclass(frozen=True)
class ResNet(Network):
    """conv 1 -> 4 (k3 s2 p1), tanh, y = h + conv(tanh(conv(h))) (k3 s1 p1), flatten, dense."""

    @property
    def layers(self):
        block = Residual((Conv1D(4, 4, 3, 1, 1), Activation("tanh"), Conv1D(4, 4, 3, 1, 1)))
        return (Reshape((15,), (15, 1)), Conv1D(1, 4, 3, 2, 1), Activation("tanh"), block, Flatten(), Dense(32, 3))

    @property
    def input_shape(self):
        return (15,)


def test_residual_block():
    net = ResNet()
    assert [type(l).__name__ for l in net.param_layers] == ["Conv1D", "Conv1D", "Conv1D", "Dense"]
    params, x, y = problem(net, B=10)
    assert net.num_params == sum(p.size for p in jax.tree.leaves(params))
    # the forward pass is h + f(h)
    block = net.layers[3]
    h = jnp.tanh(net.layers[1].apply(params[0], x[:, :, None]))
    f = net.layers[3].layers
    np.testing.assert_allclose(block.apply(params[1:3], h),
                               h + f[2].apply(params[2], jnp.tanh(f[0].apply(params[1], h))), rtol=1e-14)
    np.testing.assert_allclose(net.apply(params, x), net.layers[5].apply(params[3], (block.apply(params[1:3], h)).reshape(10, 32)),
                               rtol=1e-13)
    fast = mb.per_sample_grads_fast(net, "cross_entropy", params, x, y)
    slow = mb.per_sample_grads(net, "cross_entropy", params, x, y)
    assert rel_err(fast, slow, batch_axis=True) < F64_RTOL
    direct = np.linalg.norm(flat(slow, True), axis=1)
    np.testing.assert_allclose(mb.per_sample_grad_norms(net, "cross_entropy", params, x, y), direct, rtol=F64_RTOL)
    g = mb.batch_grad(net, "cross_entropy", params, x, y)
    assert rel_err(jax.tree.map(lambda t: t.mean(axis=0), slow), g) < F64_RTOL
    totals, layers = mb.grad_noise_stats(net, "cross_entropy", params, x, y, per_layer=True)
    np.testing.assert_allclose(float(layers.trace_cov.sum()), float(totals.trace_cov), rtol=F64_RTOL)
    with pytest.raises(ValueError, match="same shape"):
        Residual((Conv1D(4, 5, 3, 1, 1),)).output_shape((15, 4))


def test_a_nested_residual_applies_on_its_own_as_a_network_walks_it():
    from mbstudy.layers import Activation, Dense

    outer = Residual((Dense(4, 4), Residual((Dense(4, 4), Activation("tanh"))), Dense(4, 4)))
    params = outer.init(jax.random.key(0), jnp.float64)
    assert len(params) == outer.n_param_layers() == 3
    x = jnp.ones((2, 4))
    h = x @ params[0]["w"] + params[0]["b"]
    h = h + jnp.tanh(h @ params[1]["w"] + params[1]["b"])
    np.testing.assert_allclose(outer.apply(params, x), x + h @ params[2]["w"] + params[2]["b"], rtol=1e-14)
