"""Q9, part 1: the critical batch size during training (Merrill et al. 2025), measured by branching: the section's
text, its appendix and its figure. The measurement itself (the local critical batch size of each checkpoint from
its branches, the paired comparisons of checkpoints and the verdicts on the claims' shape) is
:mod:`analysis.sections.local_critical`.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from analysis import load, plots, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, interval, md_table, t_text, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.local_critical import (COMMON, TOL, TOLERANCES, BranchFacts, branch_facts, comparisons,
                                              edges_text, facts_table, shape, summary_of, value_text)
from analysis.sections.workloads import B_SIMPLE_FACTOR

plt = plots.plt


def text(ctx: Context) -> str:
    f = ctx.branching
    if f is None:
        return "### The critical batch size during training\n\n" + ctx.not_measured("branching",
                                                                                  "make sweep GRID=branching")
    loc = f.local
    head = loc[loc["tol"] == TOL].set_index("s").sort_index()
    bs = f.b_simple.set_index("s") if not f.b_simple.empty else pd.DataFrame(columns=["b_simple", "lo", "hi"])
    tests = comparisons(loc, f.per_seed)
    verdicts = {tol: shape(f, tol, tests) for tol in TOLERANCES}
    v = verdicts[TOL]
    agree = [tol for tol in TOLERANCES if verdicts[tol] == v]
    measured = head[[summary_of(r).measured for _, r in head.iterrows()]] if len(head) else head
    ratio = (bs["b_simple"] / measured["b_crit"]).dropna() if len(bs) and len(measured) else pd.Series(dtype=float)
    smallest = int(f.kept["batch_size"].min())
    seeds = int(f.per_seed["seed"].nunique())
    track = ""
    if len(ratio) >= 2:
        s0, s1 = ratio.index.min(), ratio.index.max()  # the first and last checkpoints both were measured at
        first, last = head.loc[s0, "b_crit"], head.loc[s1, "b_crit"]
        b0, b1 = bs.loc[s0, "b_simple"], bs.loc[s1, "b_simple"]
        near = int(((ratio <= B_SIMPLE_FACTOR) & (ratio >= 1 / B_SIMPLE_FACTOR)).sum())
        track = (f"B_simple, measured on the reference at the same checkpoints, is {ratio.min():.1f}–{ratio.max():.1f}× "
                 f"the local B_crit (tolerance {TOL:.0%}; checkpoints where the local B_crit is a bound left out), "
                 f"within a factor of {B_SIMPLE_FACTOR:g} at {near} of {len(ratio)} checkpoints "
                 f"({b0:.0f} → {b1:.0f} against {first:.0f} → {last:.0f}, first to last such checkpoint). ")
    first_row, last_row = head.iloc[0], head.iloc[-1]
    bounds = [s for s, r in head.iterrows() if r["bound"]]
    answer = (f"**For SGD on the MNIST-1D MLP the local critical batch size (tolerance {TOL:.0%}) is "
              f"{value_text(first_row)} at initialisation and {value_text(last_row)} at "
              f"{last_row['fraction']:.0%} of the way to the target; over training it {v['rise']}"
              + (f"; with Adam it {re.sub(r' [(]ratio .*[)]$', '', adam_shape(ctx)['rise'])}"
                 if ctx.branching_adam is not None else "")
              + ".**" if len(head) else "**No checkpoint's local critical batch size was measured.**")
    limits = []
    if bounds:
        limits.append(f"at {len(bounds)} of {len(head)} checkpoints every B up to the largest tried (or none above the "
                      "smallest) kept the share, so the local B_crit there is a bound (≥ or ≤), not a value; it enters "
                      "no ratio and no verdict")
    if seeds < MIN_INTERVAL_SEEDS:
        limits.append(f"{seeds} seed{'s' if seeds != 1 else ''}: too few seeds for an interval or a verdict")
    return "\n".join([
        "### The critical batch size during training (Merrill et al. 2025)",
        "",
        answer,
        "",
        f"A reference run (MNIST-1D MLP, SGD, B = {f.reference_b}, lr = {f.reference_lr:g}) reaches the training-loss "
        f"target {f.target:g} in {t_text(*f.ref_steps, fmt='.0f')} steps (geometric mean over {f.ref_steps[3]} seeds, "
        f"95% t-interval). From its "
        f"state at each checkpoint, branches train at B = {smallest} to {int(f.kept['batch_size'].max())} for "
        f"{f.budget} examples each, every B on a quarter-decade grid of learning rates. A branch at B **keeps** a "
        f"share of the B = {smallest} branch's loss decrease: the least, over the evaluations every {COMMON} examples, "
        f"of (loss at the checkpoint − loss at B) / (loss at the checkpoint − loss at B = {smallest}), each B at the "
        "rate that keeps the most. The **local critical batch size** is the largest B "
        f"such that it and every smaller B keep at least 1 − tolerance, read for each of the {seeds} seeds; "
        f"{TOL:.0%} is the headline, "
        f"{' and '.join(f'{t:.0%}' for t in TOLERANCES if t != TOL)} show the sensitivity (50% is roughly the "
        "hyperbola's B_crit, where a batch needs twice the examples). Summary: the geometric mean over seeds with a "
        "95% t-interval (grid values, so a factor of 2 is the resolution); a seed at the end of the measured range "
        "makes it a bound. Each claim below is a paired comparison of two checkpoints, seed by seed, called only "
        f"when its Holm-adjusted p-value over the section's {int(tests['p'].notna().sum())} tested comparisons is "
        f"below 0.05. {f.edge:.0%} of the (checkpoint, B) pairs took the smallest or largest rate of their grid"
        + edges_text(f) + "; "
        "every checkpoint's values are in the appendix.",
        "",
        f"Against Merrill et al.'s shape (near zero at initialisation, a quick rise, a plateau), at tolerance "
        f"{TOL:.0%}: at initialisation the local B_crit is {v['start']}; over training it {v['rise']}; "
        f"{v['plateau']}. "
        + ("The same three verdicts hold at every tolerance. " if len(agree) == len(TOLERANCES) else
           (f"The same verdicts hold at {', '.join(f'{t:.0%}' for t in agree if t != TOL)}; " if len(agree) > 1 else
            "At the other tolerances they differ: ") +
           "; ".join(f"at {t:.0%}, B_crit at initialisation is {verdicts[t]['start']}, over training it "
                     f"{verdicts[t]['rise']}, {verdicts[t]['plateau']}" for t in TOLERANCES if t not in agree) + ". ")
        + track,
        "",
        adam_paragraph(ctx),
        "",
        ("Limits: " + "; ".join(limits) + ".\n") if limits else "",
        ctx.figure("q9a_local_critical"),
    ])


def adam_shape(ctx: Context) -> dict[str, str]:
    """Merrill et al.'s three claims on the Adam branches (their own Holm family)."""
    a = ctx.branching_adam
    return shape(a, TOL, comparisons(a.local, a.per_seed))


def adam_against_sgd(ctx: Context) -> pd.DataFrame:
    """Adam's local B_crit over SGD's (headline tolerance), paired by seed, at initialisation and at the last
    checkpoint of each (both at about 80% of their references' steps to the target); Holm over the two."""
    f, a = ctx.branching, ctx.branching_adam
    rows = []
    for what, sf, sa in (("initialisation", f.local["s"].min(), a.local["s"].min()),
                         ("the last checkpoint", f.local["s"].max(), a.local["s"].max())):
        ps_f = f.per_seed[(f.per_seed["tol"] == TOL) & (f.per_seed["s"] == sf)].set_index("seed")
        ps_a = a.per_seed[(a.per_seed["tol"] == TOL) & (a.per_seed["s"] == sa)].set_index("seed")
        common = ps_f.index.intersection(ps_a.index)
        A, F = ps_a.loc[common], ps_f.loc[common]
        est, lo, hi, p, n = stats.paired_ratio(A["b_crit"], F["b_crit"], A["censored"], F["censored"])
        if n < MIN_INTERVAL_SEEDS:
            lo = hi = p = np.nan
        rows.append({"at": what, "ratio": est, "lo": lo, "hi": hi, "p": p, "n": n,
                     "bound": bool((A["censored"] != 0).any() or (F["censored"] != 0).any())})
    out = pd.DataFrame(rows)
    out["p_holm"] = stats.holm(out["p"])
    return out


def adam_paragraph(ctx: Context) -> str:
    a = ctx.branching_adam
    if a is None or a.local.empty:
        return ("**With Adam** (Merrill et al.'s optimizer): " + ctx.not_measured("branching_adam",
                                                                                "make sweep GRID=branching_adam"))
    head = a.local[a.local["tol"] == TOL].sort_values("s")
    v = adam_shape(ctx)
    vs = adam_against_sgd(ctx)
    said = []
    for r in vs.itertuples():
        if r.bound or not np.isfinite(r.p_holm):
            said.append(f"at {r.at} not tested (a bound, or too few seeds)")
        else:
            said.append(f"at {r.at} {interval(r.ratio, r.lo, r.hi, '.2f')}× SGD's ("
                        + verdict_of(r.ratio, r.p_holm, "larger", "smaller") + ")")
    return (f"**With Adam** (`branching_adam`: the same protocol, reference B = {a.reference_b}, lr = "
            f"{a.reference_lr:g}, {t_text(*a.ref_steps, fmt='.0f')} steps to the target, "
            f"{int(a.per_seed['seed'].nunique())} seeds, {a.edge:.0%} of the (checkpoint, B) pairs at a rate-grid "
            f"edge{edges_text(a)}), the local B_crit at {TOL:.0%} is "
            + ", ".join(f"{value_text(r)} at {r['fraction']:.0%}" for _, r in head.iterrows())
            + f": at initialisation it is {v['start']}; over training it {v['rise']}; {v['plateau']} (Holm over "
            "the Adam branches' own comparisons). Against SGD's, paired by seed (Holm over the two): "
            + "; ".join(said) + ".")


def appendix(ctx: Context) -> str:
    f = ctx.branching
    if f is None or f.local.empty:
        return ""
    out = ["### Q9a: the local critical batch size at every checkpoint", "",
           "Geometric mean over seeds with a 95% t-interval; ≥ / ≤: a bound at an end of the measured "
           "range (no interval); B_simple of the reference, geometric mean with a 95% t-interval.", "",
           md_table(facts_table(f)), ""]
    a = ctx.branching_adam
    if a is not None and not a.local.empty:
        out += ["With Adam (`branching_adam`):", "", md_table(facts_table(a)), ""]
    return "\n".join(out)


def local_critical_figure(ctx: Context):
    """Left: the share of the smallest batch's loss decrease each B keeps, per checkpoint. Right: the local
    critical batch size per tolerance and the reference's B_simple against the point of training."""
    f = ctx.branching
    if f.kept.empty:
        raise Skip("the branching sweep holds no branches")
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    ax = axes[0]
    checkpoints = sorted(f.kept["s"].unique())
    colors = dict(zip(checkpoints, plots.sns.color_palette("rocket_r", len(checkpoints))))
    frac = f.local.drop_duplicates("s").set_index("s")["fraction"]
    for s in checkpoints:
        k = f.kept[f.kept["s"] == s]
        plots.errorbar(ax, k["batch_size"], k["kept"], k["lo"], k["hi"], fmt="o-", color=colors[s],
                  label=f"step {s} ({frac.get(s, np.nan):.0%})")
    for tol in TOLERANCES:
        ax.axhline(1 - tol, color="0.4", lw=0.8, ls="--" if tol == TOL else ":")
    ax.set_ylim(max(-0.1, f.kept["kept"].min() - 0.1), 1.15)
    plots.log2_axis(ax)
    ax.set_xlabel("batch size of the branch, B")
    ax.set_ylabel(f"share of the B = {int(f.kept['batch_size'].min())} branch's\nloss decrease kept (least over "
                  "the budget)")
    ax.set_title(f"branches of {f.budget} examples from the reference's step s", fontsize=8)
    ax.legend(fontsize=6, title="branch point (of steps to target)", title_fontsize=6, loc="lower left")

    ax = axes[1]
    markers = dict(zip(TOLERANCES, ("v", "o", "^")))
    for tol in TOLERANCES:
        loc = f.local[f.local["tol"] == tol]
        plots.errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt=markers[tol] + "-",
                  color="C0", alpha=1.0 if tol == TOL else 0.45, label=f"local B_crit, tolerance {tol:.0%}")
    a = ctx.branching_adam
    if a is not None and not a.local.empty:
        loc = a.local[a.local["tol"] == TOL]
        plots.errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt="D-", color="C2",
                       label=f"local B_crit with Adam, tolerance {TOL:.0%}")
    if not f.b_simple.empty:
        x = f.b_simple["s"].map(frac) * 100
        plots.errorbar(ax, x, f.b_simple["b_simple"], f.b_simple["lo"], f.b_simple["hi"], fmt="s--", color="C3",
                  label="B_simple of the reference")
    ax.set_yscale("log", base=2)
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("branch point, % of the reference's steps to the target")
    ax.set_ylabel("batch size")
    ax.set_title("local B_crit and B_simple over training (geo. mean, 95% t-interval)", fontsize=8)
    ax.legend(fontsize=6, loc="lower right")
    plots.suptitle(fig, f"Q9a: the critical batch size during training: branches from a reference (MNIST-1D MLP, SGD, "
                 f"B = {f.reference_b}, lr = {f.reference_lr:g})", fontsize=9)
    return fig




def _read(ctx: Context, name: str = "branching") -> BranchFacts:
    runs = load.load_runs(name, hint=f"make sweep GRID={name}")
    hist = load.load_history(runs, name, keys=("train/loss", "grad/b_simple"), progress=ctx.progress)
    return branch_facts(runs, hist, name)


SECTION = Section(
    "branching",
    text=text,
    appendix=appendix,
    provides=(Provider("branching", _read), Provider("branching_adam", lambda ctx: _read(ctx, "branching_adam"))),
    figures=(FigureSpec("q9a_local_critical", local_critical_figure, ("branching",),
                        ("Q9a. Left: the share of the smallest batch's loss decrease kept by each B, per branch point. "
                        "Right: the local critical batch size (three tolerances; with Adam at the headline tolerance) "
                        "and the SGD reference's B_simple against the point of training.")),),
)
