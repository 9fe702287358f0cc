"""The training loop: determinism, divergence, targets, and the sum/mean algebra (Q4)."""

import dataclasses

import jax
import numpy as np
import pytest

from mbstudy import load_dataset
from mbstudy.config import TrainConfig
from mbstudy.step import run_chunk_jit as _run_chunk
from mbstudy.train import train

DATA = load_dataset("teacher_5x3")
BASE = TrainConfig(dataset="teacher_5x3", hidden=(8,), batch_size=16, steps=60, eval_every=20, learning_rate=0.05)


def history_without_time(r):
    return {k: v for k, v in r.history.items() if not k.startswith("time/")}


def test_same_config_gives_identical_histories():
    a, b = train(BASE, DATA), train(BASE, DATA)
    ha, hb = history_without_time(a), history_without_time(b)
    assert ha.keys() == hb.keys()
    for k in ha:
        np.testing.assert_array_equal(ha[k], hb[k], err_msg=k)
    assert list(a.history["step"]) == [0, 20, 40, 60]


def test_metrics_recorded():
    r = train(dataclasses.replace(BASE, dataset="digits", hidden=(16,), batch_size=32), load_dataset("digits"))
    for key in ("train/loss", "test/loss", "test/acc", "grad/b_simple", "grad/trace_cov", "grad/g_norm_sq",
                "param/norm", "train/batch_loss", "time/train_s"):
        assert key in r.history and len(r.history[key]) == 4, key
    assert 0 <= r.history["test/acc"][-1] <= 1
    assert r.history["train/loss"][-1] < r.history["train/loss"][0]
    s = r.summary()
    assert s["best/train/loss"] == r.history["train/loss"].min()
    assert s["final/test/acc"] == r.history["test/acc"][-1]


def test_different_seeds_differ():
    a = train(BASE, DATA)
    b = train(dataclasses.replace(BASE, seed=1), DATA)
    assert a.history["train/loss"][-1] != b.history["train/loss"][-1]


@pytest.mark.parametrize("lr", [1e3, 1e30])
def test_divergence_is_recorded_not_raised(lr):
    r = train(dataclasses.replace(BASE, learning_rate=lr, steps=200), DATA)
    assert r.outcome == "diverged"
    assert r.history["step"][-1] < 200, "a diverged run stops at the evaluation that sees it"
    assert np.isfinite(r.history["train/loss"][0])


def test_updates_stop_at_the_first_non_finite_loss():
    """Once a batch loss is NaN/inf no update is applied: a further chunk leaves the parameters alone."""
    from mbstudy.step import Program, batch_indices, init_state, run_chunk, traced_hyper
    from mbstudy.train import eval_data

    cfg = dataclasses.replace(BASE, learning_rate=1e30)
    model, loss = cfg.build_model(DATA), cfg.loss_name(DATA)
    spec = Program(model, loss, cfg.reduction, cfg.optimizer, cfg.batch_size)
    x, y = eval_data(cfg, DATA, loss)[:2]
    hyper = traced_hyper(cfg.optimizer, cfg.hyper())
    state = init_state(model, cfg.optimizer, hyper, seed=cfg.seed)
    state, losses = run_chunk(state, hyper, x, y, batch_indices(0, 0, 20, DATA.n_train, 16), program=spec)
    assert bool(state.diverged) and not np.isfinite(np.asarray(losses)).all()
    before = [np.asarray(l) for l in jax.tree.leaves(state.params)]
    state, _ = run_chunk(state, hyper, x, y, batch_indices(0, 20, 20, DATA.n_train, 16), program=spec)
    for u, v in zip(before, jax.tree.leaves(state.params)):
        np.testing.assert_array_equal(u, np.asarray(v))


def test_stop_at_target():
    cfg = dataclasses.replace(BASE, optimizer="adam", learning_rate=0.02, steps=2000, target_loss=0.5, stop_at_target=True)
    r = train(cfg, DATA)
    assert r.steps_to_target is not None and r.history["step"][-1] == r.steps_to_target < 2000
    assert r.history["train/loss"][-1] <= 0.5 < r.history["train/loss"][-2]
    assert r.summary()["examples_to_target"] == r.steps_to_target * 16


def test_second_run_of_a_shape_does_not_recompile():
    train(BASE, DATA)
    n = _run_chunk._cache_size()
    r = train(dataclasses.replace(BASE, learning_rate=0.01, seed=3), DATA)
    assert r.timings["compile_s"] == 0.0 and _run_chunk._cache_size() == n


def test_full_batch_of_last_partial_epoch():
    """B that does not divide N: N mod B examples are dropped per epoch, every step has B examples."""
    r = train(dataclasses.replace(BASE, batch_size=300, steps=12, eval_every=4), DATA)  # 1000 = 3*300 + 100
    assert r.outcome == "completed" and list(r.history["step"]) == [0, 4, 8, 12]


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("B", [16, 64])
def test_sgd_sum_at_lr_over_B_is_mean_at_lr_bit_for_bit(optimizer, B):
    """Scaling by a power of two commutes exactly with float arithmetic, so the runs are identical."""
    mean = dataclasses.replace(BASE, optimizer=optimizer, batch_size=B, learning_rate=0.04, reduction="mean")
    summ = dataclasses.replace(mean, reduction="sum", learning_rate=0.04 / B)
    a, b = train(mean, DATA), train(summ, DATA)
    np.testing.assert_array_equal(a.history["train/loss"], b.history["train/loss"])
    np.testing.assert_array_equal(a.history["param/norm"], b.history["param/norm"])


def test_adam_sum_with_eps_times_B_is_mean_with_eps():
    mean = dataclasses.replace(BASE, optimizer="adam", learning_rate=0.01, eps=1e-3, reduction="mean")
    summ = dataclasses.replace(mean, reduction="sum", eps=1e-3 * 16)
    same_eps = dataclasses.replace(mean, reduction="sum")
    a, b, c = train(mean, DATA), train(summ, DATA), train(same_eps, DATA)
    np.testing.assert_array_equal(a.history["param/norm"], b.history["param/norm"])
    # with the same eps the two differ (eps matters relative to sqrt(v))
    assert not np.array_equal(a.history["param/norm"], c.history["param/norm"])


def test_init_perturbation_is_a_small_change():
    a = train(BASE, DATA)
    b = train(dataclasses.replace(BASE, init_perturbation=1e-7), DATA)
    assert a.history["param/norm"][0] != b.history["param/norm"][0]
    np.testing.assert_allclose(a.history["param/norm"][0], b.history["param/norm"][0], rtol=1e-5)


@pytest.mark.parametrize("B,chunks", [(300, [4, 4, 4]), (1, [7, 3]), (1000, [5, 5])])
def test_batches_are_epoch_permutations_however_the_steps_are_chunked(B, chunks):
    from mbstudy.step import batch_indices

    n, per_epoch = 1000, 1000 // B
    got, step = [], 0
    for c in chunks:
        got.append(batch_indices(3, step, c, n, B))
        step += c
    got = np.concatenate(got)
    np.testing.assert_array_equal(got, batch_indices(3, 0, sum(chunks), n, B))
    for e in range(len(got) // per_epoch):
        epoch = got[e * per_epoch : (e + 1) * per_epoch].ravel()
        assert len(set(epoch)) == len(epoch) == per_epoch * B, "without replacement within an epoch"
    assert not np.array_equal(got[:per_epoch], batch_indices(4, 0, per_epoch, n, B)), "the seed matters"


@pytest.mark.parametrize("dataset,hidden", [("teacher_5x3", (8,)), ("mnist1d", (100, 100))])
def test_stats_every_keeps_the_training_loss_and_the_target_bit_for_bit(dataset, hidden):
    """The full statistics every 3rd evaluation: the training loss (so targets and divergence), the steps to
    target and every final metric are the same numbers as with statistics at every evaluation."""
    data = load_dataset(dataset)
    base = TrainConfig(dataset=dataset, hidden=hidden, optimizer="adam", learning_rate=0.01, batch_size=32,
                       steps=300, eval_every=20, target_loss=0.5 if dataset == "teacher_5x3" else 2.0)
    every = train(base, data)
    sparse = train(dataclasses.replace(base, stats_every=60), data)
    np.testing.assert_array_equal(sparse.history["step"], every.history["step"])
    np.testing.assert_array_equal(sparse.history["train/loss"], every.history["train/loss"])
    assert sparse.steps_to_target == every.steps_to_target is not None
    full = (every.history["step"] % 60 == 0) | (every.history["step"] == every.history["step"][-1])
    for key in ("grad/b_simple", "test/loss", "param/norm"):
        np.testing.assert_array_equal(sparse.history[key][full], every.history[key][full], err_msg=key)
        assert np.isnan(sparse.history[key][~full]).all(), f"{key} is not measured between the full evaluations"
    # final values and the training loss's best are the same; a test metric's best is over fewer points
    keep = lambda s: {k: v for k, v in s.items() if k.startswith(("final/", "best/train/", "steps_", "examples_"))}  # noqa: E731
    assert keep(sparse.summary()) == keep(every.summary())
    assert every.config.hash() == base.hash() and sparse.config.hash() != base.hash()


def test_stats_every_must_be_a_multiple_of_eval_every():
    from mbstudy.config import ConfigError

    with pytest.raises(ConfigError, match=r"stats_every: expected 0 \(every evaluation\) or a positive multiple of "
                                          r"eval_every \(20\); received 30"):
        TrainConfig(eval_every=20, stats_every=30)
