"""Q9, what sets the critical batch size? Over training (branching from checkpoints), with a batch-size warm-up,
with data size and model size, and in the noisy quadratic model; and the advice that follows from them."""

from __future__ import annotations

import numpy as np

from analysis.markdown import finite, interval
from analysis.section import Context, Section
from analysis.sections import branching, nqm, scaling, warmup
from analysis.sections.branching import TOL, shape
from mbstudy.metrics import TRAIN_TARGET

LIMITS = ("One workload (the MNIST-1D MLP) and one optimizer (SGD) for the branches, the warm-ups and the scaling "
          "fits; a training-loss target on a data set seen for many epochs, where Merrill et al. and Zhang et al. "
          "train language models for about one epoch to a validation loss; batch sizes in factors of 2 (branches) "
          "and 4 (scaling), so a local B_crit is resolved to a factor of 2 and its interval is a set of grid "
          "values; quarter- and half-decade learning-rate grids; 5 seeds (3 for the scaling sweep). MNIST-1D at "
          "each size is a fresh draw of the generator (not nested in the larger ones), with its own 1000-example "
          "test set. A warm-up phase continues the data order of a constant run at its B from the examples seen "
          "so far, not an epoch of its own. The NQM's "
          "spectrum is assumed (a power law, noise proportional to the curvature), not measured: the study "
          "measures no Hessian, so the model is matched on B_simple at initialisation and on the target's share of "
          "the initial loss only.")


def practice(ctx: Context) -> str:
    """The "what to do" paragraph, from whichever of the three experiments ran; each piece of advice only where its
    interval resolves it."""
    parts = []
    f, w, sc = ctx.branching, ctx.warmup, ctx.scaling
    if f is not None and not f.local.empty:
        head = f.local[f.local["tol"] == TOL].sort_values("s").dropna(subset=["b_crit"])
        smallest = int(f.kept["batch_size"].min())
        if len(head) and head["b_crit"].iloc[0] > smallest and finite(head["lo"].iloc[0]):
            r0 = head.iloc[0]
            grows = shape(f.local[f.local["tol"] == TOL])["rise"].startswith("rises")
            parts.append(f"for SGD on a workload like this MNIST-1D MLP, start at B ≈ {r0['b_crit']:.0f} (the local "
                         f"B_crit at initialisation, {interval(r0['b_crit'], r0['lo'], r0['hi'], fmt='.0f')}, tolerance "
                         f"{TOL:.0%})" + (" and let it grow" if grows else "") + ": the local B_crit ranged over "
                         f"{head['b_crit'].min():.0f}–{head['b_crit'].max():.0f} across the checkpoints, "
                         f"{head['b_crit'].iloc[-1]:.0f} at {head['fraction'].iloc[-1]:.0%} of the way to the target"
                         + ("" if grows else " (no rise the intervals resolve)"))
        if not f.b_simple.empty and len(head):
            r = (f.b_simple.set_index("s")["b_simple"] / head.set_index("s")["b_crit"]).dropna()
            if len(r):
                parts.append(f"read B_simple as a rough guide to it: {r.min():.1f}–{r.max():.1f}× the local B_crit here")
    if w is not None and not w.schedules.empty and w.schedules["steps"].notna().any():
        lower = [r for r in w.schedules.itertuples() if finite(*r.vs_equal) and r.vs_equal[2] < 1]
        best = [r for r in w.schedules.itertuples() if finite(*r.vs_best) and r.vs_best[2] < 1]
        parts.append(f"a doubling warm-up took fewer steps than a constant B with at least its examples in {len(lower)} "
                     f"of {len(w.schedules)} schedules and fewer than the fastest constant B in {len(best)}, so "
                     + ("a warm-up can pay when steps cost more than examples" if lower or best else
                        "on this workload a constant B read off the steps-against-examples curve was as good"))
    if sc is not None and not sc.slopes.empty:
        d = sc.slopes.set_index(["axis", "target"])
        for axis, what in (("data", "the training set grows"), ("width", "the model widens")):
            if (axis, TRAIN_TARGET) not in d.index:
                continue
            k, lo, hi = d.loc[(axis, TRAIN_TARGET), ["slope", "lo", "hi"]]
            if finite(k, lo, hi):
                parts.append(f"when {what} by 2×, expect B_crit to change by {2 ** k:.2f}× "
                             f"[{2 ** lo:.2f}, {2 ** hi:.2f}] (slope {interval(k, lo, hi, fmt='.2f')})")
    if not parts:
        return ""
    return "**What to do.** On this evidence: " + "; ".join(parts) + ".\n"



def text(ctx: Context) -> str:
    return "\n\n".join([branching.text(ctx), warmup.text(ctx), scaling.text(ctx), nqm.text(ctx), practice(ctx)])


def finding(ctx: Context) -> str | None:
    f = ctx
    parts = []
    if f.branching is not None and not f.branching.local.empty:
        head = f.branching.local[f.branching.local["tol"] == TOL].sort_values("s")
        parts.append("local B_crit (SGD, from checkpoints) " + " → ".join(f"{v:.0f}" for v in head["b_crit"])
                     + f" from {head['fraction'].iloc[0]:.0%} to {head['fraction'].iloc[-1]:.0%} of the steps to "
                     "the target")
    if f.warmup is not None and not f.warmup.schedules.empty:
        t = f.warmup.schedules
        lower = sum(1 for r in t.itertuples() if all(np.isfinite(r.vs_equal)) and r.vs_equal[2] < 1)
        parts.append(f"doubling warm-ups took fewer steps at no more examples than a constant B in {lower} of {len(t)}")
    if f.scaling is not None and not f.scaling.slopes.empty:
        sl = f.scaling.slopes.set_index(["axis", "target"])
        for axis in ("data", "width"):
            if (axis, TRAIN_TARGET) in sl.index:
                x = sl.loc[(axis, TRAIN_TARGET)]
                parts.append(f"log-log slope against {axis} {interval(x['slope'], x['lo'], x['hi'], '.2f')}")
    if f.nqm is not None:
        order = f.nqm.fits.sort_values("B_crit")["optimizer"]
        parts.append("NQM orders B_crit " + " < ".join(order))
    return "; ".join(parts) + "." if parts else None



SECTION = Section(
    "Q9", "What sets the critical batch size? Over training, with data size, with model size, and in the noisy "
          "quadratic model",
    text=text,
    parts=(branching.SECTION, warmup.SECTION, scaling.SECTION, nqm.SECTION),
    limits=LIMITS,
    finding=("Q9 what sets the critical batch size?", finding),
)
