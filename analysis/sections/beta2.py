"""Q8, part 2: Adam's β2 at a fixed half-life in examples (Marek et al. 2025) against β2 = 0.999 and plain SGD.
The ``beta2`` sweep: per arm and B, steps and examples to the target, the fraction of runs that diverged and the
robust band of learning rates; ratios between arms paired by seed. Also Q4's paragraph on β2
(:func:`q4_paragraph`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import load, order, plots, reduce, science, stats
from analysis.markdown import interval, md_table, t_text
from analysis.order import label
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.accumulation import verdict
from analysis.sections.workloads import headline_b_crit
from mbstudy.metrics import TRAIN_TARGET

plt = plots.plt
ROLES = ("fixed", "half_life", "plain")  # the beta2 grid's [meta] names its arms for these roles
BAND = 2.0  # a learning rate is in the robust band when its steps to target are within this factor of the best


@dataclass(frozen=True)
class Beta2Facts:
    """Per (arm, B): steps and examples to the target, the fraction of runs that diverged, the robust band of
    learning rates (decades within ``BAND``x of the fewest steps, per seed then over seeds), and the best rate; and
    the seed-paired comparisons of the arms at every B, Holm-adjusted."""

    experiment: str
    table: pd.DataFrame
    per_seed: dict[str, pd.DataFrame]  # arm -> (rows B, columns seeds) fewest steps to the training-loss target
    runs: pd.DataFrame
    roles: dict[str, str] = field(default_factory=dict)  # ROLES -> the arm's label: fixed β2, half-life β2, plain
    comparisons: pd.DataFrame = field(default_factory=pd.DataFrame)  # num, den, batch_size, ratio, lo, hi, p, p_holm

    @property
    def arms(self) -> tuple[str, str, str]:
        """The labels of the fixed-β2, half-life-β2 and plain arms (the order of tables and figures)."""
        return tuple(self.roles.get(r, r) for r in ROLES)


def band_width(steps: pd.Series, factor: float = BAND) -> float:
    """The width in decades of the learning rates (index) whose steps are within ``factor`` of the fewest
    (0 when one rate is; NaN when none reached the target).

    >>> band_width(pd.Series([900.0, 300, 400, 1000, np.inf], index=[1e-3, 1e-2, 1e-1, 1, 10]))
    1.0
    """
    s = steps[np.isfinite(steps)]
    if s.empty:
        return np.nan
    inside = np.asarray(s[s <= factor * s.min()].index, float)
    return float(np.log10(inside.max() / inside.min()))


def beta2_facts(runs: pd.DataFrame, history: pd.DataFrame | None = None, experiment: str = "beta2",
                roles: dict[str, str] | None = None) -> Beta2Facts:
    """``runs`` with an ``arm`` column (else each run's arm is its label in the grid ``<experiment>``); ``roles``:
    which arm plays which part (default: the grid's ``[meta]``). Steps to the training-loss target are read from the
    histories between evaluations when given (:func:`analysis.science.own_target_steps`)."""
    if "arm" not in runs:
        runs = runs.assign(arm=order.labels_of(runs, experiment)["workload"])
    roles = {r: order.meta(experiment).get(r, r) for r in ROLES} if roles is None else roles
    if history is not None and not history.empty:
        own = science.own_target_steps(runs, history, TRAIN_TARGET).set_index("run_id")["steps"]
        steps = runs["run_id"].map(own).astype(float).fillna(np.inf)
    else:
        steps = reduce.reached_steps(runs)
    runs = runs.assign(s=steps)
    rows, per_seed = [], {}
    for arm, g in runs.groupby("arm"):
        per_seed[arm] = g.groupby(["batch_size", "seed"])["s"].min().unstack("seed")
        for B, gb in g.groupby("batch_size"):
            widths = gb.groupby("seed").apply(lambda d: band_width(d.set_index("learning_rate")["s"]),
                                              include_groups=False)
            seeds = per_seed[arm].loc[B]
            m, lo, hi, _ = stats.mean_interval(widths.to_numpy(float))
            best = gb.sort_values("s").groupby("seed").head(1)["learning_rate"]
            geo = stats.t_interval(np.log(seeds[np.isfinite(seeds)].to_numpy(float)))[0] if np.isfinite(seeds).any() \
                else np.nan
            steps_b = float(geo) if np.isfinite(seeds).all() else np.nan  # a seed not reached: no value
            rows.append({"arm": arm, "batch_size": int(B), "steps": steps_b, "examples": steps_b * B,
                         "n_seeds": int(seeds.size), "reached": int(np.isfinite(seeds).sum()),
                         "diverged": float((gb["outcome"] == "diverged").mean()), "n_runs": len(gb),
                         "n_diverged": int((gb["outcome"] == "diverged").sum()),
                         "band": m, "band_lo": lo, "band_hi": hi,
                         "band_min": float(widths.min()), "band_max": float(widths.max()),
                         "best_lr": float(best.mode().min()) if len(best) else np.nan,
                         "beta2": float(gb["beta2"].iloc[0]) if "beta2" in gb else np.nan,
                         "eval_every": float(gb["eval_every"].iloc[0]) if "eval_every" in gb else np.nan})
    table = pd.DataFrame(rows).sort_values(["arm", "batch_size"]).reset_index(drop=True)
    fixed, half, plain = (roles.get(r, r) for r in ROLES)
    comp = []
    for num, den in ((half, fixed), (plain, half)):
        a, b = per_seed.get(num), per_seed.get(den)
        if a is None or b is None:
            continue
        for B in sorted(set(a.index) & set(b.index)):
            seeds = sorted(set(a.columns) & set(b.columns))
            est, lo, hi, p, n = stats.paired_ratio(a.loc[B, seeds], b.loc[B, seeds])
            comp.append({"num": num, "den": den, "batch_size": int(B), "ratio": est, "lo": lo, "hi": hi, "p": p,
                         "n": n})
    comp = pd.DataFrame(comp, columns=["num", "den", "batch_size", "ratio", "lo", "hi", "p", "n"])
    comp["p_holm"] = stats.holm(comp["p"]) if len(comp) else []
    return Beta2Facts(experiment, table, per_seed, runs, roles, comp)


def arm_test(facts: Beta2Facts, num: str, den: str, batch_size: int) -> tuple[float, float, float, float]:
    """Steps of arm ``num`` over arm ``den`` at one B: the geometric mean of per-seed ratios, its 95% t-interval and
    its Holm-adjusted p-value over the section's comparisons (NaNs where not measured)."""
    c = facts.comparisons
    row = c[(c["num"] == num) & (c["den"] == den) & (c["batch_size"] == batch_size)]
    if row.empty:
        return np.nan, np.nan, np.nan, np.nan
    r = row.iloc[0]
    return float(r["ratio"]), float(r["lo"]), float(r["hi"]), float(r["p_holm"])


def arm_ratio(facts: Beta2Facts, num: str, den: str, batch_size: int) -> tuple[float, float, float]:
    """:func:`arm_test` without the p-value."""
    return arm_test(facts, num, den, batch_size)[:3]


def _resolved(t: tuple) -> str:
    """"higher", "lower" or "" from an arm test's Holm-adjusted p-value."""
    return "" if not (np.isfinite(t[3]) and t[3] < 0.05) else "higher" if t[0] > 1 else "lower"


def text(ctx: Context) -> str:
    b = ctx.beta2
    if b is None:
        return ctx.not_measured("beta2", "make sweep GRID=beta2")
    fixed, half, plain = b.arms
    t = b.table
    small, large = int(t["batch_size"].min()), int(t["batch_size"].max())
    at = t.set_index(["arm", "batch_size"])

    def get(arm, B, col):
        return float(at[col].get((arm, B), np.nan))

    sizes = sorted(t["batch_size"].unique())
    smalls = [B for B in sizes if B <= 4]
    claims = []
    # 1. stability at small B: every run of every rate counted, both arms on the same rate grid
    n_div = {arm: sum(get(arm, B, "n_diverged") for B in smalls) for arm in (fixed, half)}
    n_run = {arm: sum(get(arm, B, "n_runs") for B in smalls) for arm in (fixed, half)}
    reach = {arm: all(get(arm, B, "reached") > get(arm, B, "n_seeds") / 2 for B in smalls) for arm in (fixed, half)}
    r1 = arm_test(b, half, fixed, small)
    stable = ("**Does not hold** here: the half-life arm did not reach the target at B ≤ 4 in most seeds."
              if not reach[half] else
              "**Holds**, and β2 = 0.999 trains as stably at small B here: the rule is not what makes small "
              "batches train on this workload." if reach[fixed] and n_div[half] >= n_div[fixed] else
              "**Holds**, and the half-life β2 diverged less often than β2 = 0.999 at small B.")
    claims.append(
        f"1. *Small batches down to B = 1 train stably with the half-life β2.* At B ≤ 4, the half-life arm diverged in "
        f"{n_div[half]:.0f} of {n_run[half]:.0f} (rate, seed) runs, β2 = 0.999 in {n_div[fixed]:.0f} of "
        f"{n_run[fixed]:.0f} (the same rate grid); the target was reached in most seeds at every B ≤ 4 by "
        + {(True, True): "both arms", (True, False): "the half-life arm only", (False, True): "the fixed arm only",
           (False, False): "neither arm"}[(reach[half], reach[fixed])] + f". At B = {small} the half-life arm's fewest steps are {interval(*r1[:3], fmt='.2f')}× the fixed "
        "arm's (geometric mean of per-seed ratios, 95% t-interval). A run stops at its target or its budget, so a "
        "divergence after either is not counted. " + stable)
    # 2. robustness: the band per seed, small B against the largest
    bs = {arm: [get(arm, B, "band") for B in smalls] for arm in (fixed, half, plain)}
    band_small = {arm: np.nanmean(v) for arm, v in bs.items()}
    band_large = {arm: get(arm, large, "band") for arm in (fixed, half, plain)}
    lo_s, hi_s = get(half, smalls[0], "band_lo"), get(half, smalls[0], "band_hi")
    lo_l, hi_l = get(half, large, "band_lo"), get(half, large, "band_hi")
    robust = ("**Holds**: the band is wider at small B (the intervals do not overlap)." if lo_s > hi_l else
              "**Does not hold**: the band is narrower at small B (the intervals do not overlap)." if hi_s < lo_l else
              "**Not resolved**: the intervals of the band's width at small and large B overlap.")
    claims.append(
        f"2. *Small batches are more robust to the learning rate.* The band of rates within {BAND:g}× of the fewest "
        f"steps spans {band_small[half]:.2f} decades at B ≤ 4 and {band_large[half]:.2f} at B = {large} with the "
        f"half-life β2 (per seed, then the mean over seeds; at B = {smalls[0]} {interval(get(half, smalls[0], 'band'), lo_s, hi_s, '.2f')}, "
        f"at B = {large} {interval(band_large[half], lo_l, hi_l, '.2f')}; {band_small[fixed]:.2f} and "
        f"{band_large[fixed]:.2f} with β2 = 0.999; {label(plain)} {band_small[plain]:.2f} and {band_large[plain]:.2f}), "
        "on a half-decade grid. " + robust)
    # 3. SGD competitive
    r3 = {B: arm_test(b, plain, half, B) for B in sizes}
    known = {B: r for B, r in r3.items() if np.isfinite(r[0])}
    slower = [B for B, r in known.items() if _resolved(r) == "higher"]
    faster = [B for B, r in known.items() if _resolved(r) == "lower"]
    if not known:
        verdict3 = "**Not measured**: no B where both reached the target."
    elif len(slower) == len(known):
        best_b = min(known, key=lambda B: known[B][0])
        verdict3 = (f"**Does not hold**: {label(plain)} is slower at every B (Holm, 5%); the gap is smallest at B = "
                    f"{best_b} ({known[best_b][0]:.2f}×).")
    else:
        even = sorted(set(known) - set(slower))
        verdict3 = (f"**Holds** at B ∈ {{{', '.join(map(str, even))}}}, where {label(plain)} is not resolved slower "
                    f"(Holm, 5%)" + (f" and faster at {faster}" if faster else "") + ".")
    claims.append(
        f"3. *Plain {label(plain)} is competitive at small B.* Its fewest steps over the half-life Adam's: "
        + ", ".join(f"B = {B}: {interval(*r3[B][:3], fmt='.2f')}" for B in sizes) + ". " + verdict3)
    # 4. accumulation
    acc = ctx.accumulation
    bc = headline_b_crit(ctx)
    if acc is not None and len(acc.table) and bc:
        big = acc.table[(acc.table["target"] == TRAIN_TARGET) & (acc.table["k"] > 1)]
        big = big[big["optimizer"].isin(list(bc))]
        over = big[big["batch_size"] > big["optimizer"].map(bc)]
        costly = [verdict(r.examples_ratio, r.examples_holm) == "costs more" for r in over.itertuples()]
        cheaper = [verdict(r.examples_ratio, r.examples_holm) == "costs less" for r in big.itertuples()]
        if len(over):
            v4 = (f"**Holds above B_crit**: more examples in {sum(costly)} of {len(over)} cells there (Holm, 5%), fewer "
                  f"in {sum(cheaper)} cells anywhere." if all(costly) else
                  f"**Holds in part**: more examples in {sum(costly)} of {len(over)} cells above B_crit (Holm, 5%).")
            claims.append("4. *Gradient accumulation is wasteful on one device.* See the accumulation paragraph above. "
                          + v4)
    n = int(t["n_seeds"].max())
    return "\n".join([
        "**Adam's β2 at a fixed half-life in examples (Marek et al. 2025).** β2 averages squared gradients over "
        "about 1/(1 − β2) steps, so a fixed β2 averages over B/(1 − β2) examples. Holding the half-life t½ fixed in "
        "examples gives β2(B) = 0.5^(B / t½) (`mbstudy.scaling_rules.beta2_at`); t½ = 88,678 examples is β2 = 0.999 "
        f"at B = 128. Experiment `{b.experiment}` (every rate of a half-decade grid run to its target, its budget or "
        f"its divergence: no pruning), MNIST-1D MLP, {n} seeds; comparisons seed-paired, Holm-adjusted over the "
        f"section's {len(b.comparisons)}. Marek et al.'s claims, point by point (the table per arm and B in the "
        "appendix):", "", *claims, "",
        ctx.figure("q8b_beta2"),
    ])


def appendix(ctx: Context) -> str:
    b = ctx.beta2
    if b is None or b.table.empty:
        return ""
    t = b.table
    plain = b.arms[2]
    table = pd.DataFrame({
        "arm": t["arm"], "B": t["batch_size"],
        "β2": [f"{v:.6g}" if np.isfinite(v) and a != plain else "–" for v, a in zip(t["beta2"], t["arm"])],
        "steps (geo. mean)": t["steps"], "examples": t["examples"], "best lr": t["best_lr"],
        "diverged": [f"{d:.0f} of {n:.0f}" for d, n in zip(t["n_diverged"], t["n_runs"])],
        f"band (decades within {BAND:g}×), mean [95% CI]": [interval(m, lo, hi, ".2f") for m, lo, hi in
                                                              t[["band", "band_lo", "band_hi"]].to_numpy()]})
    return "\n".join(["### Q8: Adam's β2 at a fixed half-life, per arm and batch size", "", md_table(table, ".3g"), ""])


def _times(text: str) -> str:
    """``1.01× [0.95, 1.07]``: the × after the estimate, before its interval or note."""
    return text.replace(" ", "× ", 1) if " " in text else text + "×"


def q4_paragraph(ctx: Context) -> str:
    """Q4's paragraph on β2: what the beta2 experiment says about Adam's averaging."""
    b = ctx.beta2
    if b is None or b.table.empty:
        return ""
    fixed, half, _ = b.arms
    sizes = sorted(b.table["batch_size"].unique())
    small, large = sizes[0], sizes[-1]
    r_small, r_large = arm_test(b, half, fixed, small), arm_test(b, half, fixed, large)
    c = b.comparisons
    n = {B: int(c.loc[(c["num"] == half) & (c["den"] == fixed) & (c["batch_size"] == B), "n"].max())
         if ((c["num"] == half) & (c["den"] == fixed) & (c["batch_size"] == B)).any() else 0 for B in (small, large)}
    moved = [B for B, r in ((small, r_small), (large, r_large)) if _resolved(r)]
    return (
        "**Adam's β2 is the other knob of its averaging.** Sum or mean rescales Adam's v by B² and leaves only ε "
        "to notice (above); β2 decides over how many steps v averages, and so, at a fixed β2, over B/(1 − β2) "
        "examples. Holding that window fixed in examples instead (Q8) changed the fewest steps to the target by "
        f"{_times(t_text(*r_small[:3], n[small]))} at B = {small} and {_times(t_text(*r_large[:3], n[large]))} at B = {large} "
        "(half-life β2 over β2 = 0.999; per-seed ratios, 95% t-interval): "
        + ("neither is resolved at Holm's 5%, so on this workload the averaging window made no difference the seeds "
           "can see, and β2 leaves the reduction question as ε does: a second-order matter here." if not moved else
           f"resolved at B = {', '.join(map(str, moved))} (Holm, 5%): changing B (or the reduction, through ε) without "
           "moving β2 changes Adam there.") + "\n")


def beta2_figure(ctx: Context):
    """Steps to target, fraction diverged and the robust band of rates against B, per arm."""
    t = ctx.beta2.table
    if t.empty:
        raise Skip("the beta2 sweep holds no runs")
    arms = [a for a in ctx.beta2.arms if a in set(t["arm"])]
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.2), squeeze=False)
    colors = dict(zip(ctx.beta2.arms, plots.sns.color_palette("deep", 3)))
    for arm in arms:
        s = t[t["arm"] == arm].sort_values("batch_size")
        kw = dict(fmt="o-", ms=3, lw=1, color=colors[arm], label=arm)
        axes[0, 0].errorbar(s["batch_size"], s["examples"], **kw)
        axes[0, 1].errorbar(s["batch_size"], s["diverged"], **kw)
        axes[0, 2].errorbar(s["batch_size"], s["band"], yerr=[(s["band"] - s["band_lo"]).clip(lower=0).fillna(0),
                                                              (s["band_hi"] - s["band"]).clip(lower=0).fillna(0)],
                            capsize=2, **kw)
    for ax, ylabel, title in ((axes[0, 0], "examples to target", "examples to the training-loss target"),
                              (axes[0, 1], "fraction of runs diverged", "stability: rates × seeds that diverged"),
                              (axes[0, 2], "decades", f"robustness: rates within {BAND:g}× of the fewest steps")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=8)
    axes[0, 0].set_yscale("log")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8, bbox_to_anchor=(0.5, 0.0))
    plots.suptitle(fig, "Q8: Adam with β2 fixed at 0.999 against β2 at a fixed half-life of 88,678 examples, and plain "
                 "SGD (MNIST-1D MLP)\nexamples: geometric mean over seeds; band: mean over seeds, 95% t-interval", fontsize=9)
    return fig


def _read(ctx: Context) -> Beta2Facts:
    runs = load.load_runs("beta2", hint="make sweep GRID=beta2")
    return beta2_facts(runs, load.load_history(runs, "beta2", keys=("train/loss",), progress=ctx.progress))


SECTION = Section(
    "beta2",
    text=text,
    provides=(Provider("beta2", _read),),
    appendix=appendix,
    figures=(FigureSpec("q8b_beta2", beta2_figure, ("beta2",), "Examples to target, the fraction of runs that "
                        "diverged and the robust band of learning rates against B, for Adam with a fixed β2, Adam with "
                        "β2 at a fixed half-life, and plain SGD."),),
)
