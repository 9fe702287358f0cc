"""Q8, accumulate micro-batches into one step, or take more small steps? Three experiments: gradient
accumulation against small steps (:mod:`~analysis.sections.accumulation`), Adam's β2 at a fixed half-life
(:mod:`~analysis.sections.beta2`) and the SDE square-root rule (:mod:`~analysis.sections.sde`)."""

from __future__ import annotations

from analysis.markdown import interval
from analysis.section import Context, Section
from analysis.sections import accumulation, beta2, sde
from analysis.sections.beta2 import arm_ratio
from mbstudy.metrics import TRAIN_TARGET

LIMITS = ("The MNIST-1D MLP only, 3 seeds (5 for the SDE rule), half-decade learning-rate grids (the robust "
          "band's resolution is half a decade), one half-life (that of β2 = 0.999 at B = 128), Adam's β1 and ε "
          "unscaled in the half-life arm, and micro-batches of 8 and 256 only, with kb at most 2048 of the 3200 "
          "training examples; times are this 2-core CPU's, measured while the sweep ran two runs at a time.")


def text(ctx: Context) -> str:
    return "\n\n".join([accumulation.text(ctx), beta2.text(ctx), sde.text(ctx)])


def finding(ctx: Context) -> str | None:
    a, b, s = ctx.accumulation, ctx.beta2, ctx.sde
    parts = []
    if a is not None and len(a.table):
        t = a.table[(a.table["target"] == TRAIN_TARGET) & (a.table["k"] > 1)]
        if len(t):
            w = t.loc[t["examples_ratio"].idxmax()]
            parts.append(f"accumulating k micro-batches is the batch kb: {t['examples_ratio'].min():.2f}–"
                         f"{t['examples_ratio'].max():.2f}× the examples of k small steps (most: {w.optimizer}, "
                         f"b = {int(w.micro)}, k = {int(w.k)}, {interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')})")
    if b is not None and len(b.table):
        B = int(b.table["batch_size"].min())
        fixed, half, _ = b.arms
        r = arm_ratio(b, half, fixed, B)
        parts.append(f"β2 at a fixed half-life vs 0.999 at B = {B}: {interval(*r, fmt='.2f')}× the steps")
    if s is not None and len(s.distances):
        ok = s.distances[s.distances["within"]]
        parts.append("SDE square-root rule within seed noise at κ = "
                     + (", ".join(str(k) for k in ok[ok["rule"] == "square-root"]["kappa"]) or "none")
                     + ", linear rule at κ = " + (", ".join(str(k) for k in ok[ok["rule"] == "linear"]["kappa"]) or "none"))
    return "; ".join(parts) + "." if parts else None



SECTION = Section(
    "Q8", "Accumulate micro-batches into one step, or take more small steps?",
    text=text,
    parts=(accumulation.SECTION, beta2.SECTION, sde.SECTION),
    limits=LIMITS,
    finding=("Q8 accumulate, or take small steps?", finding),
)
