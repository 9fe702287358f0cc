"""Extension points: an optimizer, a loss and a data set added through the registries alone, and one validation.

The toy entries are registered by a fixture and removed afterwards, so the
other tests see the shipped registries only.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.contrib
import pytest

from experiments import sweep as sweep_mod
from experiments.engine import store
from experiments.engine.grid import GRID_DIR
from mbstudy import data as data_mod
from mbstudy import losses as losses_mod
from mbstudy import optimizers as optimizers_mod
from mbstudy.optimizers import Hyper
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
    with pytest.raises(ConfigError, match=r"optimizer: expected one of \['sgd', 'momentum', 'adam', 'adamw', 'muon', 'toy_signsgd'\]"):
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
    assert f"error: {GRID_DIR / 'smoke.toml'}: {line}\n" in capsys.readouterr().err  # the file named once
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


# ------------------------------------------------------------------ an optimizer the code has never heard of


@pytest.fixture
def lion():
    """optax.lion, registered as it comes: its own b1, b2 (static) and weight_decay (traced), defaults optax's."""
    opt = optimizers_mod.register_optimizer(optimizers_mod.Optimizer(
        "lion_toy", optax.lion, label="Lion", hyper=(
            "learning_rate", Hyper("b1", static=True), Hyper("b2", static=True), Hyper("weight_decay"))))
    try:
        yield opt
    finally:
        optimizers_mod.OPTIMIZERS.pop("lion_toy", None)


LION = dict(dataset="teacher", hidden=(8,), optimizer="lion_toy", learning_rate=1e-3, batch_size=32, steps=20,
            eval_every=10)


def test_a_registered_optimizer_comes_last_with_its_label(lion):
    assert list(optimizers_mod.OPTIMIZERS) == ["sgd", "momentum", "adam", "adamw", "muon", "lion_toy"], "the order"
    assert [o.label for o in optimizers_mod.OPTIMIZERS.values()] == ["SGD", "momentum", "Adam", "AdamW", "Muon", "Lion"]


def test_its_factory_defaults_apply(lion):
    cfg = TrainConfig(**LION)
    assert cfg.static_hyper() == (("b1", 0.9), ("b2", 0.99)), "optax.lion's b2 = 0.99, not TrainConfig's beta2"
    assert cfg.hyper() == {"learning_rate": 1e-3, "weight_decay": 1e-3}
    grads = {"w": jnp.array([0.3, -2.0, 1e-4]), "b": jnp.array([[-0.5]])}
    params = {"w": jnp.array([1.0, 2.0, -3.0]), "b": jnp.array([[4.0]])}
    ours, theirs = lion.make({**cfg.hyper(), **dict(cfg.static_hyper())}), optax.lion(1e-3)
    state_a, state_b = ours.init(params), theirs.init(params)
    for _ in range(3):  # the momentum (b2) shows from the second step on
        (ua, state_a), (ub, state_b) = ours.update(grads, state_a, params), theirs.update(grads, state_b, params)
        np.testing.assert_array_equal(ua["w"], ub["w"])
        np.testing.assert_array_equal(ua["b"], ub["b"])


def test_it_trains_and_a_traced_hyper_parameter_compiles_once(lion):
    first = train(TrainConfig(**LION, seed=7))
    assert first.outcome == "completed" and np.isfinite(first.history["train/loss"]).all()
    assert first.history["train/loss"][-1] < first.history["train/loss"][0]
    other_decay = train(TrainConfig(**LION, seed=7, opt_args="weight_decay=0.01"))
    assert other_decay.timings["compile_s"] == 0.0, "weight_decay is traced: the same program"
    assert not np.array_equal(other_decay.history["train/loss"], first.history["train/loss"])
    other_b2 = TrainConfig(**LION, seed=7, opt_args="b2=0.95")
    assert other_b2.program_key() != TrainConfig(**LION).program_key(), "b2 is static: another program"
    assert TrainConfig(**LION, opt_args="weight_decay=0.01").program_key() == TrainConfig(**LION).program_key()


def test_its_run_name_params_and_hash_round_trip(lion):
    base = TrainConfig(**LION)
    cfg = TrainConfig(**LION, opt_args=" weight_decay = 0.01, b2=0.95")
    assert cfg.opt_args == "b2=0.95,weight_decay=0.01", "written one way: the entry's order"
    assert base.run_name() == "lion_toy-mean-B32-lr0.001-s0"
    assert cfg.run_name() == "lion_toy-mean-B32-b20.95-weight_decay0.01-lr0.001-s0"
    assert TrainConfig(**LION, opt_args="b2=0.99") == base, "a default given is the default: one hash"
    assert len({base.hash(), cfg.hash(), TrainConfig(**LION, opt_args="b2=0.95").hash()}) == 3
    assert "opt_args" not in base.as_dict(), "at its default opt_args is no part of the hash (since=2)"
    params = cfg.to_params()
    assert params["opt_args"] == "b2=0.95,weight_decay=0.01"
    assert {k: v for k, v in params.items() if k.startswith("optimizer/")} == {
        "optimizer/b1": "0.9", "optimizer/b2": "0.95", "optimizer/weight_decay": "0.01"}
    assert TrainConfig.parse_param("optimizer/b2", "0.95") == 0.95
    back = TrainConfig.from_params(params)
    assert back == cfg and back.hash() == cfg.hash() and back.run_name() == cfg.run_name()


@pytest.mark.parametrize("opt_args, message", [
    ("b3=0.9", "opt_args: 'lion_toy' has no hyper-parameter 'b3' (did you mean 'b2'?); its own are b1, b2, weight_decay"),
    ("wieght_decay=0.1", "(did you mean 'weight_decay'?)"),
    ("b2=high", "opt_args: b2: expected a number; received 'high'"),
    ("b2=inf", "opt_args: b2: expected a finite number; received 'inf'"),
    ("b2", "opt_args: expected name=value pairs separated by commas, such as 'b2=0.95'; received 'b2'"),
    ("b2=0.9,b2=0.8", "opt_args: b2: given twice; give it once"),
    ("learning_rate=0.1", "opt_args: 'learning_rate' is the TrainConfig field 'lion_toy' reads: set the field"),
])
def test_its_hyper_parameters_are_checked_against_the_registry(lion, opt_args, message):
    with pytest.raises(ConfigError) as e:
        TrainConfig(**LION, opt_args=opt_args)
    assert message in str(e.value)


def test_an_optimizer_without_its_own_takes_no_opt_args():
    with pytest.raises(ConfigError, match=r"opt_args: 'adam' has no hyper-parameters of its own \(it reads the "
                                          r"TrainConfig fields learning_rate, beta1, beta2, eps\); received 'b2'"):
        TrainConfig(optimizer="adam", opt_args="b2=0.9")


def test_a_grid_sweeps_an_optimizers_own_hyper_parameter(lion, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    grid = tmp_path / "lion.toml"
    grid.write_text('[base]\ndataset = "teacher"\nhidden = [8]\noptimizer = "lion_toy"\nlearning_rate = 0.001\n'
                    'batch_size = 32\nsteps = 20\neval_every = 10\n[grid]\nopt_args = ["", "b2=0.95"]\n')
    assert sweep_mod.main([str(grid), "--workers", "1", "--no-progress"]) == 0
    exp = store.client().get_experiment_by_name("lion")
    runs = store.search_all(store.client(), exp.experiment_id, "tags.`mbstudy.kind` = 'run'")
    assert sorted(r.info.run_name for r in runs) == ["lion_toy-mean-B32-b20.95-lr0.001-s0", "lion_toy-mean-B32-lr0.001-s0"]
    assert sorted(r.data.params["optimizer/b2"] for r in runs) == ["0.95", "0.99"]
    for r in runs:
        assert TrainConfig.from_params(r.data.params).hash() == r.data.tags["cfg_hash"]


def test_an_entry_that_would_shadow_a_field_or_has_no_default_is_refused():
    optimizers_mod.register_optimizer(optimizers_mod.Optimizer(
        "adam_b2_toy", lambda learning_rate, beta2: optax.adam(learning_rate, b2=beta2),
        ("learning_rate", Hyper("beta2", default=0.95, static=True))))
    try:
        with pytest.raises(ConfigError, match=r"optimizer: 'adam_b2_toy' declares \['beta2'\] its own, but they are "
                                              r"TrainConfig fields: declare them Hyper\(name, field=True\)"):
            TrainConfig(optimizer="adam_b2_toy")
    finally:
        optimizers_mod.OPTIMIZERS.pop("adam_b2_toy")
    with pytest.raises(ValueError, match=r"its own hyper-parameter 'rho' needs a default"):
        optimizers_mod.Optimizer("x", lambda learning_rate, rho: optax.sgd(learning_rate), ("learning_rate", Hyper("rho")))
    with pytest.raises(ValueError, match=r"a bool cannot be traced; set static=True"):
        Hyper("nesterov", default=False)
    with pytest.raises(ValueError, match=r"a TrainConfig field's default is the field's"):
        Hyper("beta2", default=0.95, field=True)


# ------------------------------------------------------------------ the shipped AdamW and Muon entries


SHIPPED = {  # a run of each, and a setting of its traced own hyper-parameter and of a static one
    "adamw": (dict(dataset="teacher", hidden=(16,), optimizer="adamw", learning_rate=1e-2, batch_size=32, steps=40,
                   eval_every=20), "weight_decay=0.1", ("beta2", 0.99)),
    "muon": (dict(dataset="teacher", hidden=(16,), optimizer="muon", learning_rate=1e-2, batch_size=32, steps=40,
                  eval_every=20), "weight_decay=0.1", ("opt_args", "beta=0.9")),
}


def test_adamw_and_muon_follow_adam_with_their_labels_and_optax_defaults():
    names = list(optimizers_mod.OPTIMIZERS)
    assert names[:5] == ["sgd", "momentum", "adam", "adamw", "muon"], "appended after adam: the report's order"
    adamw, muon = optimizers_mod.OPTIMIZERS["adamw"], optimizers_mod.OPTIMIZERS["muon"]
    assert (adamw.label, muon.label) == ("AdamW", "Muon")
    assert adamw.fields == ("learning_rate", "beta1", "beta2", "eps") and adamw.static == ("beta1", "beta2")
    assert adamw.defaults() == {"weight_decay": 1e-4}, "optax.adamw's own"
    assert muon.defaults() == {"beta": 0.95, "ns_steps": 5, "weight_decay": 0.0, "adam_b1": 0.9, "adam_b2": 0.999}
    assert muon.static == ("beta", "ns_steps", "adam_b1", "adam_b2") and muon.traced == ("learning_rate", "eps",
                                                                                         "weight_decay")


def _updates(opt, grads, params, steps=3):
    state, out = opt.init(params), []
    for _ in range(steps):
        u, state = opt.update(grads, state, params)
        out.append(u)
    return out


PARAMS = [{"w": jnp.array([[1.0, -2.0, 0.5], [0.3, 0.1, -1.0]]), "b": jnp.array([0.2, -0.4, 0.0])}]
GRADS = [{"w": jnp.array([[0.3, -2.0, 1e-3], [0.7, 0.05, 0.2]]), "b": jnp.array([-0.5, 0.25, 1.0])}]


def test_adamw_is_optax_adamw_and_at_no_decay_adam_bit_for_bit():
    cfg = TrainConfig(**SHIPPED["adamw"][0])
    ours = optimizers_mod.OPTIMIZERS["adamw"].make({**cfg.hyper(), **dict(cfg.static_hyper())})
    for a, b in zip(_updates(ours, GRADS, PARAMS), _updates(optax.adamw(1e-2), GRADS, PARAMS)):
        np.testing.assert_array_equal(a[0]["w"], b[0]["w"])
    no_decay = optimizers_mod.OPTIMIZERS["adamw"].make({**cfg.hyper(), "weight_decay": 0.0, **dict(cfg.static_hyper())})
    for a, b in zip(_updates(no_decay, GRADS, PARAMS), _updates(optax.adam(1e-2), GRADS, PARAMS)):
        np.testing.assert_array_equal(a[0]["w"], b[0]["w"])
        np.testing.assert_array_equal(a[0]["b"], b[0]["b"])


def test_muon_is_optax_contrib_muon_orthogonalising_matrices_only():
    """The 2-D weights get Muon's orthogonalised step (singular values near 1 before the shape factor), the biases
    AdamW's (Nesterov, no decay, the same learning rate)."""
    cfg = TrainConfig(**SHIPPED["muon"][0])
    ours = optimizers_mod.OPTIMIZERS["muon"].make({**cfg.hyper(), **dict(cfg.static_hyper())})
    for a, b in zip(_updates(ours, GRADS, PARAMS), _updates(optax.contrib.muon(1e-2), GRADS, PARAMS)):
        np.testing.assert_array_equal(a[0]["w"], b[0]["w"])
        np.testing.assert_array_equal(a[0]["b"], b[0]["b"])
    first = _updates(ours, GRADS, PARAMS, steps=1)[0][0]
    shape = max(1.0, 3 / 2) ** 0.5  # optax's sqrt(max(1, fan_out / fan_in)) for a (2, 3) matrix
    np.testing.assert_allclose(np.linalg.svd(np.asarray(first["w"]) / (-1e-2 * shape), compute_uv=False), 1.0, atol=0.35)
    adam = optax.adamw(1e-2, weight_decay=0.0, nesterov=True)
    bias = adam.update(GRADS[0]["b"], adam.init(PARAMS[0]["b"]), PARAMS[0]["b"])[0]
    np.testing.assert_array_equal(first["b"], bias)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_adamw_and_muon_are_scale_invariant_as_registered(name):
    """scale_invariant: multiplying every gradient by 1000 leaves the update (up to eps), as Adam's; SGD's does not."""
    assert optimizers_mod.OPTIMIZERS[name].scale_invariant and not optimizers_mod.OPTIMIZERS["sgd"].scale_invariant
    cfg = TrainConfig(**SHIPPED[name][0])
    opt = optimizers_mod.OPTIMIZERS[name].make({**cfg.hyper(), **dict(cfg.static_hyper())})
    big = jax.tree.map(lambda g: 1000 * g, GRADS)
    for a, b in zip(_updates(opt, GRADS, PARAMS), _updates(opt, big, PARAMS)):
        for k in ("w", "b"):
            np.testing.assert_allclose(a[0][k], b[0][k], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("name", list(SHIPPED))
def test_adamw_and_muon_train_and_a_traced_hyper_parameter_compiles_once(name):
    base, traced, (field, static) = SHIPPED[name]
    first = train(TrainConfig(**base, seed=3))
    loss = first.history["train/loss"]
    assert first.outcome == "completed" and np.isfinite(loss).all() and loss[-1] < 0.8 * loss[0], loss
    decayed = train(TrainConfig(**base, seed=3, opt_args=traced))
    assert decayed.timings["compile_s"] == 0.0, "weight_decay is traced: the same program"
    assert not np.array_equal(decayed.history["train/loss"], loss)
    assert TrainConfig(**{**base, field: static}).program_key() != TrainConfig(**base).program_key(), "static: another"


def test_muon_trains_the_mnist1d_mlp():
    cfg = TrainConfig(optimizer="muon", learning_rate=0.02, batch_size=128, steps=300, eval_every=100)
    r = train(cfg)
    assert r.outcome == "completed" and r.history["train/loss"][-1] < 0.6 * r.history["train/loss"][0]
    assert r.history["test/acc"][-1] > 0.4, "well beyond chance (0.1) after 300 steps"


@pytest.mark.parametrize("name", list(SHIPPED))
def test_adamw_and_muon_names_params_and_hashes_round_trip(name):
    base, traced, _ = SHIPPED[name]
    cfg, changed = TrainConfig(**base), TrainConfig(**base, opt_args=traced)
    assert cfg.run_name() == f"{name}-mean-B32-lr0.01-s0"
    assert changed.run_name() == f"{name}-mean-B32-weight_decay0.1-lr0.01-s0"
    assert cfg.hash() != changed.hash() and "opt_args" not in cfg.as_dict()
    for c in (cfg, changed):
        back = TrainConfig.from_params(c.to_params())
        assert back == c and back.hash() == c.hash() and back.run_name() == c.run_name()
    own = {k: v for k, v in changed.to_params().items() if k.startswith("optimizer/")}
    assert own["optimizer/weight_decay"] == "0.1" and len(own) == len(optimizers_mod.OPTIMIZERS[name].own)


# ------------------------------------------------------------------ a model, a field, an executor, an experiment


def test_a_model_registered_from_here_trains_from_a_configuration():
    """CONTRIBUTING, 'A model': one register_model call; its builder reads the configuration and the data."""
    from mbstudy import MLP
    from mbstudy import model_registry

    model_registry.register_model("linear_toy", lambda cfg, data: MLP((data.n_inputs, data.n_outputs)))
    try:
        cfg = TrainConfig(dataset="teacher", model="linear_toy", batch_size=16, steps=20, eval_every=10)
        r = train(cfg)
        assert r.outcome == "completed" and r.model_params == 128 * 10 + 10
        assert cfg.run_name().startswith("linear_toy-sgd-mean-B16") and cfg.to_params()["model"] == "linear_toy"
    finally:
        model_registry.MODELS.pop("linear_toy")
    with pytest.raises(ValueError, match="register_model: 'mlp' is taken"):
        model_registry.register_model("mlp", lambda cfg, data: None)


def test_a_later_field_at_its_default_leaves_every_stored_hash_as_it_was():
    """CONTRIBUTING, 'A configuration field': a field added with since=2 is no part of the hash at its default."""
    from mbstudy.config import FIELDS

    later = [k for k, f in FIELDS.items() if f.metadata["since"] > 1]
    assert {"model", "beta2", "opt_args", "val_fraction"} <= set(later)
    cfg = TrainConfig(optimizer="adam", learning_rate=1e-3, batch_size=32)
    assert not set(later) & set(cfg.as_dict()) and cfg.hash() == "14269d28466688f4", "the hash before they existed"
    assert dataclasses.replace(cfg, beta2=0.99).hash() != cfg.hash()


def test_an_executor_added_to_the_table_runs_a_sweep(tmp_path, monkeypatch):
    """CONTRIBUTING, 'An executor': a subclass of Executor that takes each run through the lifecycle, one entry in
    EXECUTORS; --executor offers it."""
    from experiments.engine import lifecycle
    from experiments.engine.dispatch import Dispatcher
    from experiments.engine.executors import EXECUTORS, Executor

    class InTurn(Executor):
        """Every run in this process, one after another, in the dispatcher's order."""

        name = "in_turn"

        def run(self, todo, ctx, *, bar, counts, board=None) -> int:
            for cfg in Dispatcher(todo, board):
                counts.add(lifecycle.run_one(ctx, cfg))
                bar.update(1)
            return int(counts.failed > 0)

    monkeypatch.setitem(EXECUTORS, "in_turn", InTurn)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert sweep_mod.main(["smoke", "--executor", "in_turn", "--only", "optimizer=sgd", "--set", "steps=10",
                           "--set", "eval_every=5", "--no-progress"]) == 0
    exp = store.client().get_experiment_by_name("smoke")
    runs = store.search_all(store.client(), exp.experiment_id, "tags.`mbstudy.kind` = 'run'")
    assert runs and {r.data.tags["mbstudy.executor"] for r in runs} == {"in_turn"}
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_an_experiment_beyond_the_grids_writes_through_the_run_writer(tmp_path, monkeypatch):
    """CONTRIBUTING, 'An experiment beyond the grids': its runs go through run_writer.write_run."""
    from experiments.engine import provenance, run_writer

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = store.get_or_create_experiment("toy_experiment", "what the toy experiment measures")
    run_id = run_writer.write_run(exp, name="toy-B8", params={"batch_size": 8, "hidden": (4, 4)},
                                  tags={"mbstudy.kind": "toy", **provenance.provenance()},
                                  metrics={"error": 0.25}, histories={"loss": ([0, 1, 2], [1.0, 0.5, float("nan")])})
    run = store.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"batch_size": "8", "hidden": "4,4"}
    assert run.data.metrics["error"] == 0.25 and len(store.client().get_metric_history(run_id, "loss")) == 2


@pytest.mark.slow
def test_a_new_optimizer_flows_into_every_section_of_the_report(lion, tmp_path, monkeypatch, capsys):
    """optax.lion, which no file of the project names, swept beside SGD; then the report and its figures from that
    store: every section is built (those whose experiments the store lacks say so), and Lion is in the main
    sweep's and the science sweep's tables and figures, named by its label, coloured after the registry's own."""
    from analysis import load, plots, report
    from analysis.sections import SECTIONS

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(load, "CACHE", tmp_path / "cache")
    grid = tmp_path / "lionsweep.toml"
    grid.write_text('[base]\ndataset = "teacher"\nhidden = [16]\nsteps = 200\neval_every = 10\ntarget_loss = 0.5\n'
                    'stop_at_target = false\nval_fraction = 0.2\n[grid]\nbatch_size = [8, 32, 128]\nseed = [0, 1]\n'
                    'reduction = ["mean", "sum"]\n'
                    '[[arms]]\noptimizer = "sgd"\nlearning_rate = [0.03, 0.1]\n'
                    '[[arms]]\noptimizer = "lion_toy"\nlearning_rate = [0.001, 0.003]\n')
    assert sweep_mod.main([str(grid), "--workers", "1", "--no-progress"]) == 0
    capsys.readouterr()
    path = report.build("lionsweep", "lionsweep", tmp_path / "report", progress=False, partial=True)
    text = path.read_text()
    for s in SECTIONS:
        assert s.text is None or f"## {s.header}" in text, s.key
    assert "lion_toy" in text and "KeyError" not in text
    drawn = {p.stem for p in (tmp_path / "report" / "figures").glob("*.png")}
    assert {"a_loss_curves", "b_heatmaps", "c_steps_to_target"} <= drawn, drawn
    assert "lion_toy" in plots.optimizer_colors(), "a colour of its own"
    assert "Not measured yet" in text, "the sections whose experiments the store lacks say so"
