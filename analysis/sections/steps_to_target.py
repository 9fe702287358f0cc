"""Q5, update after every example or after the batch? The headline: loss curves of the main sweep, and steps to the
training-loss target against B with McCandlish et al.'s hyperbola on the science sweep's headline workload (the
MNIST-1D MLP); the other workloads and targets are :mod:`analysis.sections.workloads`, which this section
includes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, plots, reduce
from analysis.markdown import interval, md_table, with_interval
from analysis.order import optimizers_in, reference_optimizer
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections import workloads
from analysis.sections.workloads import SMALL_B, workload_of
from mbstudy.metrics import TRAIN_TARGET

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


def _seeds_note(n_seeds: int) -> str:
    if n_seeds < 2:
        return "one seed per configuration, so no interval"
    return (f"median over {n_seeds} seeds of each seed's fewest steps over learning rates; in brackets the 95% "
            "bootstrap interval, resampling seeds and refitting")


def _fit_table(rows: pd.DataFrame, ci: dict) -> pd.DataFrame:
    """The fit per optimizer, with the bootstrap interval of B_crit, S_min and E_min where there is one."""
    out = rows[["optimizer", "S_min", "E_min", "B_crit", "r2", "n"]].copy()
    for name in ("B_crit", "S_min", "E_min"):
        lo = [ci.get(o, {}).get(name, (np.nan,) * 3)[1] for o in out["optimizer"]]
        hi = [ci.get(o, {}).get(name, (np.nan,) * 3)[2] for o in out["optimizer"]]
        if np.isfinite(lo).any():
            out.insert(out.columns.get_loc(name) + 1, f"{name} 95% CI", [
                f"[{a:.3g}, {b:.3g}]" if np.isfinite(a) else "" for a, b in zip(lo, hi)])
    return out


def text(ctx: Context) -> str:
    parts = []
    ex = ctx.default.examples_to_level if ctx.default else None
    if ex is not None and len(ex) >= 2:
        parts.append(
            "**Per step, bigger batches make more progress; per example seen, small batches are more "
            f"efficient.** In the default sweep (best learning rate per B), reaching training loss {ctx.default.loss_level:g} took "
            f"{ex.iloc[0]:,.0f} examples at B = {ex.index[0]} against {ex.iloc[-1]:,.0f} at B = {ex.index[-1]}.\n")
    parts.append(ctx.figure("a_loss_curves"))
    sci = ctx.science
    if sci is not None and sci.fits:
        rows = pd.DataFrame([{"optimizer": o, **f} for o, f in sci.fits.items()])
        good = rows[np.isfinite(rows["B_crit"])]
        ci = sci.intervals
        if len(good):
            parts.append(
                "**Steps to a target follow McCandlish et al.'s hyperbola S(B) = S_min(1 + B_crit/B).** On the "
                "MNIST-1D MLP, training-loss target (the other workloads and the validation target below): "
                + ", ".join(f"{r.optimizer}: B_crit ≈ {with_interval(ci.get(r.optimizer, {}).get('B_crit'), r.B_crit)}, "
                            f"S_min ≈ {with_interval(ci.get(r.optimizer, {}).get('S_min'), r.S_min)}, R² = {r.r2:.3f}"
                            for r in good.itertuples())
                + f" ({_seeds_note(sci.n_seeds)}). Below B_crit, doubling B halves the steps (perfect scaling); "
                "above it, returns diminish and the steps plateau at S_min.\n\n"
                + md_table(_fit_table(rows, ci), ".3g") + "\n")
        slopes = {o: ci.get(o, {}).get("slope", (s, np.nan, np.nan)) for o, s in sci.small_b_steps_slopes.items()}
        if slopes:
            parts.append(f"Log-log slope of steps against B for B ≤ {SMALL_B}: "
                         + ", ".join(f"{o} {with_interval(iv, iv[0], '.2f')}" for o, iv in slopes.items())
                         + " (−1 is perfect scaling).\n")
    parts.append(ctx.figure("c_steps_to_target"))
    s = sci.sgd_lr_slope if sci else None
    if s is not None and np.isfinite(s):
        parts.append(f"The best SGD learning rate grows with B (log-log slope {s:.2f} for B ≤ {SMALL_B_LR}), then saturates.\n")
    parts.append(ctx.figure("c2_best_lr"))
    parts.append(ctx.figure("e_loss_vs_time"))
    parts.append(workloads.text(ctx))
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


def finding(ctx: Context) -> str | None:
    w = ctx.workloads
    if w is None or w.checks.empty:
        return None
    c = w.checks[w.checks["target"] == TRAIN_TARGET]
    parts = []
    for wl in w.workloads:
        sub = c[c["workload"] == wl]
        if len(sub):
            parts.append(f"{wl}: " + ", ".join(f"{r.optimizer} {interval(r.B_crit, r.B_crit_lo, r.B_crit_hi, '.0f')}"
                                               for r in sub.itertuples()))
    perfect = int(w.checks["slope_verdict"].str.startswith("perfect").sum())
    return ("Steps to a target follow S(B) = S_min(1 + B_crit/B); B_crit (training-loss target, 95% bootstrap CI "
            "over seeds): " + "; ".join(parts) + f". Small-B slope consistent with −1 in {perfect} of "
            f"{len(w.checks)} fits (both targets). Per example seen, small batches are more efficient.")




def _read(ctx: Context) -> ScienceFacts:
    w = ctx.workloads
    if w is None:
        raise load.MissingRuns(ctx.missing["workloads"])
    name = workloads.headline(w)
    panel = w.panels.get((name, TRAIN_TARGET))  # its bootstrap is the headline's: not computed twice
    runs = w.runs[workload_of(w.runs) == name].reset_index(drop=True)
    return science_facts(runs, w.experiment, panel.fits if panel is not None else None)


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
    parts=(workloads.SECTION,),
    finding=("Q5 per example or per batch?", finding),
)
