"""Training the transformer on the text from a configuration (issue 24): the metrics, the evaluation's sizes, the
checks, and that a second run compiles nothing."""

import numpy as np
import pytest

import mbstudy as mb
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.metrics import layer_metric_name
from mbstudy.train import evaluation_sizes, train

TINY = dict(model="transformer", dataset="text", context=8, d_model=8, n_heads=2, optimizer="adam",
            learning_rate=1e-2, batch_size=8, steps=30, eval_every=10, noise_batch=16, eval_train=64)


@pytest.fixture(scope="module")
def text8():
    return mb.load_dataset("text", context=8)


def test_trains_and_a_second_run_compiles_nothing(text8):
    cfg = TrainConfig(**TINY)
    assert cfg.data_options() == {"context": 8} and cfg.hash() != TrainConfig().hash()
    first = train(cfg, text8)
    h = first.history
    assert first.outcome == "completed" and h["step"].tolist() == [0, 10, 20, 30]
    assert h["train/loss"][0] == pytest.approx(np.log(128), rel=0.3) and h["val/loss"][-1] < h["val/loss"][0]
    for key in ("test/loss", "test/acc", "val/acc", "grad/b_simple", "param/norm"):
        assert np.isfinite(h[key]).all(), key
    n_layers = len(cfg.build_model(text8).param_layers)
    assert n_layers == 10 and layer_metric_name(n_layers - 1, "b_simple") in h
    assert first.model_params == mb.Transformer(context=8, d_model=8, n_heads=2).num_params
    again = train(cfg, text8)
    assert again.timings["compile_s"] == 0.0
    np.testing.assert_array_equal(again.history["train/loss"], h["train/loss"])


def test_validation_target_is_the_loss_on_the_texts_own_block(text8):
    r = train(TrainConfig(**{**TINY, "steps": 20, "target_val": 100.0, "stop_at_target": True}), text8)
    assert r.steps_to_val_target == 0 and r.history["step"].tolist() == [0]  # any loss is below 100 nats
    with pytest.raises(ConfigError, match=r"val_fraction: 'text' has a validation split of its own; expected 0"):
        TrainConfig(**TINY, val_fraction=0.1)


def test_evaluation_sizes_default_to_the_data_sets(text8):
    assert evaluation_sizes(TrainConfig(**{**TINY, "noise_batch": 0, "eval_train": 0}), text8) == (512, 2048)
    assert evaluation_sizes(TrainConfig(**TINY), text8) == (16, 64)
    assert evaluation_sizes(TrainConfig(), mb.load_dataset("teacher_5x3")) == (1000, 1000)


def test_eval_val_reads_evenly_spaced_validation_windows_and_nothing_else(text8):
    """eval_val = k: the val/ metrics are the full-block metrics of the k windows of validation_rows, training is
    untouched, and the default keeps every stored configuration's hash."""
    import jax

    from mbstudy.evaluate import means, validation_rows
    from mbstudy.losses import LOSSES

    k, n = 96, len(text8.x_val)
    rows = validation_rows(n, k)
    assert len(set(rows.tolist())) == k and rows[0] == 0 and rows[-1] >= n - n // k - 1  # across the whole block
    snaps = {}
    full = train(TrainConfig(**TINY), text8)
    some = train(TrainConfig(**TINY, eval_val=k), text8, on_eval=lambda step, p: snaps.__setitem__(step, p))
    np.testing.assert_array_equal(some.history["train/loss"], full.history["train/loss"])
    assert not np.array_equal(some.history["val/loss"], full.history["val/loss"])
    model = TrainConfig(**TINY).build_model(text8)
    (expect,) = means(jax.device_get(snaps[30]), text8.x_val[rows].astype(np.float32), text8.y_val[rows],
                      model=model, fns=[LOSSES["token_cross_entropy"].fn])
    assert some.history["val/loss"][-1] == pytest.approx(float(expect), rel=1e-6)
    assert TrainConfig(**TINY, eval_val=0).hash() == TrainConfig(**TINY).hash()
    assert TrainConfig(**TINY, eval_val=k).hash() != TrainConfig(**TINY).hash()
    with pytest.raises(ConfigError, match=rf"eval_val: expected 0 \(all of them\) or 1..{n} \(the text validation "
                                          rf"split\); received {n + 1}"):
        train(TrainConfig(**TINY, eval_val=n + 1), text8)


def test_eval_val_is_checked_against_the_split_it_reads():
    with pytest.raises(ConfigError, match=r"eval_val: expected 0: mnist1d has no validation split unless val_fraction "
                                          r"is set \(received 5\); set val_fraction or leave eval_val at 0"):
        TrainConfig(eval_val=5)
    with pytest.raises(ConfigError, match=r"eval_val: expected 0 \(all of them\) or 1..800 \(the validation split "
                                          r"of val_fraction 0.2\); received 900"):
        TrainConfig(eval_val=900, val_fraction=0.2)
    with pytest.raises(ConfigError, match=r"eval_val: expected 0 \(the whole validation split\) or a positive"):
        TrainConfig(eval_val=-1, val_fraction=0.2)


def test_model_and_data_must_fit():
    with pytest.raises(ConfigError, match=r"model: 'transformer' cannot take the mnist1d data \(40 inputs\): the "
                                          r"transformer reads sequences of tokens; expected a next_token data set"):
        train(TrainConfig(model="transformer", steps=1, eval_every=1))
    with pytest.raises(ConfigError, match=r"model: 'mlp' cannot take the text data \(8 inputs\): .*expects integer "
                                          r"labels of shape \(B,\) = \(1,\); received shape \(1, 8\)"):
        train(TrainConfig(dataset="text", context=8, steps=1, eval_every=1, noise_batch=16, eval_train=64))
    with pytest.raises(ConfigError, match=r"n_heads: expected a divisor of d_model \(8\)"):
        TrainConfig(**{**TINY, "n_heads": 3})


@pytest.mark.parametrize("n", [64, 200])  # whole chunks, and chunks with a remainder
def test_an_evaluation_in_chunks_is_the_one_pass_mean(monkeypatch, text8, n):
    import jax
    import jax.numpy as jnp

    from mbstudy import evaluate
    from mbstudy.losses import LOSSES

    model = mb.Transformer(context=8, d_model=8, n_heads=2)
    params = model.init(jax.random.key(0), dtype=jnp.float64)
    x, y = jnp.asarray(text8.x_val[:n], jnp.float64), jnp.asarray(text8.y_val[:n])
    loss = LOSSES["token_cross_entropy"]
    fns = [loss.fn, *loss.metrics.values()]
    out = model.apply(params, x)
    whole = [float(jnp.mean(fn(out, y))) for fn in fns]
    monkeypatch.setattr(evaluate, "CHUNK_OUTPUTS", 8 * 128 * 24)  # 24 windows a chunk
    chunked = [float(v) for v in evaluate.means(params, x, y, model=model, fns=fns)]
    np.testing.assert_allclose(chunked, whole, rtol=1e-12)
    assert [v.dtype for v in evaluate.means(params, x, y, model=model, fns=fns)] == [jnp.float64, jnp.float32]
    monkeypatch.setattr(evaluate, "CHUNK_OUTPUTS", 8 * 128 * n)  # all at once: the one pass itself
    assert [float(v) for v in evaluate.means(params, x, y, model=model, fns=fns)] == whole
