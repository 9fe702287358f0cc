"""Q9's analysis on synthetic sweeps with known answers: local critical batch sizes, warm-up ratios, slopes."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from analysis.sections import branching, critical_batch, local_critical, nqm, scaling, warmup

CHECKPOINTS = {0: 8, 64: 32, 128: 128}  # branch point -> the local critical batch size built into the losses
BRANCH_B = (2, 4, 8, 16, 32, 64, 128, 256, 512)
RATES = (0.1, 0.316, 1.0)
BEST_RATE = 0.316
BUDGET = 8192


def synthetic_branching(seeds: int = 5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Branches whose loss falls linearly in examples at a rate that keeps ``(b_crit / B) ** 1.2`` of the smallest
    batch's decrease above ``b_crit`` (all of it below), at the best rate; the other rates keep 80% of that."""
    rng = np.random.default_rng(0)
    runs, hist = [], []
    for seed in range(seeds):
        rid = f"ref-{seed}"
        runs.append({"run_id": rid, "seed": seed, "schedule": "", "batch_size": 32, "learning_rate": BEST_RATE,
                     "outcome": "completed", "target_loss": 0.7, "steps_to_target": 500.0 + 10 * seed})
        for k, s in enumerate(CHECKPOINTS):
            hist.append({"run_id": rid, "metric": "grad/b_simple", "step": s, "value": 100.0 * (k + 1) + seed})
        for s, b_crit in CHECKPOINTS.items():
            start = 2.0 - 0.002 * s
            for B in BRANCH_B:
                for lr in RATES:
                    rid = f"s{s}-B{B}-lr{lr}-{seed}"
                    runs.append({"run_id": rid, "seed": seed, "schedule": f"{s}x32@0.316" if s else "",
                                 "batch_size": B, "learning_rate": lr, "outcome": "completed", "target_loss": np.nan,
                                 "steps_to_target": np.nan})
                    keep = min(1.0, (b_crit / B) ** 1.2) * (1.0 if lr == BEST_RATE else 0.8)
                    for e in range(0, BUDGET + 1, 512):
                        noise = 1 + 0.0001 * rng.standard_normal() if e else 1.0
                        hist.append({"run_id": rid, "metric": "train/loss", "step": s + e // B,
                                     "value": (start - 0.5 * keep * e / BUDGET) * noise})
    return pd.DataFrame(runs), pd.DataFrame(hist)


def synthetic_warmup(seeds: int = 3) -> pd.DataFrame:
    """Constant B on a hyperbola (S = 200 (1 + 100 / B)); one schedule at B = 64's examples with 0.8x its steps,
    one with 1.3x."""
    rows = []
    for seed in range(seeds):
        f = 1 + 0.02 * seed
        for B in (16, 32, 64, 128, 256, 512, 1024):
            for lr in RATES:
                s = 200 * (1 + 100 / B) * f * (1.0 if lr == BEST_RATE else 1.5)
                rows.append({"run_id": f"c{B}-{lr}-{seed}", "seed": seed, "schedule": "", "batch_size": B,
                             "learning_rate": lr, "outcome": "completed", "steps_to_target": s,
                             "examples_to_target": s * B})
        e64 = 200 * (1 + 100 / 64) * f * 64
        for name, ratio in (("64x16@0.316,32x32@0.632", 0.8), ("128x16@0.316", 1.3)):
            s = 200 * (1 + 100 / 64) * f * ratio
            rows.append({"run_id": f"{name}-{seed}", "seed": seed, "schedule": name, "batch_size": 256,
                         "learning_rate": 1.0, "outcome": "completed", "steps_to_target": s, "examples_to_target": e64})
    return pd.DataFrame(rows)


def synthetic_scaling(seeds: int = 3) -> pd.DataFrame:
    """B_crit = 100 (N / 1000) ** 0.5 against data size at width 100; B_crit = 200 at every width at N = 4000."""
    rows = []
    cells = [(n, 100, 100 * (n / 1000) ** 0.5) for n in (1000, 2000, 4000, 8000, 16000)]
    cells += [(4000, w, 200.0) for w in (25, 50, 200, 400)]
    for n, w, b_crit in cells:
        for seed in range(seeds):
            f = 1 + 0.01 * (seed - 1)
            for B in (8, 32, 128, 512, 2048):
                s = 300 * (1 + b_crit / B) * f
                rows.append({"run_id": f"{n}-{w}-{B}-{seed}", "seed": seed, "n_train": n, "hidden": f"{w},{w}",
                             "batch_size": B, "learning_rate": 1.0, "optimizer": "sgd", "outcome": "completed",
                             "steps_to_target": s, "steps_to_val_target": 1.2 * s})
    return pd.DataFrame(rows)


@functools.cache
def synthetic_q9() -> dict:
    """Q9's four facts at (about) the study's grid sizes: what tests/test_any_sweep.py's figure checks draw."""
    runs, hist = synthetic_branching()
    branches = local_critical.branch_facts(runs, hist, n_boot=100)
    return {"branching": branches, "warmup": warmup.warmup_facts(synthetic_warmup(), n_boot=100),
            "scaling": scaling.scaling_facts(synthetic_scaling(), n_boot=100),
            "nqm": nqm.nqm_facts(110.0, 2.4, 0.7, dim=200)}


def test_branch_point_reads_the_schedule():
    assert local_critical.branch_point("704x32@0.316") == 704
    assert local_critical.branch_point("64x16@0.1,32x32@0.2") == 96
    assert local_critical.branch_point("") == local_critical.branch_point(float("nan")) == 0


def test_local_critical_is_the_largest_b_before_the_first_shortfall():
    kept = np.array([[1.0, 0.95, 0.85, 0.9, 0.4], [1.0, 0.7, 1.0, 1.0, 1.0]])
    bs = np.array([2, 4, 8, 16, 32])
    assert local_critical.local_critical(kept, bs, 0.1).tolist() == [4, 2]  # B = 16 passes, but B = 8 fell short first
    assert local_critical.local_critical(kept, bs, 0.2).tolist() == [16, 2]
    assert local_critical.local_critical(kept, bs, 0.5).tolist() == [16, 32]


def test_branch_facts_recover_the_built_in_local_critical_batch_sizes():
    f = synthetic_q9()["branching"]
    for tol in local_critical.TOLERANCES:
        got = f.local[f.local["tol"] == tol].set_index("s")["b_crit"].to_dict()
        assert got == pytest.approx({s: float(b) for s, b in CHECKPOINTS.items()}), tol
        assert (f.local["bound"] == "").all()  # every built-in value lies inside the grid 2..512
    kept = f.kept.set_index(["s", "batch_size"])["kept"]
    assert kept[(0, 32)] == pytest.approx((8 / 32) ** 1.2, rel=0.02)
    assert (f.kept["learning_rate"] == BEST_RATE).all() and f.edge == 0.0  # the middle rate keeps the most
    geo = float(np.exp(np.mean(np.log(500.0 + 10 * np.arange(5)))))  # the reference's steps: a geometric mean
    assert f.ref_steps[0] == pytest.approx(geo) and f.ref_steps[1] < geo < f.ref_steps[2] and f.ref_steps[3] == 5
    assert f.budget == BUDGET and f.reference_b == 32 and f.target == 0.7
    assert f.b_simple.set_index("s")["b_simple"].to_dict() == pytest.approx({0: 102.0, 64: 202.0, 128: 302.0}, rel=1e-3)
    assert f.local.set_index(["tol", "s"])["fraction"][(local_critical.TOL, 128)] == pytest.approx(128 / geo)


def test_tuned_warmup_facts_take_each_seeds_fastest_rate_level_as_one_arm():
    """warmup_placed: a schedule at three rate levels is one arm, each seed's fastest level, as a constant B is the
    fastest of its rates; the arm is named by its shape and final B."""
    w = synthetic_warmup()
    runs = [w[w["schedule"].fillna("") == ""]]
    for seed in range(5):
        for k, (lr, factor) in enumerate(((0.316, 1.2), (1.0, 0.9 if seed % 2 else 1.1), (3.16, 1.0))):
            sched = f"128x16@{(0.1, 0.316, 1.0)[k]}"
            steps = 400.0 * factor * (1 + 0.01 * seed)
            runs.append(pd.DataFrame([{"run_id": f"p{k}-{seed}", "seed": seed, "schedule": sched, "batch_size": 256,
                                       "learning_rate": lr, "outcome": "completed", "steps_to_target": steps,
                                       "examples_to_target": 2048 + 256 * (steps - 128)}]))
    f = warmup.warmup_facts(pd.concat(runs, ignore_index=True), tuned=True)
    assert list(f.schedules["schedule"]) == ["128x16 → 256"] and f.schedules["start_b"].iloc[0] == 16
    arm = f.per_seed[f.per_seed["arm"] == "128x16 → 256"].set_index("seed")
    assert arm["learning_rate"].to_dict() == {0: 3.16, 1: 1.0, 2: 3.16, 3: 1.0, 4: 3.16}  # each seed's fastest level
    assert arm["steps"].to_dict() == pytest.approx({s: 400 * (0.9 if s % 2 else 1.0) * (1 + 0.01 * s) for s in range(5)})
    untuned = warmup.warmup_facts(pd.concat(runs, ignore_index=True))
    assert len(untuned.schedules) == 3  # without tuned: each rate level its own schedule
    assert warmup.shape_of("256x16@0.1,256x32@0.1,160x64@0.316") == "256x16,256x32,160x64"


def test_warmup_facts_pair_each_schedule_with_constant_batches():
    w = synthetic_q9()["warmup"]
    assert w.best_constant == 1024
    s = w.schedules.set_index("schedule")
    assert s.loc["64x16@0.316,32x32@0.632", "vs_equal"][0] == pytest.approx(0.8)
    assert s.loc["128x16@0.316", "vs_equal"][0] == pytest.approx(1.3)
    best = 200 * (1 + 100 / 1024)
    assert s.loc["128x16@0.316", "vs_best"][0] == pytest.approx(200 * (1 + 100 / 64) * 1.3 / best)
    # Merrill et al.'s baseline: the constant run at the schedule's starting B (16)
    assert s.loc["128x16@0.316", "start_b"] == 16
    assert s.loc["128x16@0.316", "vs_start"][0] == pytest.approx(200 * (1 + 100 / 64) * 1.3 / (200 * (1 + 100 / 16)))
    assert w.constant.set_index("batch_size")["learning_rate"].eq(BEST_RATE).all()


def test_scaling_facts_recover_the_slopes():
    sc = synthetic_q9()["scaling"]
    sl = sc.slopes.set_index(["axis", "target"])
    data, width = sl.loc[("data", "loss")], sl.loc[("width", "loss")]
    assert data["slope"] == pytest.approx(0.5, abs=0.02) and data["lo"] - 1e-6 <= 0.5 <= data["hi"] + 1e-6
    assert width["slope"] == pytest.approx(0.0, abs=0.02) and width["lo"] - 1e-6 <= 0 <= width["hi"] + 1e-6
    assert scaling.trend(sc, "data", "loss") == "grows" and scaling.trend(sc, "width", "loss") == "no change resolved"
    fit = sc.fits.set_index(["axis", "value", "target"])
    assert fit.loc[("data", 16000, "loss"), "B_crit"] == pytest.approx(100 * 16 ** 0.5, rel=0.01)


def test_the_nqm_orders_the_optimizers_as_zhang_et_al_found():
    n = synthetic_q9()["nqm"]
    b = n.fits.set_index("optimizer")["B_crit"]
    assert b["sgd"] < b["momentum"] and b["sgd"] < b["adam"]
    assert (n.fits["r2"] > 0.9).all()
    sgd = n.curves[n.curves["optimizer"] == "sgd"].set_index("batch_size")["steps"]
    assert sgd[1] / sgd[2] == pytest.approx(2, rel=0.15)  # perfect scaling at the smallest batches


def test_the_q9_report_states_computed_verdicts():
    from tests.test_any_sweep import facts_of

    f = facts_of(**synthetic_q9())
    text = critical_batch.text(f)
    assert text.startswith("**Over training the local B_crit of SGD")  # the answer first
    # the built-in 32 at 64, every seed alike: no zero-width interval printed as certain
    assert "| 64 | 12% | 32 (every seed) | 32 (every seed) | 32 (every seed) |" in branching.appendix(f)
    assert "rises from 8 (every seed) at 0% to 128 (every seed) at 25%" in text  # 8 -> 32 -> 128 over the checkpoints
    assert "fewer steps than its starting B (Merrill et al.'s comparison) in 2 of 2 schedules (more in 0)" in text
    assert "than a constant B with at least its examples in 1 (more in 1)" in text
    assert "log-log slope 0.50" in text and "holds for data size (B_crit grows on both targets)" in text
    assert "What to do" in text
    assert critical_batch.finding(f).answer.startswith("Over training the local B_crit of SGD")
    missing = critical_batch.text(facts_of())
    assert missing.count("Not measured yet") == 4


def test_a_diverged_rate_counts_as_infinite_loss_not_as_the_seeds_that_survived():
    runs, hist = synthetic_branching()
    # at s = 0, B = 64, the best rate diverges after 2048 examples in 4 of 5 seeds: its history stops there
    bad = runs[runs["schedule"].eq("") & runs["batch_size"].eq(64) & runs["learning_rate"].eq(BEST_RATE)
               & runs["seed"].lt(4) & runs["target_loss"].isna()]
    runs.loc[bad.index, "outcome"] = "diverged"
    merged = hist.merge(runs[["run_id", "batch_size"]], on="run_id", how="left")
    cut = hist["run_id"].isin(bad["run_id"]) & (merged["step"] * merged["batch_size"] > 2048).to_numpy()
    f = local_critical.branch_facts(runs, hist[~cut], n_boot=50)
    kept = f.kept.set_index(["s", "batch_size"])
    assert kept.loc[(0, 64), "learning_rate"] != BEST_RATE  # the diverged rate is not chosen
    assert kept.loc[(0, 64), "kept"] < 0.2  # the other rates keep 80% of (8/64)^1.2: about 0.07


def test_a_missing_cell_leaves_the_local_critical_batch_size_unknown():
    """Two seeds lack (64, B = 8), below the shortfall at 64: their local B_crit there is unknown (not a shortfall),
    the other three seeds' is read, and the other checkpoints are unaffected."""
    runs, hist = synthetic_branching()
    gone = runs[runs["schedule"].eq("64x32@0.316") & runs["batch_size"].eq(8) & runs["seed"].lt(2)]
    f = local_critical.branch_facts(runs.drop(gone.index), hist[~hist["run_id"].isin(gone["run_id"])], n_boot=50)
    at64 = f.per_seed[(f.per_seed["tol"] == local_critical.TOL) & (f.per_seed["s"] == 64)].set_index("seed")["b_crit"]
    assert at64[[0, 1]].isna().all() and at64[[2, 3, 4]].tolist() == [32, 32, 32]
    local = f.local[f.local["tol"] == local_critical.TOL].set_index("s")
    assert local.loc[64, "b_crit"] == pytest.approx(32) and local.loc[64, "n_seeds"] == 3
    assert local.loc[0, "b_crit"] == pytest.approx(8) and local.loc[128, "b_crit"] == pytest.approx(128)  # the other checkpoints are unaffected


def test_a_checkpoint_is_read_over_the_batch_sizes_it_was_branched_into():
    """Step 128 branched into B up to 128 only leaves its local B_crit (128) a bound, >= 128; a design that adds
    B = 1024 there alone (where the first design left a bound) makes it a value. Step 0 without B = 8 and 16 is
    read over its own batch sizes (its B_crit of 8 at the grid's resolution there: 4); step 64 is as it was."""
    runs, hist = synthetic_branching()
    cut = ((runs["schedule"].eq("") & runs["batch_size"].isin([8, 16]))
           | (runs["schedule"].eq("128x32@0.316") & runs["batch_size"].isin([256, 512])))
    runs, hist = runs[~cut], hist[~hist["run_id"].isin(runs.loc[cut, "run_id"])]
    before = local_critical.branch_facts(runs, hist, n_boot=50)
    local = before.local[before.local["tol"] == local_critical.TOL].set_index("s")
    assert local.loc[128, "b_crit"] == pytest.approx(128) and local.loc[128, "bound"] == ">="
    rows, points = [], []
    for seed in range(5):  # B = 1024 at step 128 only, whose loss does not fall at all: far short
        for lr in RATES:
            rid = f"s128-B1024-lr{lr}-{seed}"
            rows.append({"run_id": rid, "seed": seed, "schedule": "128x32@0.316", "batch_size": 1024,
                         "learning_rate": lr, "outcome": "completed", "target_loss": np.nan, "steps_to_target": np.nan})
            points += [{"run_id": rid, "metric": "train/loss", "step": 128 + e // 1024, "value": 2.0 - 0.002 * 128}
                       for e in range(0, BUDGET + 1, 512)]
    f = local_critical.branch_facts(pd.concat([runs, pd.DataFrame(rows)], ignore_index=True),
                               pd.concat([hist, pd.DataFrame(points)], ignore_index=True), n_boot=50)
    local = f.local[f.local["tol"] == local_critical.TOL].set_index("s")
    assert local.loc[128, "b_crit"] == pytest.approx(128) and local.loc[128, "bound"] == ""
    assert local.loc[0, "b_crit"] == pytest.approx(4) and local.loc[64, "b_crit"] == pytest.approx(32)
    assert (local["bound"] == "").all()
    design = f.kept.groupby("s")["batch_size"].agg(set)
    assert design[0] == {2, 4, 32, 64, 128, 256, 512} and design[128] == {2, 4, 8, 16, 32, 64, 128, 1024}
    assert local_critical.design_text(f.kept) == ("B = 8 and 16 only from steps 64, 128; B = 256 and 512 only from "
                                             "steps 0, 64; B = 1024 only from step 128")
    assert local_critical.smallest_text(f.kept) == ""  # B = 2 everywhere
    assert local_critical.design_text(before.kept.query("s == 64")) == ""


def with_smaller_batch(runs: pd.DataFrame, hist: pd.DataFrame, s: int, B: int, gain: float):
    """``runs, hist`` with branches at batch size ``B`` from step ``s`` only, every rate decreasing the loss
    ``gain`` times as much as the best rate of the smallest batch size there before."""
    rows, points = [], []
    for seed in sorted(runs["seed"].unique()):
        for lr in RATES:
            rid = f"s{s}-B{B}-lr{lr}-{seed}"
            rows.append({"run_id": rid, "seed": seed, "schedule": f"{s}x32@0.316" if s else "", "batch_size": B,
                         "learning_rate": lr, "outcome": "completed", "target_loss": np.nan, "steps_to_target": np.nan})
            points += [{"run_id": rid, "metric": "train/loss", "step": s + e // B,
                        "value": 2.0 - 0.002 * s - 0.5 * gain * e / BUDGET} for e in range(0, BUDGET + 1, 512)]
    return (pd.concat([runs, pd.DataFrame(rows)], ignore_index=True),
            pd.concat([hist, pd.DataFrame(points)], ignore_index=True))


@pytest.mark.parametrize("gain, at64, bound", [(1.0, 32, ""), (1.5, 1, "<=")])
def test_each_checkpoint_is_measured_against_its_own_smallest_batch_size(gain, at64, bound):
    """B = 1 added at step 64 alone: step 64's kept fractions are B = 1's decrease's (the local B_crit stays 32
    when B = 1 decreases the loss as B = 2 does, and is <= 1 when it decreases it 1.5 times as much), and the
    checkpoints without B = 1 keep their values (they are not left unmeasured for lack of it)."""
    runs, hist = with_smaller_batch(*synthetic_branching(), s=64, B=1, gain=gain)
    f = local_critical.branch_facts(runs, hist, n_boot=50)
    local = f.local[f.local["tol"] == local_critical.TOL].set_index("s")
    assert local.loc[64, "b_crit"] == pytest.approx(at64) and local.loc[64, "bound"] == bound
    assert local.loc[0, "b_crit"] == pytest.approx(8) and local.loc[128, "b_crit"] == pytest.approx(128)
    kept = f.kept.set_index(["s", "batch_size"])["kept"]
    assert kept[(64, 1)] == pytest.approx(1.0) and kept[(0, 2)] == pytest.approx(1.0)
    assert kept[(64, 2)] == pytest.approx(1 / gain, rel=1e-3)
    assert local_critical.design_text(f.kept) == "B = 1 only from step 64"
    assert local_critical.smallest_text(f.kept) == "B = 1 at step 64, B = 2 at the others"


def test_one_seed_gives_no_intervals_and_no_resolved_verdicts():
    runs, hist = synthetic_branching(seeds=1)
    f = local_critical.branch_facts(runs, hist, n_boot=50)
    assert f.local["lo"].isna().all() and f.local["b_crit"].notna().all()
    assert local_critical.shape(f)["start"].startswith("not resolved")
    assert local_critical.comparisons(f.local, f.per_seed)["p_holm"].isna().all()
    sc = scaling.scaling_facts(synthetic_scaling(seeds=1), n_boot=50)
    assert sc.fits["lo"].isna().all() and sc.slopes["lo"].isna().all() and sc.slopes["slope"].notna().all()


def test_a_schedule_that_most_seeds_never_finish_is_not_compared():
    w = synthetic_warmup()
    late = w["schedule"].eq("64x16@0.316,32x32@0.632") & w["seed"].lt(2)
    w.loc[late, ["steps_to_target", "examples_to_target"]] = np.nan
    w.loc[late, "outcome"] = "completed"  # ran out of budget
    s = warmup.warmup_facts(w, n_boot=50).schedules.set_index("schedule")
    row = s.loc["64x16@0.316,32x32@0.632"]
    assert (row["n_reached"], row["n_seeds"]) == (1, 3) and np.isnan(row["steps"]) and np.isnan(row["vs_equal"][0])
    assert s.loc["128x16@0.316", "vs_equal"][0] == pytest.approx(1.3)


def test_the_report_survives_partial_warmup_data():
    from tests.test_any_sweep import facts_of

    w = synthetic_warmup()
    w.loc[w["schedule"] != "", ["steps_to_target", "examples_to_target"]] = np.nan
    f = facts_of(warmup=warmup.warmup_facts(w, n_boot=20))
    text = warmup.text(f)
    assert "no schedule reached the target in more than half of its seeds" in text


# ---------------------------------------------------------------- issue 23: verdicts a referee accepts


def test_a_local_critical_batch_size_at_the_end_of_the_range_is_a_bound():
    v, c = local_critical.local_critical_censored(np.array([[1.0, 0.95, 0.9], [1.0, 0.95, 0.3]]), np.array([2, 4, 8]), 0.2)
    assert v.tolist() == [8, 4] and c.tolist() == [1, 0]
    f = synthetic_q9()["branching"]  # the last checkpoint made a bound: every seed kept the share up to 512
    local = f.local.copy()
    per_seed = f.per_seed.copy()
    at = (per_seed["s"] == 128)
    per_seed.loc[at, ["b_crit", "censored"]] = [512.0, 1]
    local.loc[local["s"] == 128, ["b_crit", "lo", "hi", "bound"]] = [512.0, np.nan, np.nan, ">="]
    g = local_critical.BranchFacts(**{**f.__dict__, "local": local, "per_seed": per_seed})
    from tests.test_any_sweep import facts_of

    text = branching.text(facts_of(branching=g))
    assert "≥ 512" in text and "[512" not in text  # printed as a bound, never with an interval
    assert "rises" not in local_critical.shape(g)["rise"] and "not tested" in local_critical.shape(g)["rise"]
    tests = local_critical.comparisons(g.local, g.per_seed)
    assert tests[tests["to_s"] == 128]["p"].isna().all()  # a bound enters no comparison
    assert "B_simple / local B_crit" in branching.appendix(facts_of(branching=g))
    assert "– (a bound)" in branching.appendix(facts_of(branching=g))


def _scaling_table(b_crits: dict[int, float], seeds: int = 5, spread: float = 0.05) -> pd.DataFrame:
    rows = []
    for w, b_crit in b_crits.items():
        for seed in range(seeds):
            f = np.exp(spread * (seed - (seeds - 1) / 2))
            for B in (8, 32, 128, 512, 2048):
                s = 300 * (1 + b_crit * f / B)
                rows.append({"run_id": f"{w}-{B}-{seed}", "seed": seed, "n_train": 4000, "hidden": f"{w},{w}",
                             "batch_size": B, "learning_rate": 1.0, "optimizer": "sgd", "outcome": "completed",
                             "steps_to_target": s, "steps_to_val_target": 1.2 * s})
    return pd.DataFrame(rows)


def test_a_u_shaped_width_trend_is_not_called_monotone_and_has_no_slope():
    sc = scaling.scaling_facts(_scaling_table({25: 547.0, 50: 304.0, 100: 172.0, 200: 200.0, 400: 244.0}))
    assert scaling.trend(sc, "width", "loss") == "is not monotone"
    assert scaling.slope_text(sc, "width", "loss") == ""
    from tests.test_any_sweep import facts_of

    text = scaling.text(facts_of(scaling=sc))
    assert "B_crit is not monotone: 547 → 304 (falls)" in text and "slope" not in text.split("against width")[1]


def test_an_unresolved_comparison_says_not_resolved_and_few_seeds_print_no_interval():
    sc = scaling.scaling_facts(_scaling_table({25: 200.0, 50: 210.0, 100: 190.0, 200: 205.0, 400: 200.0}, spread=0.3))
    assert scaling.trend(sc, "width", "loss") == "no change resolved"
    assert set(sc.tests["verdict"]) == {"not resolved"}
    two = scaling.scaling_facts(_scaling_table({25: 100.0, 400: 1600.0}, seeds=2))
    assert two.tests["p"].isna().all() and scaling.trend(two, "width", "loss") == "not resolved"
    from tests.test_any_sweep import facts_of

    assert "too few seeds" in scaling.appendix(facts_of(scaling=two))
    w = synthetic_warmup(seeds=2)
    ww = warmup.warmup_facts(w)
    assert set(ww.schedules["equal_verdict"]) == {"not resolved"}  # two seeds: no verdict, however clear
    assert "too few seeds" in warmup.appendix(facts_of(warmup=ww))


def test_the_warmup_with_adam_is_reported_beside_sgd():
    """warmup_adam's facts (here: the same synthetic sweep) give their own clause in the answer, a paragraph and an
    appendix table; without them the paragraph names the command that makes them."""
    from tests.test_any_sweep import facts_of

    q = synthetic_q9()
    text = warmup.text(facts_of(warmup=q["warmup"], warmup_adam=q["warmup"]))
    answer = text.split("\n\n")[1]
    assert answer.startswith("**With SGD on this workload a doubling warm-up took fewer steps than its starting B")
    assert "; with Adam, fewer than its starting B in 2 of 2 (more in 0)" in answer
    assert "**With Adam** (`warmup_adam`" in text
    app = warmup.appendix(facts_of(warmup=q["warmup"], warmup_adam=q["warmup"]))
    assert "### Q9b with Adam: every warm-up schedule" in app
    alone = warmup.text(facts_of(warmup=q["warmup"], missing={"warmup_adam": "run make sweep GRID=warmup_adam"}))
    assert "make sweep GRID=warmup_adam" in alone and "; with Adam" not in alone


def test_relative_targets_are_the_same_share_of_each_widths_range():
    """scaling_width's targets against scaling_floor's floors and initial losses: the share of the way from the
    initial loss to the floor (the lowest best/train/loss over the floor's rates), per width."""
    floor = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "hidden": ["12,12", "12,12", "100,100", "100,100"],
                          "best/train/loss": [1.2, 1.0, 0.01, 0.0]})
    initial = pd.Series({"a": 2.4, "b": 2.6, "c": 2.3, "d": 2.5})
    runs = pd.DataFrame({"hidden": ["12,12", "100,100", "100,100"], "target_loss": [1.5, 0.7, 0.7]})
    t = scaling.relative_targets(floor, initial, runs).set_index("width")
    assert t.loc[12, "floor"] == 1.0 and t.loc[12, "initial"] == pytest.approx(2.5)
    assert t.loc[12, "fraction"] == pytest.approx((2.5 - 1.5) / (2.5 - 1.0))
    assert t.loc[100, "fraction"] == pytest.approx((2.4 - 0.7) / 2.4)


def test_the_scaling_with_adam_is_reported_beside_sgd():
    from tests.test_any_sweep import facts_of

    sc = synthetic_q9()["scaling"]
    text = scaling.text(facts_of(scaling=sc, scaling_adam=sc))
    answer = text.split("\n\n")[1]
    assert answer.startswith("**Zhang et al.'s claim (B_crit grows with data and barely with model size), with SGD, ")
    assert "; with Adam, on the training-loss target, B_crit grows with data and" in answer
    assert "**With Adam** (`scaling_adam`" in text and "against width, training-loss target: B_crit" in text


def test_a_best_rate_at_the_end_of_its_own_checkpoints_rates_is_named_with_what_it_keeps():
    """Only (s, B) = (0, 512) loses its rates above the best: it alone is at an edge (its highest), and the text
    says so, with what it keeps and that B = 512 is beyond step 0's local B_crit (8)."""
    runs, hist = synthetic_branching()
    drop = runs["run_id"].str.startswith("s0-B512-") & (runs["learning_rate"] > BEST_RATE)
    f = local_critical.branch_facts(runs[~drop], hist[~hist["run_id"].isin(runs.loc[drop, "run_id"])])
    assert f.edges[["s", "batch_size", "side"]].values.tolist() == [[0, 512, "highest"]]
    assert f.edge == pytest.approx(1 / len(f.kept))
    keep = (8 / 512) ** 1.2
    assert local_critical.edges_text(f) == (f" (step 0, B = 512: its highest rate (0.316), keeping {keep:.2f} of the "
                                            "smallest B's decrease, beyond the local B_crit there (8), which no rate "
                                            "at this B moves)")
    assert local_critical.edges_text(synthetic_q9()["branching"]) == ""
