"""The report's Q9 section, "What sets the critical batch size?": text from ``Facts.branching``, ``Facts.warmup``,
``Facts.scaling`` and ``Facts.nqm`` (:mod:`analysis.q9`). Pure: facts in, Markdown out; every verdict is computed
from the intervals."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.facts import OPTIMIZERS, Facts, present
from analysis.q9 import COMMON, NQM_DIM, TOL, TOLERANCES
from analysis.report_workloads import interval
from analysis.workloads import B_SIMPLE_FACTOR

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


def _ok(*v) -> bool:
    return all(np.isfinite(x) for x in v)


def _open_interval(est, lo, hi) -> str:
    """``interval``, with an interval the fit leaves open above shown as ``[lo, ∞)``."""
    if np.isfinite(est) and np.isfinite(lo) and hi == np.inf:
        return f"{est:.0f} [{lo:.0f}, ∞)"
    return interval(est, lo, hi, fmt=".0f")


def shape(local: pd.DataFrame) -> dict[str, str]:
    """Merrill et al.'s three claims about the local B_crit over training (near zero at initialisation, a rise, a
    plateau), judged from one tolerance's intervals (disjoint intervals: resolved)."""
    loc = local.sort_values("s").reset_index(drop=True)
    if len(loc) < 3:
        return {"start": "not resolved", "rise": "not resolved", "plateau": "not resolved"}
    if loc[["b_crit", "lo", "hi"]].isna().to_numpy().any():
        return {"start": "not resolved (a checkpoint has no interval: too few seeds or runs)",
                "rise": "is not resolved", "plateau": "the plateau is not resolved"}
    first, later = loc.iloc[0], loc.iloc[1:]
    low, high = later.loc[later["b_crit"].idxmin()], later.loc[later["b_crit"].idxmax()]
    last, prev = loc.iloc[-1], loc.iloc[-2]
    pct = lambda r: f"{r['fraction']:.0%}"  # noqa: E731
    if first["hi"] < high["lo"]:
        start = f"below its later maximum ({high['b_crit']:.0f} at {pct(high)})"
    elif first["lo"] > low["hi"]:
        start = f"above its value soon after ({low['b_crit']:.0f} at {pct(low)}): not near zero"
    else:
        start = "not resolved from the later values"
    low = loc.loc[loc["b_crit"].idxmin()]  # the rise is read from the lowest checkpoint, the first included
    if last["lo"] > low["hi"] and low["s"] < last["s"]:
        rise = f"rises from {low['b_crit']:.0f} at {pct(low)} to {last['b_crit']:.0f} at {pct(last)}"
    elif last["hi"] < high["lo"] and high["s"] < last["s"]:
        rise = f"falls from {high['b_crit']:.0f} at {pct(high)} to {last['b_crit']:.0f} at {pct(last)}"
    else:
        rise = "shows no change the intervals resolve"
    plateau = ("the last two checkpoints agree (intervals overlap): consistent with a plateau, not proof of one"
               if last["lo"] <= prev["hi"] and prev["lo"] <= last["hi"] else
               f"it is still {'rising' if last['lo'] > prev['hi'] else 'falling'} between the last two checkpoints: "
               "no plateau by then")
    return {"start": start, "rise": rise, "plateau": plateau}


def branching_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    f = facts.branching
    if f is None:
        return "### The critical batch size during training\n\n" + not_measured(facts, "branching",
                                                                                "make sweep GRID=branching")
    loc = f.local
    head = loc[loc["tol"] == TOL].set_index("s")
    bs = f.b_simple.set_index("s") if not f.b_simple.empty else pd.DataFrame(columns=["b_simple", "lo", "hi"])
    rows = []
    for s in sorted(head.index):
        r = {"branch point (step)": s, "% of steps to target": f"{head.loc[s, 'fraction']:.0%}"}
        for tol in TOLERANCES:
            x = loc[(loc["tol"] == tol) & (loc["s"] == s)].iloc[0]
            r[f"local B_crit, {tol:.0%}"] = interval(x["b_crit"], x["lo"], x["hi"], fmt=".0f")
        if s in bs.index:
            b = bs.loc[s]
            r["B_simple [95% CI]"] = interval(b["b_simple"], b["lo"], b["hi"], fmt=".0f")
            r[f"B_simple / local B_crit ({TOL:.0%})"] = f"{b['b_simple'] / head.loc[s, 'b_crit']:.1f}"
        rows.append(r)
    verdicts = {tol: shape(loc[loc["tol"] == tol]) for tol in TOLERANCES}
    v = verdicts[TOL]
    agree = [tol for tol in TOLERANCES if verdicts[tol] == v]
    ratio = (bs["b_simple"] / head["b_crit"]).dropna() if len(bs) else pd.Series(dtype=float)
    smallest = int(f.kept["batch_size"].min())
    track = ""
    if len(ratio) >= 2:
        s0, s1 = ratio.index.min(), ratio.index.max()  # the first and last checkpoints both were measured at
        first, last = head.loc[s0, "b_crit"], head.loc[s1, "b_crit"]
        b0, b1 = bs.loc[s0, "b_simple"], bs.loc[s1, "b_simple"]
        moves = "moves the same way as" if np.sign(last - first) == np.sign(b1 - b0) else (
            "moves while it does not move:" if last == first else "moves against")
        near = int(((ratio <= B_SIMPLE_FACTOR) & (ratio >= 1 / B_SIMPLE_FACTOR)).sum())
        track = (f"B_simple, measured on the reference at the same checkpoints, is {ratio.min():.1f}–{ratio.max():.1f}× "
                 f"the local B_crit (tolerance {TOL:.0%}), within a factor of {B_SIMPLE_FACTOR:g} at {near} of "
                 f"{len(ratio)} checkpoints, and it {moves} the local B_crit from the first to the last checkpoint "
                 f"({b0:.0f} → {b1:.0f} against {first:.0f} → {last:.0f}). ")
    return "\n".join([
        "### The critical batch size during training (Merrill et al. 2025)",
        "",
        f"A reference run (MNIST-1D MLP, SGD, B = {f.reference_b}, lr = {f.reference_lr:g}) reaches the training-loss "
        f"target {f.target:g} in {interval(*f.ref_steps, fmt='.0f')} steps (median over seeds, 95% CI). From its "
        f"state at each checkpoint, branches train at B = {smallest} to {int(f.kept['batch_size'].max())} for "
        f"{f.budget} examples each, every B on a quarter-decade grid of learning rates. A branch at B **keeps** a "
        f"share of the B = {smallest} branch's loss decrease: the least, over the evaluations every {COMMON} examples, "
        f"of (loss at the checkpoint − loss at B) / (loss at the checkpoint − loss at B = {smallest}), on the median "
        "over seeds, each B at the rate that keeps the most. The **local critical batch size** is the largest B "
        f"such that it and every smaller B keep at least 1 − tolerance; {TOL:.0%} is the headline, "
        f"{' and '.join(f'{t:.0%}' for t in TOLERANCES if t != TOL)} show the sensitivity (50% is roughly the "
        "hyperbola's B_crit, where a batch needs twice the examples). Intervals: 95% percentile bootstrap over seeds "
        "(grid values, so a factor of 2 is the "
        f"resolution). {f.edge:.0%} of the (checkpoint, B) pairs took the smallest or largest rate of their grid.",
        "",
        md_table(pd.DataFrame(rows)),
        "",
        f"Against Merrill et al.'s shape (near zero at initialisation, a quick rise, a plateau), at tolerance "
        f"{TOL:.0%}: at initialisation the local B_crit is "
        f"{interval(head['b_crit'].iloc[0], head['lo'].iloc[0], head['hi'].iloc[0], fmt='.0f')}, {v['start']}; over "
        f"training it {v['rise']}; {v['plateau']}. "
        + ("The same three verdicts hold at every tolerance. " if len(agree) == len(TOLERANCES) else
           (f"The same verdicts hold at {', '.join(f'{t:.0%}' for t in agree if t != TOL)}; " if len(agree) > 1 else
            "At the other tolerances they differ: ") +
           "; ".join(f"at {t:.0%}, B_crit at initialisation is {verdicts[t]['start']}, over training it "
                     f"{verdicts[t]['rise']}, {verdicts[t]['plateau']}" for t in TOLERANCES if t not in agree) + ". ")
        + track,
        "",
        figure_markdown(drawn, "q9a_local_critical",
                        "Q9a. Left: the share of the smallest batch's loss decrease kept by each B, per branch point. "
                        "Right: the local critical batch size (three tolerances) and the reference's B_simple against "
                        "the point of training."),
    ])


def warmup_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    w = facts.warmup
    if w is None:
        return "### Batch-size warm-up\n\n" + not_measured(facts, "warmup", "make sweep GRID=warmup")
    if w.schedules.empty or w.best_constant == 0 or w.schedules["steps"].notna().sum() == 0:
        return ("### Batch-size warm-up\n\nNot compared: " + ("no constant batch size reached the target in more than "
                "half of its seeds" if w.best_constant == 0 else "no schedule reached the target in more than half "
                "of its seeds") + f" ({len(w.schedules)} schedules in the sweep).\n")
    t = w.schedules.sort_values(["final_b", "steps"])
    show = pd.DataFrame({
        "schedule (STEPSxB@LR, then the final B at 1.0)": t["schedule"].map(lambda s: f"`{s}`"),
        "final B": t["final_b"], "seeds reached": [f"{a}/{b}" for a, b in t[["n_reached", "n_seeds"]].to_numpy()],
        "steps": t["steps"].map(lambda v: f"{v:.0f}" if np.isfinite(v) else "–"),
        "examples": t["examples"].map(lambda v: f"{v:.0f}" if np.isfinite(v) else "–"),
        f"steps / B = {w.best_constant}'s": [interval(*r, fmt=".2f") for r in t["vs_best"]],
        "steps / constant B with at least its examples": [interval(*r, fmt=".2f") for r in t["vs_equal"]]})
    c = w.constant.set_index("batch_size")
    best = c.loc[w.best_constant]
    lower = [r for r in t.itertuples() if _ok(*r.vs_equal) and r.vs_equal[2] < 1]
    higher = [r for r in t.itertuples() if _ok(*r.vs_equal) and r.vs_equal[1] > 1]
    fastest = t.loc[t["steps"].dropna().idxmin()]
    verdict = (f"{len(lower)} of {len(t)} warm-ups took fewer steps than the constant batch with at least their "
               f"examples (interval below 1), {len(higher)} took more, and the rest are not resolved (or needed more "
               "examples than every constant B)")
    saving = 1 - fastest["vs_best"][0]
    return "\n".join([
        "### Batch-size warm-up",
        "",
        f"Constant batch sizes from {int(c.index.min())} to {int(c.index.max())} (three rates each) against doubling "
        "schedules (`mbstudy.schedule.doubling`: B doubles every fixed number of examples, the learning rate "
        "linear in B and capped at 1.0), all to the training-loss target, evaluated every 1024 examples. The "
        f"fewest steps at a constant B: {best['steps']:.0f} at B = {w.best_constant} ({best['examples']:.0f} examples). "
        "Each schedule's steps are compared, paired by seed (median ratio, 95% bootstrap), with that best constant B "
        "and with the constant B that needed the fewest examples at or above the schedule's own (from the most "
        "example-efficient B upward): below 1 there is fewer steps at no more examples.",
        "",
        md_table(show),
        "",
        f"{verdict}. The fastest warm-up took {fastest['steps']:.0f} steps, "
        f"{interval(*fastest['vs_best'], fmt='.2f')}× the best constant B's "
        + (f"(a saving of {saving:.0%}; Merrill et al. report 43% on OLMo 1B)." if saving > 0 and fastest['vs_best'][2] < 1
           else "(no saving resolved; Merrill et al. report 43% fewer steps on OLMo 1B)."),
        "",
        figure_markdown(drawn, "q9b_warmup", "Q9b. Steps against examples to the target: constant batch sizes (the "
                        "curve, labelled by B) and the doubling warm-ups."),
    ])


def scaling_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    sc = facts.scaling
    if sc is None:
        return "### Data size and model size\n\n" + not_measured(facts, "scaling", "make sweep GRID=scaling")
    rows = []
    for axis, label in (("data", "N (training set before the split)"), ("width", "width")):
        for value in sorted(sc.fits.loc[sc.fits["axis"] == axis, "value"].unique()):
            r = {"axis": label, "value": value}
            for target, name in (("loss", "B_crit, train loss"), ("val", "B_crit, validation")):
                x = sc.fits[(sc.fits["axis"] == axis) & (sc.fits["value"] == value) & (sc.fits["target"] == target)]
                r[name] = _open_interval(*x[["B_crit", "lo", "hi"]].iloc[0]) if len(x) else "–"
            rows.append(r)
    sl = sc.slopes.set_index(["axis", "target"])

    def slope(axis, target):
        if (axis, target) not in sl.index:
            return np.nan, np.nan, np.nan
        x = sl.loc[(axis, target)]
        return x["slope"], x["lo"], x["hi"]

    def says(axis, target):
        est, lo, hi = slope(axis, target)
        if not _ok(est, lo, hi):
            return "not resolved"
        return "grows" if lo > 0 else "falls" if hi < 0 else "no trend resolved"

    d, m = slope("data", "loss"), slope("width", "loss")
    data_grows = says("data", "loss") == "grows"
    # "barely with model size": the width slope's whole interval is smaller in size than the data slope's lower bound
    width_small = data_grows and _ok(*m) and max(abs(m[1]), abs(m[2])) < d[1]
    width_says = says("width", "loss")
    verdict = ("holds" if data_grows and width_small else
               f"holds for data size, not for model size (B_crit {width_says} with width)" if data_grows
               and width_says in ("grows", "falls") else
               "holds for data size; the model-size part is not resolved" if data_grows else
               "does not hold" if says("data", "loss") in ("falls", "no trend resolved") else "is not resolved")
    return "\n".join([
        "### Data size and model size (Zhang et al. 2024)",
        "",
        "B_crit from the science sweep's protocol (steps to each target against B, the rate tuned per B and seed, "
        "the hyperbola fit, 95% bootstrap over seeds) for MNIST-1D generated at five sizes with the MLP 40-100-100-10, "
        "and for five widths at N = 4000. The slope is a least-squares line through log B_crit against log N (or "
        "log width), its interval from the same bootstrap (seeds resampled at every size). A target a size never "
        "reaches (the validation target at small N or width) leaves that size out of its fit.",
        "",
        md_table(pd.DataFrame(rows)),
        "",
        f"Slopes (training-loss target): against data size {interval(*d, fmt='.2f')} (B_crit {says('data', 'loss')}), "
        f"against width {interval(*m, fmt='.2f')} ({says('width', 'loss')}); validation target: data "
        f"{interval(*slope('data', 'val'), fmt='.2f')}, width {interval(*slope('width', 'val'), fmt='.2f')}. Zhang et "
        f"al.'s claim (B_crit grows with data and barely with model size) **{verdict}** here on the training-loss "
        "target (\"barely\": the width slope's interval lies closer to 0 than the data slope's lower bound).",
        "",
        figure_markdown(drawn, "q9c_scaling", "Q9c. B_crit against the training-set size and against the MLP's width, "
                        "with the log-log fits."),
    ])


def nqm_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    n = facts.nqm
    if n is None:
        return "### The noisy quadratic model\n\n" + not_measured(facts, "branching", "make sweep GRID=branching")
    panel = None if facts.workloads is None else facts.workloads.panels.get(("mnist1d-mlp", "loss"))
    fits = n.fits.set_index("optimizer")
    rows, measured = [], {}
    for opt in present(OPTIMIZERS, n.fits["optimizer"]):
        m = panel.fits.get(opt) if panel is not None else None
        if m is not None:
            measured[opt] = m["B_crit"]
        rows.append({"optimizer": opt, "NQM B_crit": f"{fits.loc[opt, 'B_crit']:.0f}",
                     "NQM fit R²": f"{fits.loc[opt, 'r2']:.3f}",
                     "measured B_crit (science sweep, 95% CI)": interval(*m["B_crit"], fmt=".0f") if m else "–"})
    order_nqm = sorted(fits.index, key=lambda o: fits.loc[o, "B_crit"])
    order_meas = sorted(measured, key=lambda o: measured[o][0])
    same = [o for o in order_nqm if o in measured] == order_meas and len(order_meas) >= 2
    # which measured pairs the intervals resolve
    resolved = []
    for i, a in enumerate(order_meas):
        for b in order_meas[i + 1:]:
            if measured[a][2] < measured[b][1]:
                resolved.append(f"{a} < {b}")
    return "\n".join([
        "### The noisy quadratic model (Zhang et al. 2019)",
        "",
        f"The model: a quadratic in {NQM_DIM} directions with curvatures h_i = 1/i, gradient noise of covariance "
        "proportional to the curvature (c_i ∝ h_i, per example; c_i/B per batch) and an equal share of the initial "
        "loss in every direction (`mbstudy.nqm`). Its expected loss under SGD, heavy-ball momentum 0.9 and a "
        "diagonal preconditioner h^−1/2 (Adam's stand-in) is computed exactly (second moments, no sampling; "
        "checked against a Monte-Carlo simulation in the tests). It is matched to the branching reference "
        f"(MNIST-1D MLP) on two numbers: B_simple at initialisation ({n.b_simple0:.0f}, the reference's) and the "
        f"target's share of the initial loss ({n.target:g} / {n.loss0:.2f}). Steps to that share at the best "
        "learning rate per B give the curves and the hyperbola's B_crit.",
        "",
        md_table(pd.DataFrame(rows)),
        "",
        (f"Order of B_crit, NQM: {' < '.join(order_nqm)}; measured: {' < '.join(order_meas)} (pairs the "
         f"measured intervals resolve: {', '.join(resolved) or 'none'}). The NQM **"
         + ("orders the optimizers as measured" if same else "does not order the optimizers as measured") + "**"
         if len(order_meas) >= 2 else
         f"Order of B_crit, NQM: {' < '.join(order_nqm)}; not compared with the measured order: "
         + not_measured(facts, "workloads", "make sweep GRID=science").strip().rstrip("."))
        + ". Its absolute B_crit is not a prediction: the model is matched on B_simple and the target only.",
        "",
        figure_markdown(drawn, "q9d_nqm", "Q9d. Steps to the target against B: measured (the science sweep's MNIST-1D "
                        "MLP) and the matched noisy quadratic model's prediction."),
    ])


def practice(facts: Facts) -> str:
    """The "what to do" paragraph, from whichever of the three experiments ran; each piece of advice only where its
    interval resolves it."""
    parts = []
    f, w, sc = facts.branching, facts.warmup, facts.scaling
    if f is not None and not f.local.empty:
        head = f.local[f.local["tol"] == TOL].sort_values("s").dropna(subset=["b_crit"])
        smallest = int(f.kept["batch_size"].min())
        if len(head) and head["b_crit"].iloc[0] > smallest and _ok(head["lo"].iloc[0]):
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
        lower = [r for r in w.schedules.itertuples() if _ok(*r.vs_equal) and r.vs_equal[2] < 1]
        best = [r for r in w.schedules.itertuples() if _ok(*r.vs_best) and r.vs_best[2] < 1]
        parts.append(f"a doubling warm-up took fewer steps than a constant B with at least its examples in {len(lower)} "
                     f"of {len(w.schedules)} schedules and fewer than the fastest constant B in {len(best)}, so "
                     + ("a warm-up can pay when steps cost more than examples" if lower or best else
                        "on this workload a constant B read off the steps-against-examples curve was as good"))
    if sc is not None and not sc.slopes.empty:
        d = sc.slopes.set_index(["axis", "target"])
        for axis, what in (("data", "the training set grows"), ("width", "the model widens")):
            if (axis, "loss") not in d.index:
                continue
            k, lo, hi = d.loc[(axis, "loss"), ["slope", "lo", "hi"]]
            if _ok(k, lo, hi):
                parts.append(f"when {what} by 2×, expect B_crit to change by {2 ** k:.2f}× "
                             f"[{2 ** lo:.2f}, {2 ** hi:.2f}] (slope {interval(k, lo, hi, fmt='.2f')})")
    if not parts:
        return ""
    return "**What to do.** On this evidence: " + "; ".join(parts) + ".\n"


def q9(facts: Facts, drawn: Collection[str], md_table, figure_markdown, not_measured) -> str:
    args = (facts, drawn, md_table, figure_markdown, not_measured)
    return "\n\n".join([branching_text(*args), warmup_text(*args), scaling_text(*args), nqm_text(*args),
                        practice(facts)])
