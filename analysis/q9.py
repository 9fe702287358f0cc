"""Q9, what sets the critical batch size: the facts of the branching, warm-up and scaling sweeps, and the NQM.

- :func:`branch_facts` (``branching.toml``): from each checkpoint s of a reference
  run, branches at B over a fixed number of examples. The **local critical batch
  size** at s is the largest B of the grid such that it and every smaller B
  keep, at every common evaluation (every :data:`COMMON` examples), at least
  ``1 - tol`` of the loss decrease the smallest-B branch achieved by then, on
  the median over seeds (each B at the learning rate that keeps the most; the
  smallest B at its lowest loss at the end of the budget; a diverged branch's
  loss counts as infinite from its divergence on). A bootstrap over seeds
  (re-choosing the rates in every replicate) gives the interval;
  :data:`TOLERANCES` shows the sensitivity to ``tol`` (:data:`TOL` is the
  headline's). A (s, B) with no runs leaves every local B_crit above it unknown.
- :func:`warmup_facts` (``warmup.toml``): steps and examples to the target of
  doubling schedules against constant batch sizes, paired by seed: against the
  constant B with the fewest steps, and against the constant B that needed the
  fewest examples at or above the schedule's own (so that a ratio below 1 is
  fewer steps at no more examples). A schedule needs more than half of its
  seeds to reach the target to be compared.
- :func:`scaling_facts` (``scaling.toml``): B_crit (the science sweep's
  hyperbola fit, :mod:`analysis.reduce`) per training-set size and per width,
  and the log-log slope of B_crit against each with a bootstrap interval
  (seeds resampled within every size; a size whose B_crit the fit leaves
  unbounded is left out of the slope).
- :func:`nqm_facts`: the noisy quadratic model (:mod:`mbstudy.nqm`) matched to
  the reference's initial loss and B_simple; its steps-to-target curves and
  B_crit per optimizer.

Intervals need at least :data:`MIN_SEEDS` seeds (NaN below, which the report
reads as not resolved).

Pure: DataFrames in, frozen dataclasses out; nothing here reads MLflow.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import reduce
from analysis.q8 import paired_ratio
from mbstudy.schedule import parse

TOLERANCES = (0.1, 0.2, 0.5)
TOL = 0.2  # the headline tolerance: a branch keeps 80% of the smallest batch's loss decrease
# 0.5: a branch keeps half the decrease, roughly the hyperbola's B_crit (where a step of B needs twice the examples)
COMMON = 2048  # examples: the branches are compared every this many examples after the branch point
N_BOOT = 1000
LEVEL = 0.95
UNBOUNDED = 10  # a B_crit interval reaching past this many times the largest B tried is open above
MIN_SEEDS = 2  # fewer seeds than this give no interval


def branch_point(schedule) -> int:
    """The step a branch leaves its reference: the length of its schedule's one phase (0: from initialisation).

    >>> branch_point("704x32@0.316"), branch_point(""), branch_point(None)
    (704, 0, 0)
    """
    if not isinstance(schedule, str):
        return 0
    return sum(steps for steps, _, _ in parse(schedule))


def _interval(values, level: float = LEVEL) -> tuple[float, float]:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def median_interval(values, *, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float, float]:
    """The median of ``values`` (one per seed) and its percentile-bootstrap interval over seeds."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return np.nan, np.nan, np.nan
    if len(v) == 1:
        return float(v[0]), np.nan, np.nan
    rng = np.random.default_rng(seed)
    reps = np.median(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
    return (float(np.median(v)), *_interval(reps))


# ---------------------------------------------------------------- branching


@dataclass(frozen=True)
class BranchFacts:
    experiment: str
    reference_b: int
    reference_lr: float
    target: float  # the reference's training-loss target
    budget: int  # examples after the branch point
    ref_steps: tuple[float, float, float]  # the reference's steps to its target: median over seeds, interval
    curves: pd.DataFrame  # seed, s, batch_size, learning_rate, examples (after s), loss: each (s, B) at its best rate
    kept: pd.DataFrame  # s, batch_size, kept, lo, hi: the least fraction of the smallest B's loss decrease kept
    local: pd.DataFrame  # tol, s, fraction, b_crit, lo, hi, n_seeds: the local critical batch size
    b_simple: pd.DataFrame  # s, b_simple, lo, hi: the reference's B_simple at each checkpoint (over seeds)
    edge: float  # the fraction of (s, B) whose best rate is the smallest or largest of its grid


def _reference(runs: pd.DataFrame) -> pd.Series:
    """The reference runs: the ones with a target (the branches have none)."""
    return runs["target_loss"].notna() if "target_loss" in runs else pd.Series(False, index=runs.index)


def kept_fraction(loss: np.ndarray, every: np.ndarray) -> np.ndarray:
    """``loss[s, B, e]`` (B ascending; e = 0 the branch point, then the common evaluations) at one learning rate,
    ``every[s, B, lr, e]`` at all of them: per (s, B), the least over e of the fraction of the smallest B's loss
    decrease by e (at its lowest loss at the end of the budget) that B achieved by e. NaN where B has no runs or
    the smallest B's loss did not decrease."""
    start = loss[:, :1, :1]
    small = every[:, 0]  # (s, lr, e): the smallest B at each rate
    final = small[:, :, -1]
    pick = np.argmin(np.where(np.isnan(final), np.inf, final), axis=1)
    small = small[np.arange(len(small)), pick][:, None, 1:]  # (s, 1, e)
    with np.errstate(invalid="ignore", divide="ignore"):
        decrease = start - small
        frac = (start - loss[:, :, 1:]) / np.where(decrease > 0, decrease, np.nan)
    return np.where(np.isnan(frac).any(axis=2), np.nan, np.min(np.nan_to_num(frac, nan=0.0, neginf=-np.inf), axis=2))


def local_critical(kept: np.ndarray, batch_sizes: np.ndarray, tol: float) -> np.ndarray:
    """Per s (rows of ``kept[s, B]``): the largest B such that it and every smaller B keep at least ``1 - tol``;
    NaN when a B up to the first one that falls short has no value (not measured)."""
    short = ~(kept >= 1 - tol)  # NaN counts as short here, and is told apart below
    first = np.where(short.any(axis=1), np.argmax(short, axis=1), kept.shape[1])
    out = batch_sizes[np.maximum(first - 1, 0)].astype(float)
    unknown = np.array([np.isnan(row[:min(f + 1, len(row))]).any() for row, f in zip(kept, first)])
    return np.where(unknown, np.nan, out)


def _diverged_as_inf(loss: pd.DataFrame, runs: pd.DataFrame, budget: int) -> pd.DataFrame:
    """A diverged branch stops logging: its common evaluations after the last one it logged count as inf."""
    gone = runs[runs["outcome"] == "diverged"]
    rows = []
    for r in gone.itertuples():
        last = loss.loc[loss["run_id"] == r.run_id, "examples"].max()
        last = -1 if pd.isna(last) else int(last)
        rows += [{"run_id": r.run_id, "seed": r.seed, "s": r.s, "batch_size": r.batch_size,
                  "learning_rate": r.learning_rate, "examples": e, "value": np.inf}
                 for e in range(0, budget + 1, COMMON) if e > last]
    return pd.concat([loss, pd.DataFrame(rows, columns=loss.columns)], ignore_index=True) if rows else loss


def branch_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "branching",
                 n_boot: int = N_BOOT, seed: int = 0) -> BranchFacts:
    """``history``: ``train/loss`` (every run) and ``grad/b_simple`` (the references) in ``analysis.load``'s long form.

    The criterion reads the median over seeds of the loss at every common evaluation; the intervals resample the
    seeds (the same resample for every (s, B) of a replicate) and choose the rates again."""
    from analysis.load import MissingRuns

    ref_mask = _reference(runs)
    ref, br = runs[ref_mask], runs[~ref_mask & runs["outcome"].isin(["completed", "diverged"])]
    if br.empty:
        raise MissingRuns("the branching sweep holds no finished branch yet; run make sweep GRID=branching")
    br = br.assign(s=br["schedule"].map(branch_point) if "schedule" in br else 0)
    loss = history[history["metric"] == "train/loss"].merge(
        br[["run_id", "seed", "s", "batch_size", "learning_rate"]], on="run_id")
    loss = loss.assign(examples=(loss["step"] - loss["s"]) * loss["batch_size"],
                       value=loss["value"].where(np.isfinite(loss["value"]), np.inf))
    loss = loss[loss["examples"] >= 0].drop(columns=["metric", "step"])
    budget = int(loss["examples"].max())
    loss = _diverged_as_inf(loss, br, budget)
    points = loss[(loss["examples"] == 0) | (loss["examples"] % COMMON == 0)]
    cube = points.pivot_table(index="seed", columns=["s", "batch_size", "learning_rate", "examples"], values="value",
                              aggfunc="first")
    ss, bs, lrs, es = (np.array(sorted(points[k].unique())) for k in ("s", "batch_size", "learning_rate", "examples"))
    full = pd.MultiIndex.from_product([ss, bs, lrs, es])
    arr = cube.reindex(columns=full).to_numpy(float, copy=True).reshape(len(cube), len(ss), len(bs), len(lrs), len(es))
    seeds = len(arr)
    rng = np.random.default_rng(seed)
    draws = [np.arange(seeds)] + ([rng.integers(0, seeds, seeds) for _ in range(n_boot)] if seeds >= MIN_SEEDS else [])
    kepts, rate_index = [], None
    for d in draws:
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells: (s, B, rate) with no runs
            med = np.nanmedian(arr[d], axis=0)  # (s, B, lr, e)
            med[..., 0] = np.nanmedian(med[:, :, :, 0], axis=(1, 2))[:, None, None]  # every branch of s starts at s
        per_rate = np.stack([kept_fraction(med[:, :, k, :], med) for k in range(len(lrs))], axis=2)
        measured = ~np.isnan(per_rate).all(axis=2)
        filled = np.where(np.isnan(per_rate), -np.inf, per_rate)
        if rate_index is None:
            rate_index = np.argmax(filled, axis=2)
        kepts.append(np.where(measured, filled.max(axis=2), np.nan))
    kepts = np.array(kepts)  # (1 + n_boot, s, B)

    def interval(reps):
        return _interval(reps) if len(reps) else (np.nan, np.nan)

    kept = pd.DataFrame([{"s": int(s), "batch_size": int(b), "kept": kepts[0, i, j], "learning_rate": lrs[rate_index[i, j]],
                          **dict(zip(("lo", "hi"), interval(kepts[1:, i, j])))}
                         for i, s in enumerate(ss) for j, b in enumerate(bs)])
    keys = ["s", "batch_size", "learning_rate"]
    best = kept[np.isfinite(kept["kept"])][keys]
    curves = loss.merge(best, on=keys)[["seed", *keys, "examples", "value"]].rename(columns={"value": "loss"})

    ref_steps = median_interval(ref["steps_to_target"].to_numpy(float), n_boot=n_boot) if "steps_to_target" in ref \
        else (np.nan, np.nan, np.nan)
    rows = []
    for tol in TOLERANCES:
        crit = np.array([local_critical(k, bs, tol) for k in kepts])  # (1 + n_boot, s)
        for i, s in enumerate(ss):
            lo, hi = interval(crit[1:, i])
            rows.append({"tol": tol, "s": int(s), "fraction": s / ref_steps[0] if ref_steps[0] else np.nan,
                         "b_crit": crit[0, i], "lo": lo, "hi": hi, "n_seeds": seeds})
    local = pd.DataFrame(rows)

    b_s = history[(history["metric"] == "grad/b_simple") & history["run_id"].isin(ref["run_id"])]
    b_s = b_s[b_s["step"].isin(ss)]
    b_simple = pd.DataFrame([{"s": int(s), **dict(zip(("b_simple", "lo", "hi"), median_interval(g["value"], n_boot=n_boot)))}
                             for s, g in b_s.groupby("step")], columns=["s", "b_simple", "lo", "hi"])
    grid = br.groupby("batch_size")["learning_rate"].agg(["min", "max"])
    at = best.join(grid, on="batch_size")
    edge = float(((at["learning_rate"] == at["min"]) | (at["learning_rate"] == at["max"])).mean()) if len(at) else np.nan
    r0 = ref.iloc[0] if len(ref) else None
    return BranchFacts(experiment, int(r0["batch_size"]) if r0 is not None else 0,
                       float(r0["learning_rate"]) if r0 is not None else np.nan,
                       float(r0["target_loss"]) if r0 is not None else np.nan, budget, ref_steps, curves, kept,
                       local, b_simple, edge)


# ---------------------------------------------------------------- warm-up


@dataclass(frozen=True)
class WarmupFacts:
    experiment: str
    constant: pd.DataFrame  # batch_size, learning_rate, steps, examples (medians over seeds of per-seed minima)
    per_seed: pd.DataFrame  # arm ("B=<b>" or the schedule), seed, steps, examples: each seed's fastest run
    schedules: pd.DataFrame  # schedule, final_b, steps, examples, vs_best (ratio, lo, hi), vs_equal (ratio, lo, hi):
    # vs_equal against the constant B with the fewest examples at or above the schedule's (_constant_at)
    best_constant: int  # the constant B with the fewest steps


def _constant_at(examples: float, per_seed: pd.DataFrame) -> float:
    """The steps of the constant batch size that needed the fewest examples at or above ``examples`` (one seed's
    curve, on its branch from the most example-efficient B upward, where more examples buy fewer steps); NaN when
    every constant B needed fewer. A schedule with fewer steps than that constant B, which also had at least its
    examples, took fewer steps at no more examples: a saving no interpolation had to invent."""
    c = per_seed.dropna().sort_values("batch_size")
    if c.empty:
        return np.nan
    c = c.iloc[int(np.argmin(c["examples"].to_numpy())):]
    c = c[c["examples"].cummax() == c["examples"]]  # the points where the examples grow with B
    above = c[c["examples"] >= examples]
    return float(above["steps"].iloc[0]) if len(above) else np.nan


def warmup_facts(runs: pd.DataFrame, experiment: str = "warmup", n_boot: int = N_BOOT) -> WarmupFacts:
    runs = runs.assign(schedule=runs["schedule"].fillna("") if "schedule" in runs else "")
    steps = reduce.reached_steps(runs)  # inf: not reached
    examples = runs.get("examples_to_target", pd.Series(np.nan, index=runs.index)).astype(float)
    runs = runs.assign(s=steps, e=examples.where(np.isfinite(steps), np.inf))
    runs["arm"] = np.where(runs["schedule"] == "", "B=" + runs["batch_size"].astype(str), runs["schedule"])
    fastest = runs.sort_values("s").groupby(["arm", "seed"], as_index=False).first()
    per_seed = fastest[["arm", "seed", "batch_size", "s", "e"]].rename(columns={"s": "steps", "e": "examples"})
    const = runs[runs["schedule"] == ""]
    constant = reduce.steps_to_target(const, by=("batch_size",))[["batch_size", "learning_rate", "steps", "examples"]]
    best_b = int(constant.loc[constant["steps"].idxmin(), "batch_size"]) if len(constant) else 0

    cps = per_seed[per_seed["arm"].str.startswith("B=") & np.isfinite(per_seed["steps"])]
    best = cps[cps["batch_size"] == best_b].set_index("seed")["steps"]
    rows = []
    nan3 = (np.nan, np.nan, np.nan)
    for sched, g in per_seed[~per_seed["arm"].str.startswith("B=")].groupby("arm"):
        g = g.set_index("seed")
        reached = np.isfinite(g["steps"])
        ok = reached.sum() > len(g) / 2 and best_b > 0  # as reduce.steps_to_target: more than half the seeds
        # a seed that never reached the target is a loss against any constant B (ratio inf), not a missing pair
        equal = pd.Series({seed: _constant_at(e, cps[cps["seed"] == seed][["batch_size", "examples", "steps"]])
                           if np.isfinite(e) else 1.0 for seed, e in g["examples"].items()})
        rows.append({"schedule": sched, "final_b": int(g["batch_size"].iloc[0]),
                     "steps": g["steps"].median() if ok else np.nan,
                     "examples": g["examples"].median() if ok else np.nan,
                     "n_seeds": len(g), "n_reached": int(reached.sum()),
                     "vs_best": paired_ratio(g["steps"], best, n_boot=n_boot) if ok else nan3,
                     "vs_equal": paired_ratio(g["steps"], equal, n_boot=n_boot) if ok else nan3})
    return WarmupFacts(experiment, constant, per_seed, pd.DataFrame(rows), best_b)


# ---------------------------------------------------------------- data and width


@dataclass(frozen=True)
class ScalingFacts:
    experiment: str
    fits: pd.DataFrame  # axis ("data" or "width"), value, target, B_crit, lo, hi, S_min, r2, n_seeds
    slopes: pd.DataFrame  # axis, target, slope, lo, hi, n_points
    steps: pd.DataFrame  # axis, value, target, batch_size, steps (median over seeds of per-seed minima)


def _width(hidden) -> int:
    return int(str(hidden).split(",")[0])


BASE_N, BASE_WIDTH = 4000, 100  # the scaling sweep's fixed size and width (MNIST-1D's own size, the science MLP)


def _slope(x: np.ndarray, y: np.ndarray, *, every: bool = False) -> float:
    """The least-squares slope of log y against log x; NaN with fewer than 2 points, or (``every``) when any y is
    missing, so that every bootstrap replicate is fitted on the same sizes."""
    ok = np.isfinite(x) & np.isfinite(y) & (y > 0)
    if (every and not ok.all()) or ok.sum() < 2:
        return np.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def scaling_facts(runs: pd.DataFrame, experiment: str = "scaling", n_boot: int = N_BOOT, seed: int = 0) -> ScalingFacts:
    n = runs["n_train"].astype(int) if "n_train" in runs else pd.Series(0, index=runs.index)
    runs = runs.assign(width=runs["hidden"].map(_width), n=n.where(n > 0, BASE_N))  # 0: the data set's own 4000
    axes = {"data": (runs[runs["width"] == BASE_WIDTH], "n"), "width": (runs[runs["n"] == BASE_N], "width")}
    fits, slopes, steps = [], [], []
    for axis, (sub, col) in axes.items():
        for target, metric in (("loss", "steps_to_target"), ("val", "steps_to_val_target")):
            values, point, reps = [], [], []  # reps: per value, n_boot B_crit replicates (seeds resampled)
            for k, (value, g) in enumerate(sub.groupby(col)):
                t = reduce.per_seed_steps(g, by=("batch_size",), metric=metric)
                B, v = np.asarray(t.index, float), t.to_numpy(float)
                est = reduce._estimate(B, v, None)
                bound = UNBOUNDED * B.max()
                rep = np.full(n_boot, np.nan)
                lo = hi = np.nan
                if v.shape[1] >= MIN_SEEDS:
                    rng = np.random.default_rng([seed, k])
                    rep = np.array([reduce._estimate(B, v[:, rng.integers(0, v.shape[1], v.shape[1])], None)["B_crit"]
                                    for _ in range(n_boot)])
                    lo, hi = reduce._percentile(rep, LEVEL, n_boot)
                    hi = np.inf if hi > bound else hi  # the fit does not bound B_crit from above
                fits.append({"axis": axis, "value": int(value), "target": target, "B_crit": est["B_crit"], "lo": lo,
                             "hi": hi, "S_min": est["S_min"], "r2": est["r2"], "n_seeds": v.shape[1]})
                steps += [{"axis": axis, "value": int(value), "target": target, "batch_size": int(b), "steps": m}
                          for b, m in zip(B, np.nanmedian(v, axis=1))]
                if np.isfinite(est["B_crit"]) and est["B_crit"] <= bound:  # an unbounded size is left out
                    values.append(float(value))
                    point.append(est["B_crit"])
                    reps.append(np.where(rep <= bound, rep, np.nan))
            x = np.array(values)
            slope_reps = [_slope(x, np.array([r[i] for r in reps]), every=True) for i in range(n_boot)]
            lo, hi = reduce._percentile(slope_reps, LEVEL, n_boot) if reps else (np.nan, np.nan)
            slopes.append({"axis": axis, "target": target, "slope": _slope(x, np.array(point)), "lo": lo, "hi": hi,
                           "n_points": len(values)})
    return ScalingFacts(experiment, pd.DataFrame(fits), pd.DataFrame(slopes), pd.DataFrame(steps))


# ---------------------------------------------------------------- the noisy quadratic model

NQM_DIM = 1000  # directions of the matched model (Zhang et al. 2019 use 10^4; the curves' shape is the same)
NQM_BATCH_SIZES = tuple(2 ** k for k in range(13))  # 1 .. 4096
NQM_OPTIMIZERS = {"sgd": "sgd", "momentum": "momentum", "adam": "preconditioned"}  # the study's name -> the NQM's


@dataclass(frozen=True)
class NqmFacts:
    b_simple0: float  # the reference's B_simple at initialisation, which the model matches
    loss0: float  # the reference's initial training loss
    target: float  # the training-loss target; the model's is target / loss0 of its initial loss
    curves: pd.DataFrame  # optimizer, batch_size, steps, lr
    fits: pd.DataFrame  # optimizer, B_crit, S_min, r2


def nqm_facts(b_simple0: float, loss0: float, target: float, *, dim: int = NQM_DIM) -> NqmFacts:
    """Steps to ``target / loss0`` of the initial loss against B in the noisy quadratic model whose B_simple at
    initialisation is ``b_simple0`` (:func:`mbstudy.nqm.power_law`: h_i = 1/i, noise covariance proportional to
    the Hessian), for SGD, heavy-ball momentum 0.9 and the diagonal preconditioner (power 0.5, Adam's stand-in),
    each at its best learning rate per B; and the hyperbola's B_crit of each curve."""
    from mbstudy import nqm

    model = nqm.power_law(dim, b_simple0=b_simple0, loss0=1.0)
    rows, fits = [], []
    for name, kind in NQM_OPTIMIZERS.items():
        c = nqm.steps_curve(model, kind, list(NQM_BATCH_SIZES), target / loss0)
        rows += [{"optimizer": name, "batch_size": int(b), "steps": float(s), "lr": float(lr)}
                 for b, s, lr in zip(c["batch_size"], c["steps"], c["lr"])]
        fit = reduce.fit_hyperbola(c["batch_size"], c["steps"])
        fits.append({"optimizer": name, "B_crit": fit["B_crit"], "S_min": fit["S_min"], "r2": fit["r2"]})
    return NqmFacts(b_simple0, loss0, target, pd.DataFrame(rows), pd.DataFrame(fits))
