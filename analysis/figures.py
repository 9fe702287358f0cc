"""The figures of the write-up: a registry of functions from ``Facts`` to a matplotlib Figure.

``python -m analysis.figures`` (``make figures``) collects the facts of every
experiment the store holds (``analysis.facts.collect``), draws every figure
whose facts exist into ``report/figures/`` as PNG and PDF, logs each as an
artifact on its sweep's newest parent run, and names the command to run for
each figure it could not draw. Titles state the measured takeaway; every
number in them is computed from the runs.

To add a figure, decorate a function ``Facts -> Figure | None`` with
``@figure(name, needs=(...))``: ``needs`` names the ``Facts`` fields it
reads; it is drawn only when they all exist, and ``render`` saves and logs it.
Return ``None`` when the facts hold nothing to draw. Draw panels with the
``analysis.plots`` functions.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from analysis import load, overlap, plots
from analysis.facts import LOSS_LEVEL, OPTIMIZERS, SMALL_B_LR, Facts, collect, present

plt = plots.plt
OUT = load.tracking.ROOT / "report" / "figures"


@dataclass(frozen=True)
class FigureSpec:
    name: str  # the file stem in report/figures/
    draw: Callable[[Facts], Figure | None]
    needs: tuple[str, ...]  # the Facts fields it reads; the first names the experiment it belongs to
    log_artifact: bool = True  # log it on the newest parent run of that experiment


FIGURES: dict[str, FigureSpec] = {}  # in drawing order


def figure(name: str, needs: tuple[str, ...], log_artifact: bool = True):
    """Register ``fn(facts) -> Figure | None`` as the figure ``name``, drawn when every field in ``needs`` exists."""
    unknown = [n for n in needs if n not in Facts.__dataclass_fields__ or n == "missing"]
    if not needs or unknown:
        raise ValueError(f"figure {name!r}: needs must name Facts fields, got {needs!r}; "
                         f"expected some of {[f for f in Facts.__dataclass_fields__ if f != 'missing']}")
    if name in FIGURES:
        raise ValueError(f"figure {name!r} is registered twice; give the new one another name")

    def register(fn):
        FIGURES[name] = FigureSpec(name, fn, tuple(needs), log_artifact)
        return fn

    return register


# ------------------------------------------------------------ the main sweep


@figure("a_loss_curves", needs=("default",))
def loss_curves(facts: Facts) -> Figure:
    """Loss against steps (top) and examples (bottom), mean reduction, best lr per B."""
    d = facts.default
    opts, mean_cur = d.optimizers, d.mean_loss_curves
    fig, axes = plt.subplots(2, len(opts), figsize=(3.2 * len(opts), 5.4), squeeze=False)
    for j, opt in enumerate(opts):
        for i, x in enumerate(["step", "examples"]):
            plots.plot_curves(axes[i, j], mean_cur[mean_cur["optimizer"] == opt], x=x)
            axes[i, j].set_title(opt if i == 0 else "")
    plots.legend_right(fig, axes[0, -1])
    final = mean_cur.sort_values("step").groupby(["optimizer", "batch_size"]).tail(1)
    f = final.groupby("batch_size")["mean"].min()
    ex = d.examples_to_loss_1
    per_example = (f"\nexamples to reach loss {LOSS_LEVEL:g}: {ex.iloc[0]:.2g} at B={ex.index[0]} vs "
                   f"{ex.iloc[-1]:.2g} at B={ex.index[-1]}") if len(ex) >= 2 else ""
    fig.suptitle(f"Best lr per B, mean reduction. Final loss: {f.iloc[0]:.2g} at B={f.index[0]} vs "
                 f"{f.iloc[-1]:.2g} at B={f.index[-1]}{per_example}")
    return fig


@figure("b_heatmaps", needs=("default",))
def heatmaps(facts: Facts) -> Figure:
    """Final training loss over (lr × B), one panel per reduction × optimizer, one colour scale."""
    d = facts.default
    table, opts = d.heatmap, d.optimizers
    vals = table.loc[table["diverged"] < 0.5, "value"]
    norm = LogNorm(vals[vals > 0].min(), vals.max()) if len(vals) else None
    reds = [r for r in ("mean", "sum") if r in set(d.runs["reduction"])]
    fig, axes = plt.subplots(len(reds), len(opts), figsize=(3.3 * len(opts), 2.9 * len(reds)), squeeze=False)
    for i, red in enumerate(reds):
        for j, opt in enumerate(opts):
            t = table[(table["reduction"] == red) & (table["optimizer"] == opt)]
            plots.plot_heatmap(axes[i, j], t, norm)
            axes[i, j].set_title(f"{opt}, {red}")
    sl = {r.optimizer: r.slope for r in d.sum_mean_slopes.itertuples()}
    fig.suptitle("Final training loss (× = diverged)\nbest lr of sum / best lr of mean scales as B^s: "
                 + ", ".join(f"{o} s={sl[o]:.2f}" for o in opts if o in sl))
    return fig


@figure("e_loss_vs_time", needs=("default",))
def loss_vs_time(facts: Facts) -> Figure | None:
    """Loss against wall-clock training time; None when the runs logged no time."""
    d = facts.default
    mean_cur, opts = d.mean_loss_curves, d.optimizers
    if "time_s" not in mean_cur:
        return None
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.8), squeeze=False)
    for j, opt in enumerate(opts):
        plots.plot_curves(axes[0, j], mean_cur[mean_cur["optimizer"] == opt], x="time_s")
        axes[0, j].set_title(opt)
    plots.legend_right(fig, axes[0, -1])
    tt = mean_cur.sort_values("step").groupby("batch_size")["time_s"].last()
    fig.suptitle(f"Against training time (2000 steps: {tt.min():.2g} s at B={tt.idxmin()} "
                 f"to {tt.max():.2g} s at B={tt.idxmax()})")
    return fig


# --------------------------------------------------------- the science sweep


@figure("c_steps_to_target", needs=("science",))
def steps_to_target(facts: Facts) -> Figure:
    """Steps (top) and examples (bottom) to the target loss against B, with the fitted hyperbola."""
    s = facts.science
    opts = s.optimizers
    fig, axes = plt.subplots(2, len(opts), figsize=(3.3 * len(opts), 5.6), squeeze=False)
    for j, opt in enumerate(opts):
        st, fit = s.steps_to_target[opt], s.fits[opt]
        if len(st):
            plots.plot_steps_to_target(axes[0, j], st, fit, "steps")
            plots.plot_steps_to_target(axes[1, j], st, fit, "examples")
        axes[0, j].set_title(opt)
    fig.suptitle("Steps to target: perfect scaling, then diminishing returns\nfitted B_crit: "
                 + ", ".join(f"{o} {s.fits[o]['B_crit']:.0f}" for o in opts if np.isfinite(s.fits[o]["B_crit"])))
    return fig


@figure("c2_best_lr", needs=("science",))
def best_lr(facts: Facts) -> Figure:
    """The best learning rate (fewest steps to target) against B per optimizer."""
    s = facts.science
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_best_lr(ax, s.best_lr)
    ax.set_title(f"Best lr per B (fewest steps to target); SGD slope {s.sgd_lr_slope:.2f} for B ≤ {SMALL_B_LR}")
    return fig


@figure("d_b_simple", needs=("default",))
def b_simple(facts: Facts) -> Figure | None:
    """B_simple over training per B, against science's fitted B_crit when that sweep exists."""
    n = facts.noise
    if n is None:
        return None
    fits = facts.science.fits if facts.science else {}
    opts = present(OPTIMIZERS, n.curves["optimizer"])
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.9), squeeze=False)
    for j, opt in enumerate(opts):
        g = n.curves[(n.curves["optimizer"] == opt) & (n.curves["reduction"] == "mean")]
        plots.plot_b_simple(axes[0, j], g, fits.get(opt, {}).get("B_crit"))
        axes[0, j].set_title(opt)
        axes[0, j].get_legend().remove()
    plots.legend_right(fig, axes[0, 0])
    fig.suptitle(f"B_simple grows during training: {n.at_init:.0f} at initialisation, "
                 f"median {n.end_median:.0f} at the end ({n.end_median / n.at_init:.0f}×)")
    return fig


# ------------------------------------------------------- the side experiments


@figure("f_reduction_distance", needs=("reduction",))
def reduction_distance(facts: Facts) -> Figure:
    """Sum-vs-mean parameter distance over training: algebraic pairs (left), Adam at the same eps (right)."""
    r = facts.reduction
    h = r.distances
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    plots.plot_distance(axes[0], h[h["comparison"] != "adam_same_eps"])
    axes[0].set_title("equal by algebra:\nsum at lr/B (SGD) or eps·B (Adam)")  # one line ran into the right panel
    plots.plot_distance(axes[1], h[h["comparison"] == "adam_same_eps"])
    axes[1].set_title("Adam, sum vs mean at the same eps")
    worst = r.final_ratio[r.runs["comparison"] != "adam_same_eps"].max()
    fig.suptitle(f"Sum vs mean: the algebraic pairs end within {worst:.2g}× of the perturbation control")
    return fig


@figure("q3_cost", needs=("bench",), log_artifact=False)
def per_example_cost(facts: Facts) -> Figure | None:
    """Per-example gradient cost relative to the batch gradient, one panel per network size."""
    b = facts.bench
    pe = b.per_example
    if pe.empty:
        return None
    nets = sorted(set(pe["net"]), key=lambda n: int(pe[pe["net"] == n]["P"].iloc[0]))
    fig, axes = plt.subplots(1, len(nets), figsize=(3.3 * len(nets), 3.0), squeeze=False, sharey=True)
    for j, net in enumerate(nets):
        plots.plot_cost(axes[0, j], pe[pe["net"] == net])
        axes[0, j].set_title(f"MLP {net}\n(P = {int(pe[pe['net'] == net]['P'].iloc[0]):,})")  # one line overlaps
    plots.legend_right(fig, axes[0, 0])
    big = pe[pe["P"] == pe["P"].max()]
    ff = big[big["B"] >= 32]["ratio/fast_to_floor"]
    fig.suptitle(f"Per-example gradients on {b.runs['device'].iloc[0]}: vmap(grad) costs "
                 f"{big['ratio/vmap_to_batch'].min():.0f}–{big['ratio/vmap_to_batch'].max():.0f}× the batch gradient "
                 f"at P = {int(big['P'].iloc[0]):,};\nthe one-pass recipe runs at "
                 f"{ff.min():.1f}–{ff.max():.1f}× the write floor (B ≥ 32)")
    return fig


@figure("q6_powers_of_two", needs=("bench",), log_artifact=False)
def powers_of_two(facts: Facts) -> Figure | None:
    """Training-step time at 2^k ± 1 relative to 2^k."""
    b = facts.bench
    p2 = b.pow2
    if p2.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_pow2(ax, p2)
    r = pd.concat([p2["us/pow2_minus_1"] / p2["us/pow2"], p2["us/pow2_plus_1"] / p2["us/pow2"]])
    ax.set_title(f"Training step at 2^k ± 1 ({b.runs['device'].iloc[0]}): {r.min():.2f}–{r.max():.2f}× of 2^k")
    return fig


# ------------------------------------------------------------ drawing, saving


def draw(spec: FigureSpec, facts: Facts) -> Figure | None:
    """The figure, or None when a fact it needs is missing or holds nothing to draw. No files, no MLflow."""
    if any(getattr(facts, n) is None for n in spec.needs):
        return None
    return spec.draw(facts)


def skipped(facts: Facts) -> dict[str, str]:
    """Per missing experiment that some figure needs: the MissingRuns message (it names the command)."""
    needed = {n for spec in FIGURES.values() for n in spec.needs}
    return {name: msg for name, msg in facts.missing.items() if name in needed}


def render(facts: Facts, out: Path = OUT) -> dict[str, list[Path]]:
    """Draw every registered figure that its facts allow; save each as PNG and PDF into ``out``
    and log those files on the newest parent run of the figure's experiment (artifact path
    ``figures``). Returns the files per figure drawn, in registry order. A figure whose text
    overlaps at the saved dpi (``analysis.overlap.find``) is saved all the same, with an
    ``OverlappingText`` warning that names the colliding pairs.
    """
    plots.use_style()
    files: dict[str, list[Path]] = {}
    parents: dict[str, str | None] = {}
    for spec in FIGURES.values():
        fig = draw(spec, facts)
        if fig is None:
            continue
        pairs = overlap.find(fig)  # at the saved dpi; a warning, not an error: the figure is still saved
        if pairs:
            warnings.warn(f"{spec.name}: overlapping text at {plt.rcParams['savefig.dpi']} dpi:\n"
                          + overlap.describe(pairs), overlap.OverlappingText, stacklevel=2)
        out.mkdir(parents=True, exist_ok=True)
        paths = [out / f"{spec.name}.png", out / f"{spec.name}.pdf"]
        for p in paths:
            fig.savefig(p)
        plt.close(fig)
        files[spec.name] = paths
        if spec.log_artifact:
            experiment = getattr(facts, spec.needs[0]).experiment
            if experiment not in parents:
                parents[experiment] = load.latest_parent(experiment)
            if parents[experiment]:
                for p in paths:
                    load.tracking.client().log_artifact(parents[experiment], str(p), artifact_path="figures")
    return files


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--default", default="default", help="the sweep for figures a, b, d, e (default: default)")
    ap.add_argument("--science", default="science", help="the sweep for figure c (default: science)")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args(argv)
    facts = collect(a.default, a.science)
    for name, paths in render(facts, a.out).items():
        print(f"drew {name}: {', '.join(str(p) for p in paths)}")
    for name, msg in skipped(facts).items():
        print(f"skipped {name}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
