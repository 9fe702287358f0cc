"""Sweeps end to end into a temporary MLflow store: schema, resume, kill -9, validation."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments.engine import grid as grids
from experiments import sweep as sweep_mod
from experiments.engine import lifecycle, provenance, store as mlflow_store
from experiments.engine.executors.local import make_pool
from tests import processes
from mbstudy.config import TrainConfig
from mbstudy.train import train

ROOT = Path(__file__).resolve().parent.parent
SMOKE = grids.load("smoke")


@pytest.fixture
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return tmp_path


def all_runs(kind="run"):
    exp = mlflow_store.client().get_experiment_by_name("smoke")
    if exp is None:
        return []
    return mlflow_store.search_all(mlflow_store.client(), exp.experiment_id, f"tags.`mbstudy.kind` = '{kind}'")


def history(run_id, key):
    return mlflow_store.client().get_metric_history(run_id, key)


# ----------------------------------------------------------------- end to end


@pytest.mark.slow
def test_smoke_sweep_end_to_end_then_rerun_is_a_no_op(store, capsys):
    assert sweep_mod.main(["smoke", "--workers", "2", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "trained 13 · skipped 0" in out and "diverged 1" in out and "make ui" in out

    runs = all_runs()
    assert len(runs) == len(SMOKE.configs) == 13
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert {r.data.tags["cfg_hash"] for r in runs} == {c.hash() for c in SMOKE.configs}
    parents = all_runs("parent")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

    for r in runs:
        p, t, m = r.data.params, r.data.tags, r.data.metrics
        assert set(p) == set(grids.FIELDS), "every configuration field is a param"
        assert t["mlflow.parentRunId"] == parents[0].info.run_id
        for tag in ("cfg_hash", "group_hash", "outcome", "git_commit", "git_dirty", "jax_version",
                    "optax_version", "mlflow_version", "device", "data_digest"):
            assert t.get(tag), tag
        assert t["outcome"] in ("completed", "diverged")
        for key in ("final/train/loss", "best/train/loss", "time/compile_s", "time/train_s", "time/log_s"):
            assert key in m, key
        full = mlflow_store.client().get_run(r.info.run_id)
        assert full.inputs.dataset_inputs[0].dataset.digest == t["data_digest"][:32]
        if t["outcome"] == "completed":
            steps = [h.step for h in history(r.info.run_id, "train/loss")]
            assert steps == [0, 20, 40, 60], "one point per evaluation, none duplicated"
            assert len(history(r.info.run_id, "grad/b_simple")) == 4

    diverged = [r for r in runs if r.data.tags["outcome"] == "diverged"]
    assert len(diverged) == 1 and diverged[0].data.params["learning_rate"] == "100.0"
    # group_hash ignores the seed only: here every config has seed 0, so groups == configs
    assert len({r.data.tags["group_hash"] for r in runs}) == 13

    # the rerun is a no-op: nothing trained, nothing written
    assert sweep_mod.main(["smoke", "--workers", "1", "--no-progress"]) == 0
    assert "trained 0 · skipped 13" in capsys.readouterr().out
    assert len(all_runs()) == 13 and len(all_runs("parent")) == 1


@pytest.mark.slow
def test_kill_9_then_resume_leaves_exactly_one_finished_run_per_config(store):
    # a cold compilation cache: with a warm one the smoke sweep can end before the test sees 3 runs finished
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
           "JAX_COMPILATION_CACHE_DIR": str(store / "jax-cache")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "experiments.sweep", "smoke", "--workers", "1", "--no-progress"],
        cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline:  # kill once some, not all, runs are finished and one is in flight
            time.sleep(0.05)
            db = store / "mlflow.db"  # read-only reads: no client racing the store's creation
            # between one run's end and the next one's start no run is RUNNING (a kill there is a different case,
            # the resume after a finished run): wait for a run in flight
            if processes.finished_in(db) >= 3 and processes.finished_in(db, "RUNNING") >= 1:
                break
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = all_runs()
    assert 3 <= sum(r.info.status == "FINISHED" for r in before) < 13
    assert any(r.info.status == "RUNNING" for r in before), "a run was in flight when killed"

    assert sweep_mod.main(["smoke", "--workers", "1", "--no-progress"]) == 0
    runs = all_runs()
    finished = [r for r in runs if r.info.status == "FINISHED"]
    hashes = [r.data.tags["cfg_hash"] for r in finished]
    assert sorted(hashes) == sorted(c.hash() for c in SMOKE.configs), "exactly one FINISHED run per configuration"
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    for r in finished:
        if r.data.tags["outcome"] == "completed":
            assert [h.step for h in history(r.info.run_id, "train/loss")] == [0, 20, 40, 60]


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "args,expected",
    [
        (["smoke", "--set", "colour=1"], ["--set colour: unknown field"]),
        (["smoke", "--set", "dataset=mnist"], ["dataset: expected one of ['mnist1d', 'digits', 'teacher', 'teacher_5x3', 'text']; received 'mnist'"]),
        (["smoke", "--set", "optimizer=rmsprop"], ["optimizer: expected one of ['sgd', 'momentum', 'adam', 'adamw', 'muon']; received 'rmsprop'"]),
        (["smoke", "--set", "reduction=avg"], ["reduction: expected one of ['mean', 'sum']; received 'avg'"]),
        (["smoke", "--set", "batch_size=0"], ["batch_size: expected 1 <= batch_size <= 1000 (the teacher_5x3 training set); received 0"]),
        (["smoke", "--set", "batch_size=1001"], ["received 1001"]),
        (["smoke", "--set", "learning_rate=-0.1"], ["learning_rate: expected > 0; received -0.1"]),
        (["smoke", "--set", "learning_rate=[]"], ["grid.learning_rate: an empty list gives no runs"]),
        (["smoke", "--set", "steps=ten"], ["steps: expected an int; received 'ten'"]),
        (["smoke", "--set", "steps"], ["--set: expected key=value; received 'steps'"]),
        (["nosuchgrid"], ["GRID: unknown sweep 'nosuchgrid'; available: " + ", ".join(grids.available())]),
        (["smoke", "--set", "optimizer=rmsprop", "--set", "learning_rate=0", "--set", "hidden=[0]"],
         ["optimizer: expected one of", "learning_rate: expected > 0; received 0", "hidden: expected a non-empty list of positive ints"]),
    ],
)
def test_bad_definitions_exit_2_listing_every_problem_and_create_nothing(store, capsys, args, expected):
    assert sweep_mod.main(args + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    for text in expected:
        assert text in err, err
    assert not (store / "mlflow.db").exists(), "no store and no run may be created"


def test_malformed_and_empty_files(store, tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[base\nsteps = 3\n")
    assert sweep_mod.main([str(bad)]) == 2
    assert f"{bad}:1:6: TOML syntax: Expected ']'" in capsys.readouterr().err
    empty = tmp_path / "empty.toml"
    empty.write_text('[base]\ndataset = "teacher"\n[grid]\nseed = []\n')
    assert sweep_mod.main([str(empty)]) == 2
    assert "grid.seed: an empty list gives no runs" in capsys.readouterr().err
    typo = tmp_path / "typo.toml"
    typo.write_text('[base]\ndataset = "teacher"\nlearning_rte = 0.1\n[grdi]\nseed = [1]\n')
    assert sweep_mod.main([str(typo)]) == 2
    err = capsys.readouterr().err
    assert "grdi: unknown top-level key" in err and "base.learning_rte: unknown field" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_overrides_parse_toml_values():
    assert grids.parse_override("learning_rate=0.5") == ("learning_rate", 0.5)
    assert grids.parse_override("seed=[0, 1]") == ("seed", [0, 1])
    assert grids.parse_override("optimizer=adam") == ("optimizer", "adam")
    assert grids.parse_override("target_loss=none") == ("target_loss", None)
    s = grids.load("smoke", ["seed=[0, 1]", "steps=20"])
    assert len(s.configs) == 2 * len(SMOKE.configs) and {c.steps for c in s.configs} == {20}


def test_every_shipped_grid_is_valid():
    loaded = {name: grids.load(name) for name in grids.available()}
    sizes = {name: len(s.configs) or len(s.cells) for name, s in loaded.items()}
    assert sizes["default"] == 6 * 2 * 3 * 7 * 3
    assert all(n > 0 for n in sizes.values()), sizes
    science = [c.template for c in loaded["science"].cells]
    assert not loaded["science"].configs  # its learning rate is searched: cells, not configurations
    full = {"mnist1d": 3200, "teacher": 800}  # each training set less its 20% validation split
    for ds, n in full.items():
        sizes = {c.batch_size for c in science if c.dataset == ds and c.model == "mlp"}
        assert min(sizes) == 1 and max(sizes) == n, (ds, sorted(sizes))
    assert all(c.stop_at_target and c.target_loss for c in science)
    # a validation target only where a network can beat a linear model there (the teacher's is least squares')
    assert all(c.target_val for c in science if c.dataset == "mnist1d")


def test_config_hash_is_stable_and_seed_free_group():
    c = TrainConfig()
    assert c.hash() == TrainConfig().hash()
    assert c.hash() != dataclasses.replace(c, seed=1).hash()
    assert c.hash(without=("seed",)) == dataclasses.replace(c, seed=1).hash(without=("seed",))


# ------------------------------------------------- how runs are batched does not matter


@pytest.mark.slow
def test_worker_processes_give_the_same_numbers_as_training_alone():
    cfgs = list(SMOKE.configs[:3])
    with make_pool(2) as ex:
        parallel = list(ex.map(lifecycle.train_config, cfgs))
    for cfg, got in zip(cfgs, parallel):
        alone = train(cfg)
        for key, values in alone.history.items():
            if not key.startswith("time/"):
                np.testing.assert_array_equal(got.history[key], values, err_msg=key)


def test_stale_runs_are_judged_by_their_own_process_and_by_their_parent(store):
    """A dead driver's parent, its child written elsewhere (a Ray worker on another host) and a child under an
    ended parent are stale; a live sweep's runs, on any host, are not."""
    exp = mlflow_store.get_or_create_experiment("stale")
    c = mlflow_store.client()

    def run(tags, kind="run"):
        return c.create_run(exp, tags={"mbstudy.kind": kind, **tags}).info.run_id

    here, dead_pid = provenance.socket.gethostname(), 2**22 + 12345  # above Linux's pid_max: no such process
    dead_parent = run({"mbstudy.host": here, "mbstudy.pid": str(dead_pid)}, "parent")
    remote_child = run({"mlflow.parentRunId": dead_parent, "mbstudy.host": "node-7", "mbstudy.pid": "1"})
    live_parent = run({"mbstudy.host": here, "mbstudy.pid": str(os.getpid())}, "parent")
    live_remote_child = run({"mlflow.parentRunId": live_parent, "mbstudy.host": "node-7", "mbstudy.pid": "1"})
    ended_parent = run({"mbstudy.host": "node-9", "mbstudy.pid": "1"}, "parent")
    c.set_terminated(ended_parent, "FINISHED")
    orphan = run({"mlflow.parentRunId": ended_parent, "mbstudy.host": "node-9", "mbstudy.pid": "1"})

    assert provenance.mark_stale_runs_killed(exp) == 3
    status = {i: c.get_run(i).info.status for i in (dead_parent, remote_child, orphan, live_parent, live_remote_child)}
    assert [status[i] for i in (dead_parent, remote_child, orphan)] == ["KILLED"] * 3
    assert [status[i] for i in (live_parent, live_remote_child)] == ["RUNNING"] * 2
