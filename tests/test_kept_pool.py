"""A study's sweeps share one pool of workers (``executors.local.kept_pool``): the same processes train every
sweep, each sweep's prune board reaches them with nothing of the sweep before, the runs' answers are those of a
fresh pool, and the workers are gone when the block ends, however it ends."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from analysis import load, reduce
from experiments import sweep as sweep_mod
from experiments.engine import pruning
from experiments.engine.executors import local
from mbstudy.config import TrainConfig
from tests.test_prune import PRUNE_GRID, per_seed_minimum


def board_seen_by_worker(n: int) -> list[int]:
    """In a worker: the first ``n`` entries of the prune board it reads."""
    return list(pruning._BOARD_STEPS[:n])


def _configs(**over):
    return [TrainConfig(dataset="teacher_5x3", hidden=(8,), steps=40, eval_every=5, target_loss=0.25,
                        stop_at_target=True, learning_rate=lr, **over) for lr in (0.01, 0.1)]


def _gone(processes, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(p.is_alive() for p in processes):
            return True
        time.sleep(0.1)
    return False


def test_each_sweep_board_reaches_the_kept_workers_without_the_last_ones_entries(monkeypatch):
    monkeypatch.setattr(local, "BOARD_CAPACITY", 8)
    with local.kept_pool():
        first = pruning.PruneBoard(_configs(batch_size=4) + _configs(batch_size=32))
        first.record(_configs(batch_size=4)[0], {"loss": 30})
        first.record(_configs(batch_size=32)[0], {"loss": 15})
        written = list(first.steps)
        assert sorted(written) == [-1, -1, 15, 30]
        pool, kept = local._pool_for(2, first)
        assert kept and len(first.steps) == 8
        assert pool.submit(board_seen_by_worker, 8).result() == written + [-1] * 4

        second = pruning.PruneBoard(_configs(batch_size=8))  # one group: its slot 0 is the first board's too
        own = list(second.steps)
        again, kept = local._pool_for(2, second)
        assert again is pool and kept
        processes = list(pool._processes.values())
        assert [pool.submit(board_seen_by_worker, 8).result() for _ in range(4)] == [own + [-1] * 6] * 4
        second.record(_configs(batch_size=8)[1], {"loss": 20})  # the driver's writes reach the workers
        assert pool.submit(board_seen_by_worker, 2).result() == [20, -1]

        # a board larger than the pool's array: a new pool, with room for it, in the old one's place
        big = pruning.PruneBoard([c for b in range(1, 7) for c in _configs(batch_size=b)])
        bigger, kept = local._pool_for(2, big)
        assert kept and bigger is not pool and len(big.steps) == 12
        assert bigger.submit(board_seen_by_worker, 12).result() == [-1] * 12
        assert _gone(processes)
        processes = list(bigger._processes.values()) or processes
    assert local._kept is None and _gone(processes)


def test_a_kept_pool_whose_worker_died_between_sweeps_is_replaced():
    with local.kept_pool():
        pool, _ = local._pool_for(2, None)
        pool.submit(board_seen_by_worker, 1).result()
        victim, *others = list(pool._processes.values())  # a pool starts its workers as they are needed
        victim.kill()  # as the OOM killer would, while the study runs a step that is not a sweep
        victim.join(10)
        fresh, kept = local._pool_for(2, pruning.PruneBoard(_configs(batch_size=4)))
        assert kept and fresh is not pool and local._kept["pool"] is fresh
        assert fresh.submit(board_seen_by_worker, 2).result() == [-1, -1]
        assert _gone(others)
        processes = list(fresh._processes.values())
    assert _gone(processes)


def test_a_kept_pool_whose_worker_holds_too_much_memory_is_replaced(monkeypatch):
    with local.kept_pool():
        pool, _ = local._pool_for(2, None)
        pool.submit(board_seen_by_worker, 1).result()
        assert local._healthy(pool)
        monkeypatch.setattr(local, "KEPT_RSS_LIMIT", 1 << 20)  # 1 MiB: any Python process holds more
        fresh, kept = local._pool_for(2, None)
        assert kept and fresh is not pool
        monkeypatch.setattr(local, "KEPT_RSS_LIMIT", 3 << 30)
        assert local._pool_for(2, None)[0] is fresh


def test_outside_a_kept_pool_each_sweep_has_its_own():
    board = pruning.PruneBoard(_configs(batch_size=4))
    pool, kept = local._pool_for(2, board)
    try:
        assert not kept and local._kept is None
        assert pool.submit(board_seen_by_worker, 2).result() == [-1, -1]
    finally:
        local._shutdown(pool)


def test_an_error_inside_the_block_stops_the_kept_workers():
    with pytest.raises(RuntimeError, match="step failed"):
        with local.kept_pool():
            pool, _ = local._pool_for(2, None)
            pool.submit(board_seen_by_worker, 1).result()
            processes = list(pool._processes.values())
            raise RuntimeError("step failed")
    assert local._kept is None and _gone(processes)


@pytest.mark.slow
def test_sweeps_in_a_kept_pool_give_the_answers_of_fresh_pools_from_the_same_workers(tmp_path, monkeypatch):
    grid = tmp_path / "prune.toml"
    grid.write_text(PRUNE_GRID)
    how = [str(grid), "--workers", "2", "--no-progress"]

    def sweep_into(db):
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        assert sweep_mod.main(how) == 0
        return load.load_runs("prune")

    fresh = sweep_into(tmp_path / "fresh.db")
    with local.kept_pool():
        first = sweep_into(tmp_path / "first.db")
        pool = local._kept["pool"]
        processes = list(pool._processes.values())
        second = sweep_into(tmp_path / "second.db")  # the same groups: a board left over would prune it early
        assert local._kept["pool"] is pool and list(pool._processes.values()) == processes
    assert _gone(processes)
    for runs in (first, second):
        assert len(runs) == len(fresh) and (runs["outcome"] == "pruned").sum() >= 5
        pd.testing.assert_series_equal(per_seed_minimum(runs), per_seed_minimum(fresh))
        pd.testing.assert_frame_equal(reduce.steps_to_target(runs), reduce.steps_to_target(fresh))
        # every run that ran to its end is, bit for bit, the fresh pool's run
        done = runs[runs["outcome"] != "pruned"].set_index("cfg_hash")
        ref = fresh.set_index("cfg_hash")
        for h, r in done.iterrows():
            assert r["outcome"] == ref.loc[h, "outcome"] or ref.loc[h, "outcome"] == "pruned"
            if ref.loc[h, "outcome"] == r["outcome"]:
                assert r["final/train/loss"] == ref.loc[h, "final/train/loss"] or r["final/train/loss"] != r["final/train/loss"]
