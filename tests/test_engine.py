"""The sweep engine's structure: one run lifecycle for every executor, one run writer, no import cycles."""

import ast
import dataclasses
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from experiments.engine import dispatch, driver, lifecycle, run_writer, sql_writer, store as mlflow_store
from experiments.engine import grid as grids
from experiments.engine.executors import EXECUTORS
from experiments.engine.executors import ray as ray_mod

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


# ------------------------------------------------------------------- imports


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every module of experiments/ -> the experiments modules it imports, anywhere in its code."""
    paths = sorted((ROOT / "experiments").rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    graph = {}
    for p in paths:
        edges = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                for a in node.names:  # `from pkg import mod` imports pkg.mod when it is a module
                    edges.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
        graph[_module_name(p)] = {e for e in edges if e in modules}
    return graph


def test_the_driver_knows_executors_only_through_the_table():
    graph = _imports()
    executor_modules = {m for m in graph if m.startswith("experiments.engine.executors.") and not m.endswith(".base")}
    assert executor_modules >= {"experiments.engine.executors.local", "experiments.engine.executors.ray"}
    assert not graph["experiments.engine.driver"] & executor_modules
    assert set(EXECUTORS) == {"local", "ray"}


def test_no_import_cycle_in_experiments():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            assert state.get(n) != 1, "import cycle: " + " -> ".join([*path, m, n])
            if n not in state:
                visit(n, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


# ----------------------------------------------------------------- the writer


def test_write_run_logs_over_1000_metrics_in_batches_and_ends_finished(store, monkeypatch):
    from mlflow import MlflowClient

    calls = []
    original = MlflowClient.log_batch

    def spy(self, run_id, metrics=(), params=(), tags=(), **kw):
        calls.append((len(metrics), len(params), len(tags)))
        return original(self, run_id, metrics=metrics, params=params, tags=tags, **kw)

    monkeypatch.setattr(MlflowClient, "log_batch", spy)
    exp = mlflow_store.get_or_create_experiment("writer")
    steps = np.arange(1200)
    run_id = run_writer.write_run(
        exp, name="many", params={"hidden": (3, 4), "lr": 0.1}, tags={"mbstudy.kind": "test"},
        histories={"a": (steps, steps * 0.5), "b": (steps, np.where(steps == 3, np.nan, 1.0))},
        metrics={"final/a": 2.0}, step=1199)
    metric_calls = [m for m, _, _ in calls if m]
    assert len(metric_calls) == 3 and max(metric_calls) <= run_writer.BATCH and sum(metric_calls) == 1200 + 1199 + 1
    run = mlflow_store.client().get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "many"
    assert run.data.params == {"hidden": "3,4", "lr": "0.1"} and run.data.tags["mbstudy.kind"] == "test"
    assert len(mlflow_store.client().get_metric_history(run_id, "a")) == 1200
    assert len(mlflow_store.client().get_metric_history(run_id, "b")) == 1199, "non-finite points are left out"
    assert run.data.metrics["final/a"] == 2.0


# -------------------------------------------------------------- the lifecycle


class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay:
    """Enough of Ray's API to run the Ray executor's tasks in this process."""

    def remote(self, **_):
        return lambda fn: SimpleNamespace(remote=lambda *a: _Ref(fn(*a)))

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def shutdown(self):
        pass


def _fake_train(cfg, slot=None, give_up_after=None):
    steps = np.array([0, 10])
    return SimpleNamespace(config=cfg, outcome="completed", steps_to_target=None, steps_to_val_target=None,
                           model_params=7, data_digest="0" * 64,
                           history={"step": steps, "train/loss": np.array([1.0, 0.5])},
                           timings={"compile_s": 0.1, "train_s": 0.2, "eval_s": 0.3},
                           summary=lambda: {"final/train/loss": 0.5})


@pytest.mark.parametrize("name", ["local", "ray"])
def test_every_executor_takes_each_run_through_the_one_lifecycle(store, monkeypatch, name):
    calls = {"start_run": 0, "finish_run": 0}
    for fn in calls:
        original = getattr(lifecycle, fn)

        def counted(*a, _orig=original, _fn=fn, **k):
            calls[_fn] += 1
            return _orig(*a, **k)

        monkeypatch.setattr(lifecycle, fn, counted)
    monkeypatch.setattr(lifecycle, "train_config", _fake_train)
    monkeypatch.setattr(ray_mod, "connect", lambda workers: _FakeRay())
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = dataclasses.replace(grids.load("smoke"), name=f"lifecycle-{name}")
    sweep = dataclasses.replace(sweep, configs=sweep.configs[:3])

    status, counts, parent = driver.run_sweep(sweep, EXECUTORS[name](workers=1, **({"unit_size": 2} if name == "ray" else {})), progress=False)
    assert status == 0 and counts.trained == 3 and calls == {"start_run": 3, "finish_run": 3}
    exp = mlflow_store.client().get_experiment_by_name(sweep.name).experiment_id
    runs = mlflow_store.search_all(mlflow_store.client(), exp, "tags.`mbstudy.kind` = 'run'")
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 3
    assert {r.data.tags["mbstudy.executor"] for r in runs} == {name}
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent}
    assert mlflow_store.client().get_run(parent).info.status == "FINISHED"


def test_runs_of_one_program_are_adjacent_and_ray_units_follow_that_order():
    configs = grids.load("default").configs
    order = dispatch.dispatch_order(configs)
    keys = [c.program_key() for c in order]
    assert sorted(order, key=lambda c: (c.program_key(), c.learning_rate, c.seed)) == order
    assert len(set(keys)) == len([k for i, k in enumerate(keys) if i == 0 or k != keys[i - 1]]), "one block each"
    units = ray_mod.units(order, 8)
    assert [c for u in units for c in u] == order and all(len({c.program_key() for c in u}) == 1 for u in units)


@pytest.mark.slow
def test_a_second_process_loads_compiled_programs_from_the_cache(tmp_path):
    """The persistent compilation cache: a rerun in a fresh process compiles nothing new (no new cache entry),
    and its numbers equal the first run's."""
    import subprocess
    import sys

    code = ("import sys; from experiments.engine import lifecycle; from mbstudy import TrainConfig;"
            "r = lifecycle.train_config(TrainConfig(dataset='teacher_5x3', hidden=(8,), steps=20, eval_every=10));"
            "print(repr(r.history['train/loss'].tolist()))")
    env = {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax")}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    entries = sorted(p.name for p in (tmp_path / "jax").iterdir())
    assert entries, "the first process wrote its compiled programs"
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT, check=True)
    assert sorted(p.name for p in (tmp_path / "jax").iterdir()) == entries, "the second compiled nothing new"
    assert first.stdout == second.stdout


# ------------------------------------------------------------ the run writer


def _logged(run_id):
    c = mlflow_store.client()
    run = c.get_run(run_id)
    histories = {k: [(m.step, m.value) for m in c.get_metric_history(run_id, k)] for k in run.data.metrics}
    tags = {k: v for k, v in run.data.tags.items() if not k.startswith("mlflow.")}
    return run.info.status, run.data.params, tags, run.data.metrics, histories


def _metric_rows(store, run_id):
    """(metric rows, latest-metric rows) of a run straight from MLflow's tables, less time/log_s and the
    timestamp, and the set of timestamps used."""
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric

    with store.ManagedSessionMaker() as session:
        def rows(model):
            return sorted((m.key, m.step, m.value, bool(m.is_nan)) for m in
                          session.query(model).filter(model.run_uuid == run_id) if m.key != "time/log_s")
        stamps = {m.timestamp for m in session.query(SqlMetric).filter(SqlMetric.run_uuid == run_id)}
        return rows(SqlMetric), rows(SqlLatestMetric), stamps


def test_one_transaction_writes_what_mlflows_log_batch_writes(store, monkeypatch):
    """The database fast path of ``log_result`` and MLflow's own ``log_batch`` leave the same run behind."""
    from mbstudy.config import TrainConfig
    from mbstudy.train import train

    cfg = TrainConfig(dataset="teacher_5x3", hidden=(8,), steps=40, eval_every=10, target_loss=0.9,
                      stop_at_target=False, stats_every=20)
    result = train(cfg)
    assert np.isnan(result.history["grad/b_simple"]).any(), "points not measured are left out, both ways"
    exp = mlflow_store.get_or_create_experiment("writer")
    prov = {"git_commit": "abc", "device": "cpu"}
    fast = run_writer.start_child(exp, "", "fast", cfg.hash(), "g", "writer")
    sql = sql_writer.sql_store(mlflow_store.client())
    assert sql is not None
    run_writer.log_result(fast, result, cfg.to_params(), prov)
    monkeypatch.setattr(sql_writer, "sql_store", lambda client: None)
    slow = run_writer.start_child(exp, "", "slow", cfg.hash(), "g", "writer")
    run_writer.log_result(slow, result, cfg.to_params(), prov)

    a, b = _logged(fast), _logged(slow)
    assert a[0] == b[0] == "FINISHED"
    assert a[1] == b[1] and a[2] == b[2], "params and tags"
    same = lambda d: {k: v for k, v in d.items() if k != "time/log_s"}  # noqa: E731
    assert same(a[3]) == same(b[3]) and "time/log_s" in a[3], "latest values"
    assert same(a[4]) == same(b[4]) and len(a[4]["train/loss"]) == 5, "every history, step by step"
    rows_a, rows_b = _metric_rows(sql, fast), _metric_rows(sql, slow)
    assert rows_a[0] == rows_b[0] and rows_a[1] == rows_b[1], "the same metric and latest-metric rows, is_nan included"
    assert len(rows_a[2]) == len(rows_b[2]) == 1, "one timestamp for every point of a run, both ways"
    found = mlflow_store.search_all(mlflow_store.client(), exp, "metrics.`final/train/loss` > 0 and params.hidden = '8'")
    assert {r.info.run_id for r in found} == {fast, slow}
    assert mlflow_store.client().get_run(fast).info.end_time >= mlflow_store.client().get_run(fast).info.start_time
    assert mlflow_store.client().get_run(fast).inputs.dataset_inputs[0].dataset.name == "teacher_5x3"


def test_the_fast_path_refuses_a_run_that_already_has_the_metric(store):
    from mlflow.entities import Metric

    exp = mlflow_store.get_or_create_experiment("writer")
    rid = run_writer.start_child(exp, "", "r", "h", "g", "writer")
    store_ = sql_writer.sql_store(mlflow_store.client())
    assert sql_writer.insert_run_data(store_, rid, {"a": 1}, {"t": "x"}, [Metric("m", 1.0, 5, 0), Metric("m", 2.0, 5, 3)])
    assert not sql_writer.insert_run_data(store_, rid, {}, {}, [Metric("m", 0.5, 6, 9)], status="FINISHED")
    run = mlflow_store.client().get_run(rid)
    assert run.data.metrics == {"m": 2.0} and run.info.status == "RUNNING", "nothing written the second time"
    assert run.data.params == {"a": "1"} and run.data.tags["t"] == "x"
    assert not sql_writer.insert_run_data(store_, rid, {}, {"t": "y"}, [Metric("n", 1.0, 5, 0)]), "a tag set before"
    assert not sql_writer.insert_run_data(store_, rid, {"a": 1}, {}, [Metric("n", 1.0, 5, 0)]), "a param set before"
    assert "n" not in mlflow_store.client().get_run(rid).data.metrics


def test_a_key_written_between_check_and_insert_leaves_the_run_to_log_batch(store, monkeypatch):
    """Another writer racing the one-transaction insert: the transaction rolls back and log_batch merges."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    from mbstudy.config import TrainConfig
    from mbstudy.train import train

    cfg = TrainConfig(dataset="teacher_5x3", hidden=(8,), steps=20, eval_every=10)
    result = train(cfg)
    exp = mlflow_store.get_or_create_experiment("writer")
    rid = run_writer.start_child(exp, "", "raced", cfg.hash(), "g", "writer")

    def raced(*a, **k):
        raise MlflowException("raced") from sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE"))

    monkeypatch.setattr(sql_writer, "insert_run_data", raced)
    run_writer.log_result(rid, result, cfg.to_params(), {"git_commit": "abc"})
    run = mlflow_store.client().get_run(rid)
    assert run.info.status == "FINISHED" and run.data.params["hidden"] == "8" and "time/log_s" in run.data.metrics


def test_two_writers_adding_the_same_data_set_at_once_both_link_it(store, monkeypatch):
    """MLflow's log_inputs checks for the data set, then inserts it; a second writer doing the same at that moment
    collides on the key (seen with two Ray workers). The run writer retries, and the retry links the data set."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    exp = mlflow_store.get_or_create_experiment("writer")
    rid = run_writer.start_child(exp, "", "r", "h", "g", "writer")
    real, calls = MlflowClient.log_inputs, []

    def collide_once(self, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("collided") from sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("dataset_pk"))
        return real(self, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_inputs", collide_once)
    run_writer.RunWriter(rid).log_dataset("teacher_5x3", "0" * 32, "src")
    assert len(calls) == 2
    assert mlflow_store.client().get_run(rid).inputs.dataset_inputs[0].dataset.name == "teacher_5x3"

    # through a tracking server the collision arrives as a RestException carrying the server's SQLAlchemy error
    # (seen in CI: "(Background on this error at: https://sqlalche.me/e/21/gkpj)"), with no Python cause
    from mlflow.exceptions import RestException

    rid2 = run_writer.start_child(exp, "", "r2", "h2", "g", "writer")
    calls.clear()

    def collide_over_rest(self, *a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise RestException({"error_code": "INTERNAL_ERROR", "message": "(psycopg2.errors.UniqueViolation) "
                                 "duplicate key value (Background on this error at: https://sqlalche.me/e/21/gkpj)"})
        return real(self, *a, **k)

    monkeypatch.setattr(MlflowClient, "log_inputs", collide_over_rest)
    run_writer.RunWriter(rid2).log_dataset("teacher_5x3", "0" * 32, "src")
    assert len(calls) == 2
    assert mlflow_store.client().get_run(rid2).inputs.dataset_inputs[0].dataset.name == "teacher_5x3"

    def other_error(self, *a, **k):
        raise RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "no such run"})

    monkeypatch.setattr(MlflowClient, "log_inputs", other_error)
    with pytest.raises(MlflowException, match="no such run"):
        run_writer.RunWriter(rid2).log_dataset("teacher_5x3", "0" * 32, "src")
