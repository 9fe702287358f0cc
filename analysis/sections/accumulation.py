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

from analysis import load, plots, reduce
from analysis.markdown import interval, md_table
from analysis.order import optimizers_in
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


def _fastest(runs: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per group and seed the run with the fewest steps to the target (inf: none reached it)."""
    df = runs.assign(s=reduce.reached_steps(runs, metric)).sort_values("learning_rate", kind="stable")
    return df.loc[df.groupby([*by, "seed"])["s"].idxmin()]


def accumulation_facts(runs: pd.DataFrame, experiment: str = "accumulation", n_boot: int = 1000) -> AccumulationFacts:
    runs = runs.assign(accumulation=runs["accumulation"].fillna(1).astype(int) if "accumulation" in runs else 1)
    runs = runs.assign(micro=runs["batch_size"] // runs["accumulation"])
    by = ["optimizer", "micro", "accumulation"]
    rows = []
    for target, metric in TARGETS.items():
        if metric not in runs:
            continue
        best = _fastest(runs, metric, by)
        best = best.assign(examples=best["s"] * best["batch_size"],
                           time=best[TIME_METRICS[target]].where(np.isfinite(best["s"])) if TIME_METRICS[target]
                           in best else np.nan)
        for (opt, micro), g in best.groupby(["optimizer", "micro"]):
            one = g[g["accumulation"] == 1].set_index("seed")
            for k, gk in g.groupby("accumulation"):
                gk = gk.set_index("seed")
                ex = reduce.paired_ratio(gk["examples"], one["examples"], n_boot=n_boot) if len(one) else (np.nan,) * 3
                tm = reduce.paired_ratio(gk["time"].astype(float), one["time"].astype(float), n_boot=n_boot) \
                    if len(one) else (np.nan,) * 3
                rows.append({"target": target, "optimizer": opt, "micro": int(micro), "k": int(k),
                             "batch_size": int(micro * k), "examples": float(np.median(gk["examples"])),
                             "steps": float(np.median(gk["s"])),
                             "eval_every": float(gk["eval_every"].iloc[0]) if "eval_every" in gk else np.nan,
                             "time_s": float(np.nanmedian(gk["time"].astype(float)))
                             if gk["time"].notna().any() else np.nan, "n_seeds": len(gk),
                             "examples_ratio": ex[0], "examples_lo": ex[1], "examples_hi": ex[2],
                             "time_ratio": tm[0], "time_lo": tm[1], "time_hi": tm[2]})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.sort_values(["target", "optimizer", "micro", "k"]).reset_index(drop=True)
    return AccumulationFacts(experiment, table, runs)


def hyperbola_ratio(b_crit: float, micro: int, k: int) -> float:
    """What McCandlish et al.'s hyperbola predicts for the examples ratio of one step of kb to k steps of b:
    E(B) = E_min (1 + B / B_crit), so E(kb) / E(b) = (B_crit + kb) / (B_crit + b).

    >>> hyperbola_ratio(100, 10, 1), round(hyperbola_ratio(100, 10, 10), 4)
    (1.0, 1.8182)
    """
    return (b_crit + k * micro) / (b_crit + micro)


def verdict(lo: float, hi: float) -> str:
    """From a ratio's interval: whether accumulation cost more examples than the small steps."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return "no measurable difference" if lo <= 1 <= hi else ("costs more" if lo > 1 else "costs less")


def text(ctx: Context) -> str:
    a = ctx.accumulation
    if a is None:
        return ctx.not_measured("accumulation", "make sweep GRID=accumulation")
    t = a.table
    loss = t[(t["target"] == TRAIN_TARGET) & (t["k"] > 1)]
    if loss.empty:
        return "The accumulation sweep holds no pair (accumulated, k = 1) that reached the training-loss target.\n"
    b_crit = headline_b_crit(ctx)
    rows = loss.assign(
        predicted=[hyperbola_ratio(b_crit[r.optimizer], r.micro, r.k) if r.optimizer in b_crit else np.nan
                   for r in loss.itertuples()],
        verdict=[verdict(lo, hi) for lo, hi in loss[["examples_lo", "examples_hi"]].to_numpy()])
    show = pd.DataFrame({
        "optimizer": rows["optimizer"], "b": rows["micro"], "k": rows["k"], "kb": rows["batch_size"],
        "examples, k = 1": [f"{e / r:.0f}" if np.isfinite(r) and r > 0 else "–"
                            for e, r in rows[["examples", "examples_ratio"]].to_numpy()],
        "examples, accumulated": rows["examples"].map(lambda v: f"{v:.0f}"),
        "ratio [95% CI]": [interval(*r, fmt=".2f") for r in rows[["examples_ratio", "examples_lo", "examples_hi"]].to_numpy()],
        "hyperbola": rows["predicted"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "–"),
        "time ratio [95% CI]": [interval(*r, fmt=".2f") for r in rows[["time_ratio", "time_lo", "time_hi"]].to_numpy()],
        "verdict": rows["verdict"]})
    lines = []
    for opt in rows["optimizer"].unique():
        s_opt = rows[rows["optimizer"] == opt]
        bc = b_crit.get(opt, np.nan)
        below = s_opt[s_opt["batch_size"] <= bc] if np.isfinite(bc) else s_opt.iloc[:0]
        above = s_opt[s_opt["batch_size"] > bc] if np.isfinite(bc) else s_opt
        parts = []
        if len(below):
            w = below.loc[below["examples_ratio"].idxmax()]
            parts.append(f"with kb ≤ B_crit ({len(below)} cells) accumulation needed at most "
                         f"**{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}×** the examples of k "
                         f"steps of b (b = {int(w.micro)}, k = {int(w.k)}; the hyperbola: {w.predicted:.2f}×)")
        if len(above):
            w = above.loc[above["examples_ratio"].idxmax()]
            parts.append(f"with kb > B_crit ({len(above)} cells) up to **{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}×** "
                         f"(b = {int(w.micro)}, k = {int(w.k)}, kb = {int(w.batch_size)}; the hyperbola: {w.predicted:.2f}×)")
        tr = s_opt["time_ratio"]
        parts.append(f"training time {tr.min():.2f}–{tr.max():.2f}× that of the k small steps")
        lines.append(f"- **{opt}** (B_crit ≈ {bc:.0f}): " + "; ".join(parts) + ".")
    check = _against_science(ctx, rows)
    fit = (rows["examples_ratio"] / rows["predicted"]).dropna()
    faster = rows[rows["time_hi"] < 1]
    resolution = (rows["eval_every"] / rows["steps"]).replace([np.inf, -np.inf], np.nan).dropna()
    coarse = rows[(rows["eval_every"] / rows["steps"]) >= 0.1]
    quantised = ""
    if len(coarse):
        quantised = (f"Steps to a target are read at the evaluations, so each is known to one evaluation interval: "
                     f"{resolution.min():.0%}–{resolution.max():.0%} of the steps here, and at least 10% in "
                     f"{len(coarse)} of {len(rows)} cells (the large kb, where the target falls within 40–200 steps "
                     "evaluated every 10). There a ratio's zero-width interval means every seed fell at the same "
                     "evaluation, not that the ratio is exact, and the ratios and their agreement with the hyperbola "
                     "carry that resolution.\n")
    with_ci = rows[np.isfinite(rows["time_lo"])]
    so = ("**So, to seed 004's question:** per example, accumulating k micro-batches costs what one batch of kb "
          "costs, which the hyperbola puts at (B_crit + kb)/(B_crit + b) of the k small steps: little while kb is "
          "well below B_crit, nearly k× once b is above it"
          + (f" (measured ratios {fit.min():.2f}–{fit.max():.2f}× the hyperbola's, whose B_crit comes from the "
             "science sweep)" if len(fit) else "")
          + ". The training time mostly follows the examples"
          + ((f"; but in {len(faster)} of {len(with_ci)} cells (" + ", ".join(
              f"{r.optimizer} b = {r.micro}, k = {r.k}" for r in faster.itertuples())
              + ") one accumulated step reached the target in less training time than the k small steps (time "
              f"interval below 1) although it used {faster['examples_ratio'].min():.2f}–"
              f"{faster['examples_ratio'].max():.2f}× the examples, consistent with the k − 1 optimizer updates and "
              "loop iterations it skips costing more, at tiny b on this CPU, than the examples it adds. On one device, then: accumulating "
              "beyond B_crit only spends examples; below it, accumulation costs some examples and can save time "
              "where each small step's overhead is large ("
              + ", ".join(sorted(set(faster["optimizer"]))) + " at b = "
              + ", ".join(str(m) for m in sorted(set(faster["micro"]))) + " here).")
             if len(faster) else
             (f"; it was not faster than the k small steps in any of the {len(with_ci)} cells with an interval. "
              "On one device, take the small steps; accumulate only to reach a batch the memory cannot hold, and only "
              "up to about B_crit." if len(with_ci) else
              "; with one seed there are no intervals to say whether accumulation was ever faster.")))
    val = t[(t["target"] == VAL_TARGET) & (t["k"] > 1)]
    val_line = ""
    if len(val):
        costly = val[[verdict(lo, hi) == "costs more" for lo, hi in val[["examples_lo", "examples_hi"]].to_numpy()]]
        val_line = (f"At the validation target (error ≤ 0.45) the same comparison gives a cost in {len(costly)} of "
                    f"{len(val)} (optimizer, b, k) cells, ratios {val['examples_ratio'].min():.2f}–"
                    f"{val['examples_ratio'].max():.2f}×: accumulation does not buy generalisation either, since it "
                    "is the big batch.\n")
    return "\n".join([
        "**Accumulating k micro-batches is one step at batch kb, so it costs what the big batch costs.** The "
        "gradient of k micro-batches of b, each summed and divided by kb once, is the batch gradient of those kb "
        "examples (Q1); the training loop's accumulation (`accumulation = k`) is that step, bit for bit equal to "
        "`mbstudy.accumulated_grad` and equal to the plain step at kb up to the order of the float32 sums "
        "(`tests/test_q8.py`). Under the hyperbola E(B) = E_min (1 + B / B_crit) of Q5, one step of kb needs "
        "(B_crit + kb) / (B_crit + b) times the examples of k steps of b: about 1 while kb ≪ B_crit (perfect "
        "scaling: the big step is worth k small ones), growing to k once b ≫ B_crit. Measured on the MNIST-1D "
        f"MLP (experiment `{a.experiment}`; per seed the fastest learning rate of each arm, then the median over "
        f"{int(rows['n_seeds'].max())} seeds, the ratio's interval a paired bootstrap over seeds):",
        "", *lines, "",
        check,
        quantised,
        val_line,
        md_table(show, ".3g"), "",
        ctx.figure("q8a_accumulation"),
        so,
    ])


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
        for i, (col, label) in enumerate((("examples", "examples to target"), ("time", "training time to target"))):
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
            ax.set_title(f"{opt}: {label}" + (f"\n(B_crit ≈ {b_crit[opt]:.0f})" if opt in b_crit and i == 0 else ""),
                         fontsize=8)
            if i == 1:
                ax.set_xlabel("micro-batches accumulated per step, k")
            if j == 0:
                ax.set_ylabel(f"accumulated / k steps of b\n({label})")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    plots.suptitle(fig, "Q8: one step of k accumulated micro-batches of b against k steps of b (MNIST-1D MLP, "
                 "training-loss target)\nmedian over seeds, 95% paired bootstrap; dashed: the hyperbola's "
                 "(B_crit + kb)/(B_crit + b)", fontsize=9)
    return fig




SECTION = Section(
    "accumulation",
    text=text,
    provides=(Provider("accumulation", lambda ctx: accumulation_facts(
        load.load_runs("accumulation", hint="make sweep GRID=accumulation"))),),
    figures=(FigureSpec("q8a_accumulation", accumulation_figure, ("accumulation",), "Examples and training time to "
                        "the training-loss target of one step of k accumulated micro-batches, over k steps of b; "
                        "dashed: the hyperbola's prediction."),),
)
