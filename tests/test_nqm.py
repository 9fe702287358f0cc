"""mbstudy.nqm: exact against Monte Carlo and against a plain recursion; Zhang et al.'s facts; its input checks."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.optimize import curve_fit

from mbstudy import nqm
from mbstudy.nqm import NQM, OPTIMIZERS

BETA = 0.9
# Eight directions, curvature spread 40x, noise not proportional to curvature, unequal initial moments.
SMALL = NQM(h=np.geomspace(2.0, 0.05, 8), c=np.linspace(0.5, 2.0, 8), m0=np.linspace(2.0, 0.5, 8))
# One stable learning rate per optimizer; with momentum most directions are underdamped, so E[L_t] oscillates.
LR = {"sgd": 0.3, "momentum": 0.1, "preconditioned": 0.3}


def recursion(model: NQM, optimizer: str, lr: float, batch_size: float, steps: int, beta=BETA, power=0.5):
    """E[L_t] by iterating the second moments one step at a time: the reference, independent of mbstudy.nqm."""
    h, noise, out = model.h, model.c / batch_size, np.empty(steps + 1)
    if optimizer == "momentum":  # (E θ², E θv, E v²) under v' = βv + hθ + ξ, θ' = θ − η v'
        tt, tv, vv = model.m0.copy(), np.zeros_like(h), np.zeros_like(h)
        for t in range(steps + 1):
            out[t] = 0.5 * np.sum(h * tt)
            vv = beta**2 * vv + 2 * beta * h * tv + h**2 * tt + noise
            tv = beta * tv + h * tt
            tt, tv = tt - 2 * lr * tv + lr**2 * vv, tv - lr * vv
        return out
    step = lr * h**-power if optimizer == "preconditioned" else lr
    m = model.m0.copy()
    for t in range(steps + 1):
        out[t] = 0.5 * np.sum(h * m)
        m = (1 - step * h) ** 2 * m + step**2 * noise
    return out


def first_below(losses: np.ndarray, target: float) -> float:
    hit = np.flatnonzero(losses <= target)
    return float(hit[0]) if hit.size else np.inf


# ------------------------------------------------------------------------------------ 1. exact vs Monte Carlo


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_exact_loss_matches_monte_carlo_within_its_standard_error(optimizer):
    lr, times = LR[optimizer], [0, 1, 3, 10, 30, 80, 150]
    for seed, batch_size in enumerate([1, 8, 64]):
        exact = nqm.expected_loss(SMALL, optimizer, lr, batch_size, 150, momentum=BETA)
        mean, se = nqm.monte_carlo(SMALL, optimizer, lr, batch_size, 150, n_paths=4000, seed=seed, momentum=BETA)
        assert np.all(se[times] < 0.05 * mean[times])  # the comparison has power: errors of a few percent show
        z = np.abs(mean - exact)[times] / se[times]
        assert np.all(z <= 4), (optimizer, batch_size, z)
    # A negative control: the exact loss at another batch size is far outside the Monte-Carlo band at B = 1.
    mean, se = nqm.monte_carlo(SMALL, optimizer, lr, 1, 150, n_paths=4000, seed=0, momentum=BETA)
    wrong = nqm.expected_loss(SMALL, optimizer, lr, 2, 150, momentum=BETA)
    assert np.max(np.abs(mean - wrong)[times] / se[times]) > 10


# ------------------------------------------------------------------------------------ 2. closed form vs recursion


def every_case(lr: float, beta: float) -> NQM:
    """Curvatures that put η h in every regime of heavy ball with (η, β): real positive eigenvalues, exactly and
    nearly critical damping, complex, nearly repeated negative, real negative; and SGD's η h = 1 and η h > 1."""
    crit_lo, crit_hi = (1 - np.sqrt(beta)) ** 2, (1 + np.sqrt(beta)) ** 2
    ah = np.array([1e-4, crit_lo, crit_lo * (1 + 1e-9), crit_lo * (1 - 1e-6), crit_lo * 1.01, 0.5, 1.0, 1.7,
                   crit_hi * (1 - 1e-7), crit_hi * (1 + 1e-8), 2 * (1 + beta) * (1 - 1e-4)])
    h = ah / lr
    return NQM(h=h, c=np.linspace(0.1, 1.0, h.size), m0=np.linspace(0.2, 2.0, h.size) / h)


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
@pytest.mark.parametrize("batch_size", [1, 32])
def test_closed_form_equals_the_step_by_step_recursion(optimizer, batch_size):
    lr, steps = 0.4, 5000
    model = every_case(lr, BETA)
    if optimizer != "momentum":  # keep SGD and the preconditioner stable: 0 < a h < 2
        step = lr * model.h**-0.5 if optimizer == "preconditioned" else lr
        keep = step * model.h < 1.99
        model = NQM(h=model.h[keep], c=model.c[keep], m0=model.m0[keep])
    exact = nqm.expected_loss(model, optimizer, lr, batch_size, steps, momentum=BETA)
    reference = recursion(model, optimizer, lr, batch_size, steps)
    np.testing.assert_allclose(exact, reference, rtol=1e-10, atol=0)


def test_momentum_closed_form_at_a_long_horizon():
    """50 000 steps: slow directions with real eigenvalues next to fast, oscillating ones, for β = 0.9 and 0.99."""
    h, steps = np.geomspace(1.0, 1e-4, 6), 50_000
    model = NQM(h=h, c=1e-3 * h, m0=1 / h)
    for beta in (0.9, 0.99):
        exact = nqm.expected_loss(model, "momentum", 0.5, 4, steps, momentum=beta)
        np.testing.assert_allclose(exact, recursion(model, "momentum", 0.5, 4, steps, beta=beta), rtol=1e-10)
        assert exact[-1] < 0.1 * exact[0]  # the horizon reaches well into the decay


def test_diverging_settings_are_exact_too():
    model = NQM(h=np.array([1.0, 0.1]), c=np.array([0.5, 0.5]), m0=np.array([1.0, 1.0]))
    for optimizer, lr in [("sgd", 2.5), ("momentum", 4.0), ("preconditioned", 2.5)]:
        exact = nqm.expected_loss(model, optimizer, lr, 2, 60, momentum=BETA)
        np.testing.assert_allclose(exact, recursion(model, optimizer, lr, 2, 60), rtol=1e-9)
        assert exact[-1] > 1e3 * exact[0]
        assert nqm.steps_to_target(model, optimizer, lr, 2, 0.5 * exact[0]) == np.inf


# ------------------------------------------------------------------------------------ 3. noise-free limits


def test_noise_free_limits():
    h, m0, lr = np.geomspace(1.5, 0.01, 10), np.linspace(1.0, 3.0, 10), 0.9
    quiet, t = NQM(h=h, c=np.zeros(10), m0=m0), np.arange(401)
    sgd = nqm.expected_loss(quiet, "sgd", lr, 1, 400)
    np.testing.assert_allclose(sgd, 0.5 * np.sum(h * m0 * (1 - lr * h) ** (2 * t[:, None]), 1), rtol=1e-12)
    np.testing.assert_allclose(nqm.expected_loss(quiet, "preconditioned", lr, 1, 400, power=0.0), sgd, rtol=1e-14)
    # Without noise the batch size is irrelevant, and momentum 0 is SGD.
    np.testing.assert_allclose(nqm.expected_loss(quiet, "sgd", lr, 64, 400), sgd, rtol=1e-14)
    np.testing.assert_allclose(nqm.expected_loss(quiet, "momentum", lr, 1, 400, momentum=0.0), sgd, rtol=1e-14)
    noisy = NQM(h=h, c=np.linspace(0.1, 1, 10), m0=m0)
    np.testing.assert_allclose(nqm.expected_loss(noisy, "preconditioned", lr, 3, 400, power=0.0),
                               nqm.expected_loss(noisy, "sgd", lr, 3, 400), rtol=1e-14)


# ------------------------------------------------------------------------------------ 4. first passage


def test_steps_to_target_is_the_first_passage_even_where_the_loss_oscillates():
    rng = np.random.default_rng(0)
    horizon, non_monotone = 3000, 0
    cases = [(SMALL, "sgd", 0.3, 1), (SMALL, "preconditioned", 0.3, 8), (SMALL, "momentum", 0.1, 4),
             (SMALL, "momentum", 0.6, 256), (every_case(0.4, BETA), "momentum", 0.4, 2),
             # A direction starting far below its noise floor rises while the others fall: SGD's loss dips.
             (NQM(h=np.array([1.0, 0.02]), c=np.array([0.0, 5.0]), m0=np.array([1.0, 1e-3])), "sgd", 0.5, 1)]
    for model, optimizer, lr, batch_size in cases:
        losses = recursion(model, optimizer, lr, batch_size, horizon)
        non_monotone += bool(np.any(np.diff(losses) > 0))
        targets = np.r_[np.quantile(losses, rng.uniform(0, 1, 25)) * (1 + 1e-9), losses.min() / 2, losses[0]]
        for target in targets:
            expected = first_below(losses, target)
            got = nqm.steps_to_target(model, optimizer, lr, batch_size, target, max_steps=horizon, momentum=BETA)
            assert got == expected, (optimizer, lr, batch_size, target)
            # crossings back above the target after the first passage are what a bisection would get wrong
            non_monotone += bool(np.isfinite(expected) and np.any(losses[int(expected):] > target))
    assert non_monotone > 20


def test_steps_to_target_at_long_horizons():
    """Passages at 3·10^4 .. 8·10^5 steps, the target halfway between two consecutive losses, against every step."""
    h = np.geomspace(1.0, 1e-5, 6)
    model = NQM(h=h, c=1e-6 * h, m0=1 / h)
    for optimizer, lr in [("sgd", 0.2), ("momentum", 0.02), ("preconditioned", 5e-4)]:
        losses = nqm.expected_loss(model, optimizer, lr, 16, 1_000_000, momentum=BETA)
        for t in (30_000, 200_000, 800_000):
            target = 0.5 * (losses[t - 1] + losses[t])
            assert first_below(losses, target) == t
            assert nqm.steps_to_target(model, optimizer, lr, 16, target, momentum=BETA) == t


def test_steps_to_target_edges():
    model = NQM(h=np.array([1.0, 0.1]), c=np.array([0.1, 0.01]), m0=np.array([1.0, 1.0]))
    losses = nqm.expected_loss(model, "sgd", 0.5, 1, 100_000)
    floor = losses[-1]  # the stationary loss, E[L_∞], approached from above
    assert np.all(np.diff(losses) <= 0)
    assert nqm.steps_to_target(model, "sgd", 0.5, 1, model.loss0()) == 0
    assert nqm.steps_to_target(model, "sgd", 0.5, 1, 0.99 * floor) == np.inf  # below the noise floor
    assert nqm.steps_to_target(model, "sgd", 0.5, 1, 1.01 * floor, max_steps=10) == np.inf  # beyond max_steps
    assert nqm.steps_to_target(model, "sgd", 2.0, 1, 0.9 * model.loss0()) == np.inf  # η h = 2: no contraction
    # Unstable counts as never, even where the loss dips below the target before it diverges.
    dip, lr = NQM(h=np.array([1.0, 0.3]), c=np.zeros(2), m0=np.array([1e-12, 1.0])), 1 + np.sqrt(2)  # (1 − η h_1)² = 2
    losses = nqm.expected_loss(dip, "sgd", lr, 1, 50)
    assert losses.min() < 0.01 * losses[0] and losses[-1] > losses[0]
    assert nqm.steps_to_target(dip, "sgd", lr, 1, 0.01 * losses[0]) == np.inf


def test_best_steps_is_the_minimum_over_the_grid():
    lrs = np.geomspace(0.02, 1.9, 24)
    for optimizer in OPTIMIZERS:
        for batch_size in (1, 16, 512):
            target = 0.2 * SMALL.loss0()
            each = [nqm.steps_to_target(SMALL, optimizer, lr, batch_size, target, momentum=BETA) for lr in lrs]
            steps, lr = nqm.best_steps(SMALL, optimizer, batch_size, target, lrs=lrs, momentum=BETA)
            assert np.isfinite(steps) and steps == min(each)
            assert lr == max(x for x, s in zip(lrs, each, strict=True) if s == steps)  # ties: the larger lr


# ------------------------------------------------------------------------------------ 5. Zhang et al.'s facts


def fit_critical_batch(batch_size, steps):
    """S(B) = S_min (1 + B_crit / B), fitted in log space."""
    def model(b, log_s_min, log_b_crit):
        return log_s_min + np.log1p(np.exp(log_b_crit) / b)

    (log_s_min, log_b_crit), _ = curve_fit(model, batch_size, np.log(steps), p0=(np.log(steps.min()), np.log(64.0)))
    return np.exp(log_s_min), np.exp(log_b_crit)


def test_critical_batch_size_facts_of_zhang_et_al():
    model, target = nqm.power_law(1000, b_simple0=100.0), 0.05  # E[L_0] = 1
    batch_sizes = 2.0 ** np.arange(0, 13)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # best_steps warns if an optimum sits at the default grid's lower end
        curves = {o: nqm.steps_curve(model, o, batch_sizes, target, momentum=BETA) for o in OPTIMIZERS}
    b_crit = {}
    for optimizer, curve in curves.items():
        steps = curve["steps"]
        assert np.all(np.isfinite(steps)) and np.all(np.diff(steps) <= 0)
        ratio = steps[:-1] / steps[1:]  # S(B) / S(2B)
        assert np.all((ratio[:3] > 1.85) & (ratio[:3] < 2.15)), (optimizer, ratio)  # perfect scaling at small B
        assert ratio[-1] < 1.1, (optimizer, ratio)  # no gain from doubling at large B
        b_crit[optimizer] = fit_critical_batch(batch_sizes, steps)[1]
    # Momentum and the preconditioner extend perfect scaling: larger critical batch sizes than SGD's.
    assert b_crit["momentum"] > 4 * b_crit["sgd"] and b_crit["preconditioned"] > 4 * b_crit["sgd"], b_crit
    # At small batch sizes momentum brings nothing over plain SGD (its best η is about SGD's (1 − β)).
    sgd, mom = curves["sgd"], curves["momentum"]
    assert abs(mom["steps"][0] / sgd["steps"][0] - 1) < 0.05
    assert 0.5 < mom["lr"][0] / ((1 - BETA) * sgd["lr"][0]) < 2


# ------------------------------------------------------------------------------------ 6. bad inputs


@pytest.mark.parametrize(("call", "name"), [
    (lambda: NQM(h=np.array([1.0, -1.0]), c=np.ones(2), m0=np.ones(2)), "NQM.h"),
    (lambda: NQM(h=np.ones(2), c=np.ones(3), m0=np.ones(2)), "NQM.c"),
    (lambda: NQM(h=np.ones(2), c=np.ones(2), m0=np.array([1.0, np.nan])), "NQM.m0"),
    (lambda: nqm.expected_loss(SMALL, "adam", 0.1, 1, 10), "optimizer"),
    (lambda: nqm.expected_loss(SMALL, "sgd", 0.0, 1, 10), "lr"),
    (lambda: nqm.steps_to_target(SMALL, "sgd", -0.1, 1, 0.5), "lr"),
    (lambda: nqm.steps_to_target(SMALL, "sgd", 0.1, 0, 0.5), "batch_size"),
    (lambda: nqm.best_steps(SMALL, "momentum", 0.5, 0.5), "batch_size"),
    (lambda: nqm.expected_loss(SMALL, "momentum", 0.1, 1, 10, momentum=1.0), "momentum"),
    (lambda: nqm.steps_to_target(SMALL, "sgd", 0.1, 1, float("nan")), "target"),
    (lambda: nqm.expected_loss(SMALL, "sgd", 0.1, 1, -1), "steps"),
    (lambda: nqm.best_steps(SMALL, "sgd", 1, 0.5, lrs=[]), "lrs"),
    (lambda: nqm.power_law(0, b_simple0=1.0), "d"),
    (lambda: nqm.power_law(10, b_simple0=-1.0), "b_simple0"),
])
def test_bad_inputs_name_the_argument(call, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        call()


def test_a_model_that_is_not_an_nqm_is_a_type_error():
    with pytest.raises(TypeError, match="^nqm: expected an NQM"):
        nqm.expected_loss({"h": [1.0]}, "sgd", 0.1, 1, 10)


# ------------------------------------------------------------------------------------ 7. power_law


@pytest.mark.parametrize(("d", "exponent", "b_simple0", "loss0"), [(1000, 1.0, 100.0, 1.0), (37, 2.0, 3.5, 0.25)])
def test_power_law_is_what_was_asked(d, exponent, b_simple0, loss0):
    model = nqm.power_law(d, exponent=exponent, b_simple0=b_simple0, loss0=loss0)
    assert model.b_simple0() == pytest.approx(b_simple0, rel=1e-12)
    assert model.loss0() == pytest.approx(loss0, rel=1e-12)
    np.testing.assert_allclose(model.h, np.arange(1, d + 1) ** -exponent, rtol=1e-15)
    np.testing.assert_allclose(model.c / model.h, model.c[0] / model.h[0], rtol=1e-12)  # noise ∝ curvature
    np.testing.assert_allclose(model.h * model.m0, 2 * loss0 / d, rtol=1e-12)  # equal initial loss shares
