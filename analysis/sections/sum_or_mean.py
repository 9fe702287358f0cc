"""Q4, sum or mean over the batch: does it only rescale the learning rate? The main sweep's best rates of sum
against mean and its heatmaps, and ``make reduction``: sum and mean trained side by side against a 1e-7
perturbation control; with Q8's paragraph on Adam's β2 (:mod:`analysis.sections.beta2`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm

from analysis import load, plots
from analysis.markdown import md_table
from analysis.order import label, ordered, reference_optimizer
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
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


def text(ctx: Context) -> str:
    parts = []
    if ctx.default is not None and len(ctx.default.sum_mean_slopes):
        sl = {r.optimizer: r.slope for r in ctx.default.sum_mean_slopes.itertuples()}
        linear, invariant = _by_scaling(ctx.default.optimizers)
        opts = [*linear, *invariant]
        parts.append(
            f"**For {_and([label(o) for o in linear])}, sum is mean with the learning rate multiplied by B; for "
            f"{_and([label(o) for o in invariant])} the reduction barely matters.** Across the default sweep, the best "
            "learning rate of `sum` divided by that of `mean` scales as B^s with s = "
            + _and([f"**{sl.get(o, np.nan):.2f}** ({label(o)})" for o in opts])
            + f"; the algebra predicts {_and(['0' if o in invariant else '−1' for o in opts])} "
            "(the learning-rate grid is one decade apart, which limits the slope's resolution). At a fixed "
            "learning rate, sum reduction is the linear scaling rule built in. "
            + _stable_band(ctx.default.largest_stable_sgd_lr) + "\n")
    parts.append(ctx.figure("b_heatmaps"))
    if ctx.reduction is None:
        parts.append(f"The side-by-side trajectories are not measured yet: "
                     f"{ctx.missing.get('reduction', 'run make reduction')}.\n")
    else:
        r = ctx.reduction.runs.assign(ratio=ctx.reduction.final_ratio)
        t = r[["comparison", "batch_size", "final/dist_pair", "final/dist_control", "ratio"]].sort_values(
            ["comparison", "batch_size"], key=lambda s: s.astype(int) if s.name == "batch_size" else s)
        alg = r[r["comparison"] != "adam_same_eps"]
        exact = alg[alg["final/dist_pair"] == 0]
        same = r[r["comparison"] == "adam_same_eps"]
        parts.append(
            f"Trained side by side for {int(float(r['steps'].iloc[0]))} steps (experiment `reduction`), the "
            f"algebraic pairs (SGD/momentum: sum at lr/B; Adam: sum at eps·B) end **bit-identical** in "
            f"{len(exact)} of {len(alg)} cases (B a power of two: scaling by 2^k is exact in floating point) and "
            f"at most {alg['ratio'].max():.2g}× the distance of a control run whose initial weights were perturbed "
            f"by 1e-7. Adam with the same eps under sum and mean differs by {same['ratio'].min():.2g}–"
            f"{same['ratio'].max():.2g}× the control's distance: eps is compared with √v, which sum scales by B"
            + ("; with eps = 1e-8 ≪ √v that stays within 10× of the control here, i.e. near rounding level."
               if same["ratio"].max() < 10 else "; that difference is well above the control.") + "\n\n"
            f"{md_table(t, '.2e')}\n")
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


def _stable_band(ok: pd.Series) -> str:
    """The largest learning rate that did not diverge, per B, for the reference optimizer with sum and with mean."""
    parts = []
    for red in REDUCTIONS:
        if red in ok.index.get_level_values(0):
            v = ok.loc[red]
            parts.append(f"{red}: {v.iloc[0]:g} at B = {v.index[0]} to {v.iloc[-1]:g} at B = {v.index[-1]}")
    return (f"The largest {label(reference_optimizer())} learning rate that did not diverge went " + "; ".join(parts)
            + ".") if parts else ""


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
    sl = {r.optimizer: r.slope for r in d.sum_mean_slopes.itertuples()}
    slopes = ", ".join(f"{o} s={sl[o]:.2f}" for o in opts if o in sl)
    if norm is not None:
        fig.colorbar(plots.ScalarMappable(norm=norm, cmap=plots.HEATMAP_CMAP), ax=axes, shrink=0.8,
                     label="final training loss (median over seeds)")
    plots.suptitle(fig, "Final training loss (× = diverged)"
                 + (f"\nbest lr of sum / best lr of mean scales as B^s: {slopes}" if slopes else ""))
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
    runs = load.load_simple("reduction", "reduction", "make reduction")
    hist = load.load_history(runs, "reduction", keys=("dist/pair", "dist/control"), progress=False)
    return reduction_facts(runs, hist)


def finding(ctx: Context) -> str | None:
    if ctx.default is None or ctx.default.sum_mean_slopes.empty:
        return None
    s = {r.optimizer: r.slope for r in ctx.default.sum_mean_slopes.itertuples()}
    linear, invariant = _by_scaling(ctx.default.optimizers)

    def slopes(opts):
        return " / ".join(f"B^{s.get(o, np.nan):.2f}" for o in opts)

    return (f"{'/'.join(label(o) for o in linear)}: the best lr of sum over mean scales as {slopes(linear)} (algebra: "
            f"B^−1). {'/'.join(label(o) for o in invariant)}: {slopes(invariant)}.")


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
)
