"""Q9, part 1: the critical batch size during training (Merrill et al. 2025), measured by branching. From each
checkpoint s of a reference run (``branching.toml``), branches train at B over a fixed number of examples. The
**local critical batch size** at s is the largest B of the grid such that it and every smaller B keep, at every
common evaluation (every :data:`COMMON` examples), at least ``1 - tol`` of the loss decrease the smallest-B branch
achieved by then (each B at the learning rate that keeps the most; the smallest B at its lowest loss at the end of
the budget; a diverged branch's loss counts as infinite from its divergence on). Every seed gives its own local
B_crit; the summary is their geometric mean with a 95% t-interval over seeds (:func:`analysis.stats.summarise`).
A seed whose every B kept the share has its local B_crit at the end of the measured range: at least the largest B
tried (and one where nothing above the smallest B kept it: at most the smallest); the summary is then a bound
(``≥`` / ``≤``) that enters no ratio and no verdict. The claims about its shape over training are paired
comparisons of checkpoints, seed by seed, under Holm's rule over the section's comparisons. :data:`TOLERANCES`
shows the sensitivity to ``tol`` (:data:`TOL` is the headline's). Each checkpoint is read over the batch sizes it
was branched into (a B with runs at another checkpoint but none at s is not part of s's design: a sweep may add
batch sizes where a first design left a bound); a (s, B) of its design with no run for a seed leaves that seed's
local B_crit there unknown if it lies at or below the first shortfall.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import reduce, stats
from analysis.load import MissingRuns
from analysis.markdown import MIN_INTERVAL_SEEDS, interval, seed_summary, t_text, verdict_of
from mbstudy.schedule import parse

TOLERANCES = (0.1, 0.2, 0.5)
TOL = 0.2  # the headline tolerance: a branch keeps 80% of the smallest batch's loss decrease
# 0.5: a branch keeps half the decrease, roughly the hyperbola's B_crit (where a step of B needs twice the examples)
COMMON = 2048  # examples: the branches are compared every this many examples after the branch point
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


# ---------------------------------------------------------------- branching


@dataclass(frozen=True)
class BranchFacts:
    experiment: str
    reference_b: int
    reference_lr: float
    target: float  # the reference's training-loss target
    budget: int  # examples after the branch point
    ref_steps: tuple[float, float, float, int]  # the reference's steps to its target: geometric mean over seeds,
    # 95% t-interval, seeds
    curves: pd.DataFrame  # seed, s, batch_size, learning_rate, examples (after s), loss: each (s, B) at its best rate
    kept: pd.DataFrame  # s, batch_size, kept, lo, hi, n_seeds: the least fraction of the smallest B's loss
    # decrease kept, mean over seeds (each at its best rate) with a 95% t-interval; learning_rate: the rate the
    # seeds' median curve keeps the most at
    local: pd.DataFrame  # tol, s, fraction, b_crit, lo, hi, bound, n_seeds: the local critical batch size over seeds
    # (geometric mean, 95% t-interval; bound ">=" / "<=": the end of the measured range, no interval)
    per_seed: pd.DataFrame  # tol, s, seed, b_crit, censored: each seed's local critical batch size
    b_simple: pd.DataFrame  # s, b_simple, lo, hi, n_seeds: the reference's B_simple at each checkpoint (geometric
    # mean over seeds, 95% t-interval)
    edge: float  # the fraction of (s, B) whose best rate is the smallest or largest of the rates tried at that (s, B)
    edges: pd.DataFrame = field(default_factory=pd.DataFrame)  # s, batch_size, learning_rate, kept, side: those (s, B)


def _reference(runs: pd.DataFrame) -> pd.Series:
    """The reference runs: the ones with a target (the branches have none)."""
    return runs["target_loss"].notna() if "target_loss" in runs else pd.Series(False, index=runs.index)


def kept_fraction(loss: np.ndarray, every: np.ndarray) -> np.ndarray:
    """``loss[s, B, e]`` (B ascending; e = 0 the branch point, then the common evaluations) at one learning rate,
    ``every[s, B, lr, e]`` at all of them: per (s, B), the least over e of the fraction of the smallest B's loss
    decrease by e (at its lowest loss at the end of the budget) that B achieved by e. NaN where B has no runs or
    the smallest B's loss did not decrease. The smallest B is each s's own: the smallest with runs from s (a
    branch point may be branched into batch sizes the others are not)."""
    start = loss[:, :1, :1]
    has = ~np.isnan(every[:, :, :, 1:]).all(axis=(2, 3))  # (s, B): B has runs from s
    small = every[np.arange(len(every)), np.argmax(has, axis=1)]  # (s, lr, e): s's smallest B at each rate
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
    return local_critical_censored(kept, batch_sizes, tol)[0]


def local_critical_censored(kept: np.ndarray, batch_sizes: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_critical` and whether each value is at an end of the measured range: +1 when no B fell short
    (the local B_crit is at least the largest B tried), -1 when the first B above the smallest fell short (at most
    the smallest), 0 otherwise (and for NaN).

    >>> v, c = local_critical_censored(np.array([[1, 1, 1.0], [1, 0.1, 0.1], [1, 1, 0.1]]), np.array([2, 4, 8]), 0.2)
    >>> v.tolist(), c.tolist()
    ([8.0, 2.0, 4.0], [1, -1, 0])
    """
    short = ~(kept >= 1 - tol)  # NaN counts as short here, and is told apart below
    first = np.where(short.any(axis=1), np.argmax(short, axis=1), kept.shape[1])
    out = batch_sizes[np.maximum(first - 1, 0)].astype(float)
    unknown = np.array([np.isnan(row[:min(f + 1, len(row))]).any() for row, f in zip(kept, first)], bool)
    censored = np.where(first >= kept.shape[1], 1, np.where(first <= 1, -1, 0))
    return np.where(unknown, np.nan, out), np.where(unknown, 0, censored)


def local_by_point(kept: np.ndarray, batch_sizes: np.ndarray, design: np.ndarray, tol: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`local_critical_censored` for each checkpoint (the rows of ``kept[s, B]``) over the batch sizes of its
    own design (``design[s, B]`` True where s was branched into B).

    >>> kept = np.array([[1.0, np.nan, 0.9, 0.85], [1.0, 0.9, 0.5, np.nan]])
    >>> v, c = local_by_point(kept, np.array([4, 8, 16, 1024]), np.array([[1, 0, 1, 1], [1, 1, 1, 0]], bool), 0.2)
    >>> v.tolist(), c.tolist()
    ([1024.0, 8.0], [1, 0])
    """
    values, censored = np.full(len(kept), np.nan), np.zeros(len(kept), int)
    for i, row in enumerate(kept):
        cols = np.asarray(design[i], bool)
        if cols.any():
            v, c = local_critical_censored(row[None, cols], np.asarray(batch_sizes)[cols], tol)
            values[i], censored[i] = v[0], c[0]
    return values, censored


def design_text(kept: pd.DataFrame) -> str:
    """The batch sizes only some checkpoints were branched into, those with the same checkpoints together, as
    ``B = 1, 2 and 8 only from step 96; B = 1024 only from step 0``; "" when every checkpoint had the same ones
    (``kept``: :attr:`BranchFacts.kept`, a row per (s, B) of the design)."""
    points = sorted(kept["s"].unique())
    groups: dict[tuple[int, ...], list[int]] = {}
    for b, g in kept.groupby("batch_size"):
        at = tuple(sorted(int(x) for x in g["s"].unique()))
        if len(at) < len(points):
            groups.setdefault(at, []).append(int(b))
    parts = []
    for at, bs in groups.items():  # in the order of each group's smallest B
        sizes = ", ".join(map(str, bs[:-1])) + f" and {bs[-1]}" if len(bs) > 1 else str(bs[0])
        parts.append(f"B = {sizes} only from step{'s' if len(at) > 1 else ''} {', '.join(map(str, at))}")
    return "; ".join(parts)


def smallest_text(kept: pd.DataFrame) -> str:
    """Which batch size each checkpoint's kept fractions are read against, when that differs between checkpoints,
    as ``B = 1 at step 96, B = 4 at the others``; "" when it is the same everywhere."""
    least = kept.groupby("s")["batch_size"].min().astype(int)
    if least.nunique() < 2:
        return ""
    common = least.mode().iloc[0]
    odd = least[least != common]
    return ", ".join(f"B = {b} at step {s}" for s, b in odd.items()) + f", B = {common} at the others"


def at_common_smallest(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` without the branches below the least batch size that every checkpoint was branched into (the
    references kept): the design read against one smallest B everywhere, to show how much a checkpoint's local
    B_crit depends on being read against a smaller B than the others (:func:`smallest_text`)."""
    ref = _reference(runs)
    br = runs[~ref]
    s = br["schedule"].map(branch_point) if "schedule" in br else pd.Series(0, index=br.index)
    common = br.groupby(s)["batch_size"].min().max()
    return runs[ref | (runs["batch_size"] >= common)]


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


def _geo(values) -> tuple[float, float, float, int]:
    """The geometric mean of positive values over seeds, its 95% t-interval and the number of seeds."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    if not len(v):
        return np.nan, np.nan, np.nan, 0
    est, lo, hi = stats.t_interval(np.log(v))
    return float(est), float(lo), float(hi), int(len(v))


def branch_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "branching",
                 n_boot: int | None = None) -> BranchFacts:
    """``history``: ``train/loss`` (every run) and ``grad/b_simple`` (the references) in ``analysis.load``'s long form.

    Each seed is read alone (its own best rate per (s, B)); the median curve over seeds picks the rate the report's
    curves show. ``n_boot`` is accepted for the callers of the bootstrap this replaced, and unused."""
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
    seed_ids = list(cube.index)
    draws = [np.arange(seeds)] + [np.array([k]) for k in range(seeds)]  # the median curve, then each seed alone
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
    kepts = np.array(kepts)  # (1 + seeds, s, B): the median curve's, then each seed's

    def mean_of(values):
        m, lo, hi, _ = stats.mean_interval(np.where(np.isfinite(values), values, np.nan))
        return m, lo, hi

    branched = br.groupby("s")["batch_size"].agg(set)
    design = np.array([[b in branched.get(s, set()) for b in bs] for s in ss], bool)  # (s, B): s was branched into B
    kept = pd.DataFrame([{"s": int(s), "batch_size": int(b), **dict(zip(("kept", "lo", "hi"), mean_of(kepts[1:, i, j]))),
                          "learning_rate": lrs[rate_index[i, j]], "n_seeds": int(np.isfinite(kepts[1:, i, j]).sum())}
                         for i, s in enumerate(ss) for j, b in enumerate(bs)])
    keys = ["s", "batch_size", "learning_rate"]
    best = kept[np.isfinite(kepts[0].reshape(-1))][keys]
    kept = kept[design.reshape(-1)].reset_index(drop=True)
    curves = loss.merge(best, on=keys)[["seed", *keys, "examples", "value"]].rename(columns={"value": "loss"})

    ref_steps = _geo(ref["steps_to_target"]) if "steps_to_target" in ref else (np.nan, np.nan, np.nan, 0)
    rows, seed_rows = [], []
    for tol in TOLERANCES:
        crit = [local_by_point(k, bs, design, tol) for k in kepts[1:]]  # per seed: (values, censored) over s
        for i, s in enumerate(ss):
            v = np.array([c[0][i] for c in crit])
            cens = np.array([c[1][i] for c in crit])
            sm = stats.summarise(v, cens, v)
            rows.append({"tol": tol, "s": int(s), "fraction": s / ref_steps[0] if ref_steps[0] else np.nan,
                         "b_crit": sm.value, "lo": sm.lo, "hi": sm.hi, "bound": sm.bound, "n_seeds": sm.n})
            seed_rows += [{"tol": tol, "s": int(s), "seed": seed_ids[k], "b_crit": v[k], "censored": int(cens[k])}
                          for k in range(seeds)]
    local = pd.DataFrame(rows)
    per_seed = pd.DataFrame(seed_rows, columns=["tol", "s", "seed", "b_crit", "censored"])

    b_s = history[(history["metric"] == "grad/b_simple") & history["run_id"].isin(ref["run_id"])]
    b_s = b_s[b_s["step"].isin(ss)]
    b_simple = pd.DataFrame([{"s": int(s), **dict(zip(("b_simple", "lo", "hi", "n_seeds"), _geo(g["value"])))}
                             for s, g in b_s.groupby("step")], columns=["s", "b_simple", "lo", "hi", "n_seeds"])
    side = reduce.rate_edge(best, br, ["s", "batch_size"])  # against the rates tried at that (s, B)
    edge = float((side != "").mean()) if len(best) else np.nan
    edges = best[side != ""].assign(side=side[side != ""]).merge(kept[["s", "batch_size", "kept"]],
                                                                  on=["s", "batch_size"], how="left")[
        ["s", "batch_size", "learning_rate", "kept", "side"]].reset_index(drop=True)
    r0 = ref.iloc[0] if len(ref) else None
    return BranchFacts(experiment, int(r0["batch_size"]) if r0 is not None else 0,
                       float(r0["learning_rate"]) if r0 is not None else np.nan,
                       float(r0["target_loss"]) if r0 is not None else np.nan, budget, ref_steps, curves, kept,
                       local, per_seed, b_simple, edge, edges)


def summary_of(row) -> stats.Summary:
    """A row of :attr:`BranchFacts.local` as a :class:`analysis.stats.Summary`."""
    return stats.Summary(float(row["b_crit"]), float(row["lo"]), float(row["hi"]), int(row["n_seeds"]),
                         str(row.get("bound", "") or ""))


def edges_text(f: BranchFacts) -> str:
    """Each (checkpoint, B) whose best rate is an end of the rates tried there, with what it keeps and whether B is
    beyond that checkpoint's local B_crit (then no rate there moves it); "" when there is none."""
    if f.edges is None or f.edges.empty:
        return ""
    loc = f.local[f.local["tol"] == TOL].set_index("s")
    parts = []
    for r in f.edges.itertuples():
        b = loc["b_crit"].get(r.s, np.nan)
        beyond = np.isfinite(b) and r.batch_size > b and not loc["bound"].get(r.s, "")
        parts.append(f"step {r.s}, B = {r.batch_size}: its {r.side} rate ({r.learning_rate:g}), keeping "
                     f"{r.kept:.2f} of the smallest B's decrease"
                     + (f", beyond the local B_crit there ({b:.0f}), which no rate at this B moves" if beyond else ""))
    return " (" + "; ".join(parts) + ")"


def value_text(row) -> str:
    """A local B_crit as printed: ``32 [28, 37]``, ``≥ 512`` or ``32 (too few seeds for an interval)``."""
    return seed_summary(summary_of(row), ".0f")


CLAIMS = ("start", "rise", "fall", "plateau")


def comparisons(local: pd.DataFrame, per_seed: pd.DataFrame) -> pd.DataFrame:
    """Merrill et al.'s claims about the local B_crit over training, per tolerance, as paired comparisons of two
    checkpoints (the later one's local B_crit over the earlier one's, seed by seed: a geometric mean with a 95%
    t-interval and the p-value of a ratio of 1): ``start`` the first checkpoint against the later one with the
    largest value, ``rise`` the lowest against the last, ``fall`` the highest against the last, ``plateau`` the last
    two. A pair with a seed at the end of the measured range (a bound) is not tested (``bound`` True, NaN p); with
    fewer than 3 seeds neither. ``p_holm``: Holm's adjustment over every row (the section's family)."""
    rows = []
    for tol, loc in local.groupby("tol"):
        loc = loc.sort_values("s").reset_index(drop=True)
        if len(loc) < 2 or loc["b_crit"].isna().any():
            continue
        ps = per_seed[per_seed["tol"] == tol]
        last, later = loc.iloc[-1], loc.iloc[1:]
        low, high = loc.loc[loc["b_crit"].idxmin()], loc.loc[loc["b_crit"].idxmax()]
        pairs = [("start", loc.iloc[0]["s"], later.loc[later["b_crit"].idxmax()]["s"])]
        if low["s"] != last["s"]:
            pairs.append(("rise", low["s"], last["s"]))
        if high["s"] != last["s"]:
            pairs.append(("fall", high["s"], last["s"]))
        if len(loc) >= 3:
            pairs.append(("plateau", loc.iloc[-2]["s"], last["s"]))
        for claim, a, b in pairs:
            A, B = (ps[ps["s"] == x].set_index("seed") for x in (a, b))
            common = A.index.intersection(B.index)
            A, B = A.loc[common], B.loc[common]
            bound = bool((A["censored"] != 0).any() or (B["censored"] != 0).any())
            est, lo, hi, p, n = stats.paired_ratio(B["b_crit"], A["b_crit"], B["censored"], A["censored"])
            if n < MIN_INTERVAL_SEEDS:
                lo = hi = p = np.nan
            rows.append({"tol": tol, "claim": claim, "from_s": int(a), "to_s": int(b), "ratio": est, "lo": lo,
                         "hi": hi, "p": p, "n_seeds": n, "bound": bound})
    out = pd.DataFrame(rows, columns=["tol", "claim", "from_s", "to_s", "ratio", "lo", "hi", "p", "n_seeds", "bound"])
    out["p_holm"] = stats.holm(out["p"]) if len(out) else []
    return out


def shape(f: BranchFacts, tol: float = TOL, tests: pd.DataFrame | None = None) -> dict[str, str]:
    """Merrill et al.'s three claims about the local B_crit over training (near zero at initialisation, a rise, a
    plateau) at one tolerance, each from its paired comparison under Holm's rule (:func:`comparisons`)."""
    loc = f.local[f.local["tol"] == tol].sort_values("s").reset_index(drop=True)
    if len(loc) < 2 or loc["b_crit"].isna().any():
        why = "fewer than two checkpoints" if len(loc) < 2 else "a checkpoint's local B_crit is not measured"
        return {"start": f"not resolved ({why})", "rise": "is not resolved", "plateau": "the plateau is not resolved"}
    tests = comparisons(f.local, f.per_seed) if tests is None else tests
    t = tests[tests["tol"] == tol].set_index("claim")
    at = loc.set_index("s")
    pct = lambda s: f"{at.loc[s, 'fraction']:.0%}"  # noqa: E731
    val = lambda s: value_text(at.loc[s])  # noqa: E731

    def called(claim):  # the row, its verdict ("up", "down", "not resolved", "bound") under Holm
        if claim not in t.index:
            return None, ""
        r = t.loc[claim]
        if r["bound"]:
            return r, "bound"
        return r, verdict_of(r["ratio"], r["p_holm"], "up", "down")

    def ratio(r):
        why = " (too few seeds)" if r["n_seeds"] < MIN_INTERVAL_SEEDS else ""
        return (f"ratio {interval(r['ratio'], r['lo'], r['hi'], fmt='.2f')}" + why
                + (f", Holm p = {r['p_holm']:.2g}" if np.isfinite(r["p_holm"]) else ""))

    r, v = called("start")
    if v == "up":
        start = f"below its later maximum ({val(r['to_s'])} at {pct(r['to_s'])}; {ratio(r)})"
    elif v == "down":
        start = f"above its later maximum ({val(r['to_s'])} at {pct(r['to_s'])}; {ratio(r)}): not near zero"
    elif v == "bound":
        start = (f"not tested against its later maximum ({val(r['to_s'])} at {pct(r['to_s'])}): a bound at an end of "
                 "the measured range is not a value")
    else:
        start = f"not resolved from its later maximum ({val(r['to_s'])} at {pct(r['to_s'])}; {ratio(r)})"
    (r1, v1), (r2, v2) = called("rise"), called("fall")
    if v1 == "up":
        rise = f"rises from {val(r1['from_s'])} at {pct(r1['from_s'])} to {val(r1['to_s'])} at {pct(r1['to_s'])} ({ratio(r1)})"
    elif v2 == "down":
        rise = f"falls from {val(r2['from_s'])} at {pct(r2['from_s'])} to {val(r2['to_s'])} at {pct(r2['to_s'])} ({ratio(r2)})"
    elif "bound" in (v1, v2):
        r = r1 if v1 == "bound" else r2
        rise = (f"goes from {val(r['from_s'])} at {pct(r['from_s'])} to {val(r['to_s'])} at {pct(r['to_s'])}: a bound "
                "at an end of the measured range, so the change is not tested")
    else:
        rise = "shows no change resolved under Holm's rule"
    r, v = called("plateau")
    if r is None:
        plateau = "a plateau is not tested (fewer than three checkpoints)"
    elif v == "bound":
        plateau = "a plateau is not tested (a bound at the last two checkpoints)"
    elif v in ("up", "down"):
        plateau = (f"it is still {'rising' if v == 'up' else 'falling'} between the last two checkpoints ({ratio(r)}): "
                   "no plateau by then")
    else:
        plateau = (f"the last two checkpoints are not resolved apart ({ratio(r)}): consistent with a plateau, not "
                   "proof of one")
    return {"start": start, "rise": rise, "plateau": plateau}


def facts_table(f: BranchFacts) -> pd.DataFrame:
    """Per checkpoint: the local B_crit at every tolerance and the reference's B_simple."""
    loc = f.local
    head = loc[loc["tol"] == TOL].set_index("s")
    bs = f.b_simple.set_index("s") if not f.b_simple.empty else pd.DataFrame(columns=["b_simple", "lo", "hi"])
    rows = []
    for s in sorted(head.index):
        r = {"branch point (step)": s, "% of steps to target": f"{head.loc[s, 'fraction']:.0%}"}
        for tol in TOLERANCES:
            x = loc[(loc["tol"] == tol) & (loc["s"] == s)].iloc[0]
            r[f"local B_crit, {tol:.0%}"] = value_text(x)
        if s in bs.index:
            b = bs.loc[s]
            r["B_simple [95% t-interval]"] = t_text(b["b_simple"], b["lo"], b["hi"], int(b.get("n_seeds", 0)), ".0f")
            r[f"B_simple / local B_crit ({TOL:.0%})"] = (f"{b['b_simple'] / head.loc[s, 'b_crit']:.1f}"
                                                         if summary_of(head.loc[s]).measured else "– (a bound)")
        rows.append(r)
    return pd.DataFrame(rows)
