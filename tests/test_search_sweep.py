"""Search grids (``[search.learning_rate]``) through the engine: the grid format, the chains, every executor, the
tags, the dry run, and, end to end with real training, the same runs with 1 or 2 workers, with Ray, without
pruning, and after a SIGTERM and a kill -9 and a resume."""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from experiments import sweep as sweep_mod
from experiments.engine import chains, driver, grid as grids, lifecycle, search, store
from experiments.engine.executors import EXECUTORS, Executor
from experiments.engine.executors import ray as ray_mod
from experiments.engine.lifecycle import RunRecord
from tests import processes

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "tests" / "search_smoke.toml"  # 2 optimizers x B in (4, 32) x 2 seeds = 8 cells, 2 targets


@pytest.fixture
def use_store(tmp_path, monkeypatch):
    def use(name: str = "mlflow.db") -> Path:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / name}")
        return tmp_path / name
    use()
    return use


def grid_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "g.toml"
    path.write_text(text)
    return str(path)


BASE = """
[base]
dataset = "teacher_5x3"
hidden = [8]
steps = 100
target_loss = 0.5
stop_at_target = true
[grid]
batch_size = [4, 32]
"""


# ------------------------------------------------------------------- the format


def test_a_search_grid_expands_to_cells_in_chains_over_batch_sizes():
    sweep = grids.load(str(SMOKE))
    assert sweep.configs == () and len(sweep.cells) == 8
    sgd = [c for c in sweep.cells if c.template.optimizer == "sgd"]
    assert {c.spec for c in sgd} == {search.Spec(start=0.1, step=0.5, refine=0.25, min=0.001, max=1.0)}
    assert {c.template.learning_rate for c in sgd} == {0.1}, "the placeholder rate: the lattice's start"
    assert all(c.targets == ("loss", "val") for c in sweep.cells)
    work = chains.SearchWork(sweep.cells)
    assert len(work.chains) == 4, "(optimizer, seed): each a chain of two batch sizes"
    assert all([work.cells[g].template.batch_size for g in chain] == [4, 32] for chain in work.chains)


def test_set_learning_rate_turns_the_search_off_and_only_selects_cells():
    fixed = grids.load(str(SMOKE), ["learning_rate=0.1"])
    assert fixed.cells == () and len(fixed.configs) == 8 and {c.learning_rate for c in fixed.configs} == {0.1}
    assert len(grids.load(str(SMOKE), ["learning_rate=[0.1, 0.3]"]).configs) == 16
    sgd = grids.load(str(SMOKE), only=["optimizer=sgd", "batch_size=32"])
    assert [(c.template.optimizer, c.template.batch_size) for c in sgd.cells] == [("sgd", 32)] * 2
    # a bad search definition: tests/corpus/bad_sweeps.toml, the cases named search-*


def test_a_workload_or_an_arm_sets_its_own_search_and_the_arm_wins(tmp_path):
    sweep = grids.load(grid_file(tmp_path, BASE + """
[search.learning_rate]
start = 0.1
max = 1.0
[[workloads]]
dataset = "teacher_5x3"
[workloads.search.learning_rate]
start = 0.01
min = 1e-4
[[arms]]
optimizer = "sgd"
[[arms]]
optimizer = "adam"
[arms.search.learning_rate]
start = 0.001
"""))
    spec = {c.template.optimizer: c.spec for c in sweep.cells}
    assert spec["sgd"] == search.Spec(start=0.01, min=1e-4, max=1.0)
    assert spec["adam"] == search.Spec(start=0.001, min=1e-4, max=1.0)


def test_the_dry_run_counts_cells_and_expects_runs(use_store, capsys):
    assert sweep_mod.main([str(SMOKE), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 cells in sweep 'search_smoke'" in out and "about 40 runs would train (5 per cell" in out
    assert "sgd-mean-B32-lr?-s0 (rates 0.001 to 1, from B = 4's best, steps of 0.5 then 0.25 decades)" in out


# ---------------------------------------------------- the chains, on synthetic results


def landscape(cfg) -> dict[str, int | None]:
    """Synthetic steps to each target: the best rate is 0.0316 at B = 4 and 0.316 at B = 32 for the training loss,
    a quarter decade higher for validation; far rates never reach either."""
    k = math.log10(cfg.learning_rate / 0.1) / 0.25
    best = -2 if cfg.batch_size == 4 else 2
    d_loss, d_val = abs(k - best), abs(k - best - 1)
    return {"loss": None if d_loss > 5 else 100 + 20 * round(d_loss), "val": None if d_val > 5 else 80 + 20 * round(d_val)}


def expected_rates() -> dict[tuple, tuple[float, ...]]:
    """What search.simulate says each cell of the smoke grid tries against :func:`landscape`, chain by chain."""
    out = {}
    for cell in grids.load(str(SMOKE)).cells:
        if cell.template.batch_size != 4:
            continue
        k0 = 0
        for b in (4, 32):
            c = dataclasses.replace(cell, template=dataclasses.replace(cell.template, batch_size=b))
            state = search.simulate(c.spec, k0, lambda k, c=c: chains.result_of("completed", landscape(c.config(k))),
                                    c.targets)
            out[(c.template.optimizer, b, c.template.seed)] = tuple(c.spec.rate(k) for k in state.tried)
            k0 = state.best
    return out


def fake_train(cfg, slot=None, give_up_after=None):
    reached = landscape(cfg)
    steps = np.array([0, 10])
    return SimpleNamespace(config=cfg, outcome="completed", steps_to_target=reached["loss"],
                           steps_to_val_target=reached["val"], model_params=7, data_digest="0" * 64,
                           history={"step": steps, "train/loss": np.array([1.0, 0.5])},
                           timings={"compile_s": 0.1, "train_s": 0.2, "eval_s": 0.3},
                           summary=lambda: {"final/train/loss": 0.5, **({"steps_to_target": float(reached["loss"])}
                                                                         if reached["loss"] is not None else {}),
                                            **({"steps_to_val_target": float(reached["val"])}
                                               if reached["val"] is not None else {})})


def tried_rates(name: str = "search_smoke") -> dict[tuple, tuple[float, ...]]:
    exp = store.client().get_experiment_by_name(name).experiment_id
    runs = store.search_all(store.client(), exp, "tags.`mbstudy.kind` = 'run' and attributes.status = 'FINISHED'")
    out: dict[tuple, list] = {}
    for r in runs:
        p = r.data.params
        out.setdefault((p["optimizer"], int(p["batch_size"]), int(p["seed"])), []).append(float(p["learning_rate"]))
    return {k: tuple(sorted(v)) for k, v in out.items()}


class InTurn(Executor):
    """An executor with only ``run`` (CONTRIBUTING's example): a search reaches it wave by wave."""

    name = "in_turn"

    def run(self, todo, ctx, *, bar, counts, board=None) -> int:
        for cfg in todo:
            counts.add(lifecycle.run_one(ctx, cfg))
            bar.update(1)
        return int(counts.failed > 0)


class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay:
    """Ray's API in this process, tasks run when submitted and returned in turn (tests/test_engine.py's)."""

    def remote(self, **_):
        return lambda fn: SimpleNamespace(remote=lambda *a: _Ref(fn(*a)))

    def wait(self, refs, num_returns):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value

    def shutdown(self):
        pass


@pytest.mark.parametrize("name", ["local", "ray", "in_turn"])
def test_every_executor_runs_the_searches_the_decisions_call_for(use_store, monkeypatch, name):
    monkeypatch.setattr(lifecycle, "train_config", fake_train)
    monkeypatch.setattr(ray_mod, "connect", lambda workers: _FakeRay())
    monkeypatch.setitem(EXECUTORS, "in_turn", InTurn)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = grids.load(str(SMOKE))
    executor = EXECUTORS[name](workers=1, **({"unit_size": 2} if name == "ray" else {}))
    status, counts, parent = driver.run_sweep(sweep, executor, progress=False)
    assert status == 0 and tried_rates() == expected_rates()
    assert counts.trained == sum(map(len, expected_rates().values()))
    assert counts.search["done"] == 8 and counts.search["edge"] == 0
    text = driver.summary_text(sweep, counts, parent, status)
    assert f"search: 8 of 8 cells done, {counts.trained} rates tried" in text and "edge optima 0" in text
    parent_run = store.client().get_run(parent)
    assert parent_run.data.metrics["search/cells"] == 8 and parent_run.data.metrics["search/edge"] == 0
    # every run of a done cell carries the search's tags and metrics
    exp = store.client().get_experiment_by_name("search_smoke").experiment_id
    for r in store.search_all(store.client(), exp, "tags.`mbstudy.kind` = 'run'"):
        t = r.data.tags
        n = len(expected_rates()[(r.data.params["optimizer"], int(r.data.params["batch_size"]), int(r.data.params["seed"]))])
        assert t["search/edge"] == "none" and t["search/edge_detail"] == "loss=none val=none" and t["search/rates"] == str(n)
        assert r.data.metrics["search/rates"] == n and r.data.metrics["search/at_edge"] == 0
        assert t["search/best_lr"] == ("0.0316" if r.data.params["batch_size"] == "4" else "0.316")
    # a rerun is a no-op
    status, counts, parent = driver.run_sweep(sweep, executor, progress=False)
    assert (status, counts.trained, parent) == (0, 0, "") and counts.skipped == sum(map(len, expected_rates().values()))


def test_an_edge_optimum_is_tagged_counted_and_extended_by_a_wider_range(use_store, monkeypatch, capsys):
    monkeypatch.setattr(lifecycle, "train_config", fake_train)
    narrow = grids.load(str(SMOKE), only=["optimizer=sgd"])
    narrow = dataclasses.replace(narrow, cells=tuple(dataclasses.replace(c, spec=dataclasses.replace(c.spec, max=0.1))
                                                     for c in narrow.cells))
    status, counts, parent = driver.run_sweep(narrow, EXECUTORS["local"](workers=1), progress=False)
    assert status == 0 and counts.search["edge"] == 2, "B = 32's best rate (0.316) is above max = 0.1"
    assert all("sgd-mean-B32" in e and "loss=high val=high" in e for e in counts.search["edges"])
    assert "edge: sgd-mean-B32-lr?-s0: loss=high val=high (best 0.1, range 0.001 to 0.1)" in driver.summary_text(
        narrow, counts, parent, status)
    edged = {r.data.tags["search/edge"] for r in store.search_all(
        store.client(), store.client().get_experiment_by_name("search_smoke").experiment_id,
        "tags.`mbstudy.kind` = 'run' and params.batch_size = '32'")}
    assert edged == {"high"}
    # the same command with max widened continues those cells, and retags their runs
    wide = grids.load(str(SMOKE), only=["optimizer=sgd"])
    status, counts, _ = driver.run_sweep(wide, EXECUTORS["local"](workers=1), progress=False)
    assert status == 0 and counts.search["edge"] == 0 and counts.trained > 0
    got, want = tried_rates(), {k: v for k, v in expected_rates().items() if k[0] == "sgd"}
    assert got.keys() == want.keys() and all(set(want[k]) <= set(got[k]) for k in want), \
        "every rate a search from scratch tries (and those the narrow search tried besides, which it does not read)"


def test_the_state_of_a_search_is_read_from_the_finished_runs(use_store):
    """SearchWork from a store's runs alone: finished rates are not proposed again, a killed one is, a done cell's
    best starts the next batch size, runs of other rates of the cell are kept, and the expected runs shrink."""
    cells = grids.load(str(SMOKE), only=["optimizer=sgd", "seed=0"]).cells
    four, thirty_two = sorted(cells, key=lambda c: c.template.batch_size)

    def run(cell, k, outcome="completed", rate=None):
        cfg = cell.config(k) if rate is None else dataclasses.replace(cell.template, learning_rate=rate)
        steps = landscape(cfg)
        return SimpleNamespace(info=SimpleNamespace(run_id=f"r{k}{rate}", status="FINISHED"), data=SimpleNamespace(
            params=cfg.to_params(), tags={"prune_group": cfg.hash(without=("learning_rate",)), "outcome": outcome},
            metrics={m: float(steps[t]) for t, m in (("loss", "steps_to_target"), ("val", "steps_to_val_target"))
                     if steps[t] is not None}))

    fresh = chains.SearchWork(cells)
    assert [c.learning_rate for c in fresh.ready()] == [0.1, 0.0316, 0.316], "the start first, then its neighbours"
    assert fresh.expected_left() == 2 * chains.PRIOR_RUNS
    half = chains.SearchWork(cells, [run(four, 0), run(four, 2)])  # -2 was in flight when the sweep was killed
    assert [c.learning_rate for c in half.ready()] == [0.0316] and half.reused == 2
    rates_4 = expected_rates()[("sgd", 4, 0)]
    done = chains.SearchWork(cells, [run(four, four.spec.index(r)) for r in rates_4] + [run(four, 0, rate=0.2)])
    assert done.state[done.chains[0][0]].done and done.reused == len(rates_4)
    assert {c.learning_rate for c in done.ready()} == {0.0316, 0.01, 0.1}, "B = 32 starts at B = 4's best, 0.0316"
    assert len(done.runs[done.chains[0][0]]) == len(rates_4) + 1, "the off-lattice run is the cell's too (tagged)"
    assert done.expected_left() == (chains.PRIOR_RUNS + len(rates_4)) / 2
    done.bar = SimpleNamespace(total=None)  # the progress bar's total follows the search
    first, *rest = done.ready()
    done.hand_out(first)
    done.finished(first, RunRecord(first.hash(), "trained", "completed", reached=landscape(first)))
    assert done.expected_left() == (chains.PRIOR_RUNS + len(rates_4)) / 2 - 1, "one of the cell's expected runs done"
    assert done.bar.total == 1 + round(done.expected_left())
    cfg = rest[0]
    done.hand_out(cfg)
    assert done.ready() and cfg not in done.ready(), "handed out: not handed out again"
    done.finished(cfg, RunRecord(cfg.hash(), "failed"))
    assert done.blocked(0) and done.expected_left() == 0, "a failed run stops its chain for this sweep"


# ---------------------------------------------------------- end to end, real training


def sweep_in_subprocess(db: Path, *args: str, cache: Path | None = None, **popen) -> subprocess.Popen:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
           **({"JAX_COMPILATION_CACHE_DIR": str(cache)} if cache else {})}
    return subprocess.Popen([sys.executable, "-m", "experiments.sweep", str(SMOKE), "--no-progress", *args], cwd=ROOT,
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)


def outcome_table() -> dict:
    """Per (cell, rate): the set of rates a sweep made, and per cell the fewest steps to each target."""
    exp = store.client().get_experiment_by_name("search_smoke").experiment_id
    runs = store.search_all(store.client(), exp, "tags.`mbstudy.kind` = 'run'")
    assert {r.info.status for r in runs} <= {"FINISHED", "KILLED"}
    fin = [r for r in runs if r.info.status == "FINISHED"]
    hashes = [r.data.tags["cfg_hash"] for r in fin]
    assert len(hashes) == len(set(hashes)), "one FINISHED run per configuration"
    best: dict = {}
    for r in fin:
        key = (r.data.params["optimizer"], r.data.params["batch_size"], r.data.params["seed"])
        for m in ("steps_to_target", "steps_to_val_target"):
            if r.data.tags["outcome"] in ("completed", "pruned") and m in r.data.metrics:
                best[key, m] = min(best.get((key, m), math.inf), r.data.metrics[m])
    return {"rates": tried_rates(), "best": best,
            "tags": {(r.data.tags["prune_group"], r.data.tags["search/edge"], r.data.tags["search/rates"]) for r in fin}}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The smoke search by two worker processes, uninterrupted (the reference)."""
    db = tmp_path_factory.mktemp("uninterrupted") / "mlflow.db"
    proc = sweep_in_subprocess(db, "--workers", "2")
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
        table = outcome_table()
    assert 30 <= sum(map(len, table["rates"].values())) <= 60
    assert {edge for _, edge, _ in table["tags"]} == {"none", "high"}, "SGD at B = 32: its best rate is max"
    return table


@pytest.mark.slow
@pytest.mark.parametrize("how", [("--workers", "1"), ("--workers", "2", "--no-prune"),
                                 ("--executor", "ray", "--workers", "2")])
def test_a_search_makes_the_same_runs_with_one_worker_without_pruning_and_with_ray(uninterrupted, use_store, how):
    # in a subprocess: this one runs in float64 (conftest.py), the sweeps' workers in float32
    db = use_store("other.db")
    proc = sweep_in_subprocess(db, *how)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    got = outcome_table()
    assert got["rates"] == uninterrupted["rates"] and got["best"] == uninterrupted["best"]
    assert got["tags"] == uninterrupted["tags"]


def _wait_for(db: Path, proc: subprocess.Popen, finished: int) -> None:
    deadline = time.time() + 300
    while time.time() < deadline:
        time.sleep(0.1)
        if processes.finished_in(db) >= finished and processes.finished_in(db, "RUNNING") >= 1:
            return
        assert proc.poll() is None, "the sweep ended before it could be stopped"
    raise AssertionError(f"fewer than {finished} runs finished in 300 s")


@pytest.mark.slow
def test_sigterm_and_kill_9_mid_search_then_resume_make_the_runs_of_an_uninterrupted_search(uninterrupted, tmp_path,
                                                                                          use_store):
    db = use_store("stopped.db")
    cache = tmp_path / "jax"  # a cold compilation cache: slow enough to stop mid-search
    proc = sweep_in_subprocess(db, "--workers", "2", cache=cache)
    _wait_for(db, proc, 8)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert 8 <= processes.finished_in(db) < sum(map(len, uninterrupted["rates"].values()))
    proc = sweep_in_subprocess(db, "--workers", "2", cache=cache)
    _wait_for(db, proc, processes.finished_in(db) + 6)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert processes.finished_in(db, "RUNNING") >= 1, "a run was in flight when killed"
    proc = sweep_in_subprocess(db, "--workers", "2", cache=cache)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    got = outcome_table()
    assert got["rates"] == uninterrupted["rates"] and got["best"] == uninterrupted["best"]
    assert got["tags"] == uninterrupted["tags"]
