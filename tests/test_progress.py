"""The sweep's ETA (``experiments/engine/progress.py``) and the cost model it weighs runs by (``cost.py``).

A fake clock drives a sweep: two workers take runs in the local executor's
order (``dispatch.Dispatcher``), and as each run ends the bar learns what the
executor tells it (``SweepCounts.add``: the steps the run took and its
worker's seconds). Two sweeps:

- the issue's shape (one optimizer over B = 1 ... 1024, so the runs go out
  small B first), each run lasting what a machine 1.8x slower than the
  model's reference takes, with the model wrong per batch size by up to 15%
  and +-20% noise per run: from 20% of the runs to 80% the ETA is within 30%
  of the time really left, tqdm's runs-per-second ETA is not; with runs that
  diverge early, likewise;
- four real ``make sweep``s (the default grid, 756 runs, 242 of them diverged,
  the last third most), replayed from their records: on quiet cores
  (``make_sweep_runs_quiet.csv`` at 0cfb0f3; ``make_sweep_runs_508f1ae.csv``
  and ``make_sweep_runs_bc7d91b.csv``, which also hold when each run really
  ended, so the ETA is replayed on the sweep's own clock as well as the
  simulator's) the ETA is within 30% from 20% of the runs to 95%; on cores
  shared with other jobs (``make_sweep_runs.csv``), whose later runs took
  1.3-3.4x the quiet record's worker seconds, it errs on the fast side, by up
  to 45%, as no ETA can foresee a machine slowing down. Without the runs'
  steps and seconds (the cost model's expected costs alone, this ETA before
  issue 26's first fix) it is far off; without other optimizers' runs it says
  +34% at a third of the 508f1ae record; with the runs in dispatch order
  instead of the order the local executor hands them out, it says 4 s for the
  last 0.7 s, as it did live.

The bar is made as the driver makes it (:func:`driver_bar`).
Measured on a real ``make sweep``: the README's "Sweeps".
"""

from __future__ import annotations

import csv
import heapq
import random
from pathlib import Path

import pytest

from experiments.engine import cost, progress
from experiments.engine.dispatch import Dispatcher, dispatch_order
from experiments.engine.executors.local import LocalExecutor
from experiments.engine.lifecycle import RunRecord, SweepCounts
from experiments.engine.progress import CostBar, RemainingCost, kin
from mbstudy.config import TrainConfig

MODEL_ERROR = {1: 1.15, 4: 0.9, 16: 1.1, 64: 0.85, 256: 1.15, 1024: 0.9}  # what the model gets wrong per B


def grid(batch_sizes=(1, 4, 16, 64, 256, 1024), rates=(0.01, 0.1, 1.0), seeds=(0, 1)):
    """The issue's shape of sweep: one optimizer over B, so the runs go out small B first."""
    return [TrainConfig(batch_size=b, learning_rate=lr, seed=s) for b in batch_sizes for lr in rates for s in seeds]


def true_run(cfg, rng, diverge=False) -> RunRecord:
    """What the run really takes: 1.8x the model, its error at this B, +-20% noise; with ``diverge``, the runs at
    learning rate 1 diverge after 100 of their 2000 steps from B = 64 on (paying what a run pays whatever its
    steps): at B = 64 no run done foretells it, neither at that B nor at that rate."""
    steps = 100 if diverge and cfg.learning_rate >= 1.0 and cfg.batch_size >= 64 else cfg.steps
    seconds = 1.8 * cost.cost_at(cfg, steps) * MODEL_ERROR[cfg.batch_size] * rng.uniform(0.8, 1.2)
    return RunRecord(cfg.hash(), "trained", "diverged" if steps < cfg.steps else "completed", {"train_s": seconds},
                     steps=steps)


DEFAULT_GRID = {"dataset": "mnist1d", "hidden": (100, 100), "activation": "tanh", "steps": 2000, "eval_every": 100,
                "stats_every": 200, "target_loss": 0.7}  # experiments/grids/default.toml's [base]


def recorded_sweep(path=Path(__file__).parent / "fixtures" / "make_sweep_runs.csv"):
    """A real ``make sweep``'s runs (the default grid, 2 workers, on two cores shared with other jobs, from a cold
    compilation cache; read from its store), in dispatch order: {configuration: its record (outcome, steps,
    timings)}. It is the sweep the ETA's constants were chosen on; the README's measurement is another one's."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    runs = {}
    for r in rows:
        cfg = TrainConfig(**DEFAULT_GRID, optimizer=r["optimizer"], reduction=r["reduction"],
                          batch_size=int(r["batch_size"]), learning_rate=float(r["learning_rate"]), seed=int(r["seed"]))
        timings = {k: float(r[k]) for k in ("compile_s", "train_s", "eval_s", "log_s")}
        runs[cfg] = RunRecord(cfg.hash(), "trained", r["outcome"], timings, steps=int(r["steps"]))
    return runs


def recorded_ends(path):
    """When each run of a record really ended, in seconds since its sweep began, in dispatch order."""
    with open(path, newline="") as f:
        return [float(r["end_s"]) for r in csv.DictReader(f)]


def driver_bar(configs, counts, clock, workers=2, order=None):
    """The bar as the driver makes it for the local executor: the runs in the order the executor hands them out."""
    order = LocalExecutor(workers=workers).hand_out_order(dispatch_order(configs)) if order is None else order
    return CostBar(order, counts, desc="sim", workers=workers, disable=True, clock=clock,
                   costs={c.hash(): cost.expected_cost(c) for c in order})


def replay(runs, ends, workers=2, order=None):
    """The record's runs end at their real times on a fake clock: (runs done, the ETA, seconds really left) each.
    ``order``: the bar's order of the runs (the driver's by default)."""
    now = [0.0]
    counts = SweepCounts()
    configs = list(runs)
    bar = driver_bar(configs, counts, lambda: now[0], workers, order)
    said = []
    for t, cfg in sorted(zip(ends, configs), key=lambda x: x[0]):
        now[0] = t
        counts.add(runs[cfg])
        bar.update(1)
        said.append((len(counts.ended), bar.eta.seconds_left(), t))
    return [(n, eta, max(ends) - t) for n, eta, t in said]


def simulate(configs, workers=2, seed=0, diverge=False, runs=None, told=True):
    """Run the sweep on a fake clock; at every run's end: (runs done, the ETA, seconds so far, seconds really left).

    A run lasts its record's seconds (its timings' sum): ``runs``' if given, else :func:`true_run`'s. ``told``:
    whether the bar learns each run's steps and seconds (as ``lifecycle.finish_run`` tells it)."""
    rng = random.Random(seed)
    now = [0.0]
    counts = SweepCounts()
    bar = driver_bar(configs, counts, lambda: now[0], workers)
    pending = Dispatcher(dispatch_order(configs), None, lanes=workers)
    busy: list[tuple[float, int, RunRecord]] = []

    def start(cfg, t, i):
        record = runs[cfg] if runs is not None else true_run(cfg, rng, diverge)
        heapq.heappush(busy, (t + sum(record.timings.values()), i, record))

    for i in range(workers):
        start(next(pending), 0.0, i)
    said = []
    while busy:
        t, i, record = heapq.heappop(busy)
        now[0] = t
        counts.add(record if told else RunRecord(record.cfg_hash, record.status, record.outcome))
        bar.update(1)
        said.append((len(counts.ended), bar.eta.seconds_left(), t))
        cfg = next(pending, None)
        if cfg is not None:
            start(cfg, t, i)
    return [(n, eta, t, now[0] - t) for n, eta, t in said]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_eta_is_within_30_percent_from_a_fifth_of_the_sweep_to_four_fifths(seed):
    configs = grid(seeds=(0, 1, 2))  # 54 runs; at 36, one run is 3% of the sweep and the error reached 30% at 28/36
    trace = simulate(configs, seed=seed)
    checked = [(n, eta, left) for n, eta, _, left in trace if 0.2 * len(configs) <= n <= 0.8 * len(configs)]
    assert len(checked) >= 20
    for n, eta, left in checked:
        assert abs(eta - left) <= 0.3 * left, f"after {n}/{len(configs)} runs: ETA {eta:.1f} s, really {left:.1f} s"


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_runs_that_diverge_where_no_run_done_foretells_it_make_the_eta_err_on_the_slow_side_only(seed):
    """Here the runs at rate 1 diverge from B = 64 on, where the runs done at that rate (at smaller B) did not;
    the bar learns it from the runs at B = 64 (a run left takes what the runs done at the nearest rate took, at
    its own B first, else at any B). Up to the last three runs: then one large run is in flight, just started,
    not half done."""
    configs = grid()
    trace = simulate(configs, seed=seed, diverge=True)
    for n, eta, _, left in trace:
        if 0.2 * len(configs) <= n < len(configs) - 3:
            assert eta >= 0.7 * left, f"after {n}/{len(configs)} runs: ETA {eta:.1f} s, really {left:.1f} s"


def test_a_recorded_make_sweep_diverges_most_in_its_last_third():
    """The record replayed below is the default grid's, with the divergence that made the ETA err slow."""
    runs = list(recorded_sweep().items())
    assert len(runs) == 756 and sum(r.outcome == "diverged" for _, r in runs) == 242
    thirds = [runs[i * 252:(i + 1) * 252] for i in range(3)]
    share = [sum(r.outcome == "diverged" for _, r in third) / 252 for third in thirds]
    assert share[2] > 0.4 and max(share[:2]) < 0.3, share
    assert all(r.steps < 2000 for _, r in runs if r.outcome == "diverged")


@pytest.mark.parametrize("record", ["make_sweep_runs_quiet.csv", "make_sweep_runs_508f1ae.csv",
                                    "make_sweep_runs_bc7d91b.csv"])
def test_the_eta_of_a_recorded_make_sweep_is_within_30_percent_from_a_fifth_to_nineteen_twentieths(record):
    """The quiet records: the README's live measurement at 0cfb0f3 (where the ETA before the runs at other batch
    sizes counted said +31% at 25-35%: the sums at B = 256 and 1024, which diverge at the rates the smaller B's runs
    had already diverged at) and the one at 508f1ae (where the ETA before other optimizers' runs counted said +34%
    at a third: SGD's runs at large rates, foretold by momentum's), and at bc7d91b."""
    runs = recorded_sweep(Path(__file__).parent / "fixtures" / record)
    configs = list(runs)
    trace = simulate(configs, runs=runs)
    checked = [(n, eta, left) for n, eta, _, left in trace if 0.2 * len(configs) <= n <= 0.95 * len(configs)]
    assert len(checked) > 500
    for n, eta, left in checked:
        assert abs(eta - left) <= 0.3 * left, f"after {n}/{len(configs)} runs: ETA {eta:.1f} s, really {left:.1f} s"


@pytest.mark.parametrize("record", ["make_sweep_runs_508f1ae.csv", "make_sweep_runs_bc7d91b.csv"])
def test_the_eta_replayed_on_a_live_sweeps_own_clock_is_within_30_percent_to_its_last_half_second(record):
    """The runs end when they really ended (the simulator's workers take exactly their worker seconds; the live
    sweep also spent the driver's logging and the processes' start): within 30% from 20% of the runs on, and over
    the last twentieth within 30% while a second or more is left, then within half a second."""
    path = Path(__file__).parent / "fixtures" / record
    runs = recorded_sweep(path)
    trace = replay(runs, recorded_ends(path))
    checked = [(n, eta, left) for n, eta, left in trace if 0.2 * len(runs) <= n < len(runs)]
    assert len(checked) > 600 and trace[-1][1] == 0.0
    for n, eta, left in checked:
        bound = 0.3 * left if left >= 1.0 or n <= 0.95 * len(runs) else 0.5
        assert abs(eta - left) <= bound, f"after {n}/{len(runs)} runs: ETA {eta:.2f} s, really {left:.2f} s"


def test_without_other_optimizers_runs_the_eta_of_the_live_record_errs_slow_at_a_third(monkeypatch):
    """SGD's runs at large rates come after momentum's and Adam's: before SGD's own have diverged, only momentum's
    at the same steady step (lr / (1 - momentum)) foretell it."""
    path = Path(__file__).parent / "fixtures" / "make_sweep_runs_508f1ae.csv"
    runs = recorded_sweep(path)
    monkeypatch.setattr(progress, "FARTHER", (0.0, 0.0, float("inf")))
    trace = replay(runs, recorded_ends(path))
    worst = max((eta - left) / left for n, eta, left in trace if 0.3 * len(runs) <= n <= 0.4 * len(runs))
    assert worst > 0.3, worst


def test_a_bar_that_took_the_runs_in_dispatch_order_said_seconds_for_the_last_tenths_as_measured_live():
    """The driver gave the bar its runs in dispatch order (each program's together), while the local executor
    hands them out one program per worker in turn: near the end the bar counted a long B = 1024 run as not begun
    while it was all but done. Live at bc7d91b the bar said 4.6, 4.5, 4.2, 4.0 and 4.0 s at 731, 733, 741, 745
    and 748 runs for 3.5, 3.2, 1.9, 1.2 and 0.7 s left; this replay says the same."""
    path = Path(__file__).parent / "fixtures" / "make_sweep_runs_bc7d91b.csv"
    runs = recorded_sweep(path)
    said = {n: round(eta, 1) for n, eta, _ in replay(runs, recorded_ends(path), order=dispatch_order(runs))}
    assert [said[n] for n in (731, 733, 741, 745, 748)] == [4.6, 4.5, 4.2, 4.0, 4.0]
    fixed = {n: eta for n, eta, _ in replay(runs, recorded_ends(path))}
    assert all(fixed[n] < 1.5 for n in (745, 748))


def test_on_cores_that_slowed_down_the_eta_errs_fast_by_at_most_45_percent():
    """The shared cores' record (the one the constants were first chosen on): its runs took 1.33x the quiet
    record's worker seconds in its first sixth and 1.72x after (1.3-3.4x by optimizer, reduction and B: other jobs
    came), which the runs done cannot foretell. The ETA errs on the fast side there (-40% at a fifth), never more
    than 30% slow."""
    runs = recorded_sweep()
    quiet = recorded_sweep(Path(__file__).parent / "fixtures" / "make_sweep_runs_quiet.csv")
    seconds = [sum(r.timings[k] for k in ("compile_s", "train_s", "eval_s")) for r in runs.values()]
    quiet_seconds = [sum(quiet[c].timings[k] for k in ("compile_s", "train_s", "eval_s")) for c in runs]
    sixth = len(runs) // 6
    assert sum(seconds[sixth:]) / sum(quiet_seconds[sixth:]) > 1.5 > sum(seconds[:sixth]) / sum(quiet_seconds[:sixth])
    configs = list(runs)
    for n, eta, _, left in simulate(configs, runs=runs):
        if 0.2 * len(configs) <= n <= 0.95 * len(configs):
            assert -0.45 * left <= eta - left <= 0.3 * left, f"after {n} runs: ETA {eta:.1f} s, really {left:.1f} s"


def test_the_last_twentieth_of_a_recorded_make_sweep_counts_only_the_rest_of_the_runs_in_flight():
    """The quiet record's last 38 runs: within 30% while a second or more is left, then within half a second (the
    ETA that counted each run in flight half done said 2.0 s for 1.3 at 745/756, +54%, and 1.8 s for 0.7 at 749);
    each run in flight counts its expected seconds less those since it began."""
    runs = recorded_sweep(Path(__file__).parent / "fixtures" / "make_sweep_runs_quiet.csv")
    configs = list(runs)
    tail = [(n, eta, left) for n, eta, _, left in simulate(configs, runs=runs) if n > 0.95 * len(configs)]
    assert len(tail) == 38 and tail[-1][1] == 0.0
    for n, eta, left in tail:
        bound = 0.3 * left if left >= 1.0 else 0.5
        assert abs(eta - left) <= bound, f"after {n}/{len(configs)} runs: ETA {eta:.2f} s, really {left:.2f} s"


def test_without_the_runs_steps_and_seconds_the_eta_of_the_same_sweep_errs_slow():
    """Issue 26's measurement before the fix (+139% at 80%): the expected costs alone foresee no divergence."""
    runs = recorded_sweep()
    configs = list(runs)
    trace = simulate(configs, runs=runs, told=False)
    n, eta, _, left = next(x for x in trace if x[0] >= 0.8 * len(configs))
    assert eta > 1.6 * left, f"after {n} runs: ETA {eta:.1f} s, really {left:.1f} s"


def test_tqdms_runs_per_second_eta_is_far_off_on_the_same_sweep():
    """The issue's symptom, reproduced at 13 of 36 runs: tqdm's runs left x seconds per run so far."""
    configs = grid()
    n, eta, t, left = simulate(configs)[12]
    naive = (len(configs) - n) * t / n
    assert n == 13 and naive < 0.5 * left, f"tqdm would say {naive:.1f} s; {left:.1f} s are left"
    assert abs(eta - left) <= 0.3 * left, f"the cost-weighted ETA says {eta:.1f} s; {left:.1f} s are left"


def test_the_eta_starts_from_the_cost_model_and_counts_every_kind_of_ending():
    t = [0.0]
    eta = RemainingCost({"a": 2.0, "b": 2.0}, workers=2, clock=lambda: t[0])
    assert eta.seconds_left() == pytest.approx(2.0 / 0.75)  # the model's pace (0.75 of a run per worker), both just begun
    counts = SweepCounts()
    bar = CostBar(grid(batch_sizes=(4,), rates=(0.1,), seeds=(0, 1)), counts, desc="x", workers=1, disable=True,
                  clock=lambda: t[0], costs=None)
    assert "ETA after the first run" in bar.text()
    t[0] = 3.0
    counts.add(RunRecord("no-such-run", "failed"))  # counted, not one of ours: the bar falls back on the average
    bar.update(1)
    assert bar.eta.finished > 0 and len(bar.eta.costs) == 1 and "left" in bar.text()
    bar.set_postfix(diverged=1, failed=1, refresh=False)
    assert bar.text().endswith("diverged=1, failed=1")


def test_the_counts_tell_the_bar_the_steps_and_worker_seconds_of_each_trained_run():
    counts = SweepCounts()
    counts.add(RunRecord("a", "trained", "diverged", {"compile_s": 1.0, "train_s": 0.5, "eval_s": 0.25, "log_s": 9.0},
                         steps=100))
    counts.add(RunRecord("b", "failed"))
    counts.add(RunRecord("c", "trained", "completed"))  # a record that does not say: counted at its expected cost
    assert counts.took == {"a": (100, 1.75)} and counts.ended == ["a", "b", "c"]


def test_the_cost_model_orders_runs_as_their_work():
    small, big = TrainConfig(batch_size=1), TrainConfig(batch_size=1024)
    assert cost.expected_cost(big) > 10 * cost.expected_cost(small)
    assert 1.6 < cost.expected_cost(TrainConfig(steps=4000)) / cost.expected_cost(TrainConfig(steps=2000)) < 2.0
    cnn, mlp = TrainConfig(model="cnn"), TrainConfig()
    assert cost.features(cnn)["flop"] > 2 * cost.features(mlp)["flop"], "FLOPs from XLA's analysis, any model"
    stops = TrainConfig(target_loss=0.5, stop_at_target=True)
    assert cost.expected_cost(stops) < cost.expected_cost(stops, prune=False) < cost.expected_cost(TrainConfig(target_loss=0.5))


def test_a_run_takes_the_share_of_the_nearest_rate_done_at_its_own_batch_size_first_else_at_any():
    """kin's two groups: the configuration at its B, then at any B (the rate an effective one: a sum's rate times B
    for SGD)."""
    small, big = (TrainConfig(batch_size=b, learning_rate=100.0) for b in (4, 1024))
    big_sum = TrainConfig(batch_size=1024, learning_rate=100.0 / 1024, reduction="sum")
    big_low = TrainConfig(batch_size=1024, learning_rate=0.1)
    kins = {"small": kin(small), "big": kin(big), "big_sum": kin(big_sum), "big_low": kin(big_low)}
    assert kins["big_sum"] == kins["big"] and kins["small"][0][1] == kins["big"][0][1] != kins["big"][0][0]
    eta = RemainingCost({k: 1.0 for k in kins}, kin=kins)
    eta.done("small", share=0.05)  # diverged after 5% of its steps at B = 4
    assert eta.share("big_sum") == pytest.approx(0.05), "nothing done at B = 1024: B = 4's at the same rate"
    eta.done("big_low", share=1.0)  # B = 1024 at 0.1: three decades from 100, B = 4's run is nearer
    assert eta.share("big") == pytest.approx(0.05)
    eta = RemainingCost({k: 1.0 for k in kins}, kin=kins)
    eta.done("small", share=0.05)
    eta.done("big", share=0.5)  # at its own B, the same rate: the finer group wins the tie
    assert eta.share("big_sum") == pytest.approx(0.5)


def test_another_optimizers_runs_at_the_same_steady_step_count_when_half_a_decade_nearer_than_its_own():
    """kin's third group: SGD at rate 10 and heavy ball at rate 1 with momentum 0.9 take the same steady step; Adam's
    rate is in other units and never counts for SGD's."""
    sgd = TrainConfig(optimizer="sgd", batch_size=64, learning_rate=10.0)
    heavy = TrainConfig(optimizer="momentum", momentum=0.9, batch_size=64, learning_rate=1.0)
    adam = TrainConfig(optimizer="adam", batch_size=64, learning_rate=10.0)
    own_far, own_near = (TrainConfig(optimizer="sgd", batch_size=4, learning_rate=r) for r in (3.0, 5.0))
    kins = {"sgd": kin(sgd), "heavy": kin(heavy), "adam": kin(adam), "far": kin(own_far), "near": kin(own_near)}
    assert kins["sgd"][1] == kins["heavy"][1] == kins["adam"][1] == 1.0
    assert kins["sgd"][0][2] == kins["heavy"][0][2] != kins["adam"][0][2] and kins["sgd"][0][1] != kins["heavy"][0][1]
    eta = RemainingCost({k: 1.0 for k in kins}, kin=kins)
    eta.done("adam", share=0.5)
    assert eta.share("sgd") == 0.5, "no SGD-like run done: the share all the runs done took"
    eta.done("heavy", share=0.05)  # heavy ball diverged at SGD's steady step
    eta.done("far", share=1.0)  # SGD's own, 0.52 decades from 10: farther than heavy ball's plus half a decade
    assert eta.share("sgd") == pytest.approx(0.05)
    eta.done("near", share=1.0)  # SGD's own, 0.30 decades away: nearer
    assert eta.share("sgd") == pytest.approx(1.0)
