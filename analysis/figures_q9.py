"""The figures of Q9 (what sets the critical batch size?): one faceted figure per claim.

:data:`SPECS` lists them; :mod:`analysis.figures` registers each, as it does
:mod:`analysis.figures_q8`'s.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from analysis import plots
from analysis.facts import OPTIMIZERS, Facts, present
from analysis.plots import Skip
from analysis.q9 import TOL, TOLERANCES
from mbstudy.schedule import parse

plt = plots.plt


def _log2_axis(ax, axis: str = "x") -> None:
    getattr(ax, f"set_{axis}scale")("log", base=2)
    fmt = FormatStrFormatter("%g")
    getattr(ax, f"{axis}axis").set_major_formatter(fmt)


def _errorbar(ax, x, y, lo, hi, **kw) -> None:
    """Error bars from an interval; an interval open above (hi = inf) gets an arrow up instead of a bar."""
    x, y, lo, hi = (np.asarray(v, float) for v in (x, y, lo, hi))
    open_above = np.isinf(hi)
    err = [np.nan_to_num(np.clip(y - lo, 0, None)), np.where(open_above, 0.0, np.nan_to_num(np.clip(hi - y, 0, None)))]
    bars = ax.errorbar(x, y, yerr=err, capsize=2, ms=4, lw=1, **kw)
    if open_above.any():
        ax.plot(x[open_above], y[open_above] * 1.6, "^", ms=4, color=bars[0].get_color())
        ax.vlines(x[open_above], y[open_above], y[open_above] * 1.6, color=bars[0].get_color(), lw=1)


def local_critical(facts: Facts) -> Figure:
    """Left: the share of the smallest batch's loss decrease each B keeps, per checkpoint. Right: the local
    critical batch size per tolerance and the reference's B_simple against the point of training."""
    f = facts.branching
    if f.kept.empty:
        raise Skip("the branching sweep holds no branches")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    ax = axes[0]
    checkpoints = sorted(f.kept["s"].unique())
    colors = dict(zip(checkpoints, plots.sns.color_palette("rocket_r", len(checkpoints))))
    frac = f.local.drop_duplicates("s").set_index("s")["fraction"]
    for s in checkpoints:
        k = f.kept[f.kept["s"] == s]
        _errorbar(ax, k["batch_size"], k["kept"], k["lo"], k["hi"], fmt="o-", color=colors[s],
                  label=f"step {s} ({frac.get(s, np.nan):.0%})")
    for tol in TOLERANCES:
        ax.axhline(1 - tol, color="0.4", lw=0.8, ls="--" if tol == TOL else ":")
    ax.set_ylim(max(-0.1, f.kept["kept"].min() - 0.1), 1.15)
    _log2_axis(ax)
    ax.set_xlabel("batch size of the branch, B")
    ax.set_ylabel(f"share of the B = {int(f.kept['batch_size'].min())} branch's\nloss decrease kept (least over "
                  "the budget)")
    ax.set_title(f"branches of {f.budget} examples from the reference's step s", fontsize=8)
    ax.legend(fontsize=6, title="branch point (of steps to target)", title_fontsize=6, loc="lower left")

    ax = axes[1]
    markers = dict(zip(TOLERANCES, ("v", "o", "^")))
    for tol in TOLERANCES:
        loc = f.local[f.local["tol"] == tol]
        _errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt=markers[tol] + "-",
                  color="C0", alpha=1.0 if tol == TOL else 0.45, label=f"local B_crit, tolerance {tol:.0%}")
    if not f.b_simple.empty:
        x = f.b_simple["s"].map(frac) * 100
        _errorbar(ax, x, f.b_simple["b_simple"], f.b_simple["lo"], f.b_simple["hi"], fmt="s--", color="C3",
                  label="B_simple of the reference")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("branch point, % of the reference's steps to the target")
    ax.set_ylabel("batch size")
    ax.set_title("local critical batch size and B_simple over training (median, 95% CI over seeds)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    fig.suptitle(f"Q9a: the critical batch size during training: branches from a reference (MNIST-1D MLP, SGD, "
                 f"B = {f.reference_b}, lr = {f.reference_lr:g})", fontsize=9)
    return fig


def warmup(facts: Facts) -> Figure:
    """Steps against examples to the target: constant batch sizes (the curve) and the doubling warm-ups."""
    w = facts.warmup
    if w.constant.empty or w.schedules.empty:
        raise Skip("the warm-up sweep holds no constant-B or no scheduled run that reached the target")
    finals = sorted(w.schedules["final_b"].unique())
    fig, axes = plt.subplots(1, len(finals), figsize=(4.6 * len(finals), 3.7), squeeze=False, sharey=True)
    firsts = [parse(s)[0] for s in w.schedules["schedule"]]
    starts = sorted({b for _, b, _ in firsts})
    colors = dict(zip(starts, plots.sns.color_palette("deep", len(starts))))
    markers = dict(zip(sorted({n * b for n, b, _ in firsts}), "Ds^vP"))
    for j, final in enumerate(finals):
        ax = axes[0, j]
        c = w.constant
        ax.plot(c["examples"], c["steps"], "k-", lw=1, marker="o", ms=3, label="constant B (median over seeds)")
        for b, e, s in zip(c["batch_size"], c["examples"], c["steps"]):
            ax.annotate(f"{b}", (e, s), textcoords="offset points", xytext=(3, 3), fontsize=6)
        sch = w.schedules[w.schedules["final_b"] == final]
        for row in sch.sort_values("schedule").itertuples():
            (steps, b0, _), *_ = parse(row.schedule)
            ax.plot(row.examples, row.steps, markers.get(steps * b0, "o"), color=colors[b0], ms=5, ls="none",
                    label=f"doubling from {b0}, {steps * b0} examples per phase")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("examples to the training-loss target")
        ax.set_title(f"warm-ups to B = {final}", fontsize=8)
        if j == 0:
            ax.set_ylabel("steps to the target")
        ax.legend(fontsize=6, loc="upper right")
    fig.suptitle("Q9b: batch-size warm-up against constant batch sizes (MNIST-1D MLP, SGD; median over seeds)",
                 fontsize=9)
    return fig


def scaling(facts: Facts) -> Figure:
    """B_crit against the training-set size and against the width, both targets, with the log-log fits."""
    sc = facts.scaling
    if sc.fits.empty:
        raise Skip("the scaling sweep holds no fit")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    labels = {"data": "training-set size N (before the 20% validation split)", "width": "MLP width (two hidden layers)"}
    for ax, axis in zip(axes, ("data", "width")):
        for k, (target, name) in enumerate((("loss", "training-loss target"), ("val", "validation target"))):
            fit = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["target"] == target)].sort_values("value")
            fit = fit[np.isfinite(fit["B_crit"])]
            if fit.empty:
                continue
            sl = sc.slopes[(sc.slopes["axis"] == axis) & (sc.slopes["target"] == target)].iloc[0]
            _errorbar(ax, fit["value"], fit["B_crit"], fit["lo"], fit["hi"], fmt="o", color=f"C{k}",
                      label=f"{name}: slope {sl['slope']:.2f} [{sl['lo']:.2f}, {sl['hi']:.2f}]")
            if np.isfinite(sl["slope"]) and len(fit) >= 2:
                x = np.geomspace(fit["value"].min(), fit["value"].max(), 20)
                logx, logy = np.log(fit["value"]), np.log(fit["B_crit"])
                ax.plot(x, np.exp(logy.mean() + sl["slope"] * (np.log(x) - logx.mean())), "--", color=f"C{k}", lw=0.9)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.set_xticks(sorted(sc.fits.loc[sc.fits["axis"] == axis, "value"].unique()))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel(labels[axis])
        ax.set_ylabel("B_crit (hyperbola fit, 95% CI over seeds)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper left")
    axes[0].set_title("against data size (MLP 40-100-100-10)", fontsize=8)
    axes[1].set_title("against model width (N = 4000)", fontsize=8)
    fig.suptitle("Q9c: the critical batch size against data size and model size (MNIST-1D, SGD; dashed: "
                 "least-squares fit on log-log axes;\narrow: an interval the fit leaves open above)", fontsize=9)
    return fig


def nqm(facts: Facts) -> Figure:
    """Steps to target against B: the science sweep's MNIST-1D MLP (left), the matched NQM's prediction (right)."""
    n = facts.nqm
    panel = None if facts.workloads is None else facts.workloads.panels.get(("mnist1d-mlp", "loss"))
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    colors = dict(zip(OPTIMIZERS, plots.sns.color_palette("deep", len(OPTIMIZERS))))
    if panel is not None:
        for opt in present(OPTIMIZERS, panel.steps["optimizer"]):
            st = panel.steps[panel.steps["optimizer"] == opt]
            bc = panel.fits[opt]["B_crit"][0]
            axes[0].plot(st["batch_size"], st["steps"], "o-", ms=3, lw=1, color=colors[opt],
                         label=f"{opt}: B_crit {bc:.0f}")
    axes[0].set_title("measured: science sweep, MNIST-1D MLP, training-loss target", fontsize=8)
    fits = n.fits.set_index("optimizer")
    for opt in present(OPTIMIZERS, n.curves["optimizer"]):
        c = n.curves[(n.curves["optimizer"] == opt) & np.isfinite(n.curves["steps"])]
        name = "preconditioned (Adam's stand-in)" if opt == "adam" else opt
        axes[1].plot(c["batch_size"], c["steps"], "o-", ms=3, lw=1, color=colors[opt],
                     label=f"{name}: B_crit {fits.loc[opt, 'B_crit']:.0f}")
    axes[1].set_title(f"noisy quadratic model matched to B_simple = {n.b_simple0:.0f} at initialisation", fontsize=8)
    for ax in axes:
        _log2_axis(ax)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to the target (best learning rate)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper right")
    fig.suptitle(f"Q9d: the noisy quadratic model's steps against B beside the measured ones (target "
                 f"{n.target:g} of an initial loss {n.loss0:.2f})", fontsize=9)
    return fig


SPECS = [  # (name, the Facts fields it needs, the function): registered by analysis.figures
    ("q9a_local_critical", ("branching",), local_critical),
    ("q9b_warmup", ("warmup",), warmup),
    ("q9c_scaling", ("scaling",), scaling),
    ("q9d_nqm", ("branching", "nqm"), nqm),
]
