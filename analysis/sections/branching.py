"""Q9, part 1: the critical batch size during training (Merrill et al. 2025), measured by branching. From each
checkpoint s of a reference run (``branching.toml``), branches train at B over a fixed number of examples. The
**local critical batch size** at s is the largest B of the grid such that it and every smaller B keep, at every
common evaluation (every :data:`COMMON` examples), at least ``1 - tol`` of the loss decrease the smallest-B branch
achieved by then, on the median over seeds (each B at the learning rate that keeps the most; the smallest B at
its lowest loss at the end of the budget; a diverged branch's loss counts as infinite from its divergence on). A
bootstrap over seeds (re-choosing the rates in every replicate) gives the interval; :data:`TOLERANCES` shows the
sensitivity to ``tol`` (:data:`TOL` is the headline's). A (s, B) with no runs leaves every local B_crit above it
unknown. Intervals need at least :data:`MIN_SEEDS` seeds (NaN below, which the report reads as not resolved).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from analysis import load, plots, reduce
from analysis.load import MissingRuns
from analysis.markdown import interval, md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.workloads import B_SIMPLE_FACTOR
from mbstudy.schedule import parse

plt = plots.plt
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
        return reduce.percentile_interval(reps, LEVEL, len(reps), need=0) if len(reps) else (np.nan, np.nan)

    kept = pd.DataFrame([{"s": int(s), "batch_size": int(b), "kept": kepts[0, i, j], "learning_rate": lrs[rate_index[i, j]],
                          **dict(zip(("lo", "hi"), interval(kepts[1:, i, j])))}
                         for i, s in enumerate(ss) for j, b in enumerate(bs)])
    keys = ["s", "batch_size", "learning_rate"]
    best = kept[np.isfinite(kept["kept"])][keys]
    curves = loss.merge(best, on=keys)[["seed", *keys, "examples", "value"]].rename(columns={"value": "loss"})

    ref_steps = reduce.median_interval(ref["steps_to_target"].to_numpy(float), n_boot=n_boot) if "steps_to_target" in ref \
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
    b_simple = pd.DataFrame([{"s": int(s), **dict(zip(("b_simple", "lo", "hi"), reduce.median_interval(g["value"], n_boot=n_boot)))}
                             for s, g in b_s.groupby("step")], columns=["s", "b_simple", "lo", "hi"])
    grid = br.groupby("batch_size")["learning_rate"].agg(["min", "max"])
    at = best.join(grid, on="batch_size")
    edge = float(((at["learning_rate"] == at["min"]) | (at["learning_rate"] == at["max"])).mean()) if len(at) else np.nan
    r0 = ref.iloc[0] if len(ref) else None
    return BranchFacts(experiment, int(r0["batch_size"]) if r0 is not None else 0,
                       float(r0["learning_rate"]) if r0 is not None else np.nan,
                       float(r0["target_loss"]) if r0 is not None else np.nan, budget, ref_steps, curves, kept,
                       local, b_simple, edge)


def shape(local: pd.DataFrame) -> dict[str, str]:
    """Merrill et al.'s three claims about the local B_crit over training (near zero at initialisation, a rise, a
    plateau), judged from one tolerance's intervals (disjoint intervals: resolved)."""
    loc = local.sort_values("s").reset_index(drop=True)
    if len(loc) < 3:
        return {"start": "not resolved", "rise": "not resolved", "plateau": "not resolved"}
    if loc[["b_crit", "lo", "hi"]].isna().to_numpy().any():
        return {"start": "not resolved (a checkpoint has no interval: too few seeds or runs)",
                "rise": "is not resolved", "plateau": "the plateau is not resolved"}
    first, later = loc.iloc[0], loc.iloc[1:]
    low, high = later.loc[later["b_crit"].idxmin()], later.loc[later["b_crit"].idxmax()]
    last, prev = loc.iloc[-1], loc.iloc[-2]
    pct = lambda r: f"{r['fraction']:.0%}"  # noqa: E731
    if first["hi"] < high["lo"]:
        start = f"below its later maximum ({high['b_crit']:.0f} at {pct(high)})"
    elif first["lo"] > low["hi"]:
        start = f"above its value soon after ({low['b_crit']:.0f} at {pct(low)}): not near zero"
    else:
        start = "not resolved from the later values"
    low = loc.loc[loc["b_crit"].idxmin()]  # the rise is read from the lowest checkpoint, the first included
    if last["lo"] > low["hi"] and low["s"] < last["s"]:
        rise = f"rises from {low['b_crit']:.0f} at {pct(low)} to {last['b_crit']:.0f} at {pct(last)}"
    elif last["hi"] < high["lo"] and high["s"] < last["s"]:
        rise = f"falls from {high['b_crit']:.0f} at {pct(high)} to {last['b_crit']:.0f} at {pct(last)}"
    else:
        rise = "shows no change the intervals resolve"
    plateau = ("the last two checkpoints agree (intervals overlap): consistent with a plateau, not proof of one"
               if last["lo"] <= prev["hi"] and prev["lo"] <= last["hi"] else
               f"it is still {'rising' if last['lo'] > prev['hi'] else 'falling'} between the last two checkpoints: "
               "no plateau by then")
    return {"start": start, "rise": rise, "plateau": plateau}


def text(ctx: Context) -> str:
    f = ctx.branching
    if f is None:
        return "### The critical batch size during training\n\n" + ctx.not_measured("branching",
                                                                                  "make sweep GRID=branching")
    loc = f.local
    head = loc[loc["tol"] == TOL].set_index("s")
    bs = f.b_simple.set_index("s") if not f.b_simple.empty else pd.DataFrame(columns=["b_simple", "lo", "hi"])
    rows = []
    for s in sorted(head.index):
        r = {"branch point (step)": s, "% of steps to target": f"{head.loc[s, 'fraction']:.0%}"}
        for tol in TOLERANCES:
            x = loc[(loc["tol"] == tol) & (loc["s"] == s)].iloc[0]
            r[f"local B_crit, {tol:.0%}"] = interval(x["b_crit"], x["lo"], x["hi"], fmt=".0f")
        if s in bs.index:
            b = bs.loc[s]
            r["B_simple [95% CI]"] = interval(b["b_simple"], b["lo"], b["hi"], fmt=".0f")
            r[f"B_simple / local B_crit ({TOL:.0%})"] = f"{b['b_simple'] / head.loc[s, 'b_crit']:.1f}"
        rows.append(r)
    verdicts = {tol: shape(loc[loc["tol"] == tol]) for tol in TOLERANCES}
    v = verdicts[TOL]
    agree = [tol for tol in TOLERANCES if verdicts[tol] == v]
    ratio = (bs["b_simple"] / head["b_crit"]).dropna() if len(bs) else pd.Series(dtype=float)
    smallest = int(f.kept["batch_size"].min())
    track = ""
    if len(ratio) >= 2:
        s0, s1 = ratio.index.min(), ratio.index.max()  # the first and last checkpoints both were measured at
        first, last = head.loc[s0, "b_crit"], head.loc[s1, "b_crit"]
        b0, b1 = bs.loc[s0, "b_simple"], bs.loc[s1, "b_simple"]
        moves = "moves the same way as" if np.sign(last - first) == np.sign(b1 - b0) else (
            "moves while it does not move:" if last == first else "moves against")
        near = int(((ratio <= B_SIMPLE_FACTOR) & (ratio >= 1 / B_SIMPLE_FACTOR)).sum())
        track = (f"B_simple, measured on the reference at the same checkpoints, is {ratio.min():.1f}–{ratio.max():.1f}× "
                 f"the local B_crit (tolerance {TOL:.0%}), within a factor of {B_SIMPLE_FACTOR:g} at {near} of "
                 f"{len(ratio)} checkpoints, and it {moves} the local B_crit from the first to the last checkpoint "
                 f"({b0:.0f} → {b1:.0f} against {first:.0f} → {last:.0f}). ")
    return "\n".join([
        "### The critical batch size during training (Merrill et al. 2025)",
        "",
        f"A reference run (MNIST-1D MLP, SGD, B = {f.reference_b}, lr = {f.reference_lr:g}) reaches the training-loss "
        f"target {f.target:g} in {interval(*f.ref_steps, fmt='.0f')} steps (median over seeds, 95% CI). From its "
        f"state at each checkpoint, branches train at B = {smallest} to {int(f.kept['batch_size'].max())} for "
        f"{f.budget} examples each, every B on a quarter-decade grid of learning rates. A branch at B **keeps** a "
        f"share of the B = {smallest} branch's loss decrease: the least, over the evaluations every {COMMON} examples, "
        f"of (loss at the checkpoint − loss at B) / (loss at the checkpoint − loss at B = {smallest}), on the median "
        "over seeds, each B at the rate that keeps the most. The **local critical batch size** is the largest B "
        f"such that it and every smaller B keep at least 1 − tolerance; {TOL:.0%} is the headline, "
        f"{' and '.join(f'{t:.0%}' for t in TOLERANCES if t != TOL)} show the sensitivity (50% is roughly the "
        "hyperbola's B_crit, where a batch needs twice the examples). Intervals: 95% percentile bootstrap over seeds "
        "(grid values, so a factor of 2 is the "
        f"resolution). {f.edge:.0%} of the (checkpoint, B) pairs took the smallest or largest rate of their grid.",
        "",
        md_table(pd.DataFrame(rows)),
        "",
        f"Against Merrill et al.'s shape (near zero at initialisation, a quick rise, a plateau), at tolerance "
        f"{TOL:.0%}: at initialisation the local B_crit is "
        f"{interval(head['b_crit'].iloc[0], head['lo'].iloc[0], head['hi'].iloc[0], fmt='.0f')}, {v['start']}; over "
        f"training it {v['rise']}; {v['plateau']}. "
        + ("The same three verdicts hold at every tolerance. " if len(agree) == len(TOLERANCES) else
           (f"The same verdicts hold at {', '.join(f'{t:.0%}' for t in agree if t != TOL)}; " if len(agree) > 1 else
            "At the other tolerances they differ: ") +
           "; ".join(f"at {t:.0%}, B_crit at initialisation is {verdicts[t]['start']}, over training it "
                     f"{verdicts[t]['rise']}, {verdicts[t]['plateau']}" for t in TOLERANCES if t not in agree) + ". ")
        + track,
        "",
        ctx.figure("q9a_local_critical"),
    ])


def local_critical_figure(ctx: Context):
    """Left: the share of the smallest batch's loss decrease each B keeps, per checkpoint. Right: the local
    critical batch size per tolerance and the reference's B_simple against the point of training."""
    f = ctx.branching
    if f.kept.empty:
        raise Skip("the branching sweep holds no branches")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    ax = axes[0]
    checkpoints = sorted(f.kept["s"].unique())
    colors = dict(zip(checkpoints, plots.sns.color_palette("rocket_r", len(checkpoints))))
    frac = f.local.drop_duplicates("s").set_index("s")["fraction"]
    for s in checkpoints:
        k = f.kept[f.kept["s"] == s]
        plots.errorbar(ax, k["batch_size"], k["kept"], k["lo"], k["hi"], fmt="o-", color=colors[s],
                  label=f"step {s} ({frac.get(s, np.nan):.0%})")
    for tol in TOLERANCES:
        ax.axhline(1 - tol, color="0.4", lw=0.8, ls="--" if tol == TOL else ":")
    ax.set_ylim(max(-0.1, f.kept["kept"].min() - 0.1), 1.15)
    plots.log2_axis(ax)
    ax.set_xlabel("batch size of the branch, B")
    ax.set_ylabel(f"share of the B = {int(f.kept['batch_size'].min())} branch's\nloss decrease kept (least over "
                  "the budget)")
    ax.set_title(f"branches of {f.budget} examples from the reference's step s", fontsize=8)
    ax.legend(fontsize=6, title="branch point (of steps to target)", title_fontsize=6, loc="lower left")

    ax = axes[1]
    markers = dict(zip(TOLERANCES, ("v", "o", "^")))
    for tol in TOLERANCES:
        loc = f.local[f.local["tol"] == tol]
        plots.errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt=markers[tol] + "-",
                  color="C0", alpha=1.0 if tol == TOL else 0.45, label=f"local B_crit, tolerance {tol:.0%}")
    if not f.b_simple.empty:
        x = f.b_simple["s"].map(frac) * 100
        plots.errorbar(ax, x, f.b_simple["b_simple"], f.b_simple["lo"], f.b_simple["hi"], fmt="s--", color="C3",
                  label="B_simple of the reference")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("branch point, % of the reference's steps to the target")
    ax.set_ylabel("batch size")
    ax.set_title("local critical batch size and B_simple over training (median, 95% CI over seeds)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    plots.suptitle(fig, f"Q9a: the critical batch size during training: branches from a reference (MNIST-1D MLP, SGD, "
                 f"B = {f.reference_b}, lr = {f.reference_lr:g})", fontsize=9)
    return fig




def _read(ctx: Context) -> BranchFacts:
    runs = load.load_runs("branching", hint="make sweep GRID=branching")
    hist = load.load_history(runs, "branching", keys=("train/loss", "grad/b_simple"), progress=ctx.progress)
    return branch_facts(runs, hist)


SECTION = Section(
    "branching",
    text=text,
    provides=(Provider("branching", _read),),
    figures=(FigureSpec("q9a_local_critical", local_critical_figure, ("branching",),
                        ("Q9a. Left: the share of the smallest batch's loss decrease kept by each B, per branch point. "
                        "Right: the local critical batch size (three tolerances) and the reference's B_simple against "
                        "the point of training.")),),
)
