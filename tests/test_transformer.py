"""The transformer (issue 24): per-example gradients of every layer type from one backward pass, their norms,
the noise statistics, and the Q1 identities.

float64 identities hold to 1e-12 relative (norm-wise over the pytree), as in test_grads.py;
the independent NumPy reference (tests/reference_transformer.py: a forward and backward pass
written out by hand, one sequence at a time) agrees to 1e-10; so does PyTorch's autograd
on the same weights, where torch is installed.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mbstudy as mb
from mbstudy import per_example, per_example_seq, trees
from mbstudy.transformer import CausalSelfAttention, Embedding, LayerNorm, PositionEmbedding, PositionwiseDense
from tests import reference_transformer as ref

F64_RTOL = 1e-12
REF_RTOL = 1e-10
LOSS = "token_cross_entropy"
rel_err = trees.relative_error

MODELS = {
    # T = 7 against widths of 8 to 32: the dense layers' norms materialise their per-example gradients (auto)
    "two-blocks": mb.Transformer(vocab=11, context=7, d_model=8, n_heads=2, n_blocks=2),
    # T = 3 against widths of 16 to 48: every dense layer's norm takes the ghost form (auto)
    "short-wide": mb.Transformer(vocab=7, context=3, d_model=16, n_heads=4, n_blocks=1, mlp_ratio=2),
}


def problem(model, B=5, dtype=jnp.float64, seed=0):
    """Parameters drawn by NumPy like ``model.init`` draws them, each then moved by N(0, 0.1^2) (LayerNorm gains
    off 1, biases off 0), and a batch. (NumPy, so that each shape does not compile a JAX random kernel.)"""
    rng = np.random.default_rng(seed)

    def draw(layer, name, shape):
        if isinstance(layer, (Embedding, PositionEmbedding)):
            base = rng.normal(0, 1, shape)
        elif name == "w":
            base = rng.normal(0, np.sqrt(layer.gain / shape[0]), shape)
        else:
            base = np.ones(shape) if name == "g" else np.zeros(shape)
        return jnp.asarray(base + rng.normal(0, 0.1, shape), dtype)

    shapes = jax.eval_shape(model.init, jax.random.key(seed))
    params = [{k: draw(layer, k, v.shape) for k, v in p.items()} for layer, p in zip(model.param_layers, shapes)]
    x = jnp.asarray(rng.integers(0, model.vocab, (B, model.context)), dtype)
    y = jnp.asarray(rng.integers(0, model.vocab, (B, model.context)), jnp.int32)
    return params, x, y


@pytest.fixture(params=list(MODELS), ids=list(MODELS), scope="module")
def case(request):
    model = MODELS[request.param]
    params, x, y = problem(model)
    return model, params, x, y, mb.per_sample_grads(model, LOSS, params, x, y)


@pytest.fixture(scope="module")
def two_blocks():
    """The identities of the engine (accumulation, sharding, noise statistics) read the rules' sums, not their
    method: one model, which has every layer type, is enough for them."""
    model = MODELS["two-blocks"]
    params, x, y = problem(model)
    return model, params, x, y, mb.per_sample_grads(model, LOSS, params, x, y)


_BATCH: dict = {}


def batch_mean(model, params, x, y):
    """``batch_grad`` (mean) of a case, computed once."""
    if model not in _BATCH:
        _BATCH[model] = mb.batch_grad(model, LOSS, params, x, y)
    return _BATCH[model]


def _ref_flat(grads):
    """The reference's per-example gradients as ``(B, P)`` rows, in ``jax.tree.leaves`` order (dict keys sorted)."""
    return np.stack([np.concatenate([layer[k].ravel() for layer in g for k in sorted(layer)]) for g in grads])


# ----------------------------------------------------------------------------- the model


def test_shapes_and_one_example_at_a_time():
    net = mb.Transformer()
    params = jax.jit(net.init, static_argnames="dtype")(jax.random.key(0), dtype=jnp.float32)
    assert net.num_params == 22_112 == sum(p.size for p in jax.tree.leaves(params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    assert float(params[2]["g"].min()) == 1.0 and float(jnp.abs(params[3]["b"]).max()) == 0.0
    assert [type(l).__name__ for l in net.param_layers] == [
        "Embedding", "PositionEmbedding", "LayerNorm", "PositionwiseDense", "PositionwiseDense", "LayerNorm",
        "PositionwiseDense", "PositionwiseDense", "LayerNorm", "PositionwiseDense"]
    model = MODELS["two-blocks"]
    params, x, _ = problem(model, B=3)
    apply = jax.jit(model.apply)
    batch = apply(params, x)
    assert batch.shape == (3, 7, 11) and model.output_shape == (7, 11)
    np.testing.assert_allclose(batch, jax.vmap(apply, in_axes=(None, 0))(params, x), rtol=1e-12)


def test_attention_is_causal():
    """Changing token t changes no logit at an earlier position."""
    model = MODELS["two-blocks"]
    params, x, _ = problem(model, B=1)
    moved = x.at[0, 4].set((x[0, 4] + 1) % model.vocab)
    apply = jax.jit(model.apply)
    a, b = apply(params, x), apply(params, moved)
    np.testing.assert_array_equal(a[0, :4], b[0, :4])
    assert float(jnp.max(jnp.abs(a[0, 4:] - b[0, 4:]))) > 1e-3


@pytest.mark.parametrize("kwargs,pattern", [
    ({"d_model": 30, "n_heads": 4}, r"d_model \(30\) must be a multiple of n_heads \(4\); choose n_heads among \[1, 2, 3, 5"),
    ({"context": 0}, r"context must be a positive int; received 0"),
])
def test_bad_shapes(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        mb.Transformer(**kwargs)


def test_wrong_params_name_the_layer():
    model = MODELS["two-blocks"]
    params, x, y = problem(model, B=2)
    bad = list(params)
    bad[2] = {"g": jnp.ones(8), "b": jnp.zeros(9)}
    with pytest.raises(ValueError, match=r"params\[2\]: expected shapes \{'g': \(8,\), 'b': \(8,\)\}; received .*'b': \(9,\)"):
        mb.batch_grad(model, LOSS, bad, x, y)


# ---------------------------------------------------------------- per-example gradients


def test_fast_equals_vmap(case):
    model, params, x, y, vmapped = case
    fast = mb.per_sample_grads_fast(model, LOSS, params, x, y)
    assert jax.tree.structure(fast) == jax.tree.structure(vmapped)
    assert rel_err(fast, vmapped, batch_axis=True) < F64_RTOL


def test_fast_equals_numpy_reference(case):
    model, params, x, y, _ = case
    fast = trees.flatten(mb.per_sample_grads_fast(model, LOSS, params, x, y), batch_axis=True)
    want = _ref_flat(ref.per_example_grads(params, model.n_heads, x, y))
    assert float(np.linalg.norm(fast - want) / np.linalg.norm(want)) < REF_RTOL


def test_fast_equals_pytorch_autograd():
    """PyTorch's own embedding, LayerNorm, scaled_dot_product_attention and cross-entropy, one sequence at a time."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    model = MODELS["two-blocks"]
    params, x, y = problem(model)
    tp = [{k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in p.items()} for p in params]
    d, h = model.d_model, model.n_heads

    def loss(ids, target):
        z = tp[0]["w"][ids] + tp[1]["w"]
        for blk in range(model.n_blocks):
            ln1, qkv, o, ln2, up, dn = tp[2 + 6 * blk : 8 + 6 * blk]
            u = F.layer_norm(z, (d,), ln1["g"], ln1["b"], eps=1e-5) @ qkv["w"] + qkv["b"]
            q, k, v = (t.reshape(-1, h, d // h).transpose(0, 1) for t in u.split(d, dim=-1))
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(0, 1).reshape(-1, d)
            z = z + att @ o["w"] + o["b"]
            z = z + F.relu(F.layer_norm(z, (d,), ln2["g"], ln2["b"], eps=1e-5) @ up["w"] + up["b"]) @ dn["w"] + dn["b"]
        logits = F.layer_norm(z, (d,), tp[-2]["g"], tp[-2]["b"], eps=1e-5) @ tp[-1]["w"] + tp[-1]["b"]
        return F.cross_entropy(logits, target)

    rows = []
    for ids, target in zip(torch.tensor(np.asarray(x)).long(), torch.tensor(np.asarray(y)).long()):
        grads = torch.autograd.grad(loss(ids, target), [p[k] for p in tp for k in sorted(p)])
        rows.append(np.concatenate([g.numpy().ravel() for g in grads]))
    fast = trees.flatten(mb.per_sample_grads_fast(model, LOSS, params, x, y), batch_axis=True)
    assert float(np.linalg.norm(fast - np.stack(rows)) / np.linalg.norm(np.stack(rows))) < REF_RTOL


# ----------------------------------------------------------------------------- norms


def test_norms_equal_vmap(case):
    model, params, x, y, vmapped = case
    B = x.shape[0]
    want = sum(np.sum(np.asarray(g).reshape(B, -1) ** 2, axis=1) for g in jax.tree.leaves(vmapped))
    got = mb.per_sample_grad_norms(model, LOSS, params, x, y, squared=True)
    np.testing.assert_allclose(got, want, rtol=F64_RTOL)


SQ_NORMS = {PositionwiseDense: per_example_seq.dense_sq_norms, Embedding: per_example_seq.embedding_sq_norms}


@pytest.mark.parametrize("method", ["ghost", "per_example"])
def test_every_layer_norm_by_either_method(case, method):
    """Each layer's ||g_i||^2, the Gram-matrix form and the per-example one, against vmap(grad)'s."""
    model, params, x, y, vmapped = case
    B = x.shape[0]

    @jax.jit
    def every_layer(params, x, y):
        inputs, deltas = per_example.layer_inputs_and_deltas(model, LOSS, params, x, y)
        return [SQ_NORMS[type(layer)](layer, a, d, method) if type(layer) in SQ_NORMS
                else per_example.RULES[type(layer)].sq_norms(layer, a, d)
                for layer, a, d in zip(model.param_layers, inputs, deltas)]

    for i, (layer, got, g) in enumerate(zip(model.param_layers, every_layer(params, x, y), vmapped)):
        want = sum(np.sum(np.asarray(t).reshape(B, -1) ** 2, axis=1) for t in jax.tree.leaves(g))
        np.testing.assert_allclose(got, want, rtol=F64_RTOL, err_msg=f"layer {i} ({type(layer).__name__})")


def test_auto_picks_the_cheaper_form():
    """Ghost when T^2 (n_in + n_out) < T n_in n_out (dense) or T < vocab (embedding)."""
    pick = per_example_seq._method
    assert pick("auto", 3 * 3 * (16 + 48), 3 * 16 * 48) == "ghost"
    assert pick("auto", 7 * 7 * (8 + 24), 7 * 8 * 24) == "per_example"
    assert pick("auto", 32 * 32 * 32, 32 * 128 * 32) == "ghost"  # the default model's token embedding
    with pytest.raises(ValueError, match=r"method: expected one of \('auto', 'ghost', 'per_example'\); received 'gram'"):
        pick("gram", 1, 2)


# -------------------------------------------------------------------- Q1 identities


def test_mean_of_per_example_equals_the_batch_gradient(case):
    model, params, x, y, vmapped = case
    assert rel_err(jax.tree.map(lambda t: t.mean(0), vmapped), batch_mean(model, params, x, y)) < F64_RTOL


def test_accumulated_equals_batch(two_blocks):
    model, params, x, y, _ = two_blocks  # B = 5 in micro-batches of 2, 2, 1; the sum reduction divided by B once
    acc = mb.accumulated_grad(model, LOSS, params, x, y, micro_batch_size=2)
    assert rel_err(acc, batch_mean(model, params, x, y)) < F64_RTOL


def test_sharded_equals_batch(two_blocks):
    assert len(jax.devices()) == 4, "conftest sets 4 host devices"
    model, params, x, y, _ = two_blocks  # B = 5 on 4 devices: padded and masked
    assert rel_err(mb.sharded_grad(model, LOSS, params, x, y), batch_mean(model, params, x, y)) < F64_RTOL


def test_float32_stays_float32(two_blocks):
    model, params, x, y, vmapped = two_blocks
    fast = mb.per_sample_grads_fast(model, LOSS, *jax.tree.map(lambda t: t.astype(jnp.float32), (params, x)), y)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(fast))
    assert rel_err(fast, vmapped, batch_axis=True) < 2e-6  # against float64


# ------------------------------------------------------------------------ noise statistics


def _direct(rows, N):
    """tr(Sigma), ||G||^2 and B_simple straight from the (B, P) per-example gradients, sampled from N."""
    B = rows.shape[0]
    g = rows.mean(axis=0)
    trace = np.sum((rows - g) ** 2) / (B - 1)
    g_true = g @ g - trace * (1 / B - 1 / N)
    return g @ g, trace, g_true, trace / g_true


def test_noise_stats_against_per_example_gradients(two_blocks):
    model, params, x, y, vmapped = two_blocks
    N = 50
    total, layers = mb.grad_noise_stats(model, LOSS, params, x, y, population_size=N, per_layer=True)
    np.testing.assert_allclose(total, _direct(trees.flatten(vmapped, batch_axis=True), N), rtol=1e-10)
    for i, g in enumerate(vmapped):
        np.testing.assert_allclose([f[i] for f in layers], _direct(trees.flatten(g, batch_axis=True), N), rtol=1e-10)
    # Gray et al.'s subset: the LayerNorm parameters alone
    norms = mb.layers_of_type(model, LayerNorm)
    assert norms == tuple(i for i, l in enumerate(model.param_layers) if isinstance(l, LayerNorm))
    sub = mb.subset_noise(layers, norms)
    rows = trees.flatten([vmapped[i] for i in norms], batch_axis=True)
    np.testing.assert_allclose(sub, _direct(rows, N), rtol=1e-10)
    np.testing.assert_allclose(mb.subset_noise(layers, range(len(model.param_layers))), total, rtol=1e-12)


def test_layers_of_type_says_what_is_there():
    with pytest.raises(ValueError, match=r"MLP has no parametrised layer of type \['LayerNorm'\]; its layers are \['Dense', 'Dense'\]"):
        mb.layers_of_type(mb.MLP((3, 4, 2)), LayerNorm)
    assert mb.layers_of_type(MODELS["short-wide"], Embedding, PositionEmbedding) == (0, 1)


def test_attention_has_no_parameters():
    assert CausalSelfAttention(8, 2).num_params() == 0 and CausalSelfAttention(8, 2) not in MODELS["two-blocks"].param_layers
