"""What batch size should I use? The study's practical answer, computed from the other sections' facts.

Per workload and optimizer of the science sweep (the hardest training-loss target): B_crit (the batch size at
which a run needs twice the fewest steps and twice the fewest examples: McCandlish et al.'s trade-off point), the
fewest steps S_min and examples E_min, the steps and examples at a few batch sizes as the fitted curves give them,
how the best learning rate grew with B below B_crit (the slope of log rate against log B over seeds), and B_simple
measured at initialisation as a cheap guess of B_crit (its ratio to B_crit). The text turns them into advice and
adds what Q5b (generalisation), Q6 (powers of two) and Q8 (accumulation) measured, each only as far as their own
verdicts go.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import stats
from analysis.markdown import md_table
from analysis.order import label as opt_label
from analysis.section import Answer, Context, Section
from mbstudy.metrics import TRAIN_TARGET


def rate_slopes(rates: pd.DataFrame, b_crit: float) -> tuple[float, float, float, int]:
    """Per seed, the slope of log10(best rate) against log10(B) for B below ``b_crit`` (at least 3 batch sizes);
    its mean over seeds with the t-interval, and the seeds used."""
    sl = []
    for _, g in rates[rates["batch_size"] < b_crit].groupby("seed"):
        if g["batch_size"].nunique() >= 3:
            sl.append(np.polyfit(np.log10(g["batch_size"].astype(float)), np.log10(g["learning_rate"].astype(float)), 1)[0])
    if len(sl) < 2:
        return (float(sl[0]) if sl else np.nan), np.nan, np.nan, len(sl)
    m, lo, hi, _ = stats.mean_interval(np.asarray(sl))
    return m, lo, hi, len(sl)


def advice_table(ctx: Context) -> pd.DataFrame:
    f, s = ctx.workloads, ctx.surge
    if f is None:
        return pd.DataFrame()
    rows = []
    bs = f.b_simple.set_index(["workload", "optimizer"]) if not f.b_simple.empty else None
    for w in f.workloads:
        if (w, TRAIN_TARGET) not in f.levels:
            continue
        level = f.hardest(w, TRAIN_TARGET)
        for (cw, ct, lev, opt), c in f.cells.items():
            if (cw, ct, lev) != (w, TRAIN_TARGET, level):
                continue
            row = {"workload": f.label(w), "optimizer": opt_label(opt), "_opt": opt, "_w": w,
                   "B_crit": c.b_crit, "S_min": c.s_min, "E_min": c.e_min, "level": level}
            if c.b_crit.measured and s is not None:
                r = s.rates[(s.rates["workload"] == w) & (s.rates["optimizer"] == opt)
                            & np.isclose(s.rates["level"], level)]
                row["rate_slope"] = rate_slopes(r, c.b_crit.value)
            if bs is not None and (w, opt) in bs.index and c.b_crit.measured:
                row["b_simple_ratio"] = float(bs.loc[(w, opt), "at_init_ratio"])
            rows.append(row)
    return pd.DataFrame(rows)


def _slope_text(v) -> str:
    if not isinstance(v, tuple) or not np.isfinite(v[0]):
        return "–"
    m, lo, hi, n = v
    return stats.span_text(m, lo, hi, ".2f") if np.isfinite(lo) else f"{m:.2f} ({n} seed)"


def _against_sgd(ctx: Context) -> str:
    """How the other optimizers' B_crit compared with the reference's in Q5 (hardest training-loss level, Holm)."""
    f = ctx.workloads
    c = f.comparisons
    c = c[(c["target"] == TRAIN_TARGET) & c["p_holm"].notna()]
    if c.empty:
        return "the optimizers' B_crit were not compared"
    from analysis.order import reference_optimizer

    larger = c[(c["p_holm"] < 0.05) & (c["ratio"] > 1)]
    smaller = c[(c["p_holm"] < 0.05) & (c["ratio"] < 1)]
    ref = opt_label(reference_optimizer())
    return (f"against {ref}, another optimizer's B_crit was larger in {len(larger)}, smaller in {len(smaller)} and "
            f"not resolved (or a bound) in {len(c) - len(larger) - len(smaller)} of {len(c)} comparisons "
            f"(Q5, Holm)")


def text(ctx: Context) -> str:
    t = advice_table(ctx)
    if t.empty:
        return ctx.not_measured("workloads", "run make sweep GRID=science")
    measured = t[[b.measured for b in t["B_crit"]]]
    lines = []
    if len(measured):
        lo = min(b.value for b in measured["B_crit"])
        hi = max(b.value for b in measured["B_crit"])
        lines.append(
            f"**Use a batch size up to about B_crit, which you can measure: here it ranged from {lo:.0f} to "
            f"{hi:.0f} examples across workloads and optimizers; {_against_sgd(ctx)}.** Below B_crit, doubling B nearly halves the steps to "
            "a target at almost no extra examples (perfect scaling); at B = B_crit a run takes twice its fewest "
            "steps and twice its fewest examples; above it, more examples buy few saved steps. So: if steps (wall "
            "time on parallel hardware) are what you pay for, go up to B_crit; if examples (compute) are, stay well "
            "below it. Retune the learning rate at every B: the best rate grew with B below B_crit, and the slope "
            "below says how fast.")
    rows = []
    for r in t.itertuples():
        b = r.B_crit
        steps = {}
        if b.measured and r.S_min.measured:
            for k in (0.25, 1.0, 4.0):
                B = k * b.value
                steps[k] = r.S_min.value * (1 + b.value / B)
        rows.append({"workload": r.workload, "optimizer": r.optimizer, "B_crit (95%)": b.text(),
                     "steps at B_crit/4, B_crit, 4 B_crit (fit)": ", ".join(f"{steps[k]:.0f}" for k in steps) or "–",
                     "best-rate slope below B_crit (95%)": _slope_text(getattr(r, "rate_slope", None)),
                     "B_simple at init / B_crit": f"{r.b_simple_ratio:.2f}" if np.isfinite(getattr(r, "b_simple_ratio", np.nan)) else "–"})
    lines.append(md_table(pd.DataFrame(rows)))
    lines.append(
        "The slope of the best rate: 1 is the linear scaling rule (rate ∝ B), 0.5 the square-root rule. B_simple "
        "(the gradient noise scale, cheap to measure from per-example gradients at the start of training) against "
        "B_crit says how far it can stand in for a sweep (Q7 and Q5 give its intervals).")
    extra = []
    for key, name in (("Q5b", "generalisation"), ("Q6", "powers of two"), ("Q8", "accumulation")):
        from analysis.sections import SECTIONS

        sec = next((x for x in SECTIONS if x.key == key), None)
        ans = sec.finding[1](ctx) if sec is not None and sec.finding else None
        if ans is not None:
            extra.append(f"- *{name.capitalize()}* ({key}): {ans.answer if isinstance(ans, Answer) else ans}")
    if extra:
        lines.append("What the other questions add:\n\n" + "\n".join(extra))
    return "\n\n".join(lines) + "\n"


def finding(ctx: Context) -> Answer | None:
    t = advice_table(ctx)
    if t.empty:
        return None
    measured = t[[b.measured for b in t["B_crit"]]]
    if measured.empty:
        return Answer("every B_crit is a bound here: run the full science sweep")
    lo, hi = min(b.value for b in measured["B_crit"]), max(b.value for b in measured["B_crit"])
    return Answer("up to about B_crit (measure it); retune the rate at each B",
                  f"B_crit {lo:.0f}–{hi:.0f} across {len(measured)} workload × optimizer cells",
                  "small models on CPUs; B_crit depends on the target (Q5)")


SECTION = Section(
    "Advice", "What batch size should I use?",
    heading="What batch size should I use?",
    text=text,
    limits="Three small workloads (an MLP and a CNN on MNIST-1D, an MLP on a teacher's data); B_crit depends on the "
           "target (Q5's figure of B_crit against the target level) and on the model, so measure it for yours.",
    finding=("What batch size should I use?", finding),
)
