"""The language model's Q8/Q9 part (analysis/sections/language_model/claims.py) on synthetic runs with known
answers: the lm sweep's runs stand in for the unaccumulated steps and the constant batch sizes, the validation
target replaces the training-loss one, and every comparison enters one Holm family."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.sections.language_model import claims, facts, layernorm
from mbstudy.metrics import layer_metric_name

SEEDS = range(6)


def _lm_runs(rng) -> pd.DataFrame:
    """Adam at B = 8 ... 128, two rates each; steps to the validation target on the hyperbola S = 100 (1 + 64 / B)
    with 3% seed noise; no training-loss target (as the lm sweep)."""
    rows = []
    for seed in SEEDS:
        for B in (8, 32, 128):
            for lr, slow in ((0.01, 1.0), (0.0178, 1.3)):
                s = 100 * (1 + 64 / B) * slow * np.exp(rng.normal(0, 0.03))
                rows.append({"run_id": f"lm-{seed}-{B}-{lr}", "optimizer": "adam", "batch_size": B, "seed": seed,
                             "learning_rate": lr, "outcome": "completed", "steps_to_val_target": round(s),
                             "examples_to_val_target": round(s) * B, "steps_to_target": np.nan, "eval_every": 1,
                             "target_val": 2.4, "target_loss": np.nan})
    return pd.DataFrame(rows)


def test_validation_target_takes_the_training_targets_place():
    r = facts.on_validation_target(pd.DataFrame({"steps_to_val_target": [40.0], "examples_to_val_target": [320.0],
                                                  "target_val": [2.4], "steps_to_target": [7.0]}))
    assert r.loc[0, "steps_to_target"] == 40 and r.loc[0, "examples_to_target"] == 320
    assert r.loc[0, "target_loss"] == 2.4
    h = pd.DataFrame({"metric": ["train/loss", "val/loss"], "value": [1.0, 2.0]})
    assert facts.validation_as_loss(h).values.tolist() == [["train/loss", 2.0]]


def test_accumulation_takes_the_lm_runs_at_the_micro_batch_as_k_1():
    rng = np.random.default_rng(0)
    lm = _lm_runs(rng)
    # one step of 4 micro-batches of 8 costs what the lm's B = 32 costs: 100 (1 + 2) steps of 32 examples
    acc = pd.DataFrame([{"run_id": f"acc-{s}", "optimizer": "adam", "batch_size": 32, "accumulation": 4,
                         "seed": s, "learning_rate": 0.0178, "outcome": "completed",
                         "steps_to_val_target": 300, "examples_to_val_target": 9600, "target_val": 2.4,
                         "eval_every": 1} for s in SEEDS])
    a = facts.combine_accumulation(lm, acc, "lm_accumulation")
    t = a.table
    assert set(t["micro"]) == {8}, "only the lm runs at the micro-batch are the baseline"
    assert set(t["target"]) == {"val"}, "the lm runs have no training-loss target"
    row = t[t["k"] == 4].iloc[0]
    # k steps of 8: 100 (1 + 8) = 900 steps, 7200 examples; one step of 32: 9600 examples → 4/3
    assert row["examples_ratio"] == pytest.approx(9600 / 7200, rel=0.05)
    assert row["examples_lo"] < row["examples_ratio"] < row["examples_hi"]
    rows = facts.accumulation_rows(a)
    assert [r["key"] for r in rows] == ["acc:adam:8:4"]


def test_warmup_is_compared_with_its_starting_b_and_the_fastest_constant_b():
    rng = np.random.default_rng(1)
    lm = _lm_runs(rng)
    # a warm-up from B = 8 that takes half the steps of constant B = 8 (900) and more than B = 128 (150)
    warm = pd.DataFrame([{"run_id": f"w-{s}", "optimizer": "adam", "batch_size": 128, "seed": s,
                          "learning_rate": 0.0316, "outcome": "completed", "schedule": "64x8@0.0178,32x16@0.0178",
                          "steps_to_val_target": 450 + s, "examples_to_val_target": 40000, "target_val": 2.4,
                          "eval_every": 4} for s in SEEDS])
    w = facts.combine_warmup(lm, warm, "lm_warmup")
    assert w.best_constant == 128
    rows = {r["key"].split(":")[1]: r for r in facts.warmup_rows(w)}
    assert rows["start"]["estimate"] == pytest.approx(0.5, rel=0.05)
    assert rows["best"]["estimate"] == pytest.approx(450 / 150, rel=0.1)
    t = facts.tests(warmup=w)
    assert list(t["part"]) == ["Q9 warm-up"] * 2 and (t["p_holm"] >= t["p"]).all()
    assert claims.said(t.iloc[0], "more", "fewer") == "fewer"
    assert claims.said(t.iloc[1], "more", "fewer") == "more"


def test_a_row_with_too_few_seeds_is_not_tested():
    r = facts._row("x", "k", "what", (0.5, 0.4, 0.6, 0.01, 2))
    assert np.isnan(r["p"]) and np.isnan(r["lo"])
    t = facts.tests()
    assert t.empty and "p_holm" in t


def test_the_layernorm_ratio_over_seeds_and_its_drift():
    """Two LayerNorm layers (0 and 2) and a total: the subset's B_simple is tr/|G|² summed over the two."""
    rows = []
    for seed in range(4):
        for step, (tr, g) in enumerate(((4.0, 2.0), (8.0, 2.0))):
            for layer in (0, 2):
                rows += [{"run_id": f"r{seed}", "step": step * 32, "metric": layer_metric_name(layer, "trace_cov"),
                          "value": tr * (1 + 0.01 * seed)},
                         {"run_id": f"r{seed}", "step": step * 32, "metric": layer_metric_name(layer, "g_norm_sq"),
                          "value": g}]
            rows.append({"run_id": f"r{seed}", "step": step * 32, "metric": "grad/b_simple", "value": 4.0})
    table = layernorm.subset_b_simple(pd.DataFrame(rows), [0, 2])
    seed_of = pd.Series({f"r{s}": s for s in range(4)})
    a = layernorm.agreement(table, seed_of)
    assert a["ratio"].round(2).tolist() == [0.51, 1.01] and (a["n"] == 4).all()
    d = layernorm.drift(table, seed_of)
    assert d["change"] == pytest.approx(2.0) and d["first"] == 0 and d["last"] == 32


def synthetic_lm_training() -> dict:
    """The facts the LM's training figure reads: Q9's synthetic branches standing in for the LM's, and a LayerNorm
    ratio that rises from 0.4 to 0.7 over 4 seeds."""
    from tests.test_q9_analysis import synthetic_q9

    rows = []
    for seed in range(4):
        for step, ratio in ((0, 0.4), (32, 0.6), (64, 0.7), (96, 0.7)):
            r = ratio * (1 + 0.02 * seed)
            rows.append({"run_id": f"r{seed}", "step": step, "subset": 10 * r, "total": 10.0, "ratio": r})
    table = pd.DataFrame(rows)
    seed_of = pd.Series({f"r{s}": s for s in range(4)})
    ln = facts.LayerNormFacts("lm_branching", (2, 5, 8), 10, table, layernorm.agreement(table, seed_of),
                               layernorm.drift(table, seed_of), 32, 256, 100.0)
    branching = synthetic_q9()["branching"]
    return {"lm_branching": branching, "lm_layernorm": ln,
            "lm_tests": facts.ClaimTests("lm_branching", facts.tests(branching=branching, layernorm_=ln))}


def test_the_training_part_of_the_tests_reads_the_branches_and_the_layernorm_ratio():
    t = synthetic_lm_training()["lm_tests"].table
    assert set(t["part"]) == {"Q9 branching", "Gray"}
    last = t[t["key"] == "gray:last"].iloc[0]
    assert last["estimate"] == pytest.approx(0.7 * np.exp(np.mean(np.log(1 + 0.02 * np.arange(4)))), rel=1e-6)


# lm_branching's local B_crit (tolerance 20%, Adam, the validation loss, geometric means over 5 seeds) at its branch
# points, in sequences (steps x 32): what experiments/grids/lm_warmup_placed.toml was made from; the report
# re-derives it from the store (analysis.sections.warmup.placement_from)
LM_LOCAL_BCRIT = [(0, 194), (1024, 16.0), (3072, 10.6), (7168, 21.1)]  # 9.19 at 3072 when val read 2005 windows
LM_LEVELS = (0.01, 0.0178, 0.0316)


def test_the_lm_grids_hold_the_schedules_their_rules_make():
    """lm_warmup: doubling schedules from B = 8 (mbstudy.schedule.doubling); lm_warmup_placed: the placement rule
    on the measured local B_crit, both rules giving one schedule, at three rate levels, the lm sweep's seeds."""
    from experiments.engine import grid
    from mbstudy import schedule

    doubling = {c.schedule for c in grid.load("lm_warmup").configs}
    assert doubling == {schedule.doubling(8, 128, e, 0.0178, lr_max=0.0178) for e in (512, 1024, 2048)}
    configs = grid.load("lm_warmup_placed").configs
    floor, nearest = (schedule.placed(LM_LOCAL_BCRIT, rule=rule) for rule in ("floor", "nearest"))
    assert floor == nearest == ([(7168, 8)], 16)
    phases, final = floor
    want = {(schedule.format_schedule([(n // b, b, lr) for n, b in phases]), final, lr) for lr in LM_LEVELS}
    assert {(c.schedule, c.batch_size, c.learning_rate) for c in configs} == want
    assert len(configs) == 3 * 10 and {c.seed for c in configs} == set(range(10))  # the lm sweep's Adam seeds
    assert {c.seed for c in grid.load("lm_warmup").configs} == set(range(10))
    adam = {c.template.seed for c in grid.load("lm").cells if c.template.optimizer == "adam"}
    assert adam == set(range(10)), "the warm-ups' constant batch sizes are the lm sweep's Adam runs, on their seeds"


def test_a_placed_warmup_is_one_arm_of_its_rate_levels_in_the_parts_holm_family():
    """Three rate levels of one schedule are one arm (each seed's fastest); its two comparisons join the part's
    Holm family as "Q9 placed warm-up"; the placement re-derived from branching facts names the arm."""
    from analysis.sections import warmup as q9_warmup
    from tests.test_q9_analysis import synthetic_q9

    lm = _lm_runs(np.random.default_rng(2))
    placed = pd.DataFrame([{"run_id": f"p-{s}-{lr}", "optimizer": "adam", "batch_size": 16, "seed": s,
                            "learning_rate": lr, "outcome": "completed", "schedule": f"96x8@{lr}",
                            "steps_to_val_target": (500 + s) * slow, "examples_to_val_target": 6000, "target_val": 2.4,
                            "eval_every": 4} for s in SEEDS for lr, slow in ((0.01, 1.2), (0.0178, 1.0), (0.0316, 1.5))])
    w = facts.combine_warmup(lm, placed, "lm_warmup_placed", tuned=True)
    assert list(w.schedules["schedule"]) == ["96x8 → 16"]
    assert set(w.per_seed.loc[w.per_seed["arm"] == "96x8 → 16", "learning_rate"]) == {0.0178}
    t = facts.tests(placed=w)
    assert set(t["part"]) == {"Q9 placed warm-up"} and set(t["key"]) == {"placed:start:96x8 → 16",
                                                                         "placed:best:96x8 → 16"}
    start = t[t["key"] == "placed:start:96x8 → 16"].iloc[0]
    # constant B = 8 at its faster rate: 100 (1 + 8) = 900 steps against the arm's 500
    assert start["estimate"] == pytest.approx(500 / 900, rel=0.05)
    assert claims.said(start, "more", "fewer") == "fewer"
    assert claims._warm(t, "start", "placed")[1].startswith("fewer steps in 1 of 1 schedules")
    f = synthetic_q9()["branching"]  # its local B_crit: 8, 32 and 128 at 0, 2048 and 4096 examples
    made, said = q9_warmup.placement_from(f, {"256x8,64x32 → 128"}, "lm_warmup_placed")
    assert made == {"floor": "256x8,64x32 → 128", "nearest": "256x8,64x32 → 128"} and "re-derived" in said
    _, other = q9_warmup.placement_from(f, {"96x8 → 16"}, "lm_warmup_placed")
    assert "other schedules" in other and "experiments/grids/lm_warmup_placed.toml" in other


def test_the_limits_name_the_seeds_the_lm_grids_run():
    """The language model's Limits sentence is typed: it must say the seeds its sweeps run."""
    from analysis.sections.language_model import SECTION
    from experiments.engine import grid

    def seeds(name, **only):
        sweep = grid.load(name)
        configs = sweep.configs or [c.template for c in sweep.cells]
        return {c.seed for c in configs if all(getattr(c, k) == v for k, v in only.items())}

    assert len(seeds("lm", optimizer="momentum")) == 6 and len(seeds("lm", optimizer="adam")) == 10
    assert len(seeds("lm_beta2")) == len(seeds("lm_accumulation")) == 6
    assert len(seeds("lm_warmup")) == len(seeds("lm_warmup_placed")) == 10
    assert len(seeds("lm_branching", target_val=None)) == 5 and len(seeds("lm_branching", target_val=2.4)) == 8
    assert "6 seeds (10 for Adam's Q5 and the warm-ups), 5 for the branches (8 references)" in SECTION.limits


def test_a_checkpoint_read_against_a_smaller_b_is_also_read_against_the_others():
    """B = 1 at step 64 alone, decreasing the loss 1.5 times as much as B = 2: against it step 64's local B_crit is
    <= 1; dropped (at_common_smallest), step 64 reads 32 against B = 2 as the other checkpoints do, and the LM's
    branching paragraph says both."""
    from types import SimpleNamespace

    from analysis.sections import local_critical
    from tests.test_q9_analysis import synthetic_branching, with_smaller_batch

    runs, hist = with_smaller_batch(*synthetic_branching(), s=64, B=1, gain=1.5)
    common = local_critical.at_common_smallest(runs)
    assert set(runs["batch_size"]) - set(common["batch_size"]) == {1} and len(common) == len(runs) - 5 * 3
    br = local_critical.branch_facts(runs, hist, n_boot=50)
    c = local_critical.branch_facts(common, hist[hist["run_id"].isin(common["run_id"])], n_boot=50)
    local = c.local[c.local["tol"] == local_critical.TOL].set_index("s")
    assert local.loc[64, "b_crit"] == pytest.approx(32) and local.loc[64, "bound"] == ""
    said = claims._against_common(SimpleNamespace(lm_branching_common=c), br)
    assert said.startswith("read against B = 2 as at the others, the local B_crit is 32") and "at step 64" in said
    assert "(not ≤ 1 at step 64)" in said
    assert claims._against_common(SimpleNamespace(lm_branching_common=None), br) == ""


def test_only_runs_read_on_the_grids_validation_windows_are_read():
    """A store that ran the language model before its grids read 512 validation windows (eval_val) holds runs of
    both kinds: the analysis keeps the grid's own and says what to run when it has none."""
    from analysis.load import MissingRuns
    from analysis.sections.language_model.facts import current_runs

    runs = pd.DataFrame({"run_id": ["old", "new", "other"], "eval_val": [np.nan, 512.0, 256.0]})
    for name in ("lm", "lm_beta2", "lm_accumulation", "lm_warmup", "lm_warmup_placed", "lm_branching"):
        assert current_runs(runs, name)["run_id"].tolist() == ["new"], name
    with pytest.raises(MissingRuns, match=r"experiment 'lm': none of its 1 finished runs reads eval_val = 512 as the "
                                          r"grid does now; run make sweep GRID=lm"):
        current_runs(runs.iloc[:1], "lm")
