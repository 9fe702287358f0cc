"""Stopping a sweep: SIGTERM is handled exactly like Ctrl-C (runs in flight and the parent KILLED, exit 143),
with either executor, and a rerun completes with one FINISHED run per configuration; ``--dry-run`` writes nothing."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from experiments import sweep as sweep_mod
from experiments.engine import grid as grids
from experiments.engine import store as mlflow_store
from tests import processes

ROOT = Path(__file__).resolve().parent.parent
SMOKE = grids.load("smoke")


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return tmp_path


def runs(kind="run"):
    exp = mlflow_store.client().get_experiment_by_name("smoke")
    if exp is None:
        return []
    return mlflow_store.search_all(mlflow_store.client(), exp.experiment_id, f"tags.`mbstudy.kind` = '{kind}'")


def start_then_signal(store, args, sig, min_finished=2, timeout=240):
    """Start ``python -m experiments.sweep smoke ARGS``, send ``sig`` to it once some runs are FINISHED."""
    # a cold compilation cache, so that the sweep lasts long enough to be signalled in the middle
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}",
           "JAX_COMPILATION_CACHE_DIR": str(store / "jax-cache")}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", "smoke", *args, "--no-progress"],
                            cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            if processes.finished_in(store / "mlflow.db") >= min_finished or proc.poll() is not None:
                break
        assert proc.poll() is None, f"the sweep ended before it could be signalled:\n{proc.stderr.read()}"
        os.kill(proc.pid, sig)  # the driver alone, as `timeout` does
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err


def assert_stopped_cleanly_then_resumes(executor_args):
    after = runs()
    assert all(r.info.status in ("FINISHED", "KILLED") for r in after), "nothing may be left RUNNING"
    assert sum(r.info.status == "FINISHED" for r in after) < len(SMOKE.configs)
    assert [p.info.status for p in runs("parent")] == ["KILLED"]
    assert sweep_mod.main(["smoke", *executor_args, "--no-progress"]) == 0
    finished = [r.data.tags["cfg_hash"] for r in runs() if r.info.status == "FINISHED"]
    assert sorted(finished) == sorted(c.hash() for c in SMOKE.configs), "exactly one FINISHED run per configuration"


@pytest.mark.slow
@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_with_the_local_executor(store, workers):
    status, _, err = start_then_signal(store, ["--workers", workers], signal.SIGTERM)
    assert status == 143, err
    assert "terminated (SIGTERM): the runs in flight are marked KILLED" in err
    assert_stopped_cleanly_then_resumes(["--workers", "2"])


@pytest.mark.slow
def test_sigterm_with_the_ray_executor(store):
    if importlib.util.find_spec("ray") is None:
        msg = "Ray is not installed: `make setup EXTRAS=ray`"
        if os.environ.get("MBSTUDY_REQUIRE_ALL_TESTS"):
            pytest.fail(msg + " (MBSTUDY_REQUIRE_ALL_TESTS is set: this test may not be skipped)")
        pytest.skip(msg)
    status, _, err = start_then_signal(store, ["--executor", "ray", "--workers", "2", "--unit-size", "1"],
                                       signal.SIGTERM)
    assert status == 143, err
    assert_stopped_cleanly_then_resumes(["--workers", "2"])


def test_dry_run_writes_nothing_and_counts(store, capsys):
    assert sweep_mod.main(["smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "13 configurations in sweep 'smoke'" in out and "not created yet, so all 13 would train" in out
    assert not (store / "mlflow.db").exists(), "a dry run creates no store"


def test_the_read_only_reader_leaves_no_folder_behind(store, monkeypatch):
    """MLflow makes the parent folder of a SQLite path; the read-only URI ``file:/...`` made a folder ``file:`` in
    the working directory at every dry run and study ETA (found in a fresh clone); its path is now percent-encoded."""
    monkeypatch.chdir(store)
    mlflow_store.client().get_experiment_by_name("Default")  # makes the store
    before = sorted(os.listdir(store))
    reader = mlflow_store.reader()
    assert reader.get_experiment_by_name("Default") is not None
    with pytest.raises(Exception, match="readonly"):
        reader.create_experiment("written")
    assert sorted(os.listdir(store)) == before


@pytest.mark.slow
def test_dry_run_counts_what_the_store_holds_and_estimates_the_time(store, capsys):
    assert sweep_mod.main(["smoke", "--workers", "2", "--no-progress"]) == 0
    capsys.readouterr()
    n_runs = len(runs())
    before = (store / "mlflow.db").read_bytes()
    assert sweep_mod.main(["smoke", "--dry-run", "--set", "seed=[0, 1]", "--workers", "2"]) == 0
    assert (store / "mlflow.db").read_bytes() == before, "a dry run reads the store through a read-only connection"
    out = capsys.readouterr().out
    assert "26 configurations" in out and "holds 13 of them FINISHED; 13 would train" in out
    assert "estimate: about" in out and "with 2 worker(s)" in out
    assert len(runs()) == n_runs and len(runs("parent")) == 1, "a dry run writes no run"


def test_a_missing_ray_is_reported_with_the_install_command_before_the_store_is_touched(store, monkeypatch, capsys):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real_find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "ray", None)  # and `import ray` fails, as when it is not installed
    assert sweep_mod.main(["smoke", "--executor", "ray", "--no-progress"]) == 3
    assert "make setup EXTRAS=ray" in capsys.readouterr().err
    assert not (store / "mlflow.db").exists()
