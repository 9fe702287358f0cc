"""The figures of the write-up: a registry of functions from ``Facts`` to a matplotlib Figure.

``python -m analysis.figures`` (``make figures``) collects the facts of every
experiment the store holds (``analysis.facts.collect``), draws every figure
whose facts exist into ``report/figures/`` as PNG and PDF, logs each as an
artifact on its sweep's newest parent run, and names the command to run for
each figure it could not draw. Titles state the measured takeaway; every
number in them is computed from the runs.

``python -m analysis.figures --sweep NAME`` (``make figures SWEEP=NAME``)
draws the figures of one sweep instead: NAME is a sweep's experiment (its
grid's name) or the run id of one of its parent runs (then only that
invocation's child runs). Every figure of the sweeps (loss curves, heatmaps,
B_simple, loss against time, steps to target and best lr when some run
reached its target) is drawn from that sweep's runs into
``report/sweeps/<NAME>/figures/`` (``<experiment>-<first 8 of the run id>``
for a parent run), never into ``report/figures/``; each figure the runs
cannot support is skipped with its reason.

To add a figure, decorate a function ``Facts -> Figure`` with
``@figure(name, needs=(...))``: ``needs`` names the ``Facts`` fields it
reads; it is drawn only when they all exist, and ``render`` saves and logs it.
Raise ``Skip("reason")`` when the facts hold nothing it can draw (one batch
size, no time logged...). Draw panels with the ``analysis.plots`` functions.
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

from analysis import figures_q8, figures_q9, figures_workloads, load, overlap, plots
from analysis.facts import LOSS_LEVEL, OPTIMIZERS, SMALL_B_LR, Facts, collect, present

plt = plots.plt
OUT = load.tracking.ROOT / "report" / "figures"
SWEEPS = load.tracking.ROOT / "report" / "sweeps"  # --sweep NAME: SWEEPS / label / "figures"
SWEEP_FACTS = frozenset({"default", "science", "noise"})  # the facts collect_sweep fills


Skip = plots.Skip  # raised by a figure function when the facts hold nothing it can draw


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
    if mean_cur.empty:
        raise Skip("the runs logged no train/loss history")
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
    last = f" vs {f.iloc[-1]:.2g} at B={f.index[-1]}" if len(f) >= 2 else ""
    fig.suptitle(f"Best lr per B, {d.curve_reduction} reduction. Final loss: {f.iloc[0]:.2g} at B={f.index[0]}"
                 f"{last}{per_example}")
    return fig


@figure("b_heatmaps", needs=("default",))
def heatmaps(facts: Facts) -> Figure:
    """Final training loss over (lr × B), one panel per reduction × optimizer, one colour scale."""
    d = facts.default
    table, opts = d.heatmap, d.optimizers
    n_b, n_lr = table["batch_size"].nunique(), table["learning_rate"].nunique()
    if n_b < 2 and n_lr < 2:
        raise Skip("one batch size and one learning rate: each heatmap would be a single cell")
    vals = table.loc[table["diverged"] < 0.5, "value"]
    vals = vals[vals > 0]
    norm = LogNorm(vals.min(), vals.max()) if len(vals) else None
    reds = present(("mean", "sum"), d.runs["reduction"])
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
    fig.suptitle("Final training loss (× = diverged)"
                 + (f"\nbest lr of sum / best lr of mean scales as B^s: {slopes}" if slopes else ""))
    return fig


@figure("e_loss_vs_time", needs=("default",))
def loss_vs_time(facts: Facts) -> Figure:
    """Loss against wall-clock training time (skipped when the runs logged no time)."""
    d = facts.default
    mean_cur, opts = d.mean_loss_curves, d.optimizers
    if "time_s" not in mean_cur or mean_cur["time_s"].isna().all():
        raise Skip("the runs logged no time/train_s history")
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.8), squeeze=False)
    for j, opt in enumerate(opts):
        plots.plot_curves(axes[0, j], mean_cur[mean_cur["optimizer"] == opt], x="time_s")
        axes[0, j].set_title(opt)
    plots.legend_right(fig, axes[0, -1])
    tt = mean_cur.sort_values("step").groupby("batch_size")["time_s"].last()
    steps = int(d.runs["steps"].max()) if "steps" in d.runs else int(mean_cur["step"].max())
    fig.suptitle(f"Against training time ({steps} steps: {tt.min():.2g} s at B={tt.idxmin()} "
                 f"to {tt.max():.2g} s at B={tt.idxmax()})")
    return fig


# --------------------------------------------------------- the science sweep


@figure("c_steps_to_target", needs=("science",))
def steps_to_target(facts: Facts) -> Figure:
    """Steps (top) and examples (bottom) to the target loss against B, with the fitted hyperbola."""
    s = facts.science
    opts = s.optimizers
    if not any(len(st) for st in s.steps_to_target.values()):
        raise Skip("no learning rate reached the target loss in more than half of its seeds")
    fig, axes = plt.subplots(2, len(opts), figsize=(3.3 * len(opts), 5.6), squeeze=False)
    for j, opt in enumerate(opts):
        st, fit = s.steps_to_target[opt], s.fits[opt]
        if len(st):
            plots.plot_steps_to_target(axes[0, j], st, fit, "steps")
            plots.plot_steps_to_target(axes[1, j], st, fit, "examples")
        axes[0, j].set_title(opt)
    crit = ", ".join(f"{o} {s.fits[o]['B_crit']:.0f}" for o in opts if np.isfinite(s.fits[o]["B_crit"]))
    fig.suptitle("Steps to target: perfect scaling, then diminishing returns\nfitted B_crit: " + crit if crit else
                 "Steps to target against B\nno hyperbola fit: it needs 3 batch sizes that reach the target")
    return fig


@figure("c2_best_lr", needs=("science",))
def best_lr(facts: Facts) -> Figure:
    """The best learning rate (fewest steps to target) against B per optimizer."""
    s = facts.science
    if s.runs.groupby(["optimizer", "reduction", "batch_size"])["learning_rate"].nunique().max() < 2:
        raise Skip("one learning rate per (optimizer, reduction, B): there is no best one to choose")
    if s.best_lr.loc[s.best_lr["stable"], "batch_size"].nunique() < 2:
        raise Skip("fewer than 2 batch sizes with a learning rate that did not diverge: no line against B")
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_best_lr(ax, s.best_lr)
    slope = f"; SGD slope {s.sgd_lr_slope:.2f} for B ≤ {SMALL_B_LR}" if np.isfinite(s.sgd_lr_slope) else ""
    ax.set_title(f"Best lr per B (fewest steps to target){slope}")
    return fig


@figure("d_b_simple", needs=("default",))
def b_simple(facts: Facts) -> Figure | None:
    """B_simple over training per B, against science's fitted B_crit when that sweep exists."""
    n = facts.noise
    if n is None:
        raise Skip("the runs logged no grad/b_simple history")
    fits = facts.science.fits if facts.science else {}
    opts = present(OPTIMIZERS, n.curves["optimizer"])
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.9), squeeze=False)
    for j, opt in enumerate(opts):
        g = n.curves[(n.curves["optimizer"] == opt) & (n.curves["reduction"] == facts.default.curve_reduction)]
        plots.plot_b_simple(axes[0, j], g, fits.get(opt, {}).get("B_crit"))
        axes[0, j].set_title(opt)
        if axes[0, j].get_legend() is not None:
            axes[0, j].get_legend().remove()
    plots.legend_right(fig, axes[0, 0])
    trend = "shrinks" if n.end_median < n.at_init else "grows"
    fig.suptitle(f"B_simple {trend} during training: {n.at_init:.0f} at initialisation, "
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
        raise Skip("the benchmark session holds no per-example rows")
    nets = sorted(set(pe["net"]), key=lambda n: int(pe[pe["net"] == n]["P"].iloc[0]))
    fig, axes = plt.subplots(1, len(nets), figsize=(3.3 * len(nets), 3.0), squeeze=False, sharey=True)
    for j, net in enumerate(nets):
        plots.plot_cost(axes[0, j], pe[pe["net"] == net])
        kind = "MNIST-1D CNN" if net.startswith("cnn") else f"MLP {net}"
        axes[0, j].set_title(f"{kind}\n(P = {int(pe[pe['net'] == net]['P'].iloc[0]):,})")  # one line overlaps
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
        raise Skip("the benchmark session holds no powers-of-two rows")
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_pow2(ax, p2)
    r = pd.concat([p2["us/pow2_minus_1"] / p2["us/pow2"], p2["us/pow2_plus_1"] / p2["us/pow2"]])
    ax.set_title(f"Training step at 2^k ± 1 ({b.runs['device'].iloc[0]}): {r.min():.2f}–{r.max():.2f}× of 2^k")
    return fig



# ------------------------------------------- the science sweep across workloads (analysis.figures_workloads)

for _name, _needs, _draw in (*figures_workloads.SPECS, *figures_q8.SPECS, *figures_q9.SPECS):
    figure(_name, needs=_needs)(_draw)

# ------------------------------------------------------------ drawing, saving


def attempt(spec: FigureSpec, facts: Facts) -> Figure | str:
    """The figure, or one line saying why it cannot be drawn from these facts. No files, no MLflow."""
    absent = [n for n in spec.needs if getattr(facts, n) is None]
    if absent:
        return facts.missing.get(absent[0], f"no {absent[0]} facts")
    try:
        fig = spec.draw(facts)
    except Skip as e:
        return str(e)
    return "nothing to draw" if fig is None else fig


def draw(spec: FigureSpec, facts: Facts) -> Figure | None:
    """The figure, or None when a fact it needs is missing or holds nothing to draw. No files, no MLflow."""
    fig = attempt(spec, facts)
    return None if isinstance(fig, str) else fig


def skipped(facts: Facts) -> dict[str, str]:
    """Per missing experiment that some figure needs: the MissingRuns message (it names the command)."""
    needed = {n for spec in FIGURES.values() for n in spec.needs}
    return {name: msg for name, msg in facts.missing.items() if name in needed}


def sweep_figures() -> list[str]:
    """The figures drawn from one sweep's runs alone (``--sweep``): those that need only sweep facts."""
    return [name for name, spec in FIGURES.items() if set(spec.needs) <= SWEEP_FACTS]


def render(facts: Facts, out: Path = OUT, *, only=None, parent: str | None = None,
           reasons: dict[str, str] | None = None, strict: bool = True) -> dict[str, list[Path]]:
    """Draw every registered figure that its facts allow; save each as PNG and PDF into ``out``
    and log those files on the newest parent run of the figure's experiment (artifact path
    ``figures``). Returns the files per figure drawn, in registry order. A figure whose text
    overlaps at the saved dpi (``analysis.overlap.find``) is saved all the same, with an
    ``OverlappingText`` warning that names the colliding pairs.

    ``only`` limits the figures to those names; ``parent`` logs every figure on that run
    instead; ``reasons``, when given, receives one line per figure of ``only`` (or of the
    registry) that was not drawn. With ``strict=False`` a figure that raises is reported in
    ``reasons`` (with its error) instead of stopping the others.
    """
    plots.use_style()
    files: dict[str, list[Path]] = {}
    parents: dict[str, str | None] = {}
    for spec in FIGURES.values():
        if only is not None and spec.name not in only:
            continue
        try:
            fig = attempt(spec, facts)
        except Exception as e:  # noqa: BLE001 - only with strict=False
            if strict:
                raise
            plt.close("all")
            fig = f"failed: {type(e).__name__}: {e}".splitlines()[0]
        if isinstance(fig, str):
            if reasons is not None:
                reasons[spec.name] = fig
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
                parents[experiment] = parent or load.latest_parent(experiment)
            if parents[experiment]:
                for p in paths:
                    load.tracking.client().log_artifact(parents[experiment], str(p), artifact_path="figures")
    return files


def describe_source(source) -> str:
    """One line per fact about the runs a ``--sweep`` read (for the CLI and the sweep's report)."""
    varied = ", ".join(f"{d} ({len(v)})" for d, v in source.varies.items() if len(v) > 1) or "nothing"
    fixed = ", ".join(f"{d}={v[0]}" for d, v in source.varies.items() if len(v) == 1)
    lines = [f"sweep {source.experiment!r}" + (f", parent run {source.parent}" if source.parent else "")
             + f": {source.runs} finished runs; varies {varied}" + (f"; fixed {fixed}" if fixed else "")]
    if source.pooled:
        lines.append(f"note: the runs also differ in {', '.join(source.pooled)}, which the figures do not tell "
                     "apart: runs that differ only there are pooled like seeds")
    return "\n".join(lines)


def sweep_out(source, out: Path | None = None) -> Path:
    """Where ``--sweep`` writes figures: ``out``, else ``SWEEPS / label / figures``."""
    return out if out is not None else SWEEPS / source.label / "figures"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analysis.figures", description=__doc__.split("\n\n")[0])
    ap.add_argument("--sweep", metavar="NAME",
                    help="draw the figures of this one sweep (experiment name, or a parent run id) into "
                         "report/sweeps/NAME/figures/ instead of the study's")
    ap.add_argument("--default", default="default", help="the sweep for figures a, b, d, e (default: default)")
    ap.add_argument("--science", default="science", help="the sweep for figure c (default: science)")
    ap.add_argument("--out", type=Path, default=None,
                    help=f"the folder for the files (default: {OUT}, or with --sweep report/sweeps/NAME/figures)")
    a = ap.parse_args(argv)
    if a.sweep is not None:
        from analysis.facts import collect_sweep

        try:
            facts, source = collect_sweep(a.sweep)
        except load.MissingRuns as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(describe_source(source), file=sys.stderr)
        reasons: dict[str, str] = {}
        drawn = render(facts, sweep_out(source, a.out), only=sweep_figures(), parent=source.parent,
                       reasons=reasons, strict=False)
        for name, paths in drawn.items():
            print(f"drew {name}: {', '.join(str(p) for p in paths)}")
        for name, why in reasons.items():
            print(f"skipped {name}: {why}", file=sys.stderr)
        return 0
    facts = collect(a.default, a.science)
    for name, paths in render(facts, a.out or OUT).items():
        print(f"drew {name}: {', '.join(str(p) for p in paths)}")
    for name, msg in skipped(facts).items():
        print(f"skipped {name}: {msg}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
