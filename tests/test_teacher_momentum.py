"""Momentum on the teacher (analysis/sections/teacher_momentum.py) on synthetic per-seed steps with known
hyperbolas: S(B) = S_min (1 + B_crit / B), so E_min = S_min B_crit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.sections import teacher_momentum as tm

BS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 800)
TRUE = {0.0: (10.0, 130.0), 0.5: (6.0, 220.0), 0.9: (20.0, 65.0), 0.99: (60.0, 22.0)}  # momentum: S_min, B_crit


def _best(m: float, optimizer: str, rng, batch_sizes=BS) -> pd.DataFrame:
    s_min, b_crit = TRUE[m]
    rows = []
    for seed in range(8):
        noise = rng.normal(0, 0.03)
        for B in batch_sizes:
            rows.append({"workload": tm.WORKLOAD, "optimizer": optimizer, "batch_size": B, "seed": seed,
                         "target": "loss", "level": 0.01, "bound": False, "learning_rate": 0.1,
                         "steps": s_min * (1 + b_crit / B) * np.exp(noise + rng.normal(0, 0.01))})
    return pd.DataFrame(rows)


def synthetic_momentum() -> tm.MomentumFacts:
    """Momentum 0, 0.5, 0.9 and 0.99 on built-in hyperbolas (:data:`TRUE`), 8 seeds."""
    rng = np.random.default_rng(0)
    sci = pd.concat([_best(0.0, "sgd", rng), _best(0.9, "momentum", rng)], ignore_index=True)
    new = {m: _best(m, "momentum", rng, BS[2:]) for m in (0.5, 0.99)}
    return tm.momentum_facts(sci, new, 0.01, BS[2:])


@pytest.fixture(scope="module")
def facts():
    return synthetic_momentum()


def test_every_curve_is_fitted_on_the_shared_batch_sizes(facts):
    assert facts.batch_sizes == BS[2:]
    assert list(facts.cells) == [0.0, 0.5, 0.9, 0.99]
    for m, c in facts.cells.items():
        assert tuple(c.table.index) == BS[2:]
        assert c.b_crit.value == pytest.approx(TRUE[m][1], rel=0.1), m


def test_ratios_to_sgd_recover_the_built_in_b_crit_s_min_and_e_min(facts):
    for m in (0.5, 0.9, 0.99):
        for q, true in (("B_crit", TRUE[m][1] / TRUE[0.0][1]), ("S_min", TRUE[m][0] / TRUE[0.0][0]),
                        ("E_min", TRUE[m][0] * TRUE[m][1] / (TRUE[0.0][0] * TRUE[0.0][1]))):
            r = tm._test(facts, m, q)
            assert r["ratio"] == pytest.approx(true, rel=0.1), (m, q)
            assert r["lo"] <= r["ratio"] <= r["hi"] and r["p_holm"] >= r["p"]
    assert tm.extends(facts) == [0.5]


def test_the_text_answers_first_with_the_verdicts(facts):
    class Ctx:
        teacher_momentum = facts

        def figure(self, name):
            return ""

    text = tm.text(Ctx())
    first = text.split("\n\n")[1]
    assert first.startswith("**On the teacher, momentum 0.5 raised B_crit above SGD's; 0.9, 0.99 lowered it")
    assert "extended by momentum here only at 0.5" in first
