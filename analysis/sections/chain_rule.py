"""Q2, "only o_11 contributes to the update": the mistaken single-output chain rule against the true gradient
(from the ``equivalence`` experiment of :mod:`analysis.sections.identity`)."""

from __future__ import annotations

import pandas as pd

from analysis.section import Context, Section


def text(ctx: Context) -> str:
    if ctx.equivalence is None:
        return ctx.not_measured("equivalence", "run make equivalence")
    eq = ctx.equivalence.runs
    wrong = eq["err/single_output_vs_true"]
    fd = eq["err/true_vs_finite_difference"].dropna() if "err/true_vs_finite_difference" in eq else pd.Series(dtype=float)
    return (
        "The batch loss depends on every output o_ij of every example, so the chain rule sums over all of "
        "them: ∂L/∂w = Σ_ij ∂L/∂o_ij · ∂o_ij/∂w. Keeping only the o_11 term is not a gradient of the loss: "
        f"against the true gradient its relative error is **{wrong.min():.0%}–{wrong.max():.0%}** on the three "
        f"networks, while the true gradient matches central finite differences to **{fd.max():.1e}** "
        "(float64). Summing the single-output term over every (example, output) recovers the true gradient "
        "exactly (`tests/test_grads.py`).\n"
    )


def finding(ctx: Context) -> str | None:
    if ctx.equivalence is None:
        return None
    w = ctx.equivalence.runs["err/single_output_vs_true"]
    return f"That drops all but one term of the chain rule: {w.min():.0%}–{w.max():.0%} off the true gradient."


SECTION = Section(
    "Q2", "\"Only o_11 contributes to the update\": what goes wrong in that chain rule?",
    text=text,
    limits="The error of the single-output term is measured on the same three networks; its size depends on the "
           "outputs and batch, not on anything that would make it right.",
    finding=("Q2 \"only o₁₁ contributes\"?", finding),
)
