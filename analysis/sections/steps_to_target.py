"""Q5, update after every example or after the batch? The headline: loss curves of the main sweep, and steps to the
training-loss target against B with McCandlish et al.'s hyperbola on the science sweep's headline workload (the
MNIST-1D MLP); the other workloads and targets are :mod:`analysis.sections.workloads`, which this section
includes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, plots, reduce, stats
from analysis.order import label, optimizers_in, reference_optimizer
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from analysis.sections import teacher_momentum, workloads
from analysis.sections.workloads import SMALL_B, workload_of

plt = plots.plt
SMALL_B_LR = 64  # the best SGD learning rate's slope is measured for B up to this


@dataclass(frozen=True)
class ScienceFacts:
    """The science sweep (``make sweep GRID=science``): steps to a target loss against B."""

    experiment: str  # the MLflow experiment (``--science``)
    runs: pd.DataFrame
    optimizers: tuple[str, ...]
    steps_to_target: dict[str, pd.DataFrame]  # per optimizer: ``reduce.steps_to_target``
    fits: dict[str, dict[str, float]]  # per optimizer: S(B) = S_min (1 + B_crit / B), ``reduce.fit_hyperbola``
    small_b_steps_slopes: dict[str, float]  # per optimizer with a target reached: log-log slope for B <= SMALL_B
    # per optimizer: (estimate, lo, hi) of B_crit, S_min, E_min and the small-B slope, 95% bootstrap over seeds
    # (``reduce.bootstrap_fit``; lo, hi NaN with one seed)
    intervals: dict[str, dict[str, tuple[float, float, float]]]
    n_seeds: int  # seeds per configuration (the most any group has)
    best_lr: pd.DataFrame  # fewest steps to target (or lowest final loss) per group
    sgd_lr_slope: float  # log-log slope of SGD's best lr against B for B <= 64 (NaN: too few points)


def science_facts(runs: pd.DataFrame, experiment: str, intervals: dict | None = None) -> ScienceFacts:
    """``intervals``: the bootstrap fits per optimizer when already computed (the workloads' panel of these runs)."""
    optimizers = optimizers_in(runs["optimizer"])
    steps = {o: reduce.steps_to_target(runs[runs["optimizer"] == o]) for o in optimizers}
    measured = {o: st[st["n_bound"] == 0] if len(st) else st for o, st in steps.items()}  # bounds left out
    fits = {o: reduce.fit_hyperbola(st["batch_size"], st["steps"]) if len(st) else reduce.fit_hyperbola([], [])
            for o, st in measured.items()}
    small = {o: st[st["batch_size"] <= SMALL_B] for o, st in steps.items() if len(st)}
    best = reduce.best_lr_to_target(runs) if "steps_to_target" in runs else reduce.best_lr(runs)
    sgd = best[(best["optimizer"] == reference_optimizer()) & best["stable"]].sort_values("batch_size")
    sgd = sgd[sgd["batch_size"] <= SMALL_B_LR]
    table = reduce.per_seed_steps(runs, drop_bounds=True)
    if intervals is None:
        intervals = {o: reduce.bootstrap_fit(table.loc[o], small_b=SMALL_B) for o in steps if len(steps[o])}
    return ScienceFacts(
        experiment=experiment,
        runs=runs,
        optimizers=optimizers,
        steps_to_target=steps,
        fits=fits,
        small_b_steps_slopes={o: reduce.loglog_slope(s["batch_size"], s["steps"]) for o, s in small.items()},
        best_lr=best,
        sgd_lr_slope=reduce.loglog_slope(sgd["batch_size"], sgd["learning_rate"]),
        intervals=intervals,
        n_seeds=int(table.shape[1]),
    )


def _headline_summary(ctx: Context) -> str:
    """``sgd 174 [160, 190], momentum ≥ 3200, ...``: the headline's B_crit per optimizer at the hardest level."""
    p = workloads.headline_panel(ctx)
    if p is None:
        return ""
    out = []
    for o, v in p.fits.items():
        value, lo, hi = v["B_crit"]
        text = (f"≥ {value:.0f}" if p.bounds[o] == ">=" else f"≤ {value:.0f}" if p.bounds[o] == "<="
                else stats.span_text(value, lo, hi, ".0f") if np.isfinite(lo) else f"{value:.0f}")
        out.append(f"{label(o)} {text}")
    return ", ".join(out)


def text(ctx: Context) -> str:
    parts = []
    w, p = ctx.workloads, workloads.headline_panel(ctx)
    if p is not None:
        parts.append(
            "**Per step, a larger batch makes more progress; per example seen, a smaller one does, up to the critical "
            "batch size B_crit: below it doubling B halves the steps, above it the steps level off at S_min "
            f"(McCandlish et al.'s S(B) = S_min(1 + B_crit/B)).** On the {w.label(p.workload)}, to training loss "
            f"{p.level:g}: B_crit = {_headline_summary(ctx)} (geometric mean over {p.n_seeds} seeds of each seed's fit, "
            "95% t-interval; ≥ x: every batch size up to x was still in perfect scaling for some seed, so x is a lower "
            "bound). The other workloads, targets and levels follow.\n")
    ex = ctx.default.examples_to_level if ctx.default else None
    if ex is not None and len(ex) >= 2:
        parts.append(
            f"In the main sweep (a fixed number of steps, the best learning rate per B), reaching training loss "
            f"{ctx.default.loss_level:g} took {ex.iloc[0]:,.0f} examples at B = {ex.index[0]} against "
            f"{ex.iloc[-1]:,.0f} at B = {ex.index[-1]}.\n")
    parts.append(ctx.figure("a_loss_curves"))
    parts.append(ctx.figure("c_steps_to_target"))
    s = ctx.science.sgd_lr_slope if ctx.science else None
    if s is not None and np.isfinite(s):
        parts.append(f"The best {label(reference_optimizer())} learning rate grows with B (log-log slope {s:.2f} for "
                     f"B ≤ {SMALL_B_LR}), then saturates.\n")
    parts.append(ctx.figure("c2_best_lr"))
    parts.append(ctx.figure("e_loss_vs_time"))
    parts.append(workloads.text(ctx))
    parts.append(teacher_momentum.text(ctx))
    if not any(parts):
        return "Not measured yet: run `make sweep` and `make sweep GRID=science`.\n"
    return "\n".join(p for p in parts if p)


def loss_curves(ctx: Context):
    """Loss against steps (top) and examples (bottom), mean reduction, best lr per B."""
    d = ctx.default
    opts, mean_cur = d.optimizers, d.mean_loss_curves
    if mean_cur.empty:
        raise Skip("the runs logged no train/loss history")
    if len(opts) == 1:  # one optimizer: steps and examples side by side, not a tall, narrow column
        fig, row = plt.subplots(1, 2, figsize=(6.4, 2.9), squeeze=False)
        axes = row.T  # axes[i, 0]: i = 0 steps, 1 examples
    else:
        fig, axes = plt.subplots(2, len(opts), figsize=(3.2 * len(opts), 5.4), squeeze=False)
    for j, opt in enumerate(opts):
        for i, x in enumerate(["step", "examples"]):
            plots.plot_curves(axes[i, j], mean_cur[mean_cur["optimizer"] == opt], x=x)
            axes[i, j].set_title(opt if i == 0 or len(opts) == 1 else "")
    plots.legend_right(fig, axes[0, -1])
    final = mean_cur.sort_values("step").groupby(["optimizer", "batch_size"]).tail(1)
    f = final.groupby("batch_size")["mean"].min()
    ex = d.examples_to_level
    per_example = (f"\nexamples to reach loss {d.loss_level:g}: {ex.iloc[0]:.2g} at B={ex.index[0]} vs "
                   f"{ex.iloc[-1]:.2g} at B={ex.index[-1]}") if len(ex) >= 2 else ""
    last = f" vs {f.iloc[-1]:.2g} at B={f.index[-1]}" if len(f) >= 2 else ""
    plots.suptitle(fig, f"Best lr per B, {d.curve_reduction} reduction. Final loss: {f.iloc[0]:.2g} at "
                        f"B={f.index[0]}{last}{per_example}")
    return fig


def loss_vs_time(ctx: Context):
    """Loss against wall-clock training time (skipped when the runs logged no time)."""
    d = ctx.default
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
    plots.suptitle(fig, f"Against training time ({steps} steps: {tt.min():.2g} s at B={tt.idxmin()} "
                        f"to {tt.max():.2g} s at B={tt.idxmax()})")
    return fig


def steps_to_target(ctx: Context):
    """Steps (top) and examples (bottom) to the target loss against B, with the fitted hyperbola."""
    s = ctx.science
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
    plots.suptitle(fig, "Steps to target: perfect scaling, then diminishing returns\nfitted B_crit: " + crit if crit else
                 "Steps to target against B\nno hyperbola fit: it needs 3 batch sizes that reach the target")
    return fig


def best_lr(ctx: Context):
    """The best learning rate (fewest steps to target) against B per optimizer."""
    s = ctx.science
    if s.runs.groupby(["optimizer", "reduction", "batch_size"])["learning_rate"].nunique().max() < 2:
        raise Skip("one learning rate per (optimizer, reduction, B): there is no best one to choose")
    if s.best_lr.loc[s.best_lr["stable"], "batch_size"].nunique() < 2:
        raise Skip("fewer than 2 batch sizes with a learning rate that did not diverge: no line against B")
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_best_lr(ax, s.best_lr)
    slope = f"; SGD slope {s.sgd_lr_slope:.2f} for B ≤ {SMALL_B_LR}" if np.isfinite(s.sgd_lr_slope) else ""
    ax.set_title(f"Best lr per B (fewest steps to target){slope}")
    return fig


def finding(ctx: Context) -> Answer | None:
    p = workloads.headline_panel(ctx)
    if p is None:
        return None
    comp = workloads.comparison_rows(ctx.workloads)
    larger = comp[comp["verdict"] == "larger"]
    return Answer(
        "Steps fall as 1/B up to a critical batch size B_crit, then level off; per example seen, small batches are "
        "more efficient.",
        f"B_crit ({ctx.workloads.label(p.workload)}, training loss {p.level:g}): {_headline_summary(ctx)}",
        f"{len(larger)} of {len(comp)} comparisons find an optimizer's B_crit above {label(reference_optimizer())}'s "
        "(Holm, 5%); a B_crit beyond the largest B tried is a bound.")


def headline_facts(ctx: Context, p: workloads.Panel) -> ScienceFacts:
    """The headline workload at its hardest training-loss level, in the shape the figures of one sweep draw."""
    w = ctx.workloads
    runs = w.runs[workload_of(w.runs) == p.workload].reset_index(drop=True)
    steps = {o: p.steps[p.steps["optimizer"] == o].reset_index(drop=True) for o in optimizers_in(p.steps["optimizer"])}
    fits = {o: {"B_crit": v["B_crit"][0] if not p.bounds[o] else np.nan, "S_min": v["S_min"][0], "E_min": v["E_min"][0],
                "r2": np.nan, "n": int(len(steps.get(o, ())))} for o, v in p.fits.items()}
    best = p.steps.assign(reduction=runs["reduction"].iloc[0] if len(runs) else "mean",
                          stable=p.steps["learning_rate"].notna(), score=p.steps["steps"])
    ref = best[(best["optimizer"] == reference_optimizer()) & best["stable"] & (best["batch_size"] <= SMALL_B_LR)]
    return ScienceFacts(
        experiment=w.experiment, runs=runs, optimizers=optimizers_in(p.steps["optimizer"]), steps_to_target=steps,
        fits=fits, small_b_steps_slopes={o: v["slope"][0] for o, v in p.fits.items()},
        intervals={o: {k: v[k] for k in ("B_crit", "S_min", "E_min", "slope")} for o, v in p.fits.items()},
        n_seeds=p.n_seeds, best_lr=best, sgd_lr_slope=reduce.loglog_slope(ref["batch_size"], ref["learning_rate"]))


def _read(ctx: Context) -> ScienceFacts:
    w = ctx.workloads
    if w is None:
        raise load.MissingRuns(ctx.missing["workloads"])
    p = workloads.headline_panel(ctx)
    if p is None:
        raise load.MissingRuns(f"the science sweep {w.experiment!r} has no run with a training-loss target")
    return headline_facts(ctx, p)


SECTION = Section(
    "Q5", "Update after every example, or after the batch? How does the number of steps depend on the batch size?",
    text=text,
    provides=(Provider("science", _read),),
    figures=(FigureSpec("a_loss_curves", loss_curves, ("default",), "Training loss against steps (top) and examples "
                        "seen (bottom); best learning rate per B, mean and range over seeds.", sweep=True),
             FigureSpec("e_loss_vs_time", loss_vs_time, ("default",), "Training loss against wall-clock training time "
                        "on this CPU.", sweep=True, sweep_caption="Training loss against wall-clock training time."),
             FigureSpec("c_steps_to_target", steps_to_target, ("science",), "Steps and examples to reach the target "
                        "training loss, learning rate tuned per B; fitted hyperbola and B_crit.", sweep=True,
                        sweep_caption="Steps and examples to reach the target training loss, learning rate tuned per "
                                      "B; fitted hyperbola and B_crit where 3 or more batch sizes reached it."),
             FigureSpec("c2_best_lr", best_lr, ("science",), "Best learning rate (fewest steps to target) against "
                        "batch size.", sweep=True)),
    parts=(workloads.SECTION, teacher_momentum.SECTION),
    finding=("Q5 per example or per batch?", finding),
)
