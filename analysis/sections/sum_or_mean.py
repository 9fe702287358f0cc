"""Q4, sum or mean over the batch: does it only rescale the learning rate? The main sweep's best rates of sum
against mean and its heatmaps, and ``make reduction``: sum and mean trained side by side against a 1e-7
perturbation control; with Q8's paragraph on Adam's β2 (:mod:`analysis.sections.beta2`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from analysis import load, plots, reduce, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, md_table, t_text
from analysis.order import label, ordered, reference_optimizer
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from analysis.sections import beta2
from mbstudy.losses import REDUCTIONS
from mbstudy.optimizers import OPTIMIZERS

plt = plots.plt


@dataclass(frozen=True)
class ReductionFacts:
    """``make reduction``: sum and mean trained side by side, with a 1e-7 perturbation control."""

    experiment: str
    runs: pd.DataFrame  # one row per comparison and B, params as logged (strings)
    distances: pd.DataFrame  # history of dist/pair and dist/control, with comparison and batch_size
    final_ratio: pd.Series  # per run: final pair distance / final control distance


def reduction_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "reduction") -> ReductionFacts:
    return ReductionFacts(
        experiment=experiment,
        runs=runs,
        distances=history.merge(runs[["run_id", "comparison", "batch_size"]], on="run_id"),
        final_ratio=runs["final/dist_pair"] / runs["final/dist_control"],
    )


# ------------------------------------------------------------------ the best rate of sum against mean, per seed

ALGEBRA = {"linear": -1.0, "invariant": 0.0}  # the slope of best lr(sum) / best lr(mean) in B the algebra predicts


def seed_best_lr(runs: pd.DataFrame, metric: str = "final/train/loss") -> pd.DataFrame:
    """Per (optimizer, reduction, B, seed): the learning rate with the lowest ``metric`` (diverged runs never),
    ``edge`` +1/-1 when it is the largest/smallest rate tried there (a bound: the best may lie beyond the grid),
    and ``step``: the grid's median ratio between neighbouring rates there. A group where every rate diverged is
    left out."""
    keys = ["optimizer", "reduction", "batch_size"]
    seed = runs["seed"] if "seed" in runs else pd.Series(0, index=runs.index)
    df = runs.assign(seed=seed, score=reduce._score(runs, metric))
    grid = df.groupby(keys)["learning_rate"].agg(lr_min="min", lr_max="max",
                                                 step=lambda s: float(np.exp(np.median(np.diff(np.log(np.unique(
                                                     s.astype(float)))))) if s.nunique() > 1 else np.nan))
    best = df[np.isfinite(df["score"])].sort_values(["score", "learning_rate"], kind="stable")
    best = best.groupby([*keys, "seed"], as_index=False).head(1).join(grid, on=keys)
    lr = best["learning_rate"].astype(float)
    best["edge"] = np.where(np.isclose(lr, best["lr_max"]), 1, np.where(np.isclose(lr, best["lr_min"]), -1, 0))
    return best[[*keys, "seed", "learning_rate", "edge", "step"]].sort_values([*keys, "seed"]).reset_index(drop=True)


def seed_slopes(best: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, seed): the least-squares slope of log(best lr of sum / best lr of mean) against log B, over
    the batch sizes where neither best rate is on the grid's edge (a bound is not a value: it never enters a slope);
    ``n_b`` the batch sizes used, ``n_edge`` those left out for a bound, ``resolution`` the slope one step of the
    rate grid makes across the batch sizes used (a difference smaller than that is the grid's rounding)."""
    rows = []
    for (opt, seed), g in best.groupby(["optimizer", "seed"]):
        lr = g.pivot_table(index="batch_size", columns="reduction", values="learning_rate")
        edge = g.pivot_table(index="batch_size", columns="reduction", values="edge")
        if not {"sum", "mean"} <= set(lr.columns):
            continue
        both = lr[["sum", "mean"]].notna().all(axis=1)
        inside = both & (edge[["sum", "mean"]] == 0).all(axis=1)
        B = np.asarray(lr.index[inside], float)
        slope = reduce.loglog_slope(B, (lr["sum"] / lr["mean"])[inside]) if len(B) >= 2 else np.nan
        step = float(g["step"].median())
        res = float(np.log(step) / np.log(B.max() / B.min())) if len(B) >= 2 and np.isfinite(step) else np.nan
        rows.append({"optimizer": opt, "seed": seed, "slope": slope, "n_b": int(inside.sum()),
                     "n_edge": int((both & ~inside).sum()), "resolution": res})
    return pd.DataFrame(rows, columns=["optimizer", "seed", "slope", "n_b", "n_edge", "resolution"])


def slope_tests(slopes: pd.DataFrame, optimizers) -> pd.DataFrame:
    """Per optimizer: the mean slope over seeds with its 95% t-interval, tested against the algebra's −1 (sum is
    mean at lr × 1/B) and 0 (the reduction does not move the rate), each a comparison of the section's family
    (Holm). ``called`` needs the adjusted p below 0.05, at least :data:`~analysis.markdown.MIN_INTERVAL_SEEDS`
    seeds and a difference of at least the grid's resolution; ``verdict`` reads the two tests together."""
    linear, _ = _by_scaling(optimizers)
    rows = []
    for opt in optimizers:
        s = slopes[slopes["optimizer"] == opt]
        v = s["slope"].to_numpy(float)
        v = v[np.isfinite(v)]
        m, lo, hi, _ = stats.mean_interval(v)
        res = float(s["resolution"].median()) if len(s) else np.nan
        for ref in (-1.0, 0.0):
            p = stats.mean_interval(v - ref)[3] if len(v) >= MIN_INTERVAL_SEEDS else np.nan
            rows.append({"optimizer": opt, "against": ref, "slope": m, "lo": lo, "hi": hi, "n": int(len(v)),
                         "p": p, "resolution": res, "n_edge": int(s["n_edge"].sum()),
                         "predicted": ALGEBRA["linear" if opt in linear else "invariant"]})
    out = pd.DataFrame(rows, columns=["optimizer", "against", "slope", "lo", "hi", "n", "p", "resolution", "n_edge",
                                      "predicted"])
    out["p_holm"] = stats.holm(out["p"]) if len(out) else []
    big = (out["slope"] - out["against"]).abs() >= out["resolution"].fillna(0)
    out["called"] = (out["p_holm"] < 0.05) & big
    return out


def slope_verdict(tests: pd.DataFrame, optimizer: str) -> str:
    """What the two tests of one optimizer's slope say together."""
    t = tests[tests["optimizer"] == optimizer].set_index("against")["called"]
    off_lin, off_inv = bool(t.get(-1.0, False)), bool(t.get(0.0, False))
    if off_inv and not off_lin:
        return "sum moves the best rate as 1/B"
    if off_lin and not off_inv:
        return "the reduction does not move the best rate"
    if off_lin and off_inv:
        return "sum moves the best rate, but not as 1/B"
    return "not resolved"


def _slope_text(tests: pd.DataFrame, opt: str) -> str:
    r = tests[tests["optimizer"] == opt].iloc[0]
    return t_text(r.slope, r.lo, r.hi, int(r.n))


def _tests(ctx: Context) -> tuple[pd.DataFrame, pd.DataFrame]:
    d = ctx.default
    slopes = seed_slopes(seed_best_lr(d.runs))
    return slopes, slope_tests(slopes, [o for o in d.optimizers if o in set(slopes["optimizer"])])


def _exact(ctx: Context) -> str:
    """The side-by-side runs' count of bit-identical algebraic pairs, as a clause ("" when not measured)."""
    if ctx.reduction is None:
        return ""
    r = ctx.reduction.runs
    alg = r[r["comparison"] != "adam_same_eps"]
    return (f" (trained side by side, the pairs end bit-identical in {int((alg['final/dist_pair'] == 0).sum())} of "
            f"{len(alg)} cases)")


def _answer(ctx: Context, tests: pd.DataFrame) -> str:
    linear, invariant = _by_scaling(ctx.default.optimizers)
    opts = [o for o in [*linear, *invariant] if o in set(tests["optimizer"])]
    verdicts = {o: slope_verdict(tests, o) for o in opts}
    head = (f"**For {_and([label(o) for o in linear])}, sum over the batch is mean with the learning rate divided by "
            f"B: that is an identity of the update{_exact(ctx)}"
            + (f"; for {_and([label(o) for o in invariant])} the reduction reaches only ε." if invariant else ".")
            + "** ")
    agree = [o for o in opts if verdicts[o] == ("sum moves the best rate as 1/B" if o in linear else
                                                 "the reduction does not move the best rate")]
    if not opts:
        return head + "The default sweep has no optimizer with sum and mean runs at two batch sizes to test it on."
    per = "; ".join(f"{label(o)} s = {_slope_text(tests, o)}, {verdicts[o]}" for o in opts)
    if len(agree) == len(opts):
        tail = "The sweep's best rates agree: "
    elif not agree:
        tail = "The sweep's best rates do not resolve it: "
    else:
        tail = f"The sweep's best rates agree for {_and([label(o) for o in agree])}: "
    return head + tail + "best rate of sum / best rate of mean ∝ B^s with " + per + "."


def _sweep_paragraph(ctx: Context) -> str:
    slopes, tests = _tests(ctx)
    out = [_answer(ctx, tests), ""]
    if tests.empty:
        return "\n".join(out)
    firsts = tests.drop_duplicates("optimizer")
    n = int(firsts["n"].max())
    res = float(firsts["resolution"].median())
    edges = int(firsts["n_edge"].sum())
    out.append(
        f"In the default sweep ({n} seed{'s' if n != 1 else ''}), each seed's best learning rate (lowest final "
        "training loss) of sum and of mean at every batch size gives one slope of log(sum / mean) against log B; the "
        "slope is the mean over seeds with a 95% t-interval, tested against the algebra's −1 (SGD's update scales "
        "with the gradient) and 0 (Adam's does not), a verdict needing its Holm-adjusted p-value over the "
        f"{len(tests)} comparisons below 0.05 and a difference of at least {res:.2f}, the slope one step of the "
        "rate grid makes across the batch sizes (the grid's rounding)"
        + (" — with fewer than 3 seeds nothing is called" if n < MIN_INTERVAL_SEEDS else "") + ". "
        + (f"{edges} (optimizer, B, seed) cells whose best rate of sum or mean was the smallest or largest of the grid "
           "are bounds, not values, and stay out of the slopes (listed in the appendix). " if edges else
           "No best rate was on the grid's edge. ")
        + "At a fixed learning rate, sum reduction is the linear scaling rule built in. "
        + _stable_band(ctx.default) + "\n")
    return "\n".join(out)


def appendix(ctx: Context) -> str:
    out = []
    if ctx.default is not None and ctx.default.optimizers:
        best = seed_best_lr(ctx.default.runs)
        slopes, tests = _tests(ctx)
        if len(tests):
            show = pd.DataFrame({"optimizer": tests["optimizer"].map(label), "slope s [95% CI]": [
                t_text(r.slope, r.lo, r.hi, int(r.n)) for r in tests.itertuples()],
                "against": tests["against"].map(lambda v: f"{v:g}"), "seeds": tests["n"],
                "p (Holm)": tests["p_holm"].map(lambda v: f"{v:.3g}" if np.isfinite(v) else "–"),
                "called": tests["called"].map({True: "yes", False: "no"})})
            out += ["### Q4: the slope of best lr(sum) / best lr(mean) in B, per optimizer", "",
                    "Per seed a least-squares slope over the batch sizes where neither best rate is on the grid's "
                    "edge; mean over seeds, 95% t-interval; Holm over the comparisons.", "", md_table(show), ""]
        edge = best[best["edge"] != 0]
        if len(edge):
            e = edge.assign(bound=np.where(edge["edge"] > 0, "≥ ", "≤ ") + edge["learning_rate"].map(lambda v: f"{v:g}"))
            out += ["Best rates on the edge of the grid (bounds, left out of the slopes):", "",
                    md_table(e[["optimizer", "reduction", "batch_size", "seed", "bound"]]), ""]
    if ctx.reduction is not None:
        r = ctx.reduction.runs.assign(ratio=ctx.reduction.final_ratio)
        t = r[["comparison", "batch_size", "final/dist_pair", "final/dist_control", "ratio"]].sort_values(
            ["comparison", "batch_size"], key=lambda s: s.astype(int) if s.name == "batch_size" else s)
        out += ["### Q4: sum against mean trained side by side", "",
                "Final parameter distance of each pair and of its 1e-7 perturbation control.", "",
                md_table(t, ".2e"), ""]
    return "\n".join(out)


def text(ctx: Context) -> str:
    parts = []
    if ctx.default is not None and ctx.default.optimizers:
        parts.append(_sweep_paragraph(ctx))
    parts.append(ctx.figure("b_heatmaps"))
    if ctx.reduction is None:
        parts.append(f"The side-by-side trajectories are not measured yet: "
                     f"{ctx.missing.get('reduction', 'run make reduction')}.\n")
    else:
        r = ctx.reduction.runs.assign(ratio=ctx.reduction.final_ratio)
        alg = r[r["comparison"] != "adam_same_eps"]
        exact = alg[alg["final/dist_pair"] == 0]
        same = r[r["comparison"] == "adam_same_eps"]
        parts.append(
            f"Trained side by side for {int(float(r['steps'].iloc[0]))} steps (experiment `reduction`), the "
            f"algebraic pairs (SGD/momentum: sum at lr/B; Adam: sum at eps·B) end **bit-identical** in "
            f"{len(exact)} of {len(alg)} cases (B a power of two: scaling by 2^k is exact in floating point) and "
            f"at most {alg['ratio'].max():.2g}× the distance of a control run whose initial weights were perturbed "
            f"by 1e-7. Adam with the same eps under sum and mean differs by {same['ratio'].min():.2g}–"
            f"{same['ratio'].max():.2g}× the control's distance (range over B = "
            f"{', '.join(str(b) for b in sorted(same['batch_size'].astype(int)))}): eps is compared with √v, which sum scales by B"
            + ("; with eps = 1e-8 ≪ √v that stays within 10× of the control here, i.e. near rounding level."
               if same["ratio"].max() < 10 else "; that difference is well above the control.") + " (Every pair's distances: the appendix.)\n")
        parts.append(ctx.figure("f_reduction_distance"))
    parts.append(beta2.q4_paragraph(ctx))
    return "\n".join(p for p in parts if p)


def _and(items: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _by_scaling(optimizers) -> tuple[list[str], list[str]]:
    """The optimizers whose update scales with the gradient (SGD's), and those invariant to its scale (Adam's)."""
    invariant = [o for o in optimizers if o in OPTIMIZERS and OPTIMIZERS[o].scale_invariant]
    return [o for o in optimizers if o not in invariant], invariant


def _stable_band(d) -> str:
    """The largest learning rate that did not diverge, per B, for the reference optimizer with sum and with mean;
    the largest rate of the grid prints as a bound (``≥``: nothing above it was tried)."""
    ok = d.largest_stable_sgd_lr
    ref = d.runs[d.runs["optimizer"] == reference_optimizer()]
    top = ref.groupby(["reduction", "batch_size"])["learning_rate"].max()

    def at(red, B) -> str:
        v = float(ok.loc[(red, B)])
        bound = (red, B) in top.index and np.isclose(v, float(top.loc[(red, B)]))
        return f"{'≥ ' if bound else ''}{v:g} at B = {B}"

    parts = []
    for red in REDUCTIONS:
        if red in ok.index.get_level_values(0):
            v = ok.loc[red]
            parts.append(f"{red}: {at(red, v.index[0])} to {at(red, v.index[-1])}")
    note = " (≥: the largest rate tried, a bound)" if any("≥" in p for p in parts) else ""
    return (f"The largest {label(reference_optimizer())} learning rate that did not diverge went " + "; ".join(parts)
            + note + ".") if parts else ""


def heatmaps(ctx: Context):
    """Final training loss over (lr × B), one panel per reduction × optimizer, one colour scale."""
    d = ctx.default
    table, opts = d.heatmap, d.optimizers
    n_b, n_lr = table["batch_size"].nunique(), table["learning_rate"].nunique()
    if n_b < 2 and n_lr < 2:
        raise Skip("one batch size and one learning rate: each heatmap would be a single cell")
    vals = table.loc[table["diverged"] < 0.5, "value"]
    vals = vals[vals > 0]
    norm = LogNorm(vals.min(), vals.max()) if len(vals) else None
    reds = tuple(ordered(d.runs["reduction"], REDUCTIONS))
    width = 3.3 + 0.45 * max(0, n_b - 6)  # the study's 6 batch sizes fit 3.3 in; more need room for the numbers
    height = 2.9 + 0.3 * max(0, n_lr - 7)
    fig, axes = plt.subplots(len(reds), len(opts), figsize=(width * len(opts), height * len(reds)), squeeze=False)
    for i, red in enumerate(reds):
        for j, opt in enumerate(opts):
            t = table[(table["reduction"] == red) & (table["optimizer"] == opt)]
            plots.plot_heatmap(axes[i, j], t, norm)
            axes[i, j].set_title(f"{opt}, {red}")
    _, tests = _tests(ctx)
    firsts = tests.drop_duplicates("optimizer").set_index("optimizer")
    slopes = ", ".join(f"{o} s={firsts.loc[o, 'slope']:.2f}" for o in opts
                       if o in firsts.index and np.isfinite(firsts.loc[o, "slope"]))
    if norm is not None:
        fig.colorbar(plots.ScalarMappable(norm=norm, cmap=plots.HEATMAP_CMAP), ax=axes, shrink=0.8,
                     label="final training loss (median over seeds)")
    plots.suptitle(fig, "Final training loss (× = diverged)"
                 + (f"\nbest lr of sum / best lr of mean ∝ B^s (mean of per-seed slopes): {slopes}" if slopes else ""))
    return fig


def reduction_distance(ctx: Context):
    """Sum-vs-mean parameter distance over training: algebraic pairs (left), Adam at the same eps (right)."""
    r = ctx.reduction
    h = r.distances
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    plots.plot_distance(axes[0], h[h["comparison"] != "adam_same_eps"])
    axes[0].set_title("equal by algebra:\nsum at lr/B (SGD) or eps·B (Adam)")  # one line ran into the right panel
    plots.plot_distance(axes[1], h[h["comparison"] == "adam_same_eps"])
    axes[1].set_title("Adam, sum vs mean at the same eps")
    worst = r.final_ratio[r.runs["comparison"] != "adam_same_eps"].max()
    plots.suptitle(fig, f"Sum vs mean: the algebraic pairs end within {worst:.2g}× of the perturbation control")
    return fig




def _read_reduction(ctx: Context) -> ReductionFacts:
    runs = load.load_simple("reduction", "reduction", "make reduction", newest_per_case=True)
    hist = load.load_history(runs, "reduction", keys=("dist/pair", "dist/control"), progress=False)
    return reduction_facts(runs, hist)


def finding(ctx: Context) -> Answer | None:
    if ctx.default is None or not ctx.default.optimizers:
        return None
    _, tests = _tests(ctx)
    if tests.empty:
        return None
    linear, invariant = _by_scaling(ctx.default.optimizers)
    opts = [o for o in [*linear, *invariant] if o in set(tests["optimizer"])]
    firsts = tests.drop_duplicates("optimizer")
    answer = (f"{'/'.join(label(o) for o in linear)}: sum is mean at lr/B (an identity)"
              + (f"; {'/'.join(label(o) for o in invariant)}: only ε notices" if invariant else "") + ". Sweep: "
              + "; ".join(f"{label(o)} {slope_verdict(tests, o)}" for o in opts) + ".")
    number = "best lr(sum)/best lr(mean) ∝ B^s: " + ", ".join(f"{label(o)} s = {_slope_text(tests, o)}" for o in opts)
    caveat = (f"MNIST-1D MLP; a one-decade rate grid (slope resolution {firsts['resolution'].median():.2f}); "
              f"{int(firsts['n'].max())} seed{'s' if int(firsts['n'].max()) != 1 else ''}; best rates on the grid's edge left out as bounds")
    return Answer(answer, number, caveat)


SECTION = Section(
    "Q4", "Sum or mean over the batch: does it only rescale the learning rate?",
    text=text,
    provides=(Provider("reduction", _read_reduction),),
    figures=(FigureSpec("b_heatmaps", heatmaps, ("default",), "Final training loss over batch size × learning rate; "
                        "× marks divergence.", sweep=True),
             FigureSpec("f_reduction_distance", reduction_distance, ("reduction",), "Parameter distance between sum "
                        "and mean runs against the perturbation control.")),
    limits="The MNIST-1D MLP only, a one-decade learning-rate grid (the slopes' resolution), no weight decay or "
           "schedule, Adam at one eps; β2 is varied only in Q8's half-life experiment.",
    finding=("Q4 sum or mean?", finding),
    appendix=appendix,
)
