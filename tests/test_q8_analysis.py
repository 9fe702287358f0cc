"""Q8's analysis on synthetic runs tables whose answers are known: the ratios, the robust band, the
divergence fraction, the SDE curve distances, and the report text built from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from scipy.stats import t as stats_t

from analysis import report
from analysis.markdown import interval
from analysis.sections import accumulation, beta2, sde
from tests.test_any_sweep import facts_of


NOISE = (0.02, -0.02, 0.01, -0.01)  # per-seed log-noise of an accumulated cell: mean 0, so the estimate is exact


def _acc_runs(factor: dict[int, float], micro: int = 8, seeds=(0, 1, 2, 3), s_b: float = 4000.0) -> pd.DataFrame:
    """SGD runs: k = 1 needs s_b steps at b; k accumulated micro-batches need factor[k] * s_b / k steps (so
    factor[k] x the examples) times exp(NOISE[seed]); a second, slower rate everywhere; seed s scales everything
    by 1 + s / 10."""
    rows = []
    for k, f in factor.items():
        for s in seeds:
            for lr, slow in ((0.1, 1.0), (0.01, 3.0)):
                steps = f * s_b / k * slow * (1 + s / 10) * (np.exp(NOISE[s]) if k > 1 else 1.0)
                rows.append({"optimizer": "sgd", "batch_size": micro * k, "accumulation": k, "seed": s,
                             "learning_rate": lr, "outcome": "completed", "steps_to_target": steps,
                             "steps_to_val_target": steps * 1.5, "time_to_target": steps * k * 1e-3,
                             "time_to_val_target": np.nan})
    return pd.DataFrame(rows)


def test_accumulation_ratios_are_the_examples_over_k_steps_of_b():
    f = accumulation.accumulation_facts(_acc_runs({1: 1.0, 2: 1.0, 4: 1.5, 8: 3.0}))
    t = f.table[f.table["target"] == "loss"].set_index("k")
    assert t.loc[[1, 2, 4, 8], "examples_ratio"].tolist() == pytest.approx([1.0, 1.0, 1.5, 3.0])
    # the t-interval of the mean log ratio: sd of NOISE over sqrt(4) seeds, t(3) quantile
    half = stats_t.ppf(0.975, 3) * np.std(NOISE, ddof=1) / 2
    assert t.loc[8, "examples_lo"] == pytest.approx(3.0 * np.exp(-half))
    assert t.loc[8, "examples_hi"] == pytest.approx(3.0 * np.exp(half))
    assert t.loc[8, "time_ratio"] == pytest.approx(3.0)  # time = steps x k micro-steps: the examples ratio
    geo = np.exp(np.mean(np.log([1 + s / 10 for s in range(4)]) + np.array(NOISE)))
    assert t.loc[4, "examples"] == pytest.approx(1.5 * 4000 * 8 * geo)  # geometric mean over seeds, examples = s kb
    assert accumulation.verdict(t.loc[2, "examples_ratio"], t.loc[2, "examples_holm"]) == "not resolved"
    assert accumulation.verdict(t.loc[8, "examples_ratio"], t.loc[8, "examples_holm"]) == "costs more"
    assert t.loc[8, "examples_holm"] == pytest.approx(6 * t.loc[8, "examples_p"])  # Holm over
    # k = 2, 4, 8 at both targets (the validation target's k = 8 has the same p: the same noise)


def test_a_run_that_never_reached_the_target_is_never_the_fastest():
    runs = _acc_runs({1: 1.0, 2: 1.0})
    runs.loc[(runs["accumulation"] == 2) & (runs["learning_rate"] == 0.1), "outcome"] = "diverged"
    t = accumulation.accumulation_facts(runs).table.set_index(["target", "k"])
    assert t.loc[("loss", 2), "examples_ratio"] == pytest.approx(3.0)  # the slower rate is now the fastest


def test_the_hyperbola_ratio():
    assert accumulation.hyperbola_ratio(174, 8, 1) == 1.0
    assert accumulation.hyperbola_ratio(174, 8, 64) == pytest.approx((174 + 512) / (174 + 8))
    assert accumulation.hyperbola_ratio(1e-9, 256, 8) == pytest.approx(8.0)  # far above B_crit: k x the examples


LABELS = {"fixed": "adam, β2 = 0.999", "half": "adam, β2 half-life", "sgd": "sgd"}  # the beta2 grid's arm labels


def _beta2_runs() -> pd.DataFrame:
    rows = []
    for arm, optimizer, b2 in (("fixed", "adam", 0.999), ("half", "adam", 0.99999), ("sgd", "sgd", 0.999)):
        for s in (0, 1, 2, 3):
            for lr, steps in ((1e-3, 1000.0), (3.16e-3, 500.0), (1e-2, 900.0), (3.16e-2, np.nan)):
                div = np.isnan(steps) or (arm == "fixed" and lr == 1e-2)
                rows.append({"arm": LABELS[arm], "optimizer": optimizer, "beta2": b2, "batch_size": 1, "seed": s,
                             "learning_rate": lr, "outcome": "diverged" if div else "completed",
                             "steps_to_target": steps * np.exp(NOISE[s]) if arm == "sgd" else steps})
    return pd.DataFrame(rows)


def test_the_beta2_table_counts_divergence_and_the_robust_band():
    f = beta2.beta2_facts(_beta2_runs())
    t = f.table.set_index("arm")
    assert set(t.index) == {"adam, β2 = 0.999", "adam, β2 half-life", "sgd"}
    assert t.loc["adam, β2 = 0.999", "diverged"] == pytest.approx(0.5)  # two of four rates diverge
    assert t.loc["adam, β2 half-life", "diverged"] == pytest.approx(0.25)
    # 1000, 500 and 900 steps are within 2x of 500: the band spans 1e-3 .. 1e-2, one decade; the fixed arm
    # (1e-2 diverged) spans 1e-3 .. 3.16e-3, half a decade
    assert t.loc["adam, β2 half-life", "band"] == pytest.approx(1.0)
    assert t.loc["adam, β2 = 0.999", "band"] == pytest.approx(np.log10(3.16))
    assert t.loc["sgd", "steps"] == pytest.approx(500) and t.loc["sgd", "best_lr"] == pytest.approx(3.16e-3)
    est, lo, hi, p = beta2.arm_test(f, "sgd", "adam, β2 half-life", 1)
    assert est == pytest.approx(1.0) and lo < 1 < hi and p == pytest.approx(1.0)  # sgd's noise has mean 0
    assert t.loc["adam, β2 half-life", "n_diverged"] == 4 and t.loc["adam, β2 half-life", "n_runs"] == 16


Z = (0.0, 1.0, -1.0, 0.5, -0.5)  # the seeds' shared log-loss shifts (the same seed: the same initialisation)
W = (1.0, -1.0, 0.5, -0.5, 0.0)  # a scaled arm's own per-seed noise, mean 0


def _sde(offset: dict[str, float], diverge: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The reference at B0 = 32 and three rules at 64: log loss = the curve + offset[rule] + 0.05 Z[seed]
    (+ 0.002 W[seed] for a scaled arm); seed 0 of the ``diverge`` rule's loss turns NaN half way."""
    runs, hist = [], []
    arms = [("reference", 32, 0.01, 0.9), ("square-root", 64, 0.01 * 2**0.5, 0.8), ("linear", 64, 0.02, 0.9),
            ("none", 64, 0.01, 0.9)]
    for rule, B, lr, beta1 in arms:
        for s in range(5):
            rid = f"{rule}-{s}"
            runs.append({"run_id": rid, "arm": rule, "batch_size": B, "learning_rate": lr, "beta1": beta1, "seed": s})
            own = 0.0 if rule == "reference" else 0.002 * W[s]
            for e in range(0, 65537, 1024):
                loss = 2.0 * np.exp(-e / 20000) * np.exp(offset.get(rule, 0.0) + 0.05 * Z[s] + own)
                if rule == diverge and s == 0 and e > 32768:
                    loss = np.nan
                hist.append({"run_id": rid, "metric": "train/loss", "step": e // B, "value": loss})
    return pd.DataFrame(runs), pd.DataFrame(hist)


def test_the_sde_differences_against_the_seed_noise():
    f = sde.sde_facts(*_sde({"linear": 0.5, "none": 0.02}), lr0=0.01)
    d = f.distances.set_index("rule")
    half = stats_t.ppf(0.975, 4) * 0.002 * np.std(W, ddof=1) / np.sqrt(5)
    assert d.loc["square-root", "mean"] == pytest.approx(0.0, abs=1e-12)
    assert d.loc["square-root", "hi"] == pytest.approx(half) and d.loc["square-root", "final"] == pytest.approx(0.0, abs=1e-12)
    assert d.loc["linear", "mean"] == pytest.approx(0.5) and d.loc["linear", "final_lo"] < 0.5 < d.loc["linear", "final_hi"]
    assert d["spread"].iloc[0] == pytest.approx(0.05 * np.std(Z, ddof=1))
    assert d.loc["square-root", "verdict"] == "matches" and d.loc["linear", "verdict"] == "differs"
    assert d.loc["none", "verdict"] == "matches"  # resolved from 0, but within the reference's own seed spread
    assert d.loc["linear", "p_holm"] == pytest.approx(min(1.0, 3 * d.loc["linear", "p"]))  # smallest of three
    assert f.reference_rates["learning_rate"].tolist() == [0.01]
    g = sde.sde_facts(*_sde({}, diverge="linear"), lr0=0.01).distances.set_index("rule")
    assert g.loc["linear", "verdict"] == "diverged in 1 of 5 seeds"


def test_the_q8_section_states_the_numbers_it_computed():
    acc = accumulation.accumulation_facts(_acc_runs({1: 1.0, 2: 1.0, 4: 1.5, 8: 3.0}))
    facts = facts_of(accumulation=acc, beta2=beta2.beta2_facts(_beta2_runs()),
                     sde=sde.sde_facts(*_sde({"linear": 0.5}), lr0=0.01))
    text = report.text(facts, "test")
    section = "".join(text.split("## Q8.")[1:])  # the section and its further evidence in the appendix
    k8 = acc.table.set_index(["target", "k"]).loc[("loss", 8)]
    assert interval(k8["examples_ratio"], k8["examples_lo"], k8["examples_hi"], ".2f") + "×" in section
    assert "B_crit a bound: no prediction" in section and "nan×" not in section, "no hyperbola without a B_crit"
    assert "**Yes, within the seed noise at every κ measured**" in section
    assert "the linear rule differs at κ ∈ {2}" in section
    q4 = "".join(part.split("## Q5.")[0] for part in text.split("## Q4.")[1:])  # Q4 and its further evidence
    assert "Adam's β2 is the other knob" in q4
    missing = report.text(facts_of(missing={"accumulation": "run make sweep GRID=accumulation"}), "test")
    assert "Not measured yet: run make sweep GRID=accumulation" in missing.split("## Q8.")[1]


def synthetic_q8() -> dict:
    """Q8's three experiments at the study's grid sizes (three optimizers, b = 8 and 256, seven B's, three κ),
    with the answers of a hyperbola of B_crit = 200: the facts the figure checks of tests/test_any_sweep.py draw."""
    acc = []
    for opt in ("sgd", "momentum", "adam"):
        for micro, ks in ((8, (1, 2, 4, 8, 16, 32, 64)), (256, (1, 2, 4, 8))):
            part = _acc_runs({k: accumulation.hyperbola_ratio(200, micro, k) for k in ks}, micro=micro)
            acc.append(part.assign(optimizer=opt))
    arms = []
    for B in (1, 4, 16, 64, 256, 1024, 3200):
        arms.append(_beta2_runs().assign(batch_size=B, steps_to_target=lambda d: d["steps_to_target"] * (1 + 200 / B)))
    runs, hist = [], []
    for kappa in (2, 4, 8):
        r, h = _sde({"linear": 0.1 * kappa, "none": 0.05 * kappa})
        runs.append(r.assign(batch_size=r["batch_size"].where(r["batch_size"] == 32, 32 * kappa),
                             run_id=r["run_id"] + f"-{kappa}"))
        hist.append(h.assign(run_id=h["run_id"] + f"-{kappa}"))
    sde_runs = pd.concat(runs).drop_duplicates("run_id")
    sde_hist = pd.concat(hist)
    sde_hist = sde_hist.merge(sde_runs[["run_id", "batch_size"]], on="run_id")
    sde_hist = sde_hist.assign(step=sde_hist["step"] * 64 // sde_hist["batch_size"]).drop(columns="batch_size")
    return {"accumulation": accumulation.accumulation_facts(pd.concat(acc, ignore_index=True)),
            "beta2": beta2.beta2_facts(pd.concat(arms, ignore_index=True)),
            "sde": sde.sde_facts(sde_runs, sde_hist, lr0=0.01)}


def test_the_synthetic_q8_facts_have_every_part():
    f = synthetic_q8()
    assert set(f["accumulation"].table["optimizer"]) == {"sgd", "momentum", "adam"}
    assert len(f["beta2"].table) == 21
    assert sorted(f["sde"].distances["kappa"].unique()) == [2, 4, 8]
