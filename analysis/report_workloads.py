"""The report's text for the science sweep across workloads (Q5, second half), for Q5b (generalisation) and the
sanity table of the MNIST-1D paper's accuracies.

Pure: ``Facts`` and the names of the drawn figures in, Markdown out; every
number is computed from the facts, and every verdict from the numbers
(:mod:`analysis.workloads`, :mod:`analysis.generalisation`).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.facts import Facts
from analysis.generalisation import BUDGETS, EPOCHS, STEPS
from analysis.workloads import B_SIMPLE_FACTOR, SMALL_B, TARGETS, WORKLOADS


def interval(est, lo, hi, fmt=".3g") -> str:
    """``174 [167, 184]``: an estimate and its interval; the estimate alone without one, ``–`` without either."""
    if not np.isfinite(est):
        return "–"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return format(est, fmt)
    return f"{format(est, fmt)} [{format(lo, fmt)}, {format(hi, fmt)}]"


def checks_table(c: pd.DataFrame) -> pd.DataFrame:
    """The shape checks as the report prints them: one row per workload, target and optimizer."""
    return pd.DataFrame({
        "workload": c["workload"], "target": c["target"].map(lambda t: "train loss" if t == "loss" else "validation"),
        "optimizer": c["optimizer"], "seeds": c["n_seeds"].astype(int), "B's": c["batch_sizes"].astype(int),
        "B_crit [95% CI]": [interval(*r) for r in c[["B_crit", "B_crit_lo", "B_crit_hi"]].to_numpy()],
        "S_min [95% CI]": [interval(*r) for r in c[["S_min", "S_min_lo", "S_min_hi"]].to_numpy()],
        f"slope B ≤ {SMALL_B} [95% CI]": [interval(*r, fmt=".2f") for r in c[["slope", "slope_lo", "slope_hi"]].to_numpy()],
        "R²": c["r2"].map(lambda v: f"{v:.3f}" if np.isfinite(v) else "–"),
        "B_crit / SGD's [95% CI]": [interval(*r, fmt=".2f") for r in c[["ratio_vs_sgd", "ratio_lo", "ratio_hi"]].to_numpy()],
    })


def _count(mask: pd.Series) -> str:
    return f"{int(mask.sum())} of {len(mask)}"


def q5_workloads(facts: Facts, drawn: Collection[str], md_table, figure_markdown) -> str:
    w = facts.workloads
    if w is None or w.checks.empty:
        return ""
    c = w.checks
    n_work = len(w.workloads)
    perfect = c["slope_verdict"].str.startswith("perfect")
    near = (c["slope"].astype(float) + 1).abs() <= 0.1
    r2 = c["r2"].astype(float)
    good_fit = r2 >= 0.95
    ratio = c[c["optimizer"] != "sgd"]
    parts = [
        f"### Across {n_work} workloads and two targets\n",
        f"The science sweep trains {n_work} workloads ({', '.join(WORKLOADS.get(x, x) for x in w.workloads)}), each "
        "with a training-loss target and a validation target on a 20% split of its training set (the test set is "
        "never used to choose anything), and measures the steps to each target as above: per seed the fewest steps "
        "over the learning rates, then the median over seeds, with 95% bootstrap intervals over seeds.\n",
        "**What holds across workloads, computed from the table below:**\n",
        f"- Perfect scaling at small B (the interval of the log-log slope for B ≤ {SMALL_B} holds −1): "
        f"{_count(perfect)} fits; within 0.1 of −1 (the point estimate) in {_count(near)}; the others: "
        + (", ".join(f"{r.workload} {r.target} {r.optimizer} {r.slope_verdict} ({r.slope:.2f})"
                     for r in c[~perfect].itertuples()) or "none") + ". Steps to target are read at evaluations "
        "and minimised over a half-decade rate grid, which limits how close to −1 a slope can be measured.",
        f"- The hyperbola S(B) = S_min(1 + B_crit/B) fits with R² ≥ 0.95 in {_count(good_fit)} fits "
        f"(lowest R² {np.nanmin(r2):.3f}, {c.loc[r2.idxmin(), 'workload']} {c.loc[r2.idxmin(), 'target']} "
        f"{c.loc[r2.idxmin(), 'optimizer']})." if np.isfinite(r2).any() else "- No hyperbola could be fitted.",
    ]
    for opt in ("momentum", "adam"):
        sub = ratio[ratio["optimizer"] == opt]
        if len(sub):
            yes = sub["extends_scaling"].str.startswith("yes")
            no = sub["extends_scaling"].str.startswith("no:")
            unresolved = sub["extends_scaling"].str.startswith("not resolved")
            parts.append(
                f"- {opt.capitalize()} extends perfect scaling beyond SGD (its B_crit / SGD's, paired bootstrap "
                f"interval above 1) in {_count(yes)} (workload, target) pairs; below 1 in {int(no.sum())}; not resolved "
                f"(interval holds 1) in {int(unresolved.sum())}; not measured (a fit missing) in "
                f"{int(len(sub) - yes.sum() - no.sum() - unresolved.sum())}. Ratios: "
                + ", ".join(f"{r.workload} {r.target} {interval(r.ratio_vs_sgd, r.ratio_lo, r.ratio_hi, '.2f')}"
                            for r in sub.itertuples()) + ".")
    parts.append("")
    parts.append(md_table(checks_table(c)) + "\n")
    parts.append(figure_markdown(drawn, "w1_steps_to_target", "Steps to each target against B on every workload "
                                 "(rows: target; columns: workload); median over seeds, bars the range, lines the "
                                 "fitted hyperbola per optimizer."))
    parts.append(_b_simple(w, md_table, figure_markdown, drawn))
    parts.append(
        "**Limits.** One architecture per data set except MNIST-1D; small networks and data sets (800 to 3200 "
        "training examples), so the largest batch is the full set; learning rate is the only tuned "
        "hyperparameter (momentum 0.9, Adam's betas at their defaults, no schedule, no weight decay), on "
        "half-decade grids, so steps-to-target carries the grid's resolution; targets were set once per workload "
        "by hand, reachable at every B, and B_crit depends on the target; 3 seeds for the CNN give intervals "
        "that undercover (37 of 50 in the synthetic coverage test), 5 for the others (46 of 50).\n")
    return "\n".join(p for p in parts if p is not None)


def _b_simple(w, md_table, figure_markdown, drawn) -> str:
    t = w.b_simple
    if t.empty:
        return ""
    ok = {k: (t[f"{k}_ratio"].between(1 / B_SIMPLE_FACTOR, B_SIMPLE_FACTOR)) for k in ("at_init", "over_training", "at_end")}
    table = pd.DataFrame({
        "workload": t["workload"], "optimizer": t["optimizer"],
        "B_crit [95% CI]": [interval(*r) for r in t[["B_crit", "B_crit_lo", "B_crit_hi"]].to_numpy()],
        "B_simple at init": t["at_init"].map(lambda v: f"{v:.3g}"),
        "over training (median)": t["over_training"].map(lambda v: f"{v:.3g}"),
        "where the run stopped": t["at_end"].map(lambda v: f"{v:.3g}"),
        "stopped / B_crit": t["at_end_ratio"].map(lambda v: f"{v:.2f}"),
    })
    return (
        "**B_simple against B_crit (McCandlish et al.: B_crit ≈ B_noise, with B_simple its proxy).** For the runs "
        "that set each seed's steps to the training-loss target, B_simple = tr(Σ)/‖G‖² at initialisation, its "
        "median over training and its value where the run stopped, each the median over those runs, against the "
        f"fitted B_crit. Counting 'agrees' as within a factor of {B_SIMPLE_FACTOR:g} either way: at initialisation in "
        f"{_count(ok['at_init'])} (workload, optimizer) pairs, over training in {_count(ok['over_training'])}, "
        f"where the run stopped in {_count(ok['at_end'])}; the ratio B_simple/B_crit where the run stopped "
        f"ranges {t['at_end_ratio'].min():.2g}–{t['at_end_ratio'].max():.2g} (median {t['at_end_ratio'].median():.2g}). "
        + _spread(t) + "\n\n"
        + md_table(table) + "\n\n"
        + figure_markdown(drawn, "w2_b_simple_vs_b_crit", "B_simple (at initialisation, over training, where the "
                          "run stopped) against the fitted B_crit, every workload and optimizer; the dashed line is y = x.")
    )


def _spread(t: pd.DataFrame) -> str:
    """How much B_simple and B_crit vary across optimizers within a workload (max / min)."""
    g = t.groupby("workload").agg(bs_hi=("at_end", "max"), bs_lo=("at_end", "min"), bc_hi=("B_crit", "max"),
                                  bc_lo=("B_crit", "min"))
    bs, bc = (g["bs_hi"] / g["bs_lo"]).max(), (g["bc_hi"] / g["bc_lo"]).max()
    if not (np.isfinite(bs) and np.isfinite(bc)):
        return ""
    return (f"Within a workload, B_simple where the runs stopped differs across optimizers by at most {bs:.2g}×, "
            f"B_crit by up to {bc:.2g}×: " + ("the noise scale does not carry the optimizer's effect on the critical "
                                             "batch size." if bc > 2 * bs else "both move together."))


def q5b(facts: Facts, drawn: Collection[str], md_table, figure_markdown, not_measured) -> str:
    g = facts.generalisation
    if g is None:
        return not_measured(facts, "generalisation", "make sweep GRID=generalisation")
    if g.gaps.empty:
        return "The generalisation sweep holds no completed run with a validation and test error; rerun it.\n"
    gp = g.gaps
    lines = []
    for b in BUDGETS:
        sub = gp[gp["budget"] == b]
        if len(sub):
            counts = sub["verdict"].value_counts()
            lines.append(f"- **{b}**: " + ", ".join(f"{v} in {n}" for v, n in counts.items()) + " of "
                         f"{len(sub)} workloads; test error at B = {int(sub['large_B'].iloc[0])} minus at B = "
                         f"{int(sub['small_B'].iloc[0])}: "
                         + ", ".join(f"{r.workload} {r.gap:+.3f} [{r.gap_lo:+.3f}, {r.gap_hi:+.3f}]"
                                     for r in sub.itertuples()) + ".")
    conv = gp[gp["budget"] == BUDGETS[2]]
    worse_conv = int((conv["verdict"] == "larger B worse").sum())
    worse_epochs = int((gp[gp["budget"] == BUDGETS[0]]["verdict"] == "larger B worse").sum())
    answer = (f"At a fixed number of epochs the larger batch was worse on every seed in {worse_epochs} of "
              f"{int((gp['budget'] == BUDGETS[0]).sum())} workloads; trained to the best validation error with the "
              f"learning rate tuned per B, in {worse_conv} of {len(conv)}. ")
    ep = gp[gp["budget"] == BUDGETS[0]].set_index("workload")["gap"]
    kept = conv[conv["verdict"] == "larger B worse"]
    answer += ("The gap survives the third budget on some workloads, smaller: "
               + ", ".join(f"{r.workload} {r.gap:+.3f} (at {EPOCHS} epochs {ep.get(r.workload, np.nan):+.3f})"
                           for r in kept.itertuples())
               + "; there, fewer updates do not explain all of it."
               if worse_conv else
               "No gap survives the third budget: what a fixed budget shows as a large-batch gap goes with the "
               "fewer updates a large batch gets (Hoffer et al. 2017), not with the batch size itself (Keskar et "
               "al. 2017 claimed the latter).")
    t = g.table.copy()
    t["test error [range]"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in t[["median", "lo", "hi"]].to_numpy()]
    t = t.pivot_table(index=["workload", "budget"], columns="batch_size", values="test error [range]",
                      aggfunc="first").reset_index()
    t.columns = [f"B = {c}" if isinstance(c, (int, np.integer)) else c for c in t.columns]
    return "\n".join([
        f"Each workload, with heavy-ball momentum at B = {', '.join(str(b) for b in sorted(set(g.table['batch_size'])))}, "
        f"{g.runs['learning_rate'].nunique()} learning rates "
        f"({', '.join(f'{x:g}' for x in sorted(set(g.runs['learning_rate'])))}) and {int(g.table['n'].max())} seeds "
        "(sweep `generalisation`), read under three "
        f"budgets: {EPOCHS} epochs, {STEPS} steps, and the whole run at its best validation error (early stopping, "
        "the runs are long enough to be past it). The learning rate is chosen per B and budget by the validation "
        "error; the test error (1 − accuracy; MSE for the teacher) is read at the same evaluation. The gap is the "
        "test error at the largest B minus at the smallest, seed by seed; a verdict needs every seed to agree.\n",
        f"**Answer:** {answer}\n",
        *lines, "",
        md_table(t) + "\n",
        figure_markdown(drawn, "w3_generalisation", "Test error against B per workload, one line per budget "
                        "(median over seeds, bars the range)."),
        "**Limits.** Three batch sizes and one optimizer (momentum 0.9); no weight decay, augmentation or "
        "learning-rate schedule, which Shallue et al. and Hoffer et al. show can move a gap; 3 seeds, so a verdict "
        "is a sign agreement, not a test at a stated level; the data sets are small, and the MNIST-1D MLP overfits "
        "(validation error rises after its minimum), which is what early stopping reads.\n",
    ])


def published(facts: Facts, md_table, not_measured) -> str:
    """The sanity check: the MNIST-1D paper's recipe reproduced on mbstudy's offline MNIST-1D."""
    if facts.published is None:
        return not_measured(facts, "published", "make sweep GRID=published")
    a = facts.published.accuracy
    t = pd.DataFrame({"model": a["model"], "final test accuracy (mean)": a["mean"], "lowest": a["low"],
                      "highest": a["high"], "best during training (mean)": a["best_mean"],
                      "seeds": a["seeds"].astype(int), "paper": a["paper"]})
    verdicts = []
    for r in a.itertuples():
        if np.isfinite(r.paper):
            gap = 100 * (r.mean - r.paper)
            verdicts.append(f"{r.model} {r.mean:.1%} (seeds {r.low:.1%}–{r.high:.1%}) against the paper's "
                            f"{r.paper:.0%}, {gap:+.1f} points"
                            + (", within the seed range" if r.low <= r.paper <= r.high
                               else ", a shortfall to investigate" if gap < -2 else ""))
    return ("The MNIST-1D paper's recipe (Adam, learning rate 1e-2, batch 100, 8000 steps; Greydanus 2020), trained "
            "by mbstudy on its offline MNIST-1D (sweep `published`). Final test accuracy over "
            f"{int(a['seeds'].max())} seeds: " + "; ".join(verdicts) + ". mbstudy's MLP is the plain 40-100-100-10 "
            "with ReLU (the paper's adds a residual connection around its second layer), batches are drawn by "
            "shuffling each epoch (the paper's loop walks the data in order), and weights start from He-normal "
            "draws where PyTorch's layers start from a scaled uniform: candidate causes of a gap, not yet tested.\n\n" + md_table(t, ".3f") + "\n")
