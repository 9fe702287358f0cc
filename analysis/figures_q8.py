"""The figures of Q8 (accumulate or step?): one faceted figure per claim.

:data:`SPECS` lists them; :mod:`analysis.figures` registers each, as it does
:mod:`analysis.figures_workloads`'s.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator

from analysis import plots
from analysis.facts import OPTIMIZERS, Facts, present
from analysis.plots import Skip
from analysis.q8 import ARMS, BAND, RULES, hyperbola_ratio

plt = plots.plt


def headline_b_crit(facts: Facts) -> dict[str, float]:
    """B_crit of the science sweep's MNIST-1D MLP, training-loss target, per optimizer (empty when missing)."""
    w = facts.workloads
    panel = None if w is None else w.panels.get(("mnist1d-mlp", "loss"))
    return {} if panel is None else {opt: fit["B_crit"][0] for opt, fit in panel.fits.items()}


def accumulation(facts: Facts) -> Figure:
    """Examples and time to the training-loss target of k accumulated micro-batches over k steps of b."""
    t = facts.accumulation.table
    t = t[(t["target"] == "loss") & (t["k"] > 1)]
    if t.empty:
        raise Skip("no accumulation run and its k = 1 counterpart both reached the training-loss target")
    opts = present(OPTIMIZERS, t["optimizer"])
    b_crit = headline_b_crit(facts)
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
    fig.suptitle("Q8: one step of k accumulated micro-batches of b against k steps of b (MNIST-1D MLP, "
                 "training-loss target)\nmedian over seeds, 95% paired bootstrap; dashed: the hyperbola's "
                 "(B_crit + kb)/(B_crit + b)", fontsize=9)
    return fig


def beta2(facts: Facts) -> Figure:
    """Steps to target, fraction diverged and the robust band of rates against B, per arm."""
    t = facts.beta2.table
    if t.empty:
        raise Skip("the beta2 sweep holds no runs")
    arms = [a for a in ARMS if a in set(t["arm"])]
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.2), squeeze=False)
    colors = dict(zip(ARMS, plots.sns.color_palette("deep", 3)))
    for arm in arms:
        s = t[t["arm"] == arm].sort_values("batch_size")
        kw = dict(fmt="o-", ms=3, lw=1, color=colors[arm], label=arm)
        axes[0, 0].errorbar(s["batch_size"], s["examples"], **kw)
        axes[0, 1].errorbar(s["batch_size"], s["diverged"], **kw)
        axes[0, 2].errorbar(s["batch_size"], s["band"], yerr=[(s["band"] - s["band_min"]).fillna(0),
                                                              (s["band_max"] - s["band"]).fillna(0)], capsize=2, **kw)
    for ax, ylabel, title in ((axes[0, 0], "examples to target", "examples to the training-loss target"),
                              (axes[0, 1], "fraction of runs diverged", "stability: rates × seeds that diverged"),
                              (axes[0, 2], "decades", f"robustness: rates within {BAND:g}× of the fewest steps")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=8)
    axes[0, 0].set_yscale("log")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    fig.suptitle("Q8: Adam with β2 fixed at 0.999 against β2 at a fixed half-life of 88,678 examples, and plain "
                 "SGD (MNIST-1D MLP; medians over seeds, bars: range)", fontsize=9)
    return fig


def sde(facts: Facts) -> Figure:
    """Training loss against examples for each κ: the reference at B0 (median, seed range) and the three rules."""
    s = facts.sde
    c = s.curves
    kappas = sorted(k for k in c["kappa"].unique() if k > 1)
    if not kappas or (c["rule"] == "reference").sum() == 0:
        raise Skip("the sde sweep holds no reference or no scaled runs")
    fig, axes = plt.subplots(1, len(kappas), figsize=(3.4 * len(kappas), 3.1), squeeze=False, sharey=True)
    colors = dict(zip(RULES, plots.sns.color_palette("deep", 3)))
    ref = c[c["rule"] == "reference"].groupby("examples")["loss"].agg(["median", "min", "max"])
    for j, kappa in enumerate(kappas):
        ax = axes[0, j]
        ax.fill_between(ref.index, ref["min"], ref["max"], color="0.8", label=f"reference B = {s.b0} (seed range)")
        ax.plot(ref.index, ref["median"], color="k", lw=1.2, label=f"reference B = {s.b0}, lr = {s.lr0:g}")
        for rule in RULES:
            d = c[(c["rule"] == rule) & (c["kappa"] == kappa)].groupby("examples")["loss"].median()
            if len(d):
                row = s.distances[(s.distances["rule"] == rule) & (s.distances["kappa"] == kappa)]
                dist = f" (D = {row['distance'].iloc[0]:.2f})" if len(row) else ""
                ax.plot(d.index, d.to_numpy(), lw=1, color=colors[rule], label=f"{rule}{dist}")
        ax.set_yscale("log")
        ax.set_xlabel("examples seen")
        ax.set_title(f"κ = {kappa}: B = {kappa * s.b0}", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        if j == 0:
            ax.set_ylabel("training loss (median over seeds)")
    noise = s.distances["noise"].iloc[0] if len(s.distances) else np.nan
    fig.suptitle(f"Q8: Adam scaled from B = {s.b0} to κB by the SDE square-root rule, the linear rule or not at all "
                 f"(MNIST-1D MLP)\nD: mean |Δ log loss| against the reference (seed noise: {noise:.2f})", fontsize=9)
    return fig


SPECS = [  # (name, the Facts fields it needs, the function): registered by analysis.figures
    ("q8a_accumulation", ("accumulation",), accumulation),
    ("q8b_beta2", ("beta2",), beta2),
    ("q8c_sde", ("sde",), sde),
]
