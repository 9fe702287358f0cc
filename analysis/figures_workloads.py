"""The figures of the science sweep across workloads (``Facts.workloads``) and of Q5b (``Facts.generalisation``):
one faceted figure per claim.

:data:`SPECS` lists them; :mod:`analysis.figures` registers each (so they are
drawn, saved and logged like every other figure by ``make figures``).
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis import plots
from analysis.plots import Skip
from analysis.facts import OPTIMIZERS, Facts, present
from analysis.generalisation import figure_table
from analysis.workloads import TARGETS, WORKLOADS

plt = plots.plt
MARKERS = {"at_init": ("o", "at initialisation"), "over_training": ("s", "median over training"),
           "at_end": ("^", "where the run stopped (both targets reached)")}


def steps_to_target_by_workload(facts: Facts) -> Figure:
    """Steps to each target against B: rows are the targets, columns the workloads, one line per optimizer."""
    w = facts.workloads
    cols = w.workloads
    rows = [t for t in TARGETS if any((c, t) in w.panels for c in cols)]
    if not cols or not rows:
        raise Skip("no workload reached a target")
    fig, axes = plt.subplots(len(rows), len(cols), figsize=(3.0 * len(cols), 2.8 * len(rows)), squeeze=False)
    colors = dict(zip(OPTIMIZERS, plots.sns.color_palette("deep", 3)))
    for i, t in enumerate(rows):
        for j, c in enumerate(cols):
            ax = axes[i, j]
            p = w.panels.get((c, t))
            if p is None:
                ax.set_axis_off()
                continue
            for opt in present(OPTIMIZERS, p.steps["optimizer"]):
                st = p.steps[p.steps["optimizer"] == opt]
                B = st["batch_size"].to_numpy(float)
                color = colors.get(opt)
                ax.errorbar(B, st["steps"], yerr=[st["steps"] - st["steps_min"], (st["steps_max"] - st["steps"]).fillna(0)],
                            fmt="o", ms=3, color=color, alpha=0.8, lw=0.8, label=opt)
                b_crit, s_min = p.fits[opt]["B_crit"][0], p.fits[opt]["S_min"][0]
                if np.isfinite(b_crit) and len(B):
                    grid = np.geomspace(B.min(), B.max(), 100)
                    ax.plot(grid, s_min * (1 + b_crit / grid), "-", color=color, lw=1, alpha=0.7)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(f"{WORKLOADS.get(c, c)}\n{TARGETS[t]}", fontsize=8)
            ax.set_xlabel("batch size B")
            if j == 0:
                ax.set_ylabel("steps to target")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    c = w.checks
    perfect = int((c["slope_verdict"].str.startswith("perfect")).sum())
    fig.suptitle(f"Steps to target on {len(cols)} workloads: median over seeds (bars: range), fitted hyperbola; "
                 f"small-B slope consistent with −1 in {perfect} of {len(c)} fits")
    return fig


def b_simple_vs_b_crit(facts: Facts) -> Figure:
    """B_simple (at initialisation, over training, where the run stopped) against the fitted B_crit, y = x."""
    t = facts.workloads.b_simple
    if t.empty or not np.isfinite(t["B_crit"]).any():
        raise Skip("no B_simple history of the science sweep's fastest runs, or no fitted B_crit")
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    palette = dict(zip(WORKLOADS, plots.sns.color_palette("colorblind", len(WORKLOADS))))
    for k, (marker, label) in MARKERS.items():
        for r in t.itertuples():
            err = [[r.B_crit - r.B_crit_lo], [r.B_crit_hi - r.B_crit]] if np.isfinite(r.B_crit_lo) else None
            ax.errorbar(r.B_crit, getattr(r, k), xerr=err, fmt=marker, ms=5, lw=0.6,
                        color=palette.get(r.workload, "gray"), alpha=0.85,
                        markerfacecolor="none" if k == "at_init" else None)
        ax.plot([], [], marker, color="gray", label=label, ls="none")
    for wl, color in palette.items():
        if wl in set(t["workload"]):
            ax.plot([], [], "-", color=color, label=WORKLOADS[wl])
    vals = np.concatenate([t["B_crit"], t["at_init"], t["over_training"], t["at_end"]]).astype(float)
    vals = vals[np.isfinite(vals) & (vals > 0)]
    lo, hi = vals.min() / 2, vals.max() * 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="y = x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("fitted B_crit (training-loss target), 95% CI")
    ax.set_ylabel("B_simple = tr(Σ)/‖G‖²")
    ax.legend(fontsize=6, loc="upper left")
    r = t["at_end_ratio"].astype(float)
    ax.set_title(f"B_simple where the runs stopped / B_crit: median {np.nanmedian(r):.2g} "
                 f"(range {np.nanmin(r):.2g}–{np.nanmax(r):.2g})", fontsize=8)
    return fig


def generalisation(facts: Facts) -> Figure:
    """Test error against B, one panel per workload, one line per budget of Q5b."""
    g = facts.generalisation
    t = figure_table(g)
    if t.empty:
        raise Skip("no completed run of the generalisation sweep logged a validation and test error")
    cols = [c for c in WORKLOADS if c in set(t["workload"])] + sorted(set(t["workload"]) - set(WORKLOADS))
    fig, axes = plt.subplots(1, len(cols), figsize=(3.1 * len(cols), 3.0), squeeze=False)
    for j, c in enumerate(cols):
        ax = axes[0, j]
        for b in t["budget"].cat.categories:
            s = t[(t["workload"] == c) & (t["budget"] == b)].sort_values("batch_size")
            ax.errorbar(s["batch_size"], s["median"], yerr=[s["median"] - s["lo"], s["hi"] - s["median"]],
                        fmt="o-", ms=3, lw=1, capsize=2, label=b)
        ax.set_xscale("log", base=2)
        ax.set_title(WORKLOADS.get(c, c), fontsize=8)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("test MSE" if c.startswith("teacher") else "test error (1 − accuracy)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, bbox_to_anchor=(0.5, 0.0))
    worse = g.gaps[g.gaps["verdict"] == "larger B worse"]
    fig.suptitle(f"Q5b: test error against B, momentum, learning rate tuned per B and budget (median, range over "
                 f"seeds); larger B worse in {len(worse)} of {len(g.gaps)} (workload, budget) pairs")
    return fig


SPECS = [  # (name, the Facts fields it needs, the function): registered by analysis.figures
    ("w1_steps_to_target", ("workloads",), steps_to_target_by_workload),
    ("w2_b_simple_vs_b_crit", ("workloads",), b_simple_vs_b_crit),
    ("w3_generalisation", ("generalisation",), generalisation),
]
