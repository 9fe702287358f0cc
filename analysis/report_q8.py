"""The report's Q8 section, "Accumulate micro-batches, or take more small steps?", and Q8's lines in Q4: text
from ``Facts.accumulation``, ``Facts.beta2`` and ``Facts.sde`` (:mod:`analysis.q8`). Pure: facts in, Markdown out."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

from analysis.facts import Facts
from analysis.figures_q8 import headline_b_crit
from analysis.q8 import BAND, FIXED, HALF, RULES, SGD, arm_ratio, hyperbola_ratio
from analysis.report_workloads import interval


LIMITS = ("The MNIST-1D MLP only, 3 seeds (5 for the SDE rule), half-decade learning-rate grids (the robust "
          "band's resolution is half a decade), one half-life (that of β2 = 0.999 at B = 128), Adam's β1 and ε "
          "unscaled in the half-life arm, and micro-batches of 8 and 256 only, with kb at most 2048 of the 3200 "
          "training examples; times are this 2-core CPU's, measured while the sweep ran two runs at a time.")


def verdict(lo: float, hi: float) -> str:
    """From a ratio's interval: whether accumulation cost more examples than the small steps."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return "no measurable difference" if lo <= 1 <= hi else ("costs more" if lo > 1 else "costs less")


def accumulation_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    a = facts.accumulation
    if a is None:
        return not_measured(facts, "accumulation", "make sweep GRID=accumulation")
    t = a.table
    loss = t[(t["target"] == "loss") & (t["k"] > 1)]
    if loss.empty:
        return "The accumulation sweep holds no pair (accumulated, k = 1) that reached the training-loss target.\n"
    b_crit = headline_b_crit(facts)
    rows = loss.assign(
        predicted=[hyperbola_ratio(b_crit[r.optimizer], r.micro, r.k) if r.optimizer in b_crit else np.nan
                   for r in loss.itertuples()],
        verdict=[verdict(lo, hi) for lo, hi in loss[["examples_lo", "examples_hi"]].to_numpy()])
    show = pd.DataFrame({
        "optimizer": rows["optimizer"], "b": rows["micro"], "k": rows["k"], "kb": rows["batch_size"],
        "examples, k = 1": [f"{e / r:.0f}" if np.isfinite(r) and r > 0 else "–"
                            for e, r in rows[["examples", "examples_ratio"]].to_numpy()],
        "examples, accumulated": rows["examples"].map(lambda v: f"{v:.0f}"),
        "ratio [95% CI]": [interval(*r, fmt=".2f") for r in rows[["examples_ratio", "examples_lo", "examples_hi"]].to_numpy()],
        "hyperbola": rows["predicted"].map(lambda v: f"{v:.2f}" if np.isfinite(v) else "–"),
        "time ratio [95% CI]": [interval(*r, fmt=".2f") for r in rows[["time_ratio", "time_lo", "time_hi"]].to_numpy()],
        "verdict": rows["verdict"]})
    lines = []
    for opt in rows["optimizer"].unique():
        s_opt = rows[rows["optimizer"] == opt]
        bc = b_crit.get(opt, np.nan)
        below = s_opt[s_opt["batch_size"] <= bc] if np.isfinite(bc) else s_opt.iloc[:0]
        above = s_opt[s_opt["batch_size"] > bc] if np.isfinite(bc) else s_opt
        parts = []
        if len(below):
            w = below.loc[below["examples_ratio"].idxmax()]
            parts.append(f"with kb ≤ B_crit ({len(below)} cells) accumulation needed at most "
                         f"**{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}×** the examples of k "
                         f"steps of b (b = {int(w.micro)}, k = {int(w.k)}; the hyperbola: {w.predicted:.2f}×)")
        if len(above):
            w = above.loc[above["examples_ratio"].idxmax()]
            parts.append(f"with kb > B_crit ({len(above)} cells) up to **{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}×** "
                         f"(b = {int(w.micro)}, k = {int(w.k)}, kb = {int(w.batch_size)}; the hyperbola: {w.predicted:.2f}×)")
        tr = s_opt["time_ratio"]
        parts.append(f"training time {tr.min():.2f}–{tr.max():.2f}× that of the k small steps")
        lines.append(f"- **{opt}** (B_crit ≈ {bc:.0f}): " + "; ".join(parts) + ".")
    check = _against_science(facts, rows)
    fit = (rows["examples_ratio"] / rows["predicted"]).dropna()
    faster = rows[rows["time_hi"] < 1]
    resolution = (rows["eval_every"] / rows["steps"]).replace([np.inf, -np.inf], np.nan).dropna()
    coarse = rows[(rows["eval_every"] / rows["steps"]) >= 0.1]
    quantised = ""
    if len(coarse):
        quantised = (f"Steps to a target are read at the evaluations, so each is known to one evaluation interval: "
                     f"{resolution.min():.0%}–{resolution.max():.0%} of the steps here, and at least 10% in "
                     f"{len(coarse)} of {len(rows)} cells (the large kb, where the target falls within 40–200 steps "
                     "evaluated every 10). There a ratio's zero-width interval means every seed fell at the same "
                     "evaluation, not that the ratio is exact, and the ratios and their agreement with the hyperbola "
                     "carry that resolution.\n")
    with_ci = rows[np.isfinite(rows["time_lo"])]
    so = ("**So, to seed 004's question:** per example, accumulating k micro-batches costs what one batch of kb "
          "costs, which the hyperbola puts at (B_crit + kb)/(B_crit + b) of the k small steps: little while kb is "
          "well below B_crit, nearly k× once b is above it"
          + (f" (measured ratios {fit.min():.2f}–{fit.max():.2f}× the hyperbola's, whose B_crit comes from the "
             "science sweep)" if len(fit) else "")
          + ". The training time mostly follows the examples"
          + ((f"; but in {len(faster)} of {len(with_ci)} cells (" + ", ".join(
              f"{r.optimizer} b = {r.micro}, k = {r.k}" for r in faster.itertuples())
              + ") one accumulated step reached the target in less training time than the k small steps (time "
              f"interval below 1) although it used {faster['examples_ratio'].min():.2f}–"
              f"{faster['examples_ratio'].max():.2f}× the examples, consistent with the k − 1 optimizer updates and "
              "loop iterations it skips costing more, at tiny b on this CPU, than the examples it adds. On one device, then: accumulating "
              "beyond B_crit only spends examples; below it, accumulation costs some examples and can save time "
              "where each small step's overhead is large ("
              + ", ".join(sorted(set(faster["optimizer"]))) + " at b = "
              + ", ".join(str(m) for m in sorted(set(faster["micro"]))) + " here).")
             if len(faster) else
             (f"; it was not faster than the k small steps in any of the {len(with_ci)} cells with an interval. "
              "On one device, take the small steps; accumulate only to reach a batch the memory cannot hold, and only "
              "up to about B_crit." if len(with_ci) else
              "; with one seed there are no intervals to say whether accumulation was ever faster.")))
    val = t[(t["target"] == "val") & (t["k"] > 1)]
    val_line = ""
    if len(val):
        costly = val[[verdict(lo, hi) == "costs more" for lo, hi in val[["examples_lo", "examples_hi"]].to_numpy()]]
        val_line = (f"At the validation target (error ≤ 0.45) the same comparison gives a cost in {len(costly)} of "
                    f"{len(val)} (optimizer, b, k) cells, ratios {val['examples_ratio'].min():.2f}–"
                    f"{val['examples_ratio'].max():.2f}×: accumulation does not buy generalisation either, since it "
                    "is the big batch.\n")
    return "\n".join([
        "**Accumulating k micro-batches is one step at batch kb, so it costs what the big batch costs.** The "
        "gradient of k micro-batches of b, each summed and divided by kb once, is the batch gradient of those kb "
        "examples (Q1); the training loop's accumulation (`accumulation = k`) is that step, bit for bit equal to "
        "`mbstudy.accumulated_grad` and equal to the plain step at kb up to the order of the float32 sums "
        "(`tests/test_q8.py`). Under the hyperbola E(B) = E_min (1 + B / B_crit) of Q5, one step of kb needs "
        "(B_crit + kb) / (B_crit + b) times the examples of k steps of b: about 1 while kb ≪ B_crit (perfect "
        "scaling: the big step is worth k small ones), growing to k once b ≫ B_crit. Measured on the MNIST-1D "
        f"MLP (experiment `{a.experiment}`; per seed the fastest learning rate of each arm, then the median over "
        f"{int(rows['n_seeds'].max())} seeds, the ratio's interval a paired bootstrap over seeds):",
        "", *lines, "",
        check,
        quantised,
        val_line,
        md_table(show, ".3g"), "",
        figure_markdown(drawn, "q8a_accumulation", "Examples and training time to the training-loss target of one "
                        "step of k accumulated micro-batches, over k steps of b; dashed: the hyperbola's prediction."),
        so,
    ])


def _against_science(facts: Facts, rows: pd.DataFrame) -> str:
    """The accumulated runs' steps against the science sweep's plain runs at the same kb."""
    w = facts.workloads
    panel = None if w is None else w.panels.get(("mnist1d-mlp", "loss"))
    if panel is None:
        return ""
    plain = panel.steps.set_index(["optimizer", "batch_size"])["steps"]
    pairs = [(r.steps, plain.get((r.optimizer, r.batch_size), np.nan)) for r in rows.itertuples()]
    ratios = np.array([a / b for a, b in pairs if np.isfinite(b) and b > 0])
    if not len(ratios):
        return ""
    return (f"Against the science sweep's plain steps at the same batch kb (its own seeds: {panel.n_seeds}, here "
            f"{int(rows['n_seeds'].max())}), the accumulated runs took {np.median(ratios):.2f}× the steps "
            f"(median; range {ratios.min():.2f}–{ratios.max():.2f} over {len(ratios)} (optimizer, b, k) cells): the "
            "same batch, as the algebra says, within the evaluation cadence and seed noise.\n")


def beta2_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    b = facts.beta2
    if b is None:
        return not_measured(facts, "beta2", "make sweep GRID=beta2")
    t = b.table
    small, large = int(t["batch_size"].min()), int(t["batch_size"].max())
    at = t.set_index(["arm", "batch_size"])

    def get(arm, B, col):
        return float(at[col].get((arm, B), np.nan))

    sizes = sorted(t["batch_size"].unique())
    smalls = [B for B in sizes if B <= 4]
    claims = []
    # 1. stability at small B
    div = {arm: np.mean([get(arm, B, "diverged") for B in smalls]) for arm in (FIXED, HALF, SGD)}
    div_at = {arm: {B: get(arm, B, "diverged") for B in sizes} for arm in (FIXED, HALF)}
    r1 = arm_ratio(b, HALF, FIXED, small)
    steps1 = get(HALF, small, "steps")
    if not np.isfinite(steps1):
        stable = f"**Does not hold** here: the half-life arm did not reach the target at B = {small}."
    elif div[HALF] < div[FIXED] - 0.05:
        stable = "**Holds**, and the half-life β2 is what makes small B stabler here."
    elif div[HALF] <= div[FIXED] + 0.05:
        reached = [B for B in sizes if np.isfinite(get(HALF, B, "steps")) and np.isfinite(get(FIXED, B, "steps"))]
        where = "at every B" if len(reached) == len(sizes) else f"at B ∈ {{{', '.join(map(str, reached))}}}"
        stable = (f"**Holds** in the sense that both arms reach the target {where}, but β2 = 0.999 is as stable as "
                  "the half-life rule here: on this workload the rule is not what makes small batches train.")
    else:
        stable = "**Does not hold**: the half-life β2 diverged more often than β2 = 0.999."

    def per_b(arm):
        return ", ".join(f"{d:.0%} at B = {B}" for B, d in div_at[arm].items() if np.isfinite(d))

    claims.append(
        f"1. *Small batches down to B = 1 train stably with the half-life β2.* Of each arm's (rate, seed) runs, the "
        f"half-life arm diverged in {per_b(HALF)}; β2 = 0.999 in {per_b(FIXED)} (the same rate grid). Plain SGD diverged in {div[SGD]:.0%} at B ≤ 4, on a grid that reaches rate 10 "
        f"(Adam's stops at 0.1), so not comparable. At B = {small} the half-life arm's fewest steps are "
        f"{interval(*r1, fmt='.2f')}× the fixed arm's. A run stops at its target or its budget, so a divergence "
        f"after either is not counted. " + stable)
    # 2. robustness
    band_small = {arm: np.nanmedian([get(arm, B, "band") for B in smalls]) for arm in (FIXED, HALF, SGD)}
    band_large = {arm: get(arm, large, "band") for arm in (FIXED, HALF, SGD)}
    step = 0.45  # a difference of one half-decade grid step (0.5 decades, 3.16 is 10^0.4997)
    diff = band_small[HALF] - band_large[HALF]
    robust = ("**Holds**: the band is wider at small B." if diff >= step else
              "**Does not hold**: the band is narrower at small B." if diff <= -step else
              "**Not resolved**: the band is the same width at small and large B to within one grid step.")
    claims.append(
        f"2. *Small batches are more robust to the learning rate.* The band of rates within {BAND:g}× of the fewest "
        f"steps spans {band_small[HALF]:.1f} decades at B ≤ 4 and {band_large[HALF]:.1f} at B = {large} with the "
        f"half-life β2 ({band_small[FIXED]:.1f} and {band_large[FIXED]:.1f} with β2 = 0.999; SGD {band_small[SGD]:.1f} "
        f"and {band_large[SGD]:.1f}; medians over seeds, on a half-decade grid). " + robust)
    # 3. SGD competitive
    r3 = {B: arm_ratio(b, SGD, HALF, B) for B in sizes}
    known = {B: r for B, r in r3.items() if np.isfinite(r[0])}
    low = {B: r for B, r in known.items() if B <= 64}
    high = {B: r for B, r in known.items() if B > 64}
    slower = [B for B, r in known.items() if np.isfinite(r[1]) and r[1] > 1]
    faster = [B for B, r in known.items() if np.isfinite(r[2]) and r[2] < 1]
    has_ci = any(np.isfinite(r[1]) for r in known.values())
    shape = ""
    if low and high:
        lo_vals, hi_vals = [r[0] for r in low.values()], [r[0] for r in high.values()]
        shape = (f"The ratio is {min(lo_vals):.2f}–{max(lo_vals):.2f}× at B ≤ 64 and {min(hi_vals):.2f}–"
                 f"{max(hi_vals):.2f}× above: flat at small B, growing above. ")
    if not known:
        verdict3 = "**Not measured**: no B where both reached the target."
    elif not has_ci:
        verdict3 = "**Not resolved** with one seed (no intervals)."
    elif len(slower) == len(known):
        best_b = min(known, key=lambda B: known[B][0])
        verdict3 = (f"**Holds in part**: the gap to Adam is smallest at B = {best_b} ({known[best_b][0]:.2f}×), but "
                    "SGD is slower at every B (every interval above 1).")
    else:
        verdict3 = (f"**Holds** at B ∈ {{{', '.join(map(str, sorted(set(known) - set(slower))))}}}, where SGD's "
                    "interval reaches 1" + (f" (faster at {faster})" if faster else "") + ".")
    claims.append(
        "3. *Plain SGD is competitive at small B.* SGD's fewest steps over the half-life Adam's: "
        + ", ".join(f"B = {B}: {interval(*r3[B], fmt='.2f')}" for B in sizes) + ". " + shape + verdict3)
    # 4. accumulation
    acc = facts.accumulation
    bc = headline_b_crit(facts)
    if acc is not None and len(acc.table) and bc:
        big = acc.table[(acc.table["target"] == "loss") & (acc.table["k"] > 1)]
        big = big[big["optimizer"].isin(list(bc))]
        under = big[big["batch_size"] <= big["optimizer"].map(bc)]
        over = big[big["batch_size"] > big["optimizer"].map(bc)]
        if len(under) and len(over):
            costly = [verdict(lo, hi) == "costs more" for lo, hi in over[["examples_lo", "examples_hi"]].to_numpy()]
            cheaper = [verdict(lo, hi) == "costs less" for lo, hi in big[["examples_lo", "examples_hi"]].to_numpy()]
            v4 = (f"**Holds above B_crit** (more examples in {sum(costly)} of {len(over)} cells there"
                  + (f", fewer in {sum(cheaper)} cells anywhere" if any(cheaper) else ", fewer in none")
                  + "); below it the cost is smaller, as the hyperbola predicts" if all(costly) and len(over) else
                  f"**Not resolved** everywhere: more examples in {sum(costly)} of {len(over)} cells above B_crit.")
            claims.append(
                f"4. *Gradient accumulation is wasteful on one device.* With kb ≤ B_crit accumulation needed "
                f"{under['examples_ratio'].min():.2f}–{under['examples_ratio'].max():.2f}× the examples of the k small "
                f"steps; with kb > B_crit {over['examples_ratio'].min():.2f}–{over['examples_ratio'].max():.2f}× "
                "(the accumulation table above). " + v4 + "; on time, see the accumulation paragraph.")
    table = t.assign(**{"β2": t["beta2"].map(lambda v: f"{v:.6g}" if np.isfinite(v) else "–")})
    table = pd.DataFrame({
        "arm": t["arm"], "B": t["batch_size"], "β2": table["β2"].where(t["arm"] != SGD, "–"),
        "steps": t["steps"], "examples": t["examples"], "best lr": t["best_lr"],
        "diverged": t["diverged"].map(lambda v: f"{v:.0%}"),
        f"band (decades, within {BAND:g}×)": [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" if np.isfinite(m) else "–"
                                              for m, lo, hi in t[["band", "band_min", "band_max"]].to_numpy()]})
    return "\n".join([
        "**Adam's β2 at a fixed half-life in examples (Marek et al. 2025).** β2 averages squared gradients over "
        "about 1/(1 − β2) steps, so a fixed β2 averages over B/(1 − β2) examples: at B = 1 β2 = 0.999 remembers "
        "about 700 examples, at B = 3200 two million. Holding the half-life t½ fixed in examples gives "
        "β2(B) = 0.5^(B / t½) (`mbstudy.rules.beta2_at`); t½ = 88,678 examples is β2 = 0.999 at B = 128. "
        f"Experiment `{b.experiment}` (every run to its target, its budget or its divergence: no pruning), "
        f"MNIST-1D MLP, {int(t['n_seeds'].max())} seeds; Marek et al.'s claims, point by point:",
        "", *claims, "",
        md_table(table, ".3g"), "",
        figure_markdown(drawn, "q8b_beta2", "Examples to target, the fraction of runs that diverged and the robust "
                        "band of learning rates against B, for Adam with a fixed β2, Adam with β2 at a fixed "
                        "half-life, and plain SGD."),
    ])


def sde_text(facts: Facts, drawn, md_table, figure_markdown, not_measured) -> str:
    s = facts.sde
    if s is None:
        return not_measured(facts, "sde", "make sweep GRID=sde")
    d = s.distances
    if d.empty:
        return "The sde sweep holds no scaled run.\n"
    rates = s.reference_rates.sort_values("learning_rate")
    best = float(rates.loc[rates["final_loss"].idxmin(), "learning_rate"])
    noise = float(d["noise"].iloc[0])
    within = d[d["within"]]
    show = pd.DataFrame({"κ": d["kappa"], "B": d["batch_size"], "rule": d["rule"],
                         "distance D [95% CI]": [interval(*r, fmt=".3f") for r in d[["distance", "lo", "hi"]].to_numpy()],
                         "within seed noise": d["within"].map({True: "yes", False: "no"})})
    by_rule = {rule: ", ".join(f"κ = {k}" for k in within[within["rule"] == rule]["kappa"]) or "no κ"
               for rule in RULES}
    missed = sorted(set(d["kappa"]) - set(within[within["rule"] == "square-root"]["kappa"]))
    return "\n".join([
        f"**The SDE square-root rule (Malladi et al. 2022) keeps Adam's loss-against-examples curve within seed "
        f"noise at {by_rule['square-root']}**" + (f", not at κ = {', '.join(map(str, missed))}" if missed else "")
        + f". From the reference B0 = {s.b0} at lr {s.lr0:g} (of its half-decade neighbours, the best "
        f"final training loss was at lr {best:g}: "
        + ", ".join(f"{r.learning_rate:g} → {r.final_loss:.3f}" for r in rates.itertuples())
        + f"), each κ scales B to κB0 by the square-root rule (η√κ, 1 − β1 and 1 − β2 times κ, ε/√κ), the linear "
        "rule (ηκ) or none, and every run sees the same 65,536 examples. D is the mean over evaluations of "
        "|Δ median log loss| against the reference; the seed noise is the 95th percentile of D between two "
        f"resamples of the reference's own seeds (**{noise:.3f}**; the reference's seed-to-seed standard deviation "
        f"of log loss is {float(d['spread'].iloc[0]):.3f}). Within the seed noise: square-root rule at "
        f"{by_rule['square-root']}; linear rule at {by_rule['linear']}; no rescaling at {by_rule['none']}.",
        "",
        md_table(show, ".3g"), "",
        "(D's interval resamples the seeds of both curves, which adds seed noise to an absolute difference: it sits "
        "above the point estimate when the curves agree.) To first order the square-root rule's β2, 1 − κ(1 − β2), "
        "is the half-life rule's β2^κ; its β1 = 1 − κ(1 − β1) reaches 0.2 at κ = 8, where the first-order SDE "
        "approximation is least justified.",
        "",
        figure_markdown(drawn, "q8c_sde", "Training loss against examples seen: the reference at B0 (median and seed "
                        "range) and Adam scaled to κB0 by the square-root rule, the linear rule or not at all."),
    ])


def q8(facts: Facts, drawn: Collection[str], md_table, figure_markdown, not_measured) -> str:
    args = (facts, drawn, md_table, figure_markdown, not_measured)
    return "\n\n".join([accumulation_text(*args), beta2_text(*args), sde_text(*args)])


def q4_beta2(facts: Facts) -> str:
    """Q4's paragraph on β2: what the beta2 experiment says about Adam's averaging."""
    b = facts.beta2
    if b is None or b.table.empty:
        return ""
    sizes = sorted(b.table["batch_size"].unique())
    small, large = sizes[0], sizes[-1]
    r_small, r_large = arm_ratio(b, HALF, FIXED, small), arm_ratio(b, HALF, FIXED, large)
    at = b.table.set_index(["arm", "batch_size"])
    res = {B: float(at["eval_every"].get((FIXED, B), np.nan) / at["steps"].get((FIXED, B), np.nan)) for B in (small, large)}
    contains = all(np.isfinite(r[1]) and r[1] <= 1 <= r[2] for r in (r_small, r_large))
    return (
        "**Adam's β2 is the other knob of its averaging.** Sum or mean rescales Adam's v by B² and leaves only ε "
        "to notice (above); β2 decides over how many steps v averages, and so, at a fixed β2, over B/(1 − β2) "
        "examples. Holding that window fixed in examples instead (Q8) changed the fewest steps to the target by "
        f"{interval(*r_small, fmt='.2f')}× at B = {small} and {interval(*r_large, fmt='.2f')}× at B = {large} "
        "(half-life β2 over β2 = 0.999; 95% paired bootstrap over seeds; steps are read at evaluations, a "
        f"resolution of {res[small]:.0%} and {res[large]:.0%} of the steps there): "
        + ("both intervals hold 1, so on this workload the averaging window made no difference this resolution can "
           "see, and β2 leaves the reduction question as ε does: a second-order matter here." if contains else
           "the window changes Adam's steps here, so changing B (or the reduction, through ε) without moving β2 "
           "changes Adam.") + "\n")
