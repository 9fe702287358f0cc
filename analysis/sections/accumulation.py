"""Q8, part 1: accumulate micro-batches into one step, or take more small steps? The ``accumulation`` sweep:
examples and wall time to each target of one step of k accumulated micro-batches of b against k steps of b,
paired by seed (seed k is the same initial weights in both, and the same data order where the two have the same
batch size), against the hyperbola's prediction (B_crit from the science sweep's headline workload).

Steps to a target are :mod:`analysis.reduce`'s: per seed the fewest steps over the learning rates, then the
median over seeds; examples = steps × the batch size of one update (k micro-batches of b: kb).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, LogLocator

from analysis import load, plots, reduce, science, stats
from analysis.markdown import interval, md_table
from analysis import order
from analysis.order import label, optimizers_in
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.workloads import headline_b_crit, headline_panel
from mbstudy.metrics import TARGETS, TRAIN_TARGET, VAL_TARGET

plt = plots.plt
TIME_METRICS = {target: metric.replace("steps_", "time_", 1) for target, metric in TARGETS.items()}


@dataclass(frozen=True)
class AccumulationFacts:
    """Per (target, optimizer, micro-batch b, k): examples and wall time to the target, and their ratios to
    k = 1 (k steps of b instead of one accumulated step of kb)."""

    experiment: str
    table: pd.DataFrame
    runs: pd.DataFrame


def _fastest(runs: pd.DataFrame, steps: pd.Series, by: list[str]) -> pd.DataFrame:
    """Per group and seed the run with the fewest steps to the target (inf: none reached it)."""
    df = runs.assign(s=steps).sort_values(["s", "learning_rate"], kind="stable")
    return df.groupby([*by, "seed"], as_index=False).head(1)


def accumulation_facts(runs: pd.DataFrame, history: pd.DataFrame | None = None,
                       experiment: str = "accumulation") -> AccumulationFacts:
    """Per (target, optimizer, b, k): each seed's fewest steps over its rates (read from the histories between
    evaluations when given, else the first evaluation that reached the target), examples = steps × kb, and the
    ratio of one accumulated step of kb to k steps of b, seed by seed (the same initialisation; the same data
    order), as a geometric mean with a 95% t-interval and the p-value of a ratio of 1, Holm-adjusted over the
    (target, optimizer, b, k > 1) comparisons."""
    runs = runs.assign(accumulation=runs["accumulation"].fillna(1).astype(int) if "accumulation" in runs else 1)
    runs = runs.assign(micro=runs["batch_size"] // runs["accumulation"])
    by = ["optimizer", "micro", "accumulation"]
    rows = []
    for target, metric in TARGETS.items():
        if metric not in runs:
            continue
        if history is not None and not history.empty:
            own = science.own_target_steps(runs, history, target).set_index("run_id")["steps"]
            steps = runs["run_id"].map(own).astype(float)
            steps = steps.where(runs["outcome"].isin(["completed", "pruned", "diverged"]), np.inf)
        else:
            steps = reduce.reached_steps(runs, metric)
        best = _fastest(runs, steps.fillna(np.inf), by)
        best = best.assign(examples=best["s"] * best["batch_size"],
                           time=best[TIME_METRICS[target]].where(np.isfinite(best["s"])) if TIME_METRICS[target]
                           in best else np.nan)
        for (opt, micro), g in best.groupby(["optimizer", "micro"]):
            one = g[g["accumulation"] == 1].set_index("seed")
            for k, gk in g.groupby("accumulation"):
                gk = gk.set_index("seed")
                seeds = sorted(set(gk.index) & set(one.index))
                ex = stats.paired_ratio(gk.loc[seeds, "examples"], one.loc[seeds, "examples"]) if seeds else (np.nan,) * 5
                tm = stats.paired_ratio(gk.loc[seeds, "time"].astype(float), one.loc[seeds, "time"].astype(float)) \
                    if seeds else (np.nan,) * 5
                rows.append({"target": target, "optimizer": opt, "micro": int(micro), "k": int(k),
                             "batch_size": int(micro * k), "examples": float(np.exp(np.mean(np.log(gk["examples"])))),
                             "steps": float(np.median(gk["s"])),
                             "eval_every": float(gk["eval_every"].iloc[0]) if "eval_every" in gk else np.nan,
                             "time_s": float(np.nanmedian(gk["time"].astype(float)))
                             if gk["time"].notna().any() else np.nan, "n_seeds": len(gk),
                             "examples_ratio": ex[0], "examples_lo": ex[1], "examples_hi": ex[2], "examples_p": ex[3],
                             "time_ratio": tm[0], "time_lo": tm[1], "time_hi": tm[2], "time_p": tm[3]})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["target", "optimizer", "micro", "k"]).reset_index(drop=True)
        more = table["k"] > 1
        for what in ("examples", "time"):
            table[f"{what}_holm"] = np.nan
            table.loc[more, f"{what}_holm"] = stats.holm(table.loc[more, f"{what}_p"])
    return AccumulationFacts(experiment, table, runs)


def hyperbola_ratio(b_crit: float, micro: int, k: int) -> float:
    """What McCandlish et al.'s hyperbola predicts for the examples ratio of one step of kb to k steps of b:
    E(B) = E_min (1 + B / B_crit), so E(kb) / E(b) = (B_crit + kb) / (B_crit + b).

    >>> hyperbola_ratio(100, 10, 1), round(hyperbola_ratio(100, 10, 10), 4)
    (1.0, 1.8182)
    """
    return (b_crit + k * micro) / (b_crit + micro)


def verdict(ratio: float, p_holm: float) -> str:
    """From a ratio and its Holm-adjusted p-value: whether accumulation cost more examples than the small steps."""
    if not np.isfinite(p_holm):
        return "–"
    return "not resolved" if p_holm >= 0.05 else ("costs more" if ratio > 1 else "costs less")


def _rows(ctx: Context) -> pd.DataFrame:
    """The training-loss target's accumulated cells (k > 1) with the hyperbola's prediction and the verdict."""
    t = ctx.accumulation.table
    loss = t[(t["target"] == TRAIN_TARGET) & (t["k"] > 1)]
    b_crit = headline_b_crit(ctx)
    return loss.assign(
        predicted=[hyperbola_ratio(b_crit[r.optimizer], r.micro, r.k) if r.optimizer in b_crit else np.nan
                   for r in loss.itertuples()],
        verdict=[verdict(r.examples_ratio, r.examples_holm) for r in loss.itertuples()],
        time_verdict=[verdict(r.time_ratio, r.time_holm) for r in loss.itertuples()])


def _ratio(est, lo, hi) -> str:
    return interval(est, lo, hi, fmt=".2f")


def text(ctx: Context) -> str:
    a = ctx.accumulation
    if a is None:
        return ctx.not_measured("accumulation", "make sweep GRID=accumulation")
    rows = _rows(ctx)
    if rows.empty:
        return "The accumulation sweep holds no pair (accumulated, k = 1) that reached the training-loss target.\n"
    b_crit = headline_b_crit(ctx)
    costly = rows[rows["verdict"] == "costs more"]
    cheaper = rows[rows["verdict"] == "costs less"]
    faster = rows[rows["time_verdict"] == "costs less"]
    slower = rows[rows["time_verdict"] == "costs more"]
    fit = (rows["examples_ratio"] / rows["predicted"]).dropna()
    lines = []
    for opt in optimizers_in(rows["optimizer"]):
        s_opt = rows[rows["optimizer"] == opt]
        bc = b_crit.get(opt, np.nan)
        below = s_opt[s_opt["batch_size"] <= bc] if np.isfinite(bc) else s_opt.iloc[:0]
        above = s_opt[s_opt["batch_size"] > bc] if np.isfinite(bc) else s_opt
        parts = []
        for name, sub in (("kb ≤ B_crit", below), ("kb > B_crit", above)):
            if len(sub):
                w = sub.loc[sub["examples_ratio"].idxmax()]
                parts.append(f"with {name} ({len(sub)} cells) up to {_ratio(w.examples_ratio, w.examples_lo, w.examples_hi)}× "
                             f"the examples (b = {int(w.micro)}, k = {int(w.k)}"
                             + (f"; the hyperbola: {w.predicted:.2f}×)" if np.isfinite(w.predicted) else ")"))
        lines.append(f"- **{label(opt)}** (B_crit " + (f"≈ {bc:.0f}" if np.isfinite(bc) else "a bound: no prediction")
                     + "): " + "; ".join(parts) + ".")
    answer = (f"**Accumulating k micro-batches is one step at batch kb, so it costs what the big batch costs: more "
              f"examples than k small steps in {len(costly)} of {len(rows)} cells (fewer in {len(cheaper)}; Holm, 5%), "
              "little below B_crit and nearly k× above it, as McCandlish et al.'s hyperbola predicts"
              + (f" (measured / predicted: {fit.min():.2f}–{fit.max():.2f})" if len(fit) else "")
              + f"; in training time it was faster in {len(faster)} cells and slower in {len(slower)}.**")
    return "\n".join([
        answer, "",
        "The gradient of k micro-batches of b, each summed and divided by kb once, is the batch gradient of those kb "
        "examples (Q1); the training loop's accumulation (`accumulation = k`) is that step, bit for bit equal to "
        "`mbstudy.accumulated_grad` and equal to the plain step at kb up to the order of the float32 sums "
        "(`tests/test_q8.py`). Under the hyperbola E(B) = E_min (1 + B / B_crit) of Q5, one step of kb needs "
        "(B_crit + kb) / (B_crit + b) times the examples of k steps of b. Measured on the MNIST-1D MLP (experiment "
        f"`{a.experiment}`, {int(rows['n_seeds'].max())} seeds, the learning rate searched per cell): each seed's "
        "fewest steps over its rates, read between evaluations; the ratio of one accumulated step of kb to k steps "
        "of b, seed by seed, as a geometric mean with a 95% t-interval; a verdict needs its Holm-adjusted p-value "
        f"over the {len(rows)} cells below 0.05. Per optimizer (the cells in the appendix):",
        "", *lines, "",
        _against_science(ctx, rows),
        ctx.figure("q8a_accumulation"),
        "**So, to seed 004's question:** on one device, take the small steps; accumulate only to reach a batch the "
        "memory cannot hold, and only up to about B_crit, where it costs few examples.\n",
    ])


def appendix(ctx: Context) -> str:
    a = ctx.accumulation
    if a is None or a.table.empty:
        return ""
    rows = _rows(ctx)
    show = pd.DataFrame({
        "optimizer": rows["optimizer"].map(label), "b": rows["micro"], "k": rows["k"], "kb": rows["batch_size"],
        "examples, accumulated (geo. mean)": rows["examples"].map(lambda v: f"{v:.0f}"),
        "ratio to k steps [95% CI]": [_ratio(*r) for r in rows[["examples_ratio", "examples_lo", "examples_hi"]].to_numpy()],
        "hyperbola": rows["predicted"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "–"),
        "verdict (Holm)": rows["verdict"],
        "time ratio [95% CI]": [_ratio(*r) for r in rows[["time_ratio", "time_lo", "time_hi"]].to_numpy()],
        "time verdict (Holm)": rows["time_verdict"]})
    val = a.table[(a.table["target"] == VAL_TARGET) & (a.table["k"] > 1)]
    out = ["### Q8: accumulation against small steps, every cell", "",
           "Training-loss target; ratios are one accumulated step of kb over k steps of b, per seed, geometric mean "
           "with a 95% t-interval; verdicts at Holm's 5% over the cells.", "", md_table(show, ".3g"), ""]
    if len(val):
        vv = [verdict(r.examples_ratio, r.examples_holm) for r in val.itertuples()]
        out += [f"At the validation target the same comparison finds a cost in {vv.count('costs more')} of {len(val)} "
                "cells (Holm over those): accumulation does not buy generalisation either, since it is the big "
                "batch.", ""]
    return "\n".join(out)


def _against_science(ctx: Context, rows: pd.DataFrame) -> str:
    """The accumulated runs' steps against the science sweep's plain runs at the same kb."""
    panel = headline_panel(ctx)
    if panel is None:
        return ""
    plain = panel.steps.set_index(["optimizer", "batch_size"])["steps"]
    pairs = [(r.steps, plain.get((r.optimizer, r.batch_size), np.nan)) for r in rows.itertuples()]
    ratios = np.array([a / b for a, b in pairs if np.isfinite(b) and b > 0])
    if not len(ratios):
        return ""
    return (f"Against the science sweep's plain steps at the same batch kb (its own seeds: {panel.n_seeds}, here "
            f"{int(rows['n_seeds'].max())}), the accumulated runs took {np.median(ratios):.2f}× the steps "
            f"(median; range {ratios.min():.2f}–{ratios.max():.2f} over {len(ratios)} (optimizer, b, k) cells): the "
            "same batch, as the algebra says, within the evaluation cadence and seed noise.\n")


def accumulation_figure(ctx: Context):
    """Examples and time to the training-loss target of k accumulated micro-batches over k steps of b."""
    t = ctx.accumulation.table
    t = t[(t["target"] == TRAIN_TARGET) & (t["k"] > 1)]
    if t.empty:
        raise Skip("no accumulation run and its k = 1 counterpart both reached the training-loss target")
    opts = optimizers_in(t["optimizer"])
    b_crit = headline_b_crit(ctx)
    fig, axes = plt.subplots(2, len(opts), figsize=(3.2 * len(opts), 5.6), squeeze=False, sharex=True)
    colors = dict(zip(sorted(t["micro"].unique()), plots.sns.color_palette("deep", 4)))
    for j, opt in enumerate(opts):
        for i, (col, what) in enumerate((("examples", "examples to target"), ("time", "training time to target"))):
            ax = axes[i, j]
            for micro, s in t[t["optimizer"] == opt].groupby("micro"):
                y, lo, hi = s[f"{col}_ratio"], s[f"{col}_lo"], s[f"{col}_hi"]
                ax.errorbar(s["k"], y, yerr=[(y - lo).clip(lower=0).fillna(0), (hi - y).clip(lower=0).fillna(0)],
                            fmt="o-", ms=3, lw=1, capsize=2, color=colors[micro], label=f"b = {micro}")
                if col == "examples" and opt in b_crit and np.isfinite(b_crit[opt]):
                    k = np.geomspace(1, s["k"].max(), 50)
                    ax.plot(k, [hyperbola_ratio(b_crit[opt], micro, x) for x in k], "--", lw=0.9,
                            color=colors[micro], alpha=0.7)
            ax.axhline(1, color="0.5", lw=0.8)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
            ax.yaxis.set_minor_formatter(FormatStrFormatter(""))
            ax.set_title(f"{order.label(opt)}: {what}" + (f"\n(B_crit ≈ {b_crit[opt]:.0f})" if opt in b_crit and i == 0
                                                        else ""), fontsize=8)
            if i == 1:
                ax.set_xlabel("micro-batches accumulated per step, k")
            if j == 0:
                ax.set_ylabel(f"accumulated / k steps of b\n({what})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    plots.suptitle(fig, "Q8: one step of k accumulated micro-batches of b against k steps of b (MNIST-1D MLP, "
                        "training-loss target)\ngeometric mean of per-seed ratios, 95% t-interval; dashed: the "
                        "hyperbola's (B_crit + kb)/(B_crit + b)", fontsize=9)
    return fig




def _read(ctx: Context) -> AccumulationFacts:
    runs = load.load_runs("accumulation", hint="make sweep GRID=accumulation")
    hist = load.load_history(runs, "accumulation", keys=("train/loss", "val/acc", "val/loss"), progress=ctx.progress)
    return accumulation_facts(runs, hist)


SECTION = Section(
    "accumulation",
    text=text,
    provides=(Provider("accumulation", _read),),
    appendix=appendix,
    figures=(FigureSpec("q8a_accumulation", accumulation_figure, ("accumulation",), "Examples and training time to "
                        "the training-loss target of one step of k accumulated micro-batches, over k steps of b; "
                        "dashed: the hyperbola's prediction."),),
)
