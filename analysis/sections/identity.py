"""Q1, is the batch gradient the mean of the per-example gradients? The ``equivalence`` experiment
(``make equivalence``): every gradient identity's relative error, float32 and float64, on three networks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load
from analysis.markdown import md_table
from analysis.section import Context, Provider, Section


@dataclass(frozen=True)
class EquivalenceFacts:
    """``make equivalence``: every gradient identity's relative error, float32 and float64."""

    experiment: str
    runs: pd.DataFrame


def equivalence_facts(ctx: Context) -> EquivalenceFacts:
    return EquivalenceFacts("equivalence", load.load_simple("equivalence", "equivalence", "make equivalence",
                                                                newest_per_case=True))


IDENTITIES = ("per_sample_mean_vs_batch", "sum_vs_B_mean", "accumulated_equal", "accumulated_unequal",
              "accumulated_equal_weights_mistake", "sharded", "fast_vs_vmap", "norms_vs_vmap")


def text(ctx: Context) -> str:
    if ctx.equivalence is None:
        return ctx.not_measured("equivalence", "run make equivalence")
    eq = ctx.equivalence.runs
    cols = IDENTITIES
    t = eq[["setting", "dtype", *[f"err/{c}" for c in cols if f"err/{c}" in eq]]].copy()
    t.columns = ["setting", "dtype", *[c for c in cols if f"err/{c}" in eq]]
    exact = [c for c in t.columns[2:] if "mistake" not in c]
    f64 = t[t["dtype"] == "float64"][exact].to_numpy(float)
    f32 = t[t["dtype"] == "float32"][exact].to_numpy(float)
    mistake = t["accumulated_equal_weights_mistake"]
    return (
        f"**Yes, exactly, by linearity of the derivative.** Over {len(t) // 2} networks, the mean of the "
        f"per-example gradients, the gradient of the mean loss, B⁻¹× the gradient of the sum, gradient "
        f"accumulation over equal or unequal micro-batches, and a data-parallel gradient over 4 devices "
        f"agree to at most **{np.nanmax(f64):.1e}** relative error in float64 and **{np.nanmax(f32):.1e}** in "
        f"float32 (rounding: float32's eps is 1.2e-7). The one way to get it wrong is to average the MEANS "
        f"of unequal micro-batches with equal weights: relative error **{mistake.min():.0%}–{mistake.max():.0%}** "
        f"here (a micro-batch of B−1 examples and one of 1).\n\n"
        f"Relative errors ‖a − b‖/‖b‖ (experiment `equivalence`):\n\n{md_table(t.sort_values(['setting', 'dtype']))}\n"
    )


def finding(ctx: Context) -> str | None:
    if ctx.equivalence is None:
        return None
    eq = ctx.equivalence.runs
    errs = [c for c in eq if c.startswith("err/") and "mistake" not in c and "single_output" not in c
            and "finite_difference" not in c]
    f64 = eq[eq["dtype"] == "float64"][errs].to_numpy(float)
    f32 = eq[eq["dtype"] == "float32"][errs].to_numpy(float)
    m = eq["err/accumulated_equal_weights_mistake"]
    return (f"Yes, exactly (linearity). float64: ≤ {np.nanmax(f64):.1e}; float32: ≤ {np.nanmax(f32):.1e}. Averaging "
            f"unequal micro-batch means with equal weights is {m.min():.0%}–{m.max():.0%} off.")


SECTION = Section(
    "Q1", "Is the gradient of the mini-batch loss the average of the per-example gradients?",
    text=text,
    provides=(Provider("equivalence", equivalence_facts),),
    limits="Three small networks (MLP, CNN, the teacher's MLP) in float32 and float64 on CPU; the 4-device data "
           "parallelism is simulated on host devices, so no real interconnect or reduction order was tested.",
    finding=("Q1 batch gradient = mean of per-example gradients?", finding),
)
