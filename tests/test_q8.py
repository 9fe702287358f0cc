"""Q8: the accumulation grid, Adam's betas and gradient accumulation as configuration fields, and accumulation
inside the compiled training loop (the scaling rules and the grids that hold their values: tests/test_scaling_rules.py)."""

from __future__ import annotations


import jax
import numpy as np
import pytest

from experiments.engine import grid as grids
from mbstudy import accumulated_grad
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.data import load_dataset
from mbstudy.step import batch_indices, init_state, traced_hyper
from mbstudy.train import train

def test_the_accumulation_grid_is_micro_batches_of_8_and_256():
    sweep = grids.load("accumulation")
    configs = [c.template for c in sweep.cells]  # the learning rate is searched: its cells
    assert configs and not sweep.configs
    micro = {c.batch_size // c.accumulation for c in configs}
    assert micro == {8, 256}
    assert {c.accumulation for c in configs if c.batch_size // c.accumulation == 8} == {1, 2, 4, 8, 16, 32, 64}


# ------------------------------------------------------------------ the configuration fields


@pytest.mark.parametrize("field, bad", [("beta1", 1.0), ("beta1", -0.1), ("beta2", 1.5), ("beta2", float("nan")),
                                        ("beta2", float("inf")), ("beta1", "0.9")])
def test_bad_betas_are_refused_naming_the_field(field, bad):
    with pytest.raises(ConfigError, match=f"{field}: expected"):
        TrainConfig(optimizer="adam", **{field: bad})


@pytest.mark.parametrize("bad, text", [(0, "a positive int"), (3, "a divisor of batch_size (64)"),
                                       (2**31, "int32"), (2.0, "an int")])
def test_a_bad_accumulation_count_is_refused(bad, text):
    with pytest.raises(ConfigError, match="accumulation: expected") as e:
        TrainConfig(batch_size=64, accumulation=bad)
    assert text in str(e.value)


def test_the_new_fields_keep_every_stored_hash_and_name():
    cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=32)
    assert cfg.hash() == "14269d28466688f4"  # as before the fields existed (the module's doctest)
    assert cfg.run_name() == "adam-mean-B32-lr0.001-s0"
    other = TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=32, beta2=0.99, accumulation=4)
    assert other.hash() != cfg.hash() and other.run_name() == "adam-mean-B32-acc4-b20.99-lr0.001-s0"
    assert TrainConfig.from_params(other.to_params()) == other


def test_betas_reach_adam():
    base = dict(dataset="teacher", hidden=(16,), optimizer="adam", learning_rate=1e-2, batch_size=32, steps=20,
                eval_every=20)
    a, b = train(TrainConfig(**base)), train(TrainConfig(**base, beta2=0.9))
    c = train(TrainConfig(**base, beta1=0.0))
    finals = [r.history["train/loss"][-1] for r in (a, b, c)]
    assert len(set(finals)) == 3, f"beta1 and beta2 each change Adam's trajectory: {finals}"


# ------------------------------------------------------------------ accumulation in the training loop


def _params_after(cfg: TrainConfig, data) -> list[np.ndarray]:
    seen = []
    train(cfg, data, on_eval=lambda step, p: seen.append(jax.tree.leaves(jax.device_get(p))))
    return seen[-1]


def _by_hand(cfg: TrainConfig, data, micro: int) -> list[np.ndarray]:
    """SGD from the same initial weights and batches, each step's gradient from mbstudy.accumulated_grad."""
    model = cfg.build_model(data)
    loss = cfg.loss_name(data)
    params = init_state(model, "sgd", traced_hyper("sgd", cfg.hyper()), seed=cfg.seed).params
    x, y = np.asarray(data.x_train, np.float32), np.asarray(data.y_train)
    step = jax.jit(lambda p, g: jax.tree.map(lambda a, b: a + (-np.float32(cfg.learning_rate)) * b, p, g))
    for t in range(cfg.steps):
        idx = batch_indices(cfg.seed, t, 1, data.n_train, cfg.batch_size)[0]
        params = step(params, accumulated_grad(model, loss, params, x[idx], y[idx], micro_batch_size=micro))
    return jax.tree.leaves(jax.device_get(params))


@pytest.mark.parametrize("k", [2, 4, 8])
def test_accumulating_k_micro_batches_in_training_is_mbstudy_accumulated_grad_bit_for_bit(k):
    data = load_dataset("mnist1d")
    cfg = TrainConfig(batch_size=64, accumulation=k, learning_rate=0.3, steps=12, eval_every=6)
    got, want = _params_after(cfg, data), _by_hand(cfg, data, 64 // k)
    assert all(np.array_equal(a, b) for a, b in zip(got, want)), "the loop's accumulation is Q1's accumulation"


@pytest.mark.parametrize("batch, k", [(64, 8), (256, 16), (48, 3)])
def test_accumulating_k_micro_batches_is_one_step_at_batch_kb_to_rounding(batch, k):
    """The same examples in the same order, one update: the big-batch step up to the order of the float32 sums
    (the batch's matmul sums its kb examples in one pass; accumulation sums k partial sums), which is not bit
    for bit even when k is a power of two: measured 5e-7 relative on one gradient, the size of float32 rounding."""
    data = load_dataset("mnist1d")
    base = dict(batch_size=batch, learning_rate=0.3, steps=1, eval_every=1)
    one = [np.asarray(a) for a in _params_after(TrainConfig(**base), data)]
    acc = [np.asarray(a) for a in _params_after(TrainConfig(**base, accumulation=k), data)]
    init = [np.asarray(a) for a in _params_after(TrainConfig(**{**base, "steps": 1, "learning_rate": 1e-30}), data)]
    for a, b, p0 in zip(one, acc, init):
        step = np.abs(a - p0).max()  # the size of the update itself
        assert np.abs(a - b).max() <= 1e-5 * step + 2 * np.finfo(np.float32).eps * np.abs(a).max()
    # and over a run: the training losses of the two stay together
    long = dict(batch_size=batch, learning_rate=0.3, steps=60, eval_every=20)
    la = train(TrainConfig(**long), data).history["train/loss"]
    lb = train(TrainConfig(**long, accumulation=k), data).history["train/loss"]
    np.testing.assert_allclose(la, lb, rtol=1e-4)


def test_time_and_examples_to_target_of_an_accumulated_run():
    """An accumulated run's summary counts the examples of its whole batch (kb) and the training seconds up to
    the evaluation that reached the target (not the evaluations, not the steps after it)."""
    cfg = TrainConfig(dataset="teacher", hidden=(16,), optimizer="adam", learning_rate=1e-2, batch_size=64,
                      accumulation=4, steps=300, eval_every=20, target_loss=0.5, stop_at_target=False)
    r = train(cfg)
    s, hist = r.summary(), r.history
    assert r.steps_to_target is not None and r.steps_to_target < cfg.steps, "the target is reached within the run"
    assert s["examples_to_target"] == r.steps_to_target * 64
    at = int(np.nonzero(hist["step"] == r.steps_to_target)[0][0])
    assert s["time_to_target"] == hist["time/train_s"][at]
    assert 0 < s["time_to_target"] < s["time/train_s"], "only the training seconds before the target"
