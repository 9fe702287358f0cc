"""Q9's foundations: MNIST-1D at any training-set size, batch-size schedules, and branching from checkpoints."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from mbstudy import schedule
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.data import load_dataset
from mbstudy.step import run_chunk_jit
from mbstudy.train import _COMPILED, Checkpoint, train

BASE = dict(dataset="mnist1d", val_fraction=0.2, optimizer="sgd", learning_rate=0.316, batch_size=32, steps=128,
            eval_every=16, stats_every=32)


def same_history(a: dict, b: dict, *, skip_first_batch_loss: bool = False) -> None:
    """Every metric but the timings equal, bit for bit (NaN where NaN)."""
    assert a.keys() == b.keys()
    for k in a:
        if k.startswith("time/"):
            continue
        x, y = a[k], b[k]
        if skip_first_batch_loss and k == "train/batch_loss":  # a resumed run has no batch loss before its first chunk
            x, y = x[1:], y[1:]
        assert np.array_equal(x, y, equal_nan=True), k


# ---------------------------------------------------------------- data size


def test_mnist1d_default_size_is_todays_data_bit_for_bit():
    today = load_dataset("mnist1d")
    for asked in (None, 4000):
        d = load_dataset("mnist1d", n_train=asked)
        assert d.digest == today.digest
        assert np.array_equal(d.x_train, today.x_train) and np.array_equal(d.y_test, today.y_test)


def test_mnist1d_other_sizes_are_deterministic_offline_and_balanced(monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("load_dataset opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    small = load_dataset("mnist1d", n_train=1000)
    assert (small.n_train, small.x_test.shape[0], small.n_inputs) == (1000, 1000, 40)
    assert load_dataset("mnist1d", n_train=1000).digest == small.digest
    assert load_dataset("mnist1d", n_train=2000).digest != small.digest
    assert load_dataset("mnist1d", n_train=1000, seed=1).digest != small.digest
    counts = np.bincount(np.concatenate([small.y_train, small.y_test]), minlength=10)
    assert counts.tolist() == [200] * 10  # the generator makes the same number of every digit
    assert small.x_train.dtype == np.float32 and not small.x_train.flags.writeable


@pytest.mark.parametrize("name, n, message", [
    ("digits", 500, "'digits' has a fixed training set of 1438"),
    ("mnist1d", 1005, "multiple of 10"),
    ("mnist1d", True, "expected an int"),
])
def test_load_dataset_refuses_sizes_it_cannot_make(name, n, message):
    with pytest.raises(ValueError, match=message):
        load_dataset(name, n_train=n)


def test_config_n_train_sets_the_training_set_and_keeps_old_hashes():
    assert TrainConfig().hash() == TrainConfig(n_train=0).hash()  # the default is left out of the hash
    assert TrainConfig(n_train=1000).hash() != TrainConfig().hash()
    with pytest.raises(ConfigError, match=r"batch_size: expected 1 <= batch_size <= 800"):
        TrainConfig(n_train=1000, val_fraction=0.2, batch_size=1000)
    r = train(TrainConfig(n_train=1000, val_fraction=0.2, steps=2, eval_every=2, batch_size=800))
    assert r.data_digest != load_dataset("mnist1d").digest and r.outcome == "completed"


# ---------------------------------------------------------------- schedules


def test_schedule_parse_format_and_doubling():
    assert schedule.parse(" 8x4@1e-2 ,2x8@0.5") == [(8, 4, 0.01), (2, 8, 0.5)]
    assert schedule.parse(schedule.format_schedule([(8, 4, 0.01), (2, 8, 0.5)])) == [(8, 4, 0.01), (2, 8, 0.5)]
    for bad in ("8x4", "0x4@0.1", "8x0@0.1", "8x4@0", "8x4@-1", "8 4 0.1"):
        with pytest.raises(ValueError, match="entry 1"):
            schedule.parse(bad)
    # equal examples per phase, learning rate linear in B up to the cap
    assert schedule.parse(schedule.doubling(8, 128, 512, 0.05, lr_max=0.3)) == [
        (64, 8, 0.05), (32, 16, 0.1), (16, 32, 0.2), (8, 64, 0.3)]


def test_phases_evaluate_at_a_fixed_number_of_examples():
    cfg = TrainConfig(**{**BASE, "schedule": "64x16@0.1,16x64@0.4", "batch_size": 32, "steps": 32})
    assert [(p.start, p.steps, p.batch_size, p.eval_every) for p in cfg.phases()] == [
        (0, 64, 16, 32), (64, 16, 64, 8), (80, 32, 32, 16)]
    assert cfg.total_steps() == 112
    assert cfg.examples_at(64) == 1024 and cfg.examples_at(80) == 1024 + 1024 and cfg.examples_at(112) == 3072
    assert TrainConfig(**BASE).examples_at(100) == 3200  # no schedule: steps x batch_size
    with pytest.raises(ConfigError, match="not a whole number of evaluation intervals"):
        TrainConfig(**{**BASE, "schedule": "40x16@0.1"})


def test_a_constant_schedule_is_the_constant_run_bit_for_bit():
    plain = train(TrainConfig(**BASE))
    for sched, steps in (("32x32@0.316", 96), ("16x32@0.316,48x32@0.316", 64)):
        scheduled = train(TrainConfig(**{**BASE, "schedule": sched, "steps": steps}))
        same_history(plain.history, scheduled.history)
        assert scheduled.summary()["final/train/loss"] == plain.summary()["final/train/loss"]


def test_branch_from_a_checkpoint_resumes_exactly():
    ref = train(TrainConfig(**BASE), keep=(32, 64))
    assert set(ref.checkpoints) == {32, 64}
    # the branch at the reference's own B: the reference's continuation, bit for bit, resumed or replayed
    own = TrainConfig(**{**BASE, "schedule": "64x32@0.316", "steps": 64})
    resumed = train(own, start=Checkpoint(64, ref.checkpoints[64]))
    tail = {k: v[-len(resumed.history["step"]):] for k, v in ref.history.items()}
    same_history(tail, resumed.history, skip_first_batch_loss=True)
    same_history(ref.history, train(own).history)
    # a branch at another B and rate: resuming equals replaying the reference's first 64 steps
    other = TrainConfig(**{**BASE, "schedule": "64x32@0.316", "batch_size": 128, "learning_rate": 1.0, "steps": 16,
                           "eval_every": 4, "stats_every": 16})
    replayed, resumed = train(other), train(other, start=Checkpoint(64, ref.checkpoints[64]))
    tail = {k: v[-len(resumed.history["step"]):] for k, v in replayed.history.items()}
    same_history(tail, resumed.history, skip_first_batch_loss=True)
    assert not np.array_equal(replayed.history["train/loss"][-1], ref.history["train/loss"][-1])


def test_a_checkpoint_that_does_not_fit_is_refused():
    ref = train(TrainConfig(**BASE), keep=(32,))
    with pytest.raises(ValueError, match="not an evaluation step"):
        train(TrainConfig(**BASE), start=Checkpoint(40, ref.checkpoints[32]))
    with pytest.raises(ValueError, match="do not fit this run's model"):
        train(TrainConfig(**{**BASE, "hidden": (50, 50)}), start=Checkpoint(32, ref.checkpoints[32]))
    with pytest.raises(ValueError, match="keep: .* are not evaluation steps"):
        train(TrainConfig(**BASE), keep=(1000,))


def test_a_schedule_compiles_once_per_distinct_batch_size():
    def chunks() -> set:
        return {k for k in _COMPILED if k[0] is run_chunk_jit}

    before = chunks()
    cfg = TrainConfig(**{**BASE, "hidden": (13,), "schedule": "32x16@0.1,16x32@0.2,32x16@0.1,8x64@0.4",
                         "batch_size": 32, "steps": 32})
    r = train(cfg)
    added = chunks() - before
    assert len(added) == 3  # B = 16, 32, 64: one program (and one chunk length) each, B = 16 and 32 reused
    assert r.timings["compile_s"] > 0
    again = train(cfg)  # a second run of the same shapes compiles nothing
    assert chunks() - before == added and again.timings["compile_s"] == 0.0


def test_steps_and_examples_to_target_count_the_schedule():
    cfg = TrainConfig(**{**BASE, "schedule": schedule.doubling(16, 128, 1024, 0.1, lr_max=1.0), "batch_size": 128,
                         "learning_rate": 0.8, "eval_every": 4, "steps": 400, "target_loss": 1.2,
                         "stop_at_target": True, "stats_every": 0})
    r = train(cfg)
    s = r.summary()
    assert r.outcome == "completed" and s["steps_to_target"] == r.history["step"][-1]
    assert s["examples_to_target"] == cfg.examples_at(int(s["steps_to_target"]))
    assert s["examples_to_target"] != s["steps_to_target"] * 128


def test_the_warmup_grid_holds_doubling_schedules():
    from experiments.engine import grid

    runs = [c for c in grid.load("warmup").configs if c.schedule]
    assert len({c.schedule for c in runs}) == 12
    for c in runs:
        (steps, b0, lr0), *_ = schedule.parse(c.schedule)
        assert c.schedule == schedule.doubling(b0, c.batch_size, steps * b0, lr0, lr_max=1.0)
        assert c.learning_rate == 1.0 and c.total_steps() > c.steps


# the branching sweep's local B_crit (tolerance 20%, SGD, geometric means over 8 seeds) at its branch points, in
# examples (steps x 32): what experiments/grids/warmup_placed.toml was made from; the report re-derives it
MEASURED_LOCAL_BCRIT = [(0, 70), (2048, 21), (4096, 27), (6144, 29), (12288, 70), (22528, 181)]
LEVELS = {16: (0.1, 0.316, 1.0), 32: (0.1, 0.316, 1.0), 64: (0.316, 1.0, 3.16), 128: (0.316, 1.0, 3.16)}


def test_the_placed_warmup_grid_is_the_rule_applied_to_the_measured_local_bcrit():
    from experiments.engine import grid

    configs = grid.load("warmup_placed").configs
    want = set()
    for rule in ("floor", "nearest"):
        phases, final = schedule.placed(MEASURED_LOCAL_BCRIT, rule=rule)
        for k in range(3):  # rate level k: each phase at the warmup sweep's k-th rate for its B
            entries = [(n // b, b, LEVELS[b][k]) for n, b in phases]
            want.add((schedule.format_schedule(entries), final, LEVELS[final][k]))
    assert {(c.schedule, c.batch_size, c.learning_rate) for c in configs} == want
    assert len(configs) == 6 * 10 and {c.seed for c in configs} == set(range(10))
    constant = {(c.batch_size, c.learning_rate) for c in grid.load("warmup").configs if not c.schedule}
    assert {(b, lr) for b, lrs in LEVELS.items() for lr in lrs} <= constant  # the same three rates per B


def test_placed_warmups_follow_the_envelope_and_refuse_bad_points():
    # B never grows past a later point's B_crit, never shrinks; equal neighbours merge
    assert schedule.placed([(0, 40), (1024, 100), (4096, 33)]) == ([], 32)
    assert schedule.placed([(0, 8), (512, 100), (4096, 300)]) == ([(512, 8), (3584, 64)], 256)
    assert schedule.placed([(0, 8), (512, 100), (4096, 300)], rule="nearest") == ([(512, 8), (3584, 128)], 256)
    assert schedule.placed([(0, 2 ** 5.5)], rule="nearest") == ([], 32)  # a tie goes to the smaller
    for bad in ([], [(10, 8)], [(0, 8), (0, 16)], [(0, 0.5)], [(0, float("inf"))]):
        with pytest.raises(ValueError, match="points"):
            schedule.placed(bad)
    with pytest.raises(ValueError, match="rule"):
        schedule.placed([(0, 8)], rule="ceil")
    with pytest.raises(ValueError, match="whole number of steps"):
        schedule.placed([(0, 64), (100, 64), (200, 128)])


def test_the_branching_grid_branches_from_its_reference():
    from experiments.engine import grid

    configs = grid.load("branching").configs
    (ref, *_), branches = [c for c in configs if c.target_loss], [c for c in configs if not c.target_loss]
    for c in branches:
        if c.schedule:
            ((steps, b, lr),) = schedule.parse(c.schedule)
            assert (b, lr) == (ref.batch_size, ref.learning_rate) and steps % ref.eval_every == 0
        assert c.examples_at(c.total_steps()) - c.examples_at(c.total_steps() - c.steps) == 8192


def test_a_branch_replays_the_reference_in_chunks_of_another_length():
    """The B = 1024 branches replay the reference's prefix in chunks of 32 steps (evaluations every 1024 examples),
    the reference runs it in chunks of 16: the state at the branch point is the same, bit for bit."""
    ref = train(TrainConfig(**BASE))
    branch = train(TrainConfig(**{**BASE, "schedule": "128x32@0.316", "batch_size": 1024, "eval_every": 1, "steps": 2,
                                  "learning_rate": 1.0, "stats_every": 64}))
    assert branch.history["step"][:5].tolist() == [0, 32, 64, 96, 128]
    at = {int(s): v for s, v in zip(branch.history["step"], branch.history["train/loss"])}
    for s, v in zip(ref.history["step"], ref.history["train/loss"]):
        if int(s) in at:
            assert at[int(s)] == v, s


def test_a_phase_continues_the_data_order_from_the_examples_seen():
    phases = TrainConfig(**{**BASE, "schedule": "64x16@0.1,16x64@0.4", "steps": 32}).phases()
    assert [schedule.data_step(phases, t) for t in (0, 63, 64, 79, 80, 81)] == [0, 63, 16, 31, 64, 65]
    # at its own batch size a phase draws what the constant run draws at that step
    same = TrainConfig(**{**BASE, "schedule": "64x32@0.316", "steps": 32}).phases()
    assert [schedule.data_step(same, t) for t in (0, 63, 64, 95)] == [0, 63, 64, 95]


def test_one_configuration_has_one_hash():
    spaced = TrainConfig(**{**BASE, "schedule": " 64x32@3.16e-1 , 32x64@1 ", "steps": 32})
    assert spaced.schedule == "64x32@0.316,32x64@1.0"
    assert spaced.hash() == TrainConfig(**{**BASE, "schedule": "64x32@0.316,32x64@1.0", "steps": 32}).hash()
    assert TrainConfig(n_train=4000).n_train == 0 and TrainConfig(n_train=4000).hash() == TrainConfig().hash()


def test_keep_refuses_steps_that_are_not_evaluations():
    with pytest.raises(ValueError, match=r"keep: \[40\] are not evaluation steps"):
        train(TrainConfig(**BASE), keep=(32, 40))


def test_only_matches_values_as_the_configuration_stores_them():
    from experiments.engine import grid

    configs = grid.load("scaling").configs
    kept = grid.select(configs, {"n_train": [4000]}, "scaling")  # stored as 0, the data set's own size
    assert kept and all(c.n_train == 0 for c in kept)
    sched = grid.select(grid.load("warmup").configs, {"schedule": "32x64@1,16x128@1"}, "warmup")
    assert {c.schedule for c in sched} == {"32x64@1.0,16x128@1.0"}
