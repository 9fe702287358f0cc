"""The study's statistics on synthetic data whose answers are known: the fits, the intervals' coverage, bounds,
the hyperbola against its rivals and Holm's rule."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import stats

B = 2.0 ** np.arange(13)  # the science sweep's batch sizes, 1 ... 4096


def test_the_fit_recovers_the_hyperbola_and_says_when_b_crit_is_outside_the_batch_sizes():
    f = stats.fit_hyperbola(B, np.log(300 * (1 + 120 / B)))
    assert f["B_crit"] == pytest.approx(120, rel=1e-6) and f["S_min"] == pytest.approx(300, rel=1e-6)
    assert f["censored"] == 0
    assert stats.fit_hyperbola(B[:5], np.log(300 * (1 + 1e5 / B[:5])))["censored"] == 1, "perfect scaling throughout"
    assert stats.fit_hyperbola(B[6:], np.log(300 * (1 + 0.5 / B[6:])))["censored"] == -1, "no scaling at all"
    many = stats.fit_hyperbola(B, np.log(np.outer([1, 2], 300 * (1 + 120 / B))))  # vectorised over leading axes
    assert many["B_crit"] == pytest.approx([120, 120], rel=1e-6)
    assert np.isnan(stats.fit_hyperbola(B[:2], np.log([3.0, 2.0]))["B_crit"]), "fewer than 3 points: no fit"


@pytest.mark.parametrize("n_seeds", [8, 10])
def test_the_t_interval_of_per_seed_fits_covers_b_crit_in_at_least_93_percent_of_500_sweeps(n_seeds):
    """The study's method at its seed count and grid, at the seed-to-seed noise measured on the MNIST-1D MLP (about
    6% per cell, 5% per seed): 500 synthetic sweeps, each interval checked against the true B_crit."""
    r = stats.coverage(B, 120.0, 300.0, n_seeds=n_seeds, sigma_cell=0.06, sigma_seed=0.05, n_sweeps=500, seed=1)
    assert r["coverage"] >= 0.93, r
    assert r["bounds"] == 0.0


def test_coverage_falls_where_the_curve_is_read_too_coarsely():
    """Steps rounded up to an evaluation grid as coarse as the curve's floor bias B_crit: the coverage check sees
    it (so the study evaluates often enough, and reads crossings between evaluations)."""
    fine = stats.coverage(B, 120.0, 20.0, n_seeds=8, sigma_cell=0.06, n_sweeps=300, seed=2)
    coarse = stats.coverage(B, 120.0, 20.0, n_seeds=8, sigma_cell=0.06, eval_every=10, n_sweeps=300, seed=2)
    assert fine["coverage"] >= 0.9 and coarse["coverage"] < 0.5


def test_a_censored_seed_makes_b_crit_a_bound_and_keeps_it_out_of_ratios():
    rng = np.random.default_rng(0)
    inside = np.array([300 * (1 + 120 / B[:8]) * np.exp(rng.normal(0, 0.05, 8)) for _ in range(6)]).T
    s = stats.summarise_b_crit(B[:8], inside)
    assert not s["B_crit"].bound and s["B_crit"].lo < 120 < s["B_crit"].hi and s["B_crit"].measured
    above = np.array([300 * (1 + 1e4 / B[:8]) for _ in range(6)]).T  # perfect scaling up to B = 128
    s = stats.summarise_b_crit(B[:8], above)
    assert s["B_crit"].bound == ">=" and s["B_crit"].value == 128 and not s["B_crit"].measured
    assert s["B_crit"].text() == "≥ 128" and np.isnan(s["S_min"].value) and s["E_min"].measured
    f = stats.seed_fits(B[:8], above)
    assert np.isnan(stats.paired_ratio(f["B_crit"], f["B_crit"], f["censored"], f["censored"])[0])


def test_paired_ratio_pairs_seeds_and_tests_a_ratio_of_one():
    a = np.array([2.0, 2.2, 1.9, 2.1, 2.05, 1.95])
    est, lo, hi, p, n = stats.paired_ratio(a, np.ones(6))
    assert lo < est < hi and lo > 1 and p < 0.001 and n == 6
    est, lo, hi, p, n = stats.paired_ratio(np.ones(6) * [1, 1.1, 0.9, 1.05, 0.95, 1], np.ones(6))
    assert lo < 1 < hi and p > 0.5


def test_holm_is_step_down_and_monotone():
    adj = stats.holm([0.001, 0.01, 0.02, 0.04])
    assert adj.round(3).tolist() == [0.004, 0.03, 0.04, 0.04]
    assert (np.diff(adj[np.argsort([0.001, 0.01, 0.02, 0.04])]) >= 0).all()


def test_the_model_comparison_tells_the_hyperbola_from_a_power_law():
    rng = np.random.default_rng(3)
    noise = np.exp(rng.normal(0, 0.04, (13, 8)))
    hyper = (300 * (1 + 120 / B))[:, None] * noise
    power = (3000 * B ** -0.6)[:, None] * noise
    h, p = stats.compare_models(B, hyper), stats.compare_models(B, power)
    assert h["winner"] == "hyperbola" and h["scores"]["power law"] > 10 * h["scores"]["hyperbola"]
    assert p["winner"] in ("power law", "broken power law") and p["scores"]["hyperbola"] > p["scores"]["power law"]
    assert 0.2 < h["chi2_dof"] < 5, "a hyperbola with the seeds' noise fits to about its own variance"
