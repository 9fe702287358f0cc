"""Extension points: an optimizer, a loss and a data set added through the registries alone, and one validation.

The toy entries are registered by a fixture and removed afterwards, so the
other tests see the shipped registries only.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments import sweep as sweep_mod
from experiments.engine import store
from mbstudy import data as data_mod
from mbstudy import losses as losses_mod
from mbstudy import optimizers as optimizers_mod
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.train import train


def _line_data(seed: int) -> data_mod.Dataset:
    """A toy regression set: y = x A + noise, 48 train / 16 test, 3 inputs, 2 outputs."""
    rng = np.random.default_rng([seed, 7])
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ rng.normal(size=(3, 2)) + 0.1 * rng.normal(size=(64, 2))).astype(np.float32)
    return data_mod.from_arrays("line", seed, "regression", x[:48], y[:48], x[48:], y[48:], 2)


def _mae(out, y):
    return jnp.mean(jnp.abs(out - y), axis=-1)


@pytest.fixture
def toys():
    """Register a toy optimizer, loss and data set; remove them afterwards."""
    opt = optimizers_mod.register_optimizer(optimizers_mod.Optimizer(
        "toy_signsgd", lambda learning_rate: optax.chain(optax.scale_by_sign(), optax.scale(-learning_rate)),
        ("learning_rate",)))
    loss = losses_mod.register_loss(losses_mod.Loss(
        "toy_mae", _mae, task="regression", target_dtype="float32",
        metrics={"close": lambda out, y: jnp.all(jnp.abs(out - y) < 0.5, axis=-1)}))
    source = data_mod.register_dataset(data_mod.DataSource("line", "regression", 48, _line_data))
    try:
        yield opt, loss, source
    finally:
        optimizers_mod.OPTIMIZERS.pop("toy_signsgd", None)
        losses_mod.LOSSES.pop("toy_mae", None)
        data_mod.DATASETS.pop("line", None)


def test_a_toy_optimizer_loss_and_data_set_train_through_the_registries(toys):
    cfg = TrainConfig(dataset="line", hidden=(4,), optimizer="toy_signsgd", loss="toy_mae", learning_rate=0.01,
                      batch_size=8, steps=30, eval_every=10)
    r = train(cfg)
    assert r.outcome == "completed" and r.history["step"].tolist() == [0, 10, 20, 30]
    assert r.history["train/loss"][-1] < r.history["train/loss"][0]
    assert 0 <= r.history["test/close"][-1] <= 1, "a loss's extra metric is recorded on the test set"
    s = r.summary()
    assert s["best/test/close"] == r.history["test/close"].max(), "a loss's extra metric gets best = max"
    assert cfg.hyper() == {"learning_rate": 0.01}, "the optimizer reads only the fields it names"


def test_a_tiny_sweep_with_the_toys(toys, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    grid = tmp_path / "toy.toml"
    grid.write_text('[base]\ndataset = "line"\nhidden = [4]\nloss = "toy_mae"\noptimizer = "toy_signsgd"\n'
                    'steps = 20\neval_every = 10\n[grid]\nbatch_size = [4, 16]\nlearning_rate = [0.01, 0.003]\n')
    assert sweep_mod.main([str(grid), "--workers", "1", "--no-progress"]) == 0
    assert "trained 4 · skipped 0" in capsys.readouterr().out
    exp = store.client().get_experiment_by_name("toy")
    runs = store.search_all(store.client(), exp.experiment_id, "tags.`mbstudy.kind` = 'run'")
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    for r in runs:
        assert r.data.params["optimizer"] == "toy_signsgd" and r.data.params["loss"] == "toy_mae"
        assert "final/test/close" in r.data.metrics
        assert TrainConfig.from_params(r.data.params).hash() == r.data.tags["cfg_hash"], "params round-trip"


def test_unknown_names_list_the_registered_ones(toys):
    with pytest.raises(ConfigError, match=r"optimizer: expected one of \['sgd', 'momentum', 'adam', 'toy_signsgd'\]"):
        TrainConfig(optimizer="rmsprop")
    with pytest.raises(ConfigError, match=r"loss: 'mnist1d' is a classification data set and needs 'cross_entropy'"):
        TrainConfig(loss="toy_mae")


def test_train_refuses_what_the_sweep_refuses(tmp_path, monkeypatch, capsys):
    """The same check, the same message: from train() (at construction) and from a sweep (exit 2)."""
    with pytest.raises(ConfigError) as direct:
        TrainConfig(dataset="teacher", batch_size=5000)
    (line,) = direct.value.problems
    assert line == "batch_size: expected 1 <= batch_size <= 1000 (the teacher training set); received 5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sweep_mod.main(["smoke", "--set", "dataset=teacher", "--set", "batch_size=5000", "--no-progress"]) == 2
    assert f"  - {line}" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_train_checks_the_config_against_the_data_it_is_given():
    cfg = TrainConfig(batch_size=2000)  # fine for MNIST-1D's 4000 examples ...
    with pytest.raises(ConfigError, match=r"batch_size: expected 1 <= batch_size <= 1000 \(the teacher training set\)"):
        train(cfg, data_mod.load_dataset("teacher"))  # ... not for the 1000 given here (no ZeroDivisionError)


def test_every_problem_at_once_and_values_coerced():
    with pytest.raises(ConfigError) as e:
        TrainConfig(learning_rate=float("inf"), steps=2**40, hidden=(100, 0), momentum=1.0)
    text = str(e.value)
    assert "learning_rate: expected a finite number; received inf" in text
    assert "steps: expected an int <= 2147483647 (the compiled program holds it as int32)" in text
    assert "hidden: expected a non-empty list of positive ints" in text
    assert "momentum: expected 0 <= momentum < 1; received 1.0" in text
    cfg = TrainConfig(learning_rate=1, hidden=[50])
    assert cfg.learning_rate == 1.0 and isinstance(cfg.learning_rate, float) and cfg.hidden == (50,)


def test_program_key_is_the_compiled_fields_only():
    a = TrainConfig()
    assert a.program_key() == dataclasses.replace(a, learning_rate=0.5, seed=3, target_loss=0.1).program_key()
    assert a.program_key() != dataclasses.replace(a, batch_size=32).program_key()
