"""Pruning (issue 13): a run that can no longer lower its group's steps-to-target is given up, and every
steps-to-target, per seed and per group, is the same as without pruning, with both executors and across a
kill -9 and resume. And the statistics' own cadence (``stats_every``) leaves a sweep's answers as they were."""

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis import load, reduce
from experiments import sweep as sweep_mod
from experiments.engine import dispatch, grid as grids, pruning, store
from mbstudy import load_dataset
from mbstudy.config import TrainConfig
from mbstudy.train import train
from tests import processes

ROOT = Path(__file__).resolve().parent.parent

# Small and quick, with what pruning needs: at every (optimizer, B, seed) several rates reach the target at
# different steps, and some never do (Adam at 0.3 with B = 4, the diverging rates).
PRUNE_GRID = """
description = "pruning test: steps to a target loss, stopping there"
[base]
dataset = "teacher_5x3"
hidden = [8]
steps = 400
eval_every = 5
target_loss = 0.25
stop_at_target = true
[grid]
batch_size = [4, 32]
seed = [0, 1]
learning_rate = [0.01, 0.03, 0.1, 0.3, 1.0, 3.0]
optimizer = ["sgd", "adam"]
"""


@pytest.fixture
def grid_file(tmp_path):
    path = tmp_path / "prune.toml"
    path.write_text(PRUNE_GRID)
    return path


def use_store(monkeypatch, path: Path) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")


def runs_of(name: str) -> pd.DataFrame:
    return load.load_runs(name)


def per_seed_minimum(runs: pd.DataFrame) -> pd.Series:
    """Per (optimizer, B, seed): the fewest steps to target over learning rates (inf: no rate reached it)."""
    s = runs["steps_to_target"].where(runs["outcome"] == "completed").astype(float).fillna(np.inf)
    return s.groupby([runs["optimizer"], runs["batch_size"], runs["seed"]]).min()


# ------------------------------------------------------------------ units


def test_a_run_given_up_is_the_unpruned_run_cut_short_bit_for_bit():
    data = load_dataset("teacher_5x3")
    cfg = TrainConfig(dataset="teacher_5x3", hidden=(8,), optimizer="sgd", learning_rate=0.01, batch_size=4,
                      steps=400, eval_every=5, target_loss=0.25, stop_at_target=True)
    full = train(cfg, data)
    assert full.outcome == "completed" and full.steps_to_target == 215
    for give_up in (17, lambda: 17):  # a step count, or a function read at every evaluation
        cut = train(cfg, data, give_up=give_up)
        assert cut.outcome == "pruned" and cut.steps_to_target is None
        assert cut.history["step"][-1] == 20, "the first evaluation at or after step 17"
        n = len(cut.history["step"])
        for key in ("step", "train/loss", "test/loss", "grad/b_simple"):
            np.testing.assert_array_equal(cut.history[key], full.history[key][:n], err_msg=key)
        assert cut.summary()["pruned_at"] == 20 and "steps_to_target" not in cut.summary()
    # reaching the target at the give-up step itself is a tie, not a loss: the run completes
    assert train(cfg, data, give_up=215).outcome == "completed"
    assert train(cfg, data, give_up=lambda: None).steps_to_target == 215  # None: no result to beat yet


def test_only_a_run_that_stops_at_its_target_can_be_given_up():
    cfg = TrainConfig(dataset="teacher_5x3", hidden=(8,), steps=20, eval_every=10, target_loss=0.25)
    with pytest.raises(ValueError, match="give_up: only a run that stops at its target"):
        train(cfg, give_up=10)
    assert pruning.prune_group(cfg) is None


def _finished(cfg, steps, outcome="completed", tagged=True):
    tags = {"outcome": outcome, **({"prune_group": pruning.prune_group(cfg)} if tagged else {})}
    metrics = {} if steps is None else {"steps_to_target": float(steps)}
    return SimpleNamespace(data=SimpleNamespace(params=cfg.to_params(), tags=tags, metrics=metrics))


def test_the_board_starts_from_the_store_and_keeps_the_minimum():
    base = TrainConfig(target_loss=0.7, stop_at_target=True, batch_size=8)
    a, b, c = (dataclasses.replace(base, learning_rate=lr) for lr in (0.01, 0.1, 1.0))
    other = dataclasses.replace(base, batch_size=16)
    board = pruning.PruneBoard([a, b, c, other], [
        _finished(a, 300), _finished(b, 200, tagged=False),  # an older run without the tag: its params say
        _finished(c, 100, outcome="diverged"), _finished(dataclasses.replace(base, batch_size=64), 5)])
    assert board.limit(c) == {"loss": 200} and board.best_lr[pruning.prune_group(a)] == 0.1
    assert board.limit(other) == {}, "no run of that group yet"
    assert board.limit(dataclasses.replace(base, batch_size=64)) is None, "a group outside the sweep is ignored"
    board.record(c, {"loss": 250})
    assert board.limit(a) == {"loss": 200}
    board.record(c, {"loss": 150})
    assert board.limit(b) == {"loss": 150} and board.best_lr[pruning.prune_group(a)] == 1.0
    assert board.limit(TrainConfig()) is None, "a run that does not stop at a target has no group"


def test_with_two_targets_the_board_keeps_each_minimum_and_a_pruned_runs_reached_target_counts():
    base = TrainConfig(dataset="teacher", hidden=(16,), target_loss=0.5, target_val=0.6, val_fraction=0.2,
                       stop_at_target=True, batch_size=8)
    a, b = (dataclasses.replace(base, learning_rate=lr) for lr in (0.01, 0.1))
    pruned = _finished(a, 300, outcome="pruned")
    pruned.data.metrics["steps_to_val_target"] = 120.0
    board = pruning.PruneBoard([a, b], [pruned])
    assert board.limit(b) == {"loss": 300, "val": 120}
    board.record(b, {"val": 90})
    assert board.limit(a) == {"loss": 300, "val": 90}


def test_dispatch_starts_each_group_nearest_its_likely_best_rate():
    rates = (0.001, 0.01, 0.1, 1.0, 10.0)
    base = TrainConfig(target_loss=0.7, stop_at_target=True)
    todo = [dataclasses.replace(base, batch_size=b, learning_rate=lr) for b in (8, 16) for lr in rates]
    board = pruning.PruneBoard(todo)
    order = dispatch.Dispatcher(todo, board)
    first = next(order)
    assert (first.batch_size, first.learning_rate) == (8, 0.1), "no result yet: the middle of the grid"
    board.record(first, {"loss": 100})
    assert next(order).learning_rate in (0.01, 1.0), "then outward from the best so far"
    rest8 = [next(order) for _ in range(3)]
    assert {c.batch_size for c in rest8} == {8}, "one compiled program's runs together"
    board.record(dataclasses.replace(base, batch_size=8, learning_rate=1.0), {"loss": 50})
    assert next(order).learning_rate == 1.0, "the next batch size starts at the previous one's best"
    without = [(c.batch_size, c.learning_rate) for c in dispatch.Dispatcher(todo)]
    assert without == [(c.batch_size, c.learning_rate) for c in dispatch.dispatch_order(todo)]


# ------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.parametrize("executor,workers", [("local", 2), ("local", 1), ("ray", 2)])
def test_pruning_changes_no_steps_to_target(grid_file, tmp_path, monkeypatch, capsys, executor, workers):
    # the same executor both ways: the pytest process runs in float64 (conftest.py), the workers do not
    how = ["--executor", executor, "--workers", str(workers), "--no-progress"]
    use_store(monkeypatch, tmp_path / "full.db")
    assert sweep_mod.main([str(grid_file), "--no-prune", *how]) == 0
    full = runs_of("prune")
    assert "pruned" not in set(full["outcome"])

    use_store(monkeypatch, tmp_path / "pruned.db")
    assert sweep_mod.main([str(grid_file), *how]) == 0
    out = capsys.readouterr().out
    pruned = runs_of("prune")
    n_pruned = int((pruned["outcome"] == "pruned").sum())
    assert n_pruned >= 5 and f"pruned {n_pruned}" in out

    # the answer, per seed and per group, is the same
    pd.testing.assert_series_equal(per_seed_minimum(pruned), per_seed_minimum(full))
    pd.testing.assert_frame_equal(reduce.steps_to_target(pruned), reduce.steps_to_target(full))
    pd.testing.assert_frame_equal(reduce.best_lr_to_target(pruned), reduce.best_lr_to_target(full))
    # a run given up stopped no earlier than its seed's best, and before it would have reached the target
    best = per_seed_minimum(full)
    by_hash = full.set_index("cfg_hash")
    for r in pruned[pruned["outcome"] == "pruned"].itertuples():
        assert r.pruned_at >= best[(r.optimizer, r.batch_size, r.seed)]
        unpruned = by_hash.loc[r.cfg_hash]
        assert unpruned["outcome"] != "completed" or np.isnan(unpruned["steps_to_target"]) \
            or unpruned["steps_to_target"] > r.pruned_at
    # every run that was not given up is the run it would have been
    kept = pruned[pruned["outcome"] != "pruned"].set_index("cfg_hash")
    for h, r in kept.iterrows():
        assert r["outcome"] == by_hash.loc[h, "outcome"]
        assert r["final/train/loss"] == by_hash.loc[h, "final/train/loss"] or (
            np.isnan(r["final/train/loss"]) and np.isnan(by_hash.loc[h, "final/train/loss"]))
    # and pruning saved steps (a diverged run stops at the same step in both)
    def trained(runs):
        stopped = runs["pruned_at"] if "pruned_at" in runs else pd.Series(np.nan, index=runs.index)
        return stopped.fillna(runs["steps_to_target"]).fillna(runs["steps"]).sum()
    assert trained(pruned) < 0.8 * trained(full)


@pytest.mark.slow
def test_kill_9_with_pruning_then_resume_loses_and_duplicates_nothing(grid_file, tmp_path, monkeypatch):
    db = tmp_path / "killed.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax")}
    proc = subprocess.Popen([sys.executable, "-m", "experiments.sweep", str(grid_file), "--workers", "2",
                             "--no-progress"], cwd=ROOT, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    try:
        while time.time() < deadline:
            time.sleep(0.2)
            if processes.finished_in(db) >= 12:
                break
        assert proc.poll() is None, "the sweep ended before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    use_store(monkeypatch, db)
    assert sweep_mod.main([str(grid_file), "--workers", "2", "--no-progress"]) == 0
    exp = store.client().get_experiment_by_name("prune").experiment_id
    every = store.search_all(store.client(), exp, "tags.`mbstudy.kind` = 'run'")
    finished = [r.data.tags["cfg_hash"] for r in every if r.info.status == "FINISHED"]
    configs = grids.load(str(grid_file)).configs
    assert sorted(finished) == sorted(c.hash() for c in configs), "exactly one FINISHED run per configuration"
    assert {r.info.status for r in every} <= {"FINISHED", "KILLED"}

    use_store(monkeypatch, tmp_path / "full.db")
    assert sweep_mod.main([str(grid_file), "--no-prune", "--workers", "2", "--no-progress"]) == 0
    full = runs_of("prune")
    use_store(monkeypatch, db)
    pd.testing.assert_series_equal(per_seed_minimum(runs_of("prune")), per_seed_minimum(full))


@pytest.mark.slow
def test_the_statistics_cadence_keeps_the_smoke_sweeps_answers(tmp_path, monkeypatch):
    """``stats_every`` on the smoke grid: the same steps-to-target and final metrics, run for run."""
    use_store(monkeypatch, tmp_path / "every.db")
    assert sweep_mod.main(["smoke", "--workers", "1", "--no-progress"]) == 0
    key = ["optimizer", "reduction", "batch_size", "learning_rate", "seed"]
    every = runs_of("smoke").set_index(key).sort_index()
    use_store(monkeypatch, tmp_path / "sparse.db")
    assert sweep_mod.main(["smoke", "--set", "stats_every=40", "--workers", "1", "--no-progress"]) == 0
    sparse = runs_of("smoke").set_index(key).sort_index()
    assert list(sparse.index) == list(every.index) and len(every) == 13
    finals = [c for c in every.columns if c.startswith("final/") or c in ("steps_to_target", "outcome")]
    pd.testing.assert_frame_equal(sparse[finals], every[finals])


def test_lanes_hand_out_one_program_per_worker_in_turn():
    todo = [TrainConfig(batch_size=b, learning_rate=lr) for b in (4, 8, 16) for lr in (0.1, 0.2)]
    got = [(c.batch_size, c.learning_rate) for c in dispatch.Dispatcher(todo, lanes=2)]
    assert got == [(4, 0.1), (8, 0.1), (4, 0.2), (8, 0.2), (16, 0.1), (16, 0.2)]
    assert sorted(got) == sorted((c.batch_size, c.learning_rate) for c in todo)


@pytest.mark.slow
def test_the_throughput_measurement_runs_old_and_new_and_compares_their_answers(capsys):
    from experiments import measure_throughput

    assert measure_throughput.main(["smoke", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "| smoke | 13 |" in out and "identical" in out and "old (fa30feb)" in out


def test_the_throughput_comparison_finds_a_changed_answer():
    from experiments.measure_throughput import compare

    def runs(outcomes=("completed",) * 3, steps=(30.0, 20.0, 10.0)):  # keyed as measure_throughput.KEY
        keys = [("sgd", "mean", 4, 0.1, 0), ("sgd", "mean", 4, 1.0, 0), ("sgd", "mean", 8, 0.1, 0)]
        return {k: {"outcome": o, "steps_to_target": s, "final/train/loss": loss}
                for k, o, s, loss in zip(keys, outcomes, steps, (0.5, 0.4, 0.3))}

    assert compare(runs(), runs()) == []
    pruned = runs(outcomes=("pruned", "completed", "completed"), steps=(None, 20.0, 10.0))
    assert compare(runs(), pruned) == [], "a pruned run is not compared; the answer is the same"
    problems = compare(runs(), runs(steps=(30.0, 25.0, 10.0)))
    assert any("per (optimizer, batch size, seed) differs" in p for p in problems)
    assert any("steps_to_target differs for 1 of 3 runs" in p for p in problems)
    assert compare(runs(), dict(list(runs().items())[:2])) == ["the sweeps trained different configurations (3 old, 2 new)"]
