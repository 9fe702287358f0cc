"""The noisy quadratic model (NQM) of Zhang et al. (2019), solved exactly: a control for the critical batch size.

Zhang, Li, Nado, Martens, Sachdeva, Dahl, Shallue, Grosse, "Which algorithmic choices matter at which batch
sizes? Insights from a noisy quadratic model", NeurIPS 2019, arXiv:1907.04164.

**Model.** In the Hessian's eigenbasis the loss is L(θ) = ½ Σ_i h_i θ_i² (curvatures h_i > 0). A mini-batch of
B examples gives the gradient g_i = h_i θ_i + ξ_i, ξ_i ~ N(0, c_i / B), fresh every step and independent across
directions (c_i: the per-example gradient-noise variance along direction i); θ_i(0) has mean 0 and E θ_i(0)² = m0_i.
Directions never mix, so E[L_t] = ½ Σ_i h_i E[θ_i(t)²] is a sum of d one-dimensional problems.

**Optimizers**, per direction, learning rate η:

- ``"sgd"``: θ ← θ − η g.
- ``"momentum"``: heavy ball in optax's trace form, ``optax.sgd(η, momentum=β)``: v ← β v + g, θ ← θ − η v, v(0) = 0.
- ``"preconditioned"``: θ_i ← θ_i − η h_i^(−p) g_i, the diagonal preconditioner that stands in for Adam in Zhang
  et al. (p = ``power``, 0.5 by default; p = 0 is SGD).

**What is exact.** Everything but :func:`monte_carlo` is computed, not sampled, and any t costs O(d):

- SGD and the preconditioner, with a_i = η h_i^(−p) and r_i = (1 − a_i h_i)²:
  E θ_i(t)² = r_i^t m0_i + (a_i² c_i / B) Σ_{k<t} r_i^k, the geometric series summed in closed form.
- Momentum: x = (θ_i, v_i) follows x ← A x + (−η, 1) ξ_i, A = [[1 − η h_i, −η β], [h_i, β]], so its covariance is
  S_t = S_∞ + A^t (S_0 − S_∞) (A^t)ᵀ, with S_∞ the Lyapunov equation's closed-form solution and, by Cayley–Hamilton,
  A^t = U_t A − β U_{t−1} I, U_t = (λ_1^t − λ_2^t) / (λ_1 − λ_2) over A's eigenvalues, evaluated stably whether they
  are real, (nearly) repeated or complex. Its relative rounding error grows like ε E[L_∞] / E[L_t]: ~1e-14 usually,
  ~1e-10 while the loss sits 10⁵ times below its noise floor.

**Stability.** A setting is stable when every second moment contracts: 0 < a_i h_i < 2 (SGD, preconditioner),
0 < η h_i < 2 (1 + β) (momentum). :func:`expected_loss` is exact either way; step counts treat an unstable setting
as never reaching the target, even where its loss dips below the target before it diverges.

**Steps to a target** is the first t with E[L_t] <= target, found exactly although E[L_t] need not be monotone
(momentum oscillates; a direction that starts below its noise floor rises while others fall). E[L_t] − E[L_∞] is a
sum of terms w μ^t with real μ >= 0, each monotone in t, so over [t_a, t_b] it is at least its smaller end value;
momentum's complex pairs are bounded below by (2 w_12 − 2 |w_11|) β^t and its nearly repeated roots by an envelope.
A branch-and-bound keeps, leftmost first, the sub-intervals whose bound reaches the target and evaluates short ones
step by step, so no crossing is skipped (the bounds carry a slack far above their rounding error).

**Learning rates.** :func:`best_steps` takes the fewest steps over a grid of learning rates, by default
(:func:`default_lrs`) 16 per decade over the ten decades below the edge of stability; :func:`steps_curve` does so
at each batch size, giving the S(B) whose S_min and B_crit the study fits.
"""

from __future__ import annotations

import dataclasses
import numbers
import warnings

import numpy as np

OPTIMIZERS = ("sgd", "momentum", "preconditioned")
LR_DECADES, LR_PER_DECADE = 10, 16  # the default learning-rate grid (default_lrs)
_LEAF, _SPLIT = 16, 16  # the search evaluates intervals under 2 _LEAF steps directly and cuts others in <= _SPLIT
_TOL = 1e-9  # the bounds' relative slack, far above their rounding error, so that rounding prunes no crossing


@dataclasses.dataclass(frozen=True, eq=False)
class NQM:
    """A noisy quadratic: curvatures ``h``, per-example noise variances ``c`` and initial second moments ``m0``.

    The three are stored as read-only float copies; instances compare and hash by identity.
    """

    h: np.ndarray
    c: np.ndarray
    m0: np.ndarray

    def __post_init__(self):
        rules = {"h": ("> 0", "a quadratic needs positive curvatures; drop flat or negative directions"),
                 "c": (">= 0", "noise variances cannot be negative"),
                 "m0": ("> 0", "give every direction a positive initial second moment E[theta(0)^2]")}
        for name, (want, fix) in rules.items():
            value = np.array(getattr(self, name), dtype=float)
            value.setflags(write=False)
            object.__setattr__(self, name, value)
            if value.ndim != 1 or value.size == 0 or value.shape != np.shape(self.h):
                raise ValueError(f"NQM.{name}: expected a non-empty 1-d array shaped like h {np.shape(self.h)}; "
                                 f"received shape {value.shape}; pass h, c and m0 as 1-d arrays of one length")
            bad = ~np.isfinite(value) | ((value < 0) if name == "c" else (value <= 0))
            if bad.any():
                i = int(np.argmax(bad))
                raise ValueError(f"NQM.{name}: expected finite values {want}; received {name}[{i}] = {float(value[i])!r}; "
                                 f"{fix}")

    def loss0(self) -> float:
        """E[L_0] = ½ Σ h m0."""
        return float(0.5 * np.sum(self.h * self.m0))

    def b_simple0(self) -> float:
        """The simple noise scale at initialisation, tr(C) / |E g|² = Σ c / Σ h² m0 (McCandlish et al. 2018)."""
        return float(np.sum(self.c) / np.sum(self.h**2 * self.m0))


def power_law(d: int, *, exponent: float = 1.0, b_simple0: float, loss0: float = 1.0) -> NQM:
    """Zhang et al.'s NQM: h_i = i^−exponent, noise proportional to curvature (c = s h), equal initial loss shares.

    m0 makes every h_i m0_i equal and E[L_0] = ``loss0``; s makes :meth:`NQM.b_simple0` equal ``b_simple0``.

    >>> model = power_law(1000, b_simple0=200.0)
    >>> round(model.loss0(), 12), round(model.b_simple0(), 9), model.h[:3].round(4).tolist()
    (1.0, 200.0, [1.0, 0.5, 0.3333])
    """
    _check_int("d", d, lo=1)
    _check_number("exponent", exponent)
    _check_number("b_simple0", b_simple0, lo=0.0)
    _check_number("loss0", loss0, lo=0.0, strict=True)
    h = np.arange(1, d + 1, dtype=float) ** -float(exponent)
    m0 = 2.0 * loss0 / (d * h)
    return NQM(h=h, c=b_simple0 * np.sum(h**2 * m0) / np.sum(h) * h, m0=m0)


def expected_loss(nqm, optimizer, lr, batch_size, steps, *, momentum=0.9, power=0.5) -> np.ndarray:
    """E[L_t] for t = 0 .. ``steps``, exactly (see the module docstring); shape ``(steps + 1,)``.

    >>> model = NQM(h=np.array([1.0]), c=np.array([0.0]), m0=np.array([2.0]))
    >>> expected_loss(model, "sgd", 0.5, 1, 3).round(12).tolist()  # ½ h m0 (1 − η h)^(2t)
    [1.0, 0.25, 0.0625, 0.015625]
    """
    _check_int("steps", steps)
    dyn = _dynamics(nqm, optimizer, lr, batch_size, momentum, power)
    if isinstance(dyn, _Momentum) and not dyn.stable:  # diverging: the second-moment recursion, exact as well
        return _momentum_recursion(nqm, lr, batch_size, steps, momentum)
    t, chunk = np.arange(steps + 1), max(1, 2**20 // nqm.h.size)
    return np.concatenate([dyn.loss(t[i:i + chunk]) for i in range(0, steps + 1, chunk)])


def steps_to_target(nqm, optimizer, lr, batch_size, target, *, max_steps=10**7, momentum=0.9, power=0.5) -> float:
    """The first t <= ``max_steps`` with E[L_t] <= ``target``; ``np.inf`` if there is none or the setting is unstable.

    >>> model = NQM(h=np.array([1.0]), c=np.array([0.0]), m0=np.array([2.0]))
    >>> steps_to_target(model, "sgd", 0.5, 1, 0.05), steps_to_target(model, "sgd", 2.5, 1, 0.05)
    (3.0, inf)
    """
    _check_number("target", target)
    _check_int("max_steps", max_steps)
    return _first_passage(_dynamics(nqm, optimizer, lr, batch_size, momentum, power), float(target), max_steps)


def default_lrs(nqm, optimizer, *, momentum=0.9, power=0.5) -> np.ndarray:
    """The default grid, descending: η_edge · 10^(−k/16) for k = 1 .. 160, η_edge the edge of stability.

    η_edge = 2 / max h (SGD), 2 (1 + β) / max h (momentum), 2 / max h^(1−p) (preconditioner): above it the largest
    curvature diverges. Ten decades below it contain the optimum unless the noise floor forces a smaller η, which
    :func:`best_steps` warns about. Where the optimum is the stability edge itself (large B), the grid's top,
    η_edge · 10^(−1/16) = 0.87 η_edge, is the best it offers.
    """
    _dynamics(nqm, optimizer, 1.0, 1, momentum, power)  # checks the arguments
    curvature = {"sgd": nqm.h, "momentum": nqm.h / (1 + momentum), "preconditioned": nqm.h ** (1 - power)}[optimizer]
    return 2.0 / np.max(curvature) * 10.0 ** (-np.arange(1, LR_DECADES * LR_PER_DECADE + 1) / LR_PER_DECADE)


def best_steps(nqm, optimizer, batch_size, target, *, lrs=None, max_steps=10**7, momentum=0.9, power=0.5):
    """``(steps, lr)``: the fewest steps to ``target`` over the learning rates ``lrs`` (:func:`default_lrs` if None).

    Ties go to the larger learning rate; ``(inf, nan)`` if none reaches the target. Exact over the grid: each
    learning rate is searched up to the best count so far, a cap that prunes most of them at once.

    >>> steps, lr = best_steps(power_law(100, b_simple0=50.0), "sgd", 16, 0.1)
    >>> steps, round(lr, 4)
    (147.0, 0.7303)
    """
    _check_number("target", target)
    _check_int("max_steps", max_steps)
    grid = default_lrs(nqm, optimizer, momentum=momentum, power=power) if lrs is None else np.asarray(lrs, float)
    if grid.ndim != 1 or grid.size == 0:
        raise ValueError(f"lrs: expected a non-empty 1-d sequence of learning rates; received shape {grid.shape}")
    best, best_lr = np.inf, np.nan
    coarse = np.arange(0, grid.size, 8)
    for stage in (coarse, np.setdiff1d(np.arange(grid.size), coarse)):
        if np.isfinite(best):  # nearest the best so far first, so that the cap falls fast
            stage = stage[np.argsort(np.abs(np.log(grid[stage] / best_lr)), kind="stable")]
        for lr in grid[stage]:
            cap = max_steps if np.isinf(best) else int(best)
            steps = _first_passage(_dynamics(nqm, optimizer, lr, batch_size, momentum, power), float(target), cap)
            if steps < best or (steps == best and lr > best_lr):
                best, best_lr = steps, float(lr)
    if lrs is None and np.isfinite(best) and best_lr == grid.min():
        warnings.warn(f"best_steps: the best learning rate, {best_lr:.3g}, is the smallest of the default grid; "
                      "pass a grid reaching lower as lrs=", stacklevel=2)
    return best, best_lr


def steps_curve(nqm, optimizer, batch_sizes, target, **kw) -> dict[str, np.ndarray]:
    """:func:`best_steps` at each batch size: arrays ``"batch_size"``, ``"steps"`` (inf: never) and ``"lr"``."""
    rows = np.array([best_steps(nqm, optimizer, b, target, **kw) for b in batch_sizes], dtype=float).reshape(-1, 2)
    return {"batch_size": np.asarray(batch_sizes, float), "steps": rows[:, 0], "lr": rows[:, 1]}


def monte_carlo(nqm, optimizer, lr, batch_size, steps, *, n_paths=2000, seed=0, momentum=0.9, power=0.5):
    """``(mean, standard error of the mean)`` of L_t over ``n_paths`` simulated runs, t = 0 .. ``steps``.

    θ_i(0) ~ N(0, m0_i), g_i = h_i θ_i + ξ_i with ξ_i ~ N(0, c_i / B), and the update rules of the module docstring.
    """
    _dynamics(nqm, optimizer, lr, batch_size, momentum, power)  # checks the arguments
    _check_int("steps", steps)
    _check_int("n_paths", n_paths, lo=2)
    rng = np.random.default_rng(seed)
    step = lr * nqm.h**-power if optimizer == "preconditioned" else lr
    theta = rng.standard_normal((n_paths, nqm.h.size)) * np.sqrt(nqm.m0)
    v, noise_sd, losses = np.zeros_like(theta), np.sqrt(nqm.c / batch_size), np.empty((steps + 1, n_paths))
    for t in range(steps + 1):
        losses[t] = 0.5 * theta**2 @ nqm.h
        g = nqm.h * theta + noise_sd * rng.standard_normal(theta.shape)
        v = momentum * v + g if optimizer == "momentum" else g
        theta = theta - step * v
    return losses.mean(1), losses.std(1, ddof=1) / np.sqrt(n_paths)


# --------------------------------------------------------------------------------------------- the exact dynamics


class _Dynamics:
    """One setting: E[L_t] at any t (``loss``) and lower bounds of it over intervals of t (``lower``).

    E[L_t] = loss_inf + Σ_k W_k MU_k^t (+ terms within ± env_coef t² exp(2 t env_log)), MU_k >= 0, so each W_k MU_k^t
    is monotone and at least its smaller end value. Subclasses set these arrays (d × terms) when the setting is stable.
    """

    def lower(self, ta, tb):
        ta, tb = np.asarray(ta, float)[:, None], np.asarray(tb, float)[:, None]
        modes = np.minimum(self.W * self.MU ** ta[..., None], self.W * self.MU ** tb[..., None]).sum((1, 2))
        t_peak = np.clip(-1.0 / self.env_log, ta, tb)  # t² ρ^2t rises until t = 1 / ln(1/ρ), then falls
        envelope = np.sum(self.env_coef * t_peak**2 * np.exp(2 * t_peak * self.env_log), 1)
        slack = _TOL * (np.sum(self.scale * np.exp(ta * self.scale_log), 1) + abs(self.loss_inf))
        return self.loss_inf + modes - envelope - slack


class _Diagonal(_Dynamics):
    """SGD and the preconditioner: E θ(t)² = r^t m0 + n Σ_{k<t} r^k with r = (1 − a h)², n = a² c / B."""

    def __init__(self, nqm, step, batch_size):
        h, ah = nqm.h, step * nqm.h
        self.h, self.m0, self.noise, self.loss0 = h, nqm.m0, step**2 * nqm.c / batch_size, nqm.loss0()
        self.stable = bool(np.all((ah > 0) & (ah < 2)))
        with np.errstate(divide="ignore", invalid="ignore"):  # log r = −inf where a h = 1
            self.log_r = 2 * np.where(ah < 1, np.log1p(-ah), np.log(np.abs(ah - 1)))
        if self.stable:
            m_inf = step * nqm.c / (batch_size * h * (2 - ah))
            self.loss_inf = float(0.5 * np.sum(h * m_inf))
            self.W, self.MU = (0.5 * h * (nqm.m0 - m_inf))[:, None], np.exp(self.log_r)[:, None]
            self.env_coef, self.env_log = np.zeros_like(h), -np.ones_like(h)
            self.scale, self.scale_log = 0.5 * h * (nqm.m0 + m_inf), self.log_r

    def loss(self, t):
        t = np.asarray(t)[:, None]
        with np.errstate(over="ignore", invalid="ignore"):  # diverging settings overflow to inf
            noise = np.where(self.noise == 0, 0.0, self.noise * _geometric_sum(t, self.log_r))
            return 0.5 * (_power(t, self.log_r) * self.m0 + noise) @ self.h


class _Momentum(_Dynamics):
    """Heavy ball: (θ, v) ← A (θ, v) + (−η, 1) ξ with A = [[1 − η h, −η β], [h, β]] (see the module docstring)."""

    def __init__(self, nqm, lr, batch_size, beta):
        h, ah, one = nqm.h, lr * nqm.h, np.ones_like(nqm.h)
        self.h, self.lr, self.beta, self.one_minus_ah, self.loss0 = h, lr, beta, 1 - ah, nqm.loss0()
        self.stable = bool(np.all((ah > 0) & (ah < 2 * (1 + beta))))
        if not self.stable:
            return
        k = nqm.c / batch_size / ((1 - beta) * (2 * (1 + beta) - ah))  # S_∞ = [[η(1+β)k/h, −ηk], [−ηk, 2k]]
        self.loss_inf = float(0.5 * np.sum(lr * (1 + beta) * k))
        self.D = d11, d12, d22 = nqm.m0 - lr * (1 + beta) * k / h, lr * k, -2 * k  # S_0 − S_∞
        # A's eigenvalues solve λ² − tr λ + β = 0; the discriminant, factored, stays accurate near a repeated root.
        tr, sb = 1 + beta - ah, np.sqrt(beta)
        disc = ((1 - sb) ** 2 - ah) * ((1 + sb) ** 2 - ah)
        self.real, self.negative, delta = disc >= 0, tr < 0, np.sqrt(np.abs(disc))
        one_minus_l1 = np.where(tr >= 0, 2 * ah / (1 - beta + ah + delta),  # 1 − |λ_1|, |λ_1| >= |λ_2|, unrounded
                                2 * (2 * (1 + beta) - ah) / (3 + beta - ah + delta))
        self.log_l1 = np.where(self.real, np.log1p(-one_minus_l1), 0.5 * np.log(beta))  # log |λ_1|
        self.log_q = np.log1p(-np.where(self.real, delta * np.exp(-self.log_l1), 0.0))  # real: q = λ_2 / λ_1 ∈ (0, 1]
        self.phi, self.sin_phi = np.arctan2(delta, np.abs(tr)), delta / (2 * sb)  # complex: ±λ_1 = √β e^(iφ)
        # For the bound: e1ᵀ A^t = λ_1^t p_1 + λ_2^t p_2 with a = e1ᵀ A, p_1 = (a − λ_2 e1ᵀ) / (λ_1 − λ_2) and
        # p_2 = (λ_1 e1ᵀ − a) / (λ_1 − λ_2); so ½ h (E θ_t² − E θ_∞²) = w11 λ_1^2t + 2 w12 β^t + w22 λ_2^2t.
        l1 = np.where(self.real, np.where(self.negative, -1, 1) * np.exp(self.log_l1), (tr + 1j * delta) / 2)
        l2 = np.where(self.real, beta / l1, np.conj(l1))
        with np.errstate(divide="ignore", invalid="ignore"):  # λ_1 = λ_2 only where `near` drops the modes
            p1, p2 = (l1 - beta, -lr * beta * one) / (l1 - l2), (beta - l2, lr * beta * one) / (l1 - l2)
            w11, w12, w22 = self._form(p1, p1), self._form(p1, p2), self._form(p2, p2)  # ½ h p_jᵀ D p_k
        # Complex: 2 Re(w11 λ_1^2t) + 2 w12 β^t >= (2 w12 − 2 |w11|) β^t.
        W = np.where(self.real, np.stack([w11, 2 * w12, w22]).real, [2 * w12.real - 2 * np.abs(w11), 0 * one, 0 * one])
        MU = np.where(self.real, np.stack([l1**2, beta * one, l2**2]).real, [beta * one, 0 * one, 0 * one])
        # Nearly repeated roots make the modes ill-conditioned; there |U_t| <= t |λ_1|^(t−1) and
        # |½ h (E θ_t² − E θ_∞²)| <= |G|_F (U_t² + U_{t−1}²), G = ½ h P D Pᵀ, P = [a; −β e1ᵀ], give an envelope.
        near = np.abs(l1 - l2) < 1e-3 * np.abs(l1)
        self.W, self.MU = np.where(near, 0.0, W).T, MU.T
        a, e = (1 - ah, -lr * beta * one), (-beta * one, 0 * one)
        g_norm = np.sqrt(self._form(a, a) ** 2 + 2 * self._form(a, e) ** 2 + self._form(e, e) ** 2)
        rho2 = np.exp(2 * self.log_l1)
        self.env_coef, self.env_log = np.where(near, g_norm * (1 + 1 / rho2) / rho2, 0.0), self.log_l1
        p_norm = np.hypot(np.abs(p1[0]), np.abs(p1[1])) + np.hypot(np.abs(p2[0]), np.abs(p2[1]))
        self.scale = np.where(near, 0.0, 0.5 * h * p_norm**2 * np.sqrt(d11**2 + 2 * d12**2 + d22**2))
        self.scale_log = 2 * self.log_l1

    def _form(self, p, q):
        """½ h pᵀ (S_0 − S_∞) q for row vectors p, q given as (first, second) components."""
        d11, d12, d22 = self.D
        return 0.5 * self.h * (p[0] * q[0] * d11 + (p[0] * q[1] + p[1] * q[0]) * d12 + p[1] * q[1] * d22)

    def _u(self, t):
        """U_t = (λ_1^t − λ_2^t) / (λ_1 − λ_2) for t >= 0, shape (len(t), d), by each direction's own formula."""
        t, u, r, c = t[:, None], np.empty((t.size, self.h.size)), self.real, ~self.real
        u[:, r] = np.exp((t - 1) * self.log_l1[r]) * _geometric_sum(t, self.log_q[r])
        u[:, c] = np.exp((t - 1) * self.log_l1[c]) * np.sin(t * self.phi[c]) / self.sin_phi[c]
        return np.where(self.negative & ((t - 1) % 2 == 1), -u, u)  # tr < 0: U_t(A) = (−1)^(t−1) U_t(−A)

    def loss(self, t):
        t = np.asarray(t)
        times = np.union1d(t, np.maximum(t - 1, 0))  # U_t and U_{t−1} from one evaluation
        u_all = self._u(times)
        u, u_prev = u_all[np.searchsorted(times, t)], u_all[np.searchsorted(times, np.maximum(t - 1, 0))]
        row = (u * self.one_minus_ah - self.beta * u_prev, -self.lr * self.beta * u)  # e1ᵀ A^t = U_t a − β U_{t−1} e1ᵀ
        return np.where(t == 0, self.loss0, self.loss_inf + np.sum(self._form(row, row), 1))


def _power(t, log_r):
    """r^t = exp(t log r), with r^0 = 1 also for r = 0."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(t == 0, 1.0, np.exp(t * log_r))


def _geometric_sum(t, log_r):
    """Σ_{k<t} r^k = (r^t − 1) / (r − 1) with r = exp(log_r), accurate for r near 1, r = 1 and r = 0."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        s = np.where(log_r == 0, t, np.expm1(t * log_r) / np.expm1(log_r))
    return np.where(t == 0, 0.0, np.where(np.isneginf(log_r), 1.0, s))


def _momentum_recursion(nqm, lr, batch_size, steps, beta):
    """E[L_t] from (E θ², E θv, E v²) iterated step by step; used for diverging momentum settings."""
    h, noise = nqm.h, nqm.c / batch_size
    tt, tv, vv, out = nqm.m0.copy(), np.zeros_like(h), np.zeros_like(h), np.empty(steps + 1)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            out[t] = 0.5 * np.sum(h * tt)
            vv, tv = beta**2 * vv + 2 * beta * h * tv + h**2 * tt + noise, beta * tv + h * tt  # v' = βv + hθ + ξ
            tt, tv = tt - 2 * lr * tv + lr**2 * vv, tv - lr * vv  # θ' = θ − η v'
    out[np.maximum.accumulate(~np.isfinite(out))] = np.inf  # overflow (then inf − inf) is divergence
    return out


def _first_passage(dyn, target, max_steps):
    """Branch-and-bound for the first t in [0, max_steps] with dyn.loss(t) <= target (see the module docstring)."""
    if not dyn.stable or target < 0:  # E[L_t] >= 0
        return np.inf
    if dyn.loss0 <= target:
        return 0.0
    if max_steps < 1 or dyn.lower([1], [max_steps])[0] > target:  # one bound over everything prunes most settings
        return np.inf
    stack = [(1, max_steps)]  # disjoint intervals [a, b], the leftmost on top
    while stack:
        a, b = stack.pop()
        width = b - a + 1
        if width < 2 * _LEAF:
            hit = np.flatnonzero(dyn.loss(np.arange(a, b + 1)) <= target)
            if hit.size:
                return float(a + hit[0])
            continue
        # Geometric pieces at the root (the loss moves on every time scale), equal ones below; none under _LEAF.
        offsets = np.geomspace(_LEAF, width, _SPLIT) if a == 1 else np.linspace(0, width, _SPLIT + 1)[1:]
        cuts = [a]
        for x in (a + offsets[:-1]).astype(np.int64).tolist():
            if x - cuts[-1] >= _LEAF and b + 1 - x >= _LEAF:
                cuts.append(x)
        cuts = np.array(cuts + [b + 1] if len(cuts) > 1 else [a, a + width // 2, b + 1])
        low = dyn.lower(cuts[:-1], cuts[1:] - 1)
        stack += [(int(cuts[i]), int(cuts[i + 1] - 1)) for i in np.flatnonzero(low <= target)[::-1]]
    return np.inf


def _dynamics(nqm, optimizer, lr, batch_size, momentum, power):
    """The checked arguments' exact dynamics; momentum with β = 0 is SGD."""
    if not isinstance(nqm, NQM):
        raise TypeError(f"nqm: expected an NQM, e.g. power_law(1000, b_simple0=100.0); received {type(nqm).__name__}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer: expected one of {OPTIMIZERS}; received {optimizer!r}")
    _check_number("lr", lr, lo=0.0, strict=True)
    _check_number("batch_size", batch_size, lo=1.0)
    _check_number("momentum", momentum, lo=0.0)
    if momentum >= 1:
        raise ValueError(f"momentum: expected 0 <= momentum < 1; received {momentum!r}")
    _check_number("power", power)
    if optimizer == "momentum" and momentum > 0:
        return _Momentum(nqm, float(lr), float(batch_size), float(momentum))
    step = lr * nqm.h ** -float(power) if optimizer == "preconditioned" else float(lr)
    return _Diagonal(nqm, step, float(batch_size))


def _check_number(name, x, lo=None, strict=False):
    if isinstance(x, bool) or not isinstance(x, numbers.Real) or not np.isfinite(x):
        raise ValueError(f"{name}: expected a finite real number; received {x!r}")
    if lo is not None and (x <= lo if strict else x < lo):
        raise ValueError(f"{name}: expected {name} {'>' if strict else '>='} {lo:g}; received {x!r}")


def _check_int(name, x, lo=0):
    if isinstance(x, bool) or not isinstance(x, numbers.Integral) or x < lo:
        raise ValueError(f"{name}: expected an integer >= {lo}; received {x!r}")
