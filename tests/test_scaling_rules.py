"""The scaling rules of :mod:`mbstudy.scaling_rules` against hand-computed values and their identities, and
the grids that hold their values (``experiments/grids/beta2.toml``, ``sde.toml``)."""

from __future__ import annotations

import math
import tomllib

import pytest

from experiments.engine import grid as grids
from mbstudy import scaling_rules

# ------------------------------------------------------------------ the rules, by hand


def test_the_half_life_of_beta2_by_hand():
    # ln 0.999 = -0.00100050033358; 128 * ln 0.5 / ln 0.999 = 128 * 0.693147180560 / 0.00100050033358
    assert scaling_rules.half_life(0.999, 128) == pytest.approx(88678.4703, rel=1e-9)
    assert scaling_rules.half_life(0.5, 1) == pytest.approx(1.0)  # beta2 = 1/2 per example: one example
    assert scaling_rules.half_life(0.25, 10) == pytest.approx(5.0)  # (1/4)^(1/2) = 1/2 after half a step: 5 examples


def test_beta2_at_a_fixed_half_life_by_hand():
    t = scaling_rules.half_life(0.999, 128)
    assert scaling_rules.beta2_at(128, t) == pytest.approx(0.999, abs=1e-15)
    assert scaling_rules.beta2_at(256, t) == pytest.approx(0.998001, abs=1e-12)  # 0.999^2
    assert scaling_rules.beta2_at(64, t) == pytest.approx(math.sqrt(0.999), abs=1e-12)  # 0.99949987...
    assert scaling_rules.beta2_at(1, t) == pytest.approx(0.99999218362, abs=1e-11)  # 0.999^(1/128)
    assert scaling_rules.beta2_at(100, 100) == 0.5
    assert scaling_rules.rescale_beta(0.999, 128, 512) == pytest.approx(0.996005996001, abs=1e-12)  # 0.999^4
    assert scaling_rules.rescale_beta(0.9, 32, 16) == pytest.approx(0.948683298, abs=1e-9)  # sqrt(0.9)


def test_the_sde_square_root_rule_by_hand():
    got = scaling_rules.sde_rule(4, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8)
    assert got == {"learning_rate": 0.002, "beta1": 0.6, "beta2": 0.996, "eps": 5e-9}
    two = scaling_rules.sde_rule(2, learning_rate=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    assert two["learning_rate"] == pytest.approx(0.0141421356237) and two["beta1"] == 0.8
    assert two["beta2"] == 0.998 and two["eps"] == pytest.approx(7.07106781187e-09)
    # to first order in 1 - beta2 the square-root rule's beta2 is the half-life rule's
    assert scaling_rules.sde_rule(2, learning_rate=1, beta1=0.9, beta2=0.999, eps=1)["beta2"] == pytest.approx(
        scaling_rules.rescale_beta(0.999, 1, 2), abs=2e-6)
    assert scaling_rules.linear_rule(4, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8) == {
        "learning_rate": 0.004, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


@pytest.mark.parametrize("call, field", [
    (lambda: scaling_rules.sde_rule(10, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8), "kappa"),
    (lambda: scaling_rules.sde_rule(0, learning_rate=1e-3, beta1=0.9, beta2=0.999, eps=1e-8), "kappa"),
    (lambda: scaling_rules.beta2_at(-1, 100), "batch_size"),
    (lambda: scaling_rules.half_life(1.0, 128), "beta2"),
    (lambda: scaling_rules.half_life(float("nan"), 128), "beta2"),
    (lambda: scaling_rules.rescale_beta(0.9, 32, float("inf")), "to_batch"),
])
def test_the_rules_refuse_values_outside_their_domain(call, field):
    with pytest.raises(ValueError, match=field):
        call()


# ------------------------------------------------------------------ the grids hold the rules' values


def _spec(name: str) -> dict:
    return tomllib.loads(grids.resolve(name).read_text())


def test_the_beta2_grid_holds_the_half_life_rule():
    t = scaling_rules.half_life(*scaling_rules.REFERENCE)
    table = next(w["by_batch_size"]["beta2"] for w in _spec("beta2")["workloads"] if "by_batch_size" in w)
    assert len(table) >= 5
    for b, beta2 in table.items():
        assert beta2 == pytest.approx(scaling_rules.beta2_at(int(b), t), abs=1e-12), b
    sweep = grids.load("beta2")
    assert not sweep.prune, "the robustness band needs every rate's steps: the beta2 grid is not pruned"
    fixed = {c.beta2 for c in sweep.configs if c.optimizer == "adam"} - set(table.values())
    assert fixed == {0.999}


def test_the_lm_beta2_grid_holds_the_half_life_rule():
    """The language model's half-life arm: 0.999's half-life at B = 32 (22,170 examples), at each B it runs."""
    t = scaling_rules.half_life(0.999, 32)
    assert t == pytest.approx(22170, abs=1)
    tables = [w["by_batch_size"]["beta2"] for w in _spec("lm_beta2")["workloads"] if "by_batch_size" in w]
    assert {int(b) for table in tables for b in table} == {8, 128}
    for table in tables:
        for b, beta2 in table.items():
            assert beta2 == pytest.approx(scaling_rules.beta2_at(int(b), t), abs=1e-12), b


def test_the_sde_grid_holds_the_rules():
    configs = grids.load("sde").configs
    ref = {"learning_rate": 0.01, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    have = {(c.batch_size, c.learning_rate, c.beta1, c.beta2, c.eps) for c in configs}
    for kappa in (2, 4, 8):
        for rule in (scaling_rules.sde_rule, scaling_rules.linear_rule):
            v = rule(kappa, **ref)
            assert (32 * kappa, v["learning_rate"], v["beta1"], v["beta2"], v["eps"]) in have, (kappa, rule)
        assert (32 * kappa, 0.01, 0.9, 0.999, 1e-8) in have  # no rescaling
    for c in configs:  # equal examples seen, evaluated at the same examples
        assert c.steps * c.batch_size == 65536 and c.eval_every * c.batch_size == 1024


# ------------------------------------------------------------------ identities, in float64


@pytest.mark.parametrize("beta2, batch_size", [(0.999, 128), (0.99, 1), (0.9, 4096), (0.5, 3)])
def test_beta2_at_inverts_half_life(beta2, batch_size):
    """beta2_at(B, half_life(beta2, B)) = beta2: 0.5^(B ln beta2 / (B ln 0.5)) = beta2."""
    assert scaling_rules.beta2_at(batch_size, scaling_rules.half_life(beta2, batch_size)) == pytest.approx(beta2, abs=1e-12)


@pytest.mark.parametrize("beta, b, b2", [(0.999, 128, 1), (0.999, 128, 3200), (0.9, 32, 7)])
def test_rescaling_a_beta_keeps_its_half_life(beta, b, b2):
    """beta^(B'/B) has the half-life in examples of beta at B; rescaling there and back is the identity."""
    new = scaling_rules.rescale_beta(beta, b, b2)
    # ln beta of a beta within 1e-5 of 1 keeps about 11 digits: rel 1e-9, not 1e-12
    assert scaling_rules.half_life(new, b2) == pytest.approx(scaling_rules.half_life(beta, b), rel=1e-9)
    assert scaling_rules.rescale_beta(new, b2, b) == pytest.approx(beta, abs=1e-12)


@pytest.mark.parametrize("kappa", [2, 4, 8])
def test_the_square_root_rule_is_the_half_life_rule_to_first_order(kappa):
    """1 - kappa (1 - beta2) and beta2^kappa differ by O((1 - beta2)^2): kappa (kappa - 1) / 2 (1 - beta2)^2."""
    for beta2 in (0.999, 0.9999):
        sde = scaling_rules.sde_rule(kappa, learning_rate=1.0, beta1=0.9, beta2=beta2, eps=1.0)["beta2"]
        gap = kappa * (kappa - 1) / 2 * (1 - beta2) ** 2
        assert scaling_rules.rescale_beta(beta2, 1, kappa) - sde == pytest.approx(gap, rel=0.02)


@pytest.mark.parametrize("kappa", [0.5, 2, 4, 8])
def test_the_square_root_rule_scales_lr_by_root_kappa_and_eps_by_its_inverse(kappa):
    got = scaling_rules.sde_rule(kappa, learning_rate=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    assert got["learning_rate"] * got["eps"] == pytest.approx(0.01 * 1e-8, rel=1e-11)
    assert got["learning_rate"] / 0.01 == pytest.approx(math.sqrt(kappa), rel=1e-11)
    assert (1 - got["beta1"]) / (1 - 0.9) == pytest.approx(kappa, rel=1e-10)
    lin = scaling_rules.linear_rule(kappa, learning_rate=0.01, beta1=0.9, beta2=0.999, eps=1e-8)
    assert lin["learning_rate"] == pytest.approx(0.01 * kappa) and lin["beta2"] == 0.999
