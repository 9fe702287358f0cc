"""Study v2: the validation split, the validation target, the ``[[workloads]]`` grid section, and the
science sweep's analysis across workloads (shape checks, B_simple, Q5b's budgets) on synthetic tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import reduce
from analysis import science
from analysis.sections import generalisation, workloads
from experiments.engine import grid as grids
from mbstudy import load_dataset
from mbstudy.config import ConfigError, TrainConfig
from mbstudy.data import with_validation
from mbstudy.train import train


# ------------------------------------------------------------ the split


@pytest.mark.parametrize("name", ["mnist1d", "digits", "teacher"])
def test_the_validation_split_is_disjoint_from_training_and_test_and_fixed_by_the_seed(name):
    data = load_dataset(name)
    split = with_validation(data, 0.2)
    assert split.n_val == round(0.2 * data.n_train) and split.n_train + split.n_val == data.n_train
    rows = lambda x: {r.tobytes() for r in x}  # noqa: E731 - each example as bytes
    train_rows, val_rows, test_rows = rows(split.x_train), rows(split.x_val), rows(split.x_test)
    assert not train_rows & val_rows and not val_rows & test_rows and not train_rows & test_rows
    assert train_rows | val_rows == rows(data.x_train), "the split partitions the original training set"
    np.testing.assert_array_equal(split.x_test, data.x_test)  # the test set is untouched
    again = with_validation(load_dataset(name), 0.2)
    assert again.digest == split.digest, "the same examples held out every time"
    other = with_validation(load_dataset(name, seed=1), 0.2)
    assert other.digest != split.digest
    assert with_validation(data, 0.0) is data


def test_a_split_is_carved_once_and_its_fraction_checked():
    data = with_validation(load_dataset("teacher"), 0.2)
    with pytest.raises(ValueError, match="already has a validation split"):
        with_validation(data, 0.2)
    with pytest.raises(ValueError, match="fraction: expected 0 <= fraction < 1"):
        with_validation(load_dataset("teacher"), 1.0)


def test_the_split_fields_are_checked_with_the_others():
    with pytest.raises(ConfigError) as e:
        TrainConfig(dataset="teacher", val_fraction=0.6, target_val=-1.0, batch_size=900)
    text = str(e.value)
    assert "val_fraction: expected 0 (no validation split) <= val_fraction <= 0.5; received 0.6" in text
    assert "target_val: expected > 0 or none; received -1.0" in text
    ok = TrainConfig(dataset="teacher", val_fraction=0.2, batch_size=800)
    with pytest.raises(ConfigError, match="less its 200 validation examples"):
        TrainConfig(dataset="teacher", val_fraction=0.2, batch_size=801)
    assert TrainConfig().hash() == TrainConfig(val_fraction=0.0).hash(), "the defaults keep stored hashes"
    assert ok.hash() != TrainConfig(dataset="teacher", batch_size=800).hash()


# ------------------------------------------------------------ two targets


def _cfg(**kw):
    base = dict(dataset="teacher", hidden=(16,), optimizer="adam", learning_rate=3e-3, batch_size=16, steps=600,
                eval_every=10, val_fraction=0.2, stop_at_target=True)
    return TrainConfig(**{**base, **kw})


def test_a_run_records_both_targets_and_stops_only_when_both_are_reached():
    full = train(_cfg(stop_at_target=False))
    loss, val = full.history["train/loss"], full.history["val/loss"]
    steps = full.history["step"]
    t_loss, t_val = float(np.quantile(loss, 0.4)), float(np.quantile(val, 0.6))  # levels the run crosses
    first = lambda v, t: int(steps[np.argmax(v <= t)])  # noqa: E731
    r = train(_cfg(target_loss=t_loss, target_val=t_val))
    assert (r.steps_to_target, r.steps_to_val_target) == (first(loss, t_loss), first(val, t_val))
    assert r.outcome == "completed" and r.history["step"][-1] == max(r.steps_to_target, r.steps_to_val_target)
    s = r.summary()
    assert s["steps_to_val_target"] == r.steps_to_val_target and s["examples_to_val_target"] == 16 * r.steps_to_val_target
    n = len(r.history["step"])
    np.testing.assert_array_equal(r.history["val/loss"], val[:n], "the same run, stopped")


def test_a_run_is_given_up_only_when_every_target_it_has_not_reached_is_beaten():
    full = train(_cfg(stop_at_target=False))
    t_loss = float(np.quantile(full.history["train/loss"], 0.3))
    free = train(_cfg(target_loss=t_loss, target_val=10.0))  # the validation target is met at step 0
    assert free.steps_to_val_target == 0 and free.steps_to_target > 50
    # the validation target is reached; the loss target's give-up step decides
    cut = train(_cfg(target_loss=t_loss, target_val=10.0), give_up={"loss": 50})
    assert cut.outcome == "pruned" and cut.history["step"][-1] == 50 and cut.steps_to_val_target == 0
    # no result for the loss target yet: nothing to beat, the run goes on
    assert train(_cfg(target_loss=t_loss, target_val=10.0), give_up={"val": 0}).outcome == "completed"


def test_no_split_means_no_validation_metric():
    r = train(TrainConfig(dataset="teacher", hidden=(8,), steps=20, eval_every=10))
    assert not any(k.startswith("val/") for k in r.history)


# ------------------------------------------------------------ the grid


def test_workloads_cross_the_arms_and_carry_their_own_budgets():
    spec = {
        "base": {"steps": 100, "eval_every": 10},
        "by_batch_size": {"steps": {"4": 400}},
        "workloads": [
            {"dataset": "teacher", "hidden": [8], "batch_size": [4, 8]},
            {"dataset": "digits", "hidden": [8], "batch_size": [4], "by_batch_size": {"steps": {"4": 50}}},
        ],
        "arms": [{"optimizer": "sgd"}, {"optimizer": "adam"}],
    }
    configs = grids.expand(spec, "test")
    got = sorted((c.dataset, c.optimizer, c.batch_size, c.steps) for c in configs)
    assert got == sorted([("teacher", o, 4, 400) for o in ("sgd", "adam")] + [("teacher", o, 8, 100) for o in ("sgd", "adam")]
                         + [("digits", o, 4, 50) for o in ("sgd", "adam")])


def test_the_science_and_generalisation_grids_expand():
    sci = grids.load("science")
    cells = [c.template for c in sci.cells]
    assert not sci.configs and cells, "the science sweep searches its learning rates"
    assert {(c.dataset, c.model) for c in cells} == {("mnist1d", "mlp"), ("mnist1d", "cnn"), ("teacher", "mlp")}
    assert all(c.val_fraction == 0.2 and c.target_loss is not None and c.stop_at_target for c in cells)
    assert min(len({c.seed for c in cells if c.model == m}) for m in ("mlp", "cnn")) >= 8
    assert set(sci.meta["levels"]) == {"mnist1d-mlp", "mnist1d-cnn", "teacher-mlp"}
    gen = grids.load("generalisation")
    assert all(c.val_fraction == 0.2 and c.stats_every == c.eval_every for c in gen.configs)


# ------------------------------------------------------------ the analysis

TRUTH = {("mnist1d", "sgd"): 40.0, ("mnist1d", "momentum"): 160.0, ("teacher", "sgd"): 20.0,
         ("teacher", "momentum"): 20.0}
LEVELS = {"mnist1d-mlp": {"loss": [1.0], "val": [0.6]}, "teacher-mlp": {"loss": [0.05]}}


def synthetic_science(seeds=8, noise=0.05, rng=0):
    """Runs of two workloads x two optimizers and their histories: the loss falls log-linearly from 2.3 to each
    run's target at steps S_min (1 + B_crit / B) x noise (x 1.5 at the worse rate), so every level of the history is
    crossed at a known fraction of those steps; evaluations every twentieth of them."""
    g = np.random.default_rng(rng)
    rows, hist = [], []
    for (ds, opt), b_crit in TRUTH.items():
        target, val = (0.7, 0.45) if ds == "mnist1d" else (0.01, None)
        for B in (1, 2, 4, 8, 16, 64, 256, 1024):
            for seed in range(seeds):
                for lr, slower in ((0.1, 1.0), (0.01, 1.5)):
                    s = 100 * (1 + b_crit / B) * np.exp(g.normal(0, noise)) * slower
                    rid = f"{ds}{opt}{B}{seed}{lr}"
                    rows.append({"dataset": ds, "model": "mlp", "optimizer": opt, "batch_size": B, "seed": seed,
                                 "learning_rate": lr, "outcome": "completed", "steps_to_target": float(np.ceil(s)),
                                 "target_loss": target, "target_val": val, "eval_every": max(1, int(s / 20)),
                                 "run_id": rid, "git_commit": "abc", "reduction": "mean"})
                    every = max(1, int(s / 20))
                    for step in range(0, int(np.ceil(s)) + every, every):
                        frac = min(step / s, 1.2)
                        hist.append((rid, "train/loss", step, 2.3 * (target / 2.3) ** frac))
                        if val is not None:
                            hist.append((rid, "val/acc", step, 1 - 0.9 * (val / 0.9) ** frac))
    return pd.DataFrame(rows), pd.DataFrame(hist, columns=["run_id", "metric", "step", "value"])


def test_the_per_seed_fits_recover_known_curves_and_the_comparisons_follow_holm():
    runs, hist = synthetic_science()
    f = science.science_facts(runs, hist, "synthetic", {"mnist1d-mlp": "MNIST-1D", "teacher-mlp": "teacher"}, LEVELS)
    assert set(f.levels) == {("mnist1d-mlp", "loss"), ("mnist1d-mlp", "val"), ("teacher-mlp", "loss")}
    assert f.levels[("mnist1d-mlp", "loss")] == (1.0, 0.7), "easiest first, the runs' own target last"
    for (ds, opt), b_crit in TRUTH.items():
        for level in f.levels[(f"{ds}-mlp", "loss")]:
            c = f.cell(f"{ds}-mlp", "loss", opt, level)
            assert c.b_crit.lo <= b_crit <= c.b_crit.hi, (ds, opt, level, c.b_crit)
            assert c.n_seeds == 8 and c.models["winner"] == "hyperbola"
    comp = f.comparisons.set_index(["workload", "target", "level", "optimizer"])
    mom = comp.loc[("mnist1d-mlp", "loss", 0.7, "momentum")]
    assert mom["p_holm"] < 0.05 and abs(np.log(mom["ratio"] / 4)) < np.log(1.25), "the true ratio is 160 / 40"
    assert comp.loc[("teacher-mlp", "loss", 0.01, "momentum"), "p_holm"] > 0.05
    assert np.isnan(comp.loc[("mnist1d-mlp", "loss", 1.0, "momentum"), "p_holm"]), "easier levels: no verdict"


def test_b_simple_is_read_at_init_over_training_and_where_the_run_stopped():
    runs, hist = synthetic_science(seeds=3)
    f = science.science_facts(runs, hist, "synthetic", {}, LEVELS)
    t = workloads.b_simple_table(f, synthetic_b_simple(runs))
    assert (t["at_init"] == 10).all() and (t["over_training"] == 30).all() and (t["at_end"] == 90).all()
    m = t[t["bound"] == ""]
    assert len(m) and np.allclose(m["at_end_ratio"], 90 / m["B_crit"])


def synthetic_generalisation(workloads=("digits",)):
    """A generalisation sweep's runs and history: the validation error falls to a minimum at step 2000, then
    rises; the large batch is worse early; the better rate (0.1) is better everywhere."""
    rows, hist = [], []
    for ds in workloads:
        for B in (8, 512):
            for seed in (0, 1, 2):
                for lr in (0.01, 0.1):
                    rid = f"{ds}-{B}-{seed}-{lr}"
                    rows.append({"run_id": rid, "dataset": ds, "model": "mlp", "optimizer": "momentum",
                                 "batch_size": B, "learning_rate": lr, "seed": seed, "outcome": "completed",
                                 "val_fraction": 0.2})
                    for step in range(0, 3001, 50):
                        v = (0.1 + 1e-7 * (step - 2000) ** 2 + (0.05 if lr == 0.01 else 0)
                             + (0.02 if B == 512 and step < 1000 else 0))
                        hist += [(rid, "val/acc", step, 1 - v), (rid, "test/acc", step, 1 - v - 0.01)]
    return pd.DataFrame(rows), pd.DataFrame(hist, columns=["run_id", "metric", "step", "value"])


def synthetic_b_simple(runs):
    """B_simple histories (10 at step 0, 30 in the middle, 90 at the end) of every run."""
    return pd.DataFrame([(rid, "grad/b_simple", step, v) for rid in runs["run_id"]
                         for step, v in ((0, 10.0), (50, 30.0), (100, 90.0))],
                        columns=["run_id", "metric", "step", "value"])


def test_the_generalisation_budgets_pick_the_rate_by_validation_and_read_test_there():
    runs, history = synthetic_generalisation()
    g = generalisation.generalisation_facts(runs, history)
    t = g.table.set_index(["budget", "batch_size"])
    conv = generalisation.BUDGETS[2]
    assert t.loc[(conv, 8), "step"] == 2000 and t.loc[(conv, 8), "learning_rates"] == "0.1"
    assert t.loc[(conv, 8), "median"] == pytest.approx(0.11)
    epochs = generalisation.BUDGETS[0]  # 10 epochs of 1150 examples: 1438 steps at B = 8, 23 at B = 512
    assert t.loc[(epochs, 8), "step"] == 1450 and t.loc[(epochs, 512), "step"] == 50
    gaps = g.gaps.set_index("budget")
    assert gaps.loc[epochs, "verdict"] == "larger B worse" and gaps.loc[conv, "verdict"] == "not resolved"


def test_a_generalisation_edge_is_read_against_the_rates_its_own_workload_and_b_tried():
    """One workload at B = 8 gets a rate below the grid (0.001): its choices at 0.01 are no longer at an edge, the
    other workload's still are, and the text names the extra rate and where it was tried."""
    runs, history = synthetic_generalisation(("mnist1d", "teacher"))
    extra = runs[(runs["dataset"] == "mnist1d") & (runs["batch_size"] == 8) & (runs["learning_rate"] == 0.01)]
    extra = extra.assign(run_id=extra["run_id"] + "-low", learning_rate=0.001)
    low = history[history["run_id"].isin(extra["run_id"].str.removesuffix("-low"))].copy()
    low["run_id"] += "-low"
    low["value"] = np.where(low["metric"] == "val/acc", low["value"] - 0.2, low["value"])  # worse than 0.01
    runs, history = pd.concat([runs, extra], ignore_index=True), pd.concat([history, low], ignore_index=True)
    runs.loc[runs["learning_rate"] == 0.1, "outcome"] = "diverged"  # 0.01, the smallest before, is now chosen
    g = generalisation.generalisation_facts(runs, history)
    e = g.edges
    assert len(e) and not ((e["workload"] == "mnist1d-mlp") & (e["batch_size"] == 8)).any()
    assert ((e["workload"] == "teacher-mlp") & (e["batch_size"] == 8)).any()
    text = generalisation._rates_text(g)
    assert text.startswith("2 learning rates (0.01, 0.1), and 0.001 at B = 8 of ") and text.count("B = ") == 1


def test_a_pruned_run_that_reached_one_target_counts_for_it():
    runs = pd.DataFrame({"outcome": ["pruned", "completed", "diverged"], "steps_to_val_target": [30.0, 50.0, 10.0],
                         "steps_to_target": [np.nan, 80.0, 5.0]})
    assert reduce.reached_steps(runs, "steps_to_val_target").tolist() == [30.0, 50.0, np.inf]
    assert reduce.reached_steps(runs).tolist() == [np.inf, 80.0, np.inf]


def test_the_readme_findings_table_is_written_between_its_markers(tmp_path):
    from analysis import findings
    from analysis.sections import SECTIONS
    from tests.test_any_sweep import facts_of

    root = Path(__file__).resolve().parent.parent
    assert findings.START in (root / "README.md").read_text(), "the README carries the generated block"
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{findings.START}\nold typed table\n{findings.END}\nrest\n")
    text = findings.table(facts_of())
    assert text.count("\n") == sum(s.finding is not None for s in SECTIONS) + 1 and "not measured in this store" in text
    assert findings.update_readme(readme, text)
    body = readme.read_text()
    assert "old typed table" not in body and body.startswith("intro\n") and body.endswith("rest\n")
    assert findings.update_readme(readme, text) and readme.read_text() == body, "idempotent"
    (tmp_path / "other.md").write_text("no markers")
    assert not findings.update_readme(tmp_path / "other.md", text)
