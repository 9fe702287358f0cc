"""The study's statistics: per-seed fits of the steps-to-target curve, intervals whose coverage is checked, the
hyperbola tested against its rivals, and the family-wise rule verdicts follow.

Pure NumPy: arrays in, arrays or small dicts out; nothing here reads MLflow or draws.

**Per-seed fits.** Every seed gives one curve S(B) (its fewest steps over learning rates at each batch size),
so every seed gives one fit of McCandlish et al.'s hyperbola S(B) = S_min (1 + B_crit / B), computed in log
space (:func:`fit_hyperbola`, vectorised over any leading axes: seeds, synthetic sweeps). A summary over seeds
is the mean of the logs (the geometric mean) with a Student-t interval on the log scale (:func:`t_interval`): with
n seeds, exp(mean ± t_{n-1} sd / √n). Paired comparisons (one optimizer's B_crit over another's, seed k against
seed k) are the same interval on the per-seed log ratios.

**Bounds.** A per-seed B_crit outside the batch sizes it was fitted on is not measured: the curve only says
B_crit is at least the largest B (perfect scaling throughout) or at most the smallest (no scaling at all). Such a
seed is *censored*; when any seed is, the summary is a bound (``≥ x`` / ``≤ x``, :class:`Summary`), never a number
that enters a ratio or a slope.

**Coverage.** :func:`coverage` generates synthetic sweeps from a known hyperbola with the study's batch sizes,
seed count, evaluation cadence and measured noise (lognormal per cell, and per seed), runs the same per-seed
fits and intervals on them, and counts how often the interval holds the true B_crit. The report prints that
number beside the intervals it describes.

**Rivals of the hyperbola.** :func:`compare_models` fits the hyperbola, a pure power law S = a B^k and a broken
power law (slope k1 below a break B_b, k2 above) to the median curve over seeds, predicts each batch size from a
fit that left it out, and scores each model by its mean squared prediction error in units of the seeds' own
variance at that batch size; the hyperbola's χ²/dof uses the same variance.

**Family-wise rule.** :func:`holm` adjusts the p-values of one section's comparisons (Holm 1979); a comparison
is resolved when its adjusted p-value is below 0.05.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

GRID = 481  # candidate log B_crit values per fit (before the parabolic refinement)
SPAN = 4.0  # the candidates span this many decades beyond the batch sizes fitted, on each side


def fit_hyperbola(batch_sizes, log_steps) -> dict[str, np.ndarray]:
    """Least-squares fit of log S = log S_min + log(1 + B_crit / B) along the last axis of ``log_steps``.

    ``log_steps[..., j]`` is log S at ``batch_sizes[j]`` (NaN or inf: not measured, left out). For each
    candidate B_crit the best log S_min is the mean residual, so the fit is a one-dimensional search over
    log B_crit (a grid of :data:`GRID` points spanning :data:`SPAN` decades beyond the batch sizes on each side,
    then a golden-section search between the best grid point's neighbours). Returns arrays over the leading axes:
    ``B_crit``, ``S_min``, ``E_min`` (= S_min B_crit), ``sse`` (of log S), ``n`` (points used) and ``censored``
    (+1: B_crit above the largest B fitted, -1: below the smallest, 0: inside). With fewer than 3 points every
    value is NaN.

    >>> B = np.array([1, 4, 16, 64, 256, 1024.0])
    >>> f = fit_hyperbola(B, np.log(100 * (1 + 50 / B)))
    >>> round(float(f["B_crit"]), 3), round(float(f["S_min"]), 3), int(f["censored"])
    (50.0, 100.0, 0)
    """
    B = np.asarray(batch_sizes, float)
    y = np.asarray(log_steps, float)
    ok = np.isfinite(y)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore"):  # a curve with no point: log(-inf) is NaN, and its fit is NaN below
        lo_b = np.log(np.where(ok, B, np.inf).min(axis=-1, initial=np.inf))
        hi_b = np.log(np.where(ok, B, -np.inf).max(axis=-1, initial=-np.inf))
    grid = np.linspace(np.log(B.min()) - SPAN * np.log(10), np.log(B.max()) + SPAN * np.log(10), GRID)
    f = np.log1p(np.exp(grid[:, None] - np.log(B)[None, :]))  # (G, nB)
    yz = np.where(ok, y, 0.0)[..., None, :]  # (..., 1, nB)
    w = ok[..., None, :].astype(float)
    r = (yz - f) * w
    mean = r.sum(-1) / np.maximum(n[..., None], 1)
    sse = (((yz - f - mean[..., None]) * w) ** 2).sum(-1)  # (..., G)
    k = np.argmin(sse, axis=-1)
    step = grid[1] - grid[0]
    y0, w0 = yz[..., 0, :], w[..., 0, :]

    def sse_at(c):  # the profile SSE at log B_crit = c (any leading shape)
        fc = np.log1p(np.exp(c[..., None] - np.log(B)))
        res = (y0 - fc) * w0
        m = res.sum(-1) / np.maximum(n, 1)
        return (((y0 - fc - m[..., None]) * w0) ** 2).sum(-1)

    a, b = grid[k] - step, grid[k] + step  # golden-section search inside the best grid cell's neighbours
    g = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c1, c2 = b - g * (b - a), a + g * (b - a)
        left = sse_at(c1) <= sse_at(c2)
        a, b = np.where(left, a, c1), np.where(left, c2, b)
    c = np.clip((a + b) / 2, grid[0], grid[-1])
    fc = np.log1p(np.exp(c[..., None] - np.log(B)))
    log_smin = ((yz[..., 0, :] - fc) * w[..., 0, :]).sum(-1) / np.maximum(n, 1)
    sse_c = (((yz[..., 0, :] - fc - log_smin[..., None]) * w[..., 0, :]) ** 2).sum(-1)
    bad = n < 3
    nan = np.where(bad, np.nan, 1.0)
    return {"B_crit": np.exp(c) * nan, "S_min": np.exp(log_smin) * nan, "E_min": np.exp(c + log_smin) * nan,
            "sse": sse_c * nan, "n": n,
            "censored": np.where(bad, 0, np.where(c > hi_b, 1, np.where(c < lo_b, -1, 0)))}


def t_interval(logs, level: float = 0.95, axis: int = -1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """exp of the mean of ``logs`` along ``axis`` and of its Student-t interval at ``level`` (NaN: a value not
    measured, left out); the interval is NaN with fewer than 2 values.

    >>> est, lo, hi = t_interval(np.log([1.0, 2.0, 4.0]))
    >>> round(float(est), 6), bool(lo < 2 < hi)
    (2.0, True)
    """
    x = np.asarray(logs, float)
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    m = np.where(ok, x, 0).sum(axis=axis) / np.maximum(n, 1)
    dev = np.where(ok, x - np.expand_dims(m, axis), 0.0)
    sd = np.sqrt((dev ** 2).sum(axis=axis) / np.maximum(n - 1, 1))
    t = _st.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1))
    half = np.where(n >= 2, t * sd / np.sqrt(np.maximum(n, 1)), np.nan)
    est = np.where(n >= 1, np.exp(m), np.nan)
    return est, np.exp(m - half), np.exp(m + half)


def t_pvalue(logs, axis: int = -1) -> np.ndarray:
    """Two-sided p-value of the one-sample t-test that the mean of ``logs`` is 0 (a ratio of 1); NaN under 2
    values, 0 when every value has the same non-zero sign and no spread."""
    x = np.asarray(logs, float)
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    m = np.where(ok, x, 0).sum(axis=axis) / np.maximum(n, 1)
    dev = np.where(ok, x - np.expand_dims(m, axis), 0.0)
    sd = np.sqrt((dev ** 2).sum(axis=axis) / np.maximum(n - 1, 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        tstat = m / (sd / np.sqrt(n))
    p = 2 * _st.t.sf(np.abs(tstat), np.maximum(n - 1, 1))
    p = np.where(sd == 0, np.where(m == 0, 1.0, 0.0), p)
    return np.where(n >= 2, p, np.nan)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN left as NaN, and out of the family's size).

    >>> holm([0.01, 0.04, 0.03, np.nan]).round(3).tolist()
    [0.03, 0.06, 0.06, nan]
    """
    p = np.asarray(pvalues, float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return out


@dataclass(frozen=True)
class Summary:
    """A quantity summarised over seeds: ``value [lo, hi]`` (a geometric mean and its t-interval), or a bound.

    ``bound`` is ``""`` (a measurement), ``">="`` (at least ``value``: a seed's fit put it above the range
    measured) or ``"<="``; a bound has no interval. ``n`` seeds entered it.
    """

    value: float
    lo: float
    hi: float
    n: int
    bound: str = ""

    @property
    def measured(self) -> bool:
        """A finite value that is not a bound: the only kind that may enter a ratio, a slope or a verdict."""
        return not self.bound and bool(np.isfinite(self.value))

    def text(self, fmt: str = ".3g") -> str:
        """``174 [167, 184]`` (``64 (every seed)`` without spread: :func:`span_text`), ``≥ 1024``, or ``–``."""
        if not np.isfinite(self.value):
            return "–"
        if self.bound:
            return f"{'≥' if self.bound == '>=' else '≤'} {format(self.value, fmt)}"
        if not (np.isfinite(self.lo) and np.isfinite(self.hi)):
            return format(self.value, fmt)
        return span_text(self.value, self.lo, self.hi, fmt)


def span_text(est: float, lo: float, hi: float, fmt: str = ".3g") -> str:
    """``174 [167, 184]``; ``64 (every seed)`` when the interval has no width: every seed gave the same value (a
    batch size on a grid, a band of grid steps), which a zero-width interval would print as certain.

    An interval narrower than ``fmt`` prints (``-0.90 [-0.90, -0.90]``) gets the digits that tell its ends apart,
    up to four more.

    >>> span_text(174.2, 167.0, 184.1, ".0f"), span_text(64.0, 64.0, 64.0, ".0f"), span_text(-0.9, -0.9 - 1e-16, -0.9, ".2f")
    ('174 [167, 184]', '64 (every seed)', '-0.90 (every seed)')
    >>> span_text(-0.9001, -0.9032, -0.8985, ".2f"), span_text(0.50012, 0.50004, 0.50031, ".3g")
    ('-0.900 [-0.903, -0.898]', '0.5001 [0.5, 0.5003]')
    """
    if abs(hi - lo) <= 1e-9 * max(1.0, abs(est)):  # no spread but the arithmetic's rounding
        return f"{format(est, fmt)} (every seed)"
    for extra in range(5):
        f = _more_digits(fmt, extra)
        if format(lo, f) != format(hi, f):
            break
    return f"{format(est, f)} [{format(lo, f)}, {format(hi, f)}]"


def _more_digits(fmt: str, extra: int) -> str:
    """``.2f`` with ``extra`` more digits (``.4f`` for 2); other formats as they are but their precision."""
    m = re.fullmatch(r"([^.]*)\.(\d+)([fge%])", fmt)
    return fmt if m is None or extra == 0 else f"{m.group(1)}.{int(m.group(2)) + extra}{m.group(3)}"


def seed_fits(batch_sizes, per_seed_steps) -> dict[str, np.ndarray]:
    """Each seed's hyperbola fit from a (B × seeds) table of steps (inf or NaN: not measured): arrays over seeds of
    ``B_crit``, ``S_min``, ``E_min``, ``censored`` (:func:`fit_hyperbola`) and ``edge``, the largest B (censored
    above) or the smallest B (censored below) that seed's curve was fitted on; a seed with fewer than 3 points has
    NaN values and censored 0."""
    B = np.asarray(batch_sizes, float)
    S = np.asarray(per_seed_steps, float).T  # (seeds, B)
    logs = np.log(np.where(np.isfinite(S) & (S > 0), S, np.nan))
    fit = fit_hyperbola(B, logs)
    reached = np.isfinite(logs)
    top = np.where(reached, B, -np.inf).max(axis=1, initial=-np.inf)
    bottom = np.where(reached, B, np.inf).min(axis=1, initial=np.inf)
    fit["edge"] = np.where(fit["censored"] > 0, top, np.where(fit["censored"] < 0, bottom, np.nan))
    return fit


def summarise(values, censored=None, edge=None, level: float = 0.95) -> Summary:
    """A positive quantity over seeds: its geometric mean with the t-interval on the log scale; a bound when some
    seed's value is censored (``censored`` +1 above / -1 below, ``edge`` the seed's measured end): ``≥`` the
    largest edge of the seeds censored above (or ``≤`` the smallest below), which is what the curves show."""
    v = np.asarray(values, float)
    cens = np.zeros(len(v), int) if censored is None else np.asarray(censored, int)
    ok = np.isfinite(v) & (v > 0)
    if not ok.any():
        return Summary(np.nan, np.nan, np.nan, 0)
    if (cens[ok] != 0).any():
        e = np.asarray(edge, float)[ok]
        up = (cens[ok] > 0).sum() >= (cens[ok] < 0).sum()
        edge_value = np.nanmax(e[cens[ok] > 0]) if up else np.nanmin(e[cens[ok] < 0])
        return Summary(float(edge_value), np.nan, np.nan, int(ok.sum()), ">=" if up else "<=")
    est, lo, hi = t_interval(np.log(v[ok]), level)
    return Summary(float(est), float(lo), float(hi), int(ok.sum()))


def summarise_b_crit(batch_sizes, per_seed_steps, level: float = 0.95) -> dict[str, Summary]:
    """B_crit, S_min and E_min over seeds from a (B × seeds) table of steps (inf or NaN: not reached).

    Each seed is fitted alone (:func:`seed_fits`); a seed whose B_crit falls outside the batch sizes it was fitted
    on makes B_crit a bound (S_min then has no value, as it is not separated from B_crit), while E_min = S_min
    B_crit, the curve's small-B end, is still measured when B_crit is censored above."""
    f = seed_fits(batch_sizes, per_seed_steps)
    out = {"B_crit": summarise(f["B_crit"], f["censored"], f["edge"], level)}
    s_min = summarise(f["S_min"], level=level)
    out["S_min"] = s_min if not out["B_crit"].bound else Summary(np.nan, np.nan, np.nan, s_min.n)
    above = np.where(f["censored"] < 0, np.nan, f["E_min"])
    out["E_min"] = summarise(above, level=level) if not (f["censored"] < 0).any() else Summary(np.nan, np.nan, np.nan, 0)
    return out


def seed_slopes(batch_sizes, per_seed_steps, max_b: float) -> np.ndarray:
    """Each seed's least-squares slope of log steps against log B over the batch sizes up to ``max_b`` it reached
    (NaN with fewer than 2 of them)."""
    B = np.asarray(batch_sizes, float)
    S = np.asarray(per_seed_steps, float).T
    out = []
    for row in S:
        ok = (B <= max_b) & np.isfinite(row) & (row > 0)
        out.append(np.polyfit(np.log(B[ok]), np.log(row[ok]), 1)[0] if ok.sum() >= 2 else np.nan)
    return np.array(out, float)


def mean_interval(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """The mean of ``values`` over seeds, its t-interval and the p-value that the mean is 0 (a slope's −1 is
    tested by passing slope + 1)."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return np.nan, np.nan, np.nan, np.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, np.nan, np.nan, np.nan
    half = _st.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return m, m - half, m + half, float(t_pvalue(x))


def difference_interval(a, b, level: float = 0.95) -> tuple[float, float, float, float]:
    """mean(a) - mean(b) over two independent sets of seeds, its Welch t-interval (unequal variances,
    Welch-Satterthwaite degrees of freedom) and the two-sided p-value of no difference (NaN: a value not
    measured, left out; NaN interval with fewer than 2 values on a side).

    >>> d, lo, hi, p = difference_interval([0.94, 0.95, 0.93], [0.91, 0.92, 0.90])
    >>> round(d, 3), bool(lo < 0.03 < hi), bool(p < 0.05)
    (0.03, True, True)
    """
    a, b = (np.asarray(v, float) for v in (a, b))
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if not (len(a) and len(b)):
        return np.nan, np.nan, np.nan, np.nan
    d = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return d, np.nan, np.nan, np.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:
        return d, d, d, (1.0 if d == 0 else 0.0)
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = _st.t.ppf(0.5 + level / 2, dof) * se
    return d, float(d - half), float(d + half), float(2 * _st.t.sf(abs(d) / se, dof))


def paired_ratio(a, b, censored_a=None, censored_b=None, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """a / b seed by seed (the same seed: the same initialisation and data order), summarised as the geometric
    mean with its t-interval and the p-value of a ratio of 1: ``(estimate, lo, hi, p, n)``; a seed censored in
    either is left out, and with any such seed the comparison is not made (NaNs): a bound is not a value."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    cens = np.zeros(len(a), bool)
    for c in (censored_a, censored_b):
        if c is not None:
            cens |= np.asarray(c) != 0
    if cens.any():
        return np.nan, np.nan, np.nan, np.nan, int((~cens).sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(a) - np.log(b)
    logs = logs[np.isfinite(logs)]
    if not len(logs):
        return np.nan, np.nan, np.nan, np.nan, 0
    est, lo, hi = t_interval(logs, level)
    return float(est), float(lo), float(hi), float(t_pvalue(logs)), int(len(logs))


def coverage(batch_sizes, b_crit: float, s_min: float, *, n_seeds: int, sigma_cell: float, sigma_seed: float = 0.0,
             eval_every=None, n_sweeps: int = 500, level: float = 0.95, seed: int = 0) -> dict[str, float]:
    """How often the per-seed t-interval of B_crit holds the true ``b_crit``, in ``n_sweeps`` synthetic sweeps.

    Each synthetic seed's steps at B are S_min (1 + B_crit / B) times a lognormal seed factor (sd
    ``sigma_seed``) and a lognormal cell factor (sd ``sigma_cell``), rounded up to the evaluation grid
    (``eval_every[j]`` steps at ``batch_sizes[j]``; None: not rounded), as steps to a target are read. A sweep
    whose summary is a bound counts as not covering. Returns ``coverage``, ``bounds`` (the share of sweeps that
    gave a bound) and ``median_width`` (of hi / lo).
    """
    rng = np.random.default_rng(seed)
    B = np.asarray(batch_sizes, float)
    true = s_min * (1 + b_crit / B)
    S = true * np.exp(rng.normal(0, sigma_seed, (n_sweeps, n_seeds, 1)) +
                      rng.normal(0, sigma_cell, (n_sweeps, n_seeds, len(B))))
    if eval_every is not None:
        e = np.broadcast_to(np.asarray(eval_every, float), B.shape)
        S = np.ceil(S / e) * e
    fit = fit_hyperbola(B, np.log(S))
    censored = (fit["censored"] != 0).any(axis=-1)
    _, lo, hi = t_interval(np.log(fit["B_crit"]), level)
    hit = (lo <= b_crit) & (b_crit <= hi) & ~censored
    return {"coverage": float(hit.mean()), "bounds": float(censored.mean()),
            "median_width": float(np.nanmedian(np.where(censored, np.nan, hi / lo)))}


def noise_of(batch_sizes, per_seed_steps) -> dict[str, float]:
    """The seed-to-seed noise of a (B × seeds) table, as :func:`coverage` models it: the sd of the per-seed mean
    log residual from each seed's own fit (``sigma_seed``, across seeds) and the sd of the residuals within a seed
    (``sigma_cell``), pooled; NaN where there is too little to tell."""
    B = np.asarray(batch_sizes, float)
    S = np.asarray(per_seed_steps, float).T
    logs = np.log(np.where(np.isfinite(S) & (S > 0), S, np.nan))
    fit = fit_hyperbola(B, logs)
    pred = np.log(fit["S_min"])[:, None] + np.log1p(fit["B_crit"][:, None] / B[None, :])
    resid = logs - pred
    dof = np.nansum(np.isfinite(resid), axis=1) - 2
    cell = np.sqrt(np.nansum(resid ** 2) / max(np.nansum(np.maximum(dof, 0)), 1))
    level = np.log(fit["S_min"])
    seed_sd = float(np.nanstd(level, ddof=1)) if np.isfinite(level).sum() >= 2 else np.nan
    return {"sigma_cell": float(cell), "sigma_seed": seed_sd}


# ------------------------------------------------------------------ the hyperbola against its rivals


def _fit_power(B, y):
    k, a = np.polyfit(np.log(B), y, 1)
    return lambda b: a + k * np.log(b)


def _fit_broken(B, y):
    """Two log-log lines joined at a break (searched over the interior points' midpoints); needs 4 points."""
    lb = np.log(B)
    best = None
    for c in (lb[1:-2] + lb[2:-1]) / 2 if len(lb) >= 4 else []:
        X = np.column_stack([np.ones_like(lb), np.minimum(lb - c, 0), np.maximum(lb - c, 0)])
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        sse = float(((X @ coef - y) ** 2).sum())
        if best is None or sse < best[0]:
            best = (sse, c, coef)
    if best is None:
        return None
    _, c, coef = best
    return lambda b: coef[0] + coef[1] * np.minimum(np.log(b) - c, 0) + coef[2] * np.maximum(np.log(b) - c, 0)


def _fit_hyp(B, y):
    f = fit_hyperbola(B, y)
    return lambda b: np.log(f["S_min"]) + np.log1p(f["B_crit"] / b)


MODELS = {"hyperbola": (_fit_hyp, 2), "power law": (_fit_power, 2), "broken power law": (_fit_broken, 4)}


def compare_models(batch_sizes, per_seed_steps) -> dict:
    """The hyperbola, a power law and a broken power law, each fitted to the median curve over seeds (log S) and
    scored by leave-one-B-out prediction: the mean over batch sizes of (prediction error)² / (the seeds' variance
    of log S at that B / n seeds, the median's sampling variance up to a constant), so 1 is "as close as the seed
    noise allows". Also the hyperbola's χ²/dof on all points with the same variances. Returns ``scores`` (per
    model), ``winner``, ``chi2_dof`` and ``n`` (batch sizes used: those every seed reached)."""
    B = np.asarray(batch_sizes, float)
    S = np.asarray(per_seed_steps, float)  # (B, seeds)
    logs = np.log(np.where(np.isfinite(S) & (S > 0), S, np.nan))
    keep = np.isfinite(logs).all(axis=1)
    B, logs = B[keep], logs[keep]
    n_seeds = logs.shape[1]
    out = {"scores": {m: np.nan for m in MODELS}, "winner": "", "chi2_dof": np.nan, "n": int(len(B))}
    if len(B) < 5 or n_seeds < 2:
        return out
    y = np.median(logs, axis=1)
    var = np.var(logs, axis=1, ddof=1) / n_seeds
    var = np.maximum(var, np.median(var[var > 0]) if (var > 0).any() else 1e-6)  # a seed-identical cell
    for name, (fit, _) in MODELS.items():
        errs = []
        for j in range(len(B)):
            m = np.ones(len(B), bool)
            m[j] = False
            model = fit(B[m], y[m])
            if model is None:
                break
            errs.append((model(B[j]) - y[j]) ** 2 / var[j])
        out["scores"][name] = float(np.mean(errs)) if len(errs) == len(B) else np.nan
    full = _fit_hyp(B, y)
    out["chi2_dof"] = float(((full(B) - y) ** 2 / var).sum() / (len(B) - 2))
    finite = {m: s for m, s in out["scores"].items() if np.isfinite(s)}
    out["winner"] = min(finite, key=finite.get) if finite else ""
    return out
