"""Issue 23 for Q4, Q6 and Q7: intervals over seeds, bounds printed as bounds and kept out of slopes, verdicts under
Holm's rule that say "not resolved" when the seeds (or the grid) cannot tell, and "too few seeds" under three."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd

from analysis import sections
from analysis.sections import noise, powers_of_two, sum_or_mean

LRS = [10.0 ** k for k in range(-6, 3)]  # 1e-6 .. 100, one decade apart
BATCHES = (1, 16, 256)


def _runs(seeds, adam_best=lambda b: 1e-3):
    """Final losses whose best rate is SGD's 0.1 for mean and 0.1 / B for sum (the algebra), Adam's ``adam_best(B)``
    for both (invariant), the same for every seed up to a little noise."""
    rng = np.random.default_rng(0)
    rows = []
    for opt in ("sgd", "adam"):
        for red in ("mean", "sum"):
            for b in BATCHES:
                best = adam_best(b) if opt == "adam" else 0.1 / (b if red == "sum" else 1)
                for lr in LRS:
                    for seed in seeds:
                        off = math.log10(lr) - math.log10(best)
                        rows.append({"run_id": f"{opt}-{red}-{b}-{lr:g}-{seed}", "optimizer": opt, "reduction": red,
                                     "batch_size": b, "learning_rate": lr, "seed": seed, "outcome": "completed",
                                     "final/train/loss": 0.1 + off ** 2 + 1e-3 * rng.random()})
    return pd.DataFrame(rows)


def _q4_ctx(runs):
    default = SimpleNamespace(runs=runs, optimizers=("sgd", "adam"), largest_stable_sgd_lr=pd.Series(dtype=float),
                              experiment="default")
    return sections.context(progress=False, preset={"default": default}, only=())


def test_q4_slopes_are_per_seed_and_a_difference_inside_the_grids_rounding_is_not_called():
    ctx = _q4_ctx(_runs(seeds=(0, 1, 2, 3)))
    slopes, tests = sum_or_mean._tests(ctx)
    assert set(slopes["seed"]) == {0, 1, 2, 3} and (slopes["n_edge"] == 0).all()
    sgd = tests[tests["optimizer"] == "sgd"].set_index("against")
    # 0.1/B rounds to the decade grid: s = -0.83 per seed, p = 0 against -1, yet 0.17 is under the 0.42 resolution
    assert round(float(sgd.loc[-1.0, "slope"]), 2) == -0.83 and sgd.loc[-1.0, "p_holm"] < 0.05
    assert not sgd.loc[-1.0, "called"] and sgd.loc[0.0, "called"]
    assert sum_or_mean.slope_verdict(tests, "sgd") == "sum moves the best rate as 1/B"
    assert sum_or_mean.slope_verdict(tests, "adam") == "the reduction does not move the best rate"
    text = sum_or_mean.text(ctx)
    assert "The sweep's best rates agree" in text and "too few seeds" not in text
    assert "SGD s = -0.83 (every seed)" in text
    assert "s = " in sum_or_mean.finding(ctx).number


def test_q4_two_seeds_print_no_interval_and_call_nothing():
    ctx = _q4_ctx(_runs(seeds=(0, 1)))
    text = sum_or_mean.text(ctx)
    assert "too few seeds" in text and "not resolved" in text and "do not resolve it" in text
    assert "[" not in text.split("\n")[0]
    f = sum_or_mean.finding(ctx)
    assert "not resolved" in f.answer and "." in f.number


def test_q4_a_best_rate_on_the_grids_edge_is_a_bound_and_stays_out_of_the_slope():
    # Adam's best rate at B = 256 beyond the grid's top: both reductions choose 100, a bound
    ctx = _q4_ctx(_runs(seeds=(0, 1, 2), adam_best=lambda b: 1e4 if b == 256 else 1e-3))
    best = sum_or_mean.seed_best_lr(ctx.default.runs)
    edge = best[best["edge"] != 0]
    assert set(edge["optimizer"]) == {"adam"} and set(edge["batch_size"]) == {256} and (edge["edge"] == 1).all()
    slopes, _ = sum_or_mean._tests(ctx)
    adam = slopes[slopes["optimizer"] == "adam"]
    assert (adam["n_b"] == 2).all() and (adam["n_edge"] == 1).all()
    assert "are bounds, not values" in sum_or_mean.text(ctx)
    assert "≥ 100" in sum_or_mean.appendix(ctx)


def _b_simple(seeds, end_factor):
    """Per-run B_simple histories: 100 (+ a little per seed) at step 0, ``end_factor(seed)`` times that at the end."""
    rows = []
    for opt in ("sgd", "adam"):
        for b in (4, 64):
            for seed in seeds:
                init = 100 * (1 + 0.02 * seed)
                for step, v in ((0, init), (50, init * 2), (100, init * end_factor(seed))):
                    rows.append({"optimizer": opt, "reduction": "mean", "batch_size": b, "seed": seed, "step": step,
                                 "value": v})
    runs = pd.DataFrame(rows)
    curves = runs.groupby(["optimizer", "reduction", "batch_size", "step"], as_index=False)["value"].agg(
        mean="mean", lo="min", hi="max", n="size")
    default = SimpleNamespace(b_simple_curves=curves, b_simple_runs=runs, experiment="default")
    facts = noise.noise_facts(default)
    return facts, sections.context(progress=False, preset={"noise": facts}, only=())


def test_q7_growth_of_b_simple_is_a_paired_ratio_over_seeds_under_holm():
    facts, ctx = _b_simple(range(4), lambda s: 4 * (1 + 0.05 * s))
    assert set(facts.tests["verdict"]) == {"grows"} and (facts.tests["n"] == 4).all()
    assert round(facts.init.value) == 103 and np.isfinite(facts.init.lo)
    text = noise.text(ctx)
    assert text.startswith("**Partly") and "B_simple grew during training for SGD and Adam" in text
    assert "not resolved" not in text.split("\n\n")[0] and "grows" in noise.finding(ctx).answer


def test_q7_unresolved_change_and_two_seeds():
    _, ctx = _b_simple(range(4), lambda s: (0.8, 1.3, 0.9, 1.1)[s])
    assert "not resolved" in noise.text(ctx)
    _, ctx = _b_simple(range(2), lambda s: 4.0)
    text = noise.text(ctx)
    assert "too few seeds" in text and "not resolved" in text
    assert "." in noise.finding(ctx).number


def _bench(times):
    """``times``: per k, (2^k − 1, 2^k, 2^k + 1) step times in µs."""
    rows = [{"device": "cpu:cpu", "k": str(k), "us/pow2_minus_1": m, "us/pow2": p, "us/pow2_plus_1": o}
            for k, (m, p, o) in times.items()]
    bench = SimpleNamespace(pow2=pd.DataFrame(rows), runs=pd.DataFrame({"device": ["cpu:cpu"]}))
    return sections.context(progress=False, preset={"bench": bench}, only=())


def test_q6_slower_only_when_resolved_and_beyond_the_timing_floor():
    ctx = _bench({k: (120.0 + k, 100.0, 125.0 - k) for k in range(4, 10)})  # 2^k ± 1 ~20% slower at every k
    t = powers_of_two.pow2_tests(ctx.bench.pow2)
    assert set(t["verdict"]) == {"slower than 2^k"} and (t["p_holm"] < 0.05).all()
    assert "slower per step in 2 of 2" in powers_of_two.text(ctx)
    # 2% slower at every k: resolved by the t-test, but under the 5% floor a change of CPU moves
    ctx = _bench({k: (102.0 + 0.01 * k, 100.0, 102.0 - 0.01 * k) for k in range(4, 10)})
    t = powers_of_two.pow2_tests(ctx.bench.pow2)
    assert (t["p_holm"] < 0.05).all() and set(t["verdict"]) == {"not resolved"}
    assert "not resolved" in powers_of_two.text(ctx)


def test_q6_two_values_of_k_print_no_interval():
    ctx = _bench({4: (62.2, 56.3, 63.5), 5: (70.0, 66.0, 71.0)})
    text = powers_of_two.text(ctx)
    assert "too few k" in text and "not resolved" in text and "[" not in text.split("\n")[0]
    assert "| 4 |" in powers_of_two.appendix(ctx) and "." in powers_of_two.finding(ctx).number
