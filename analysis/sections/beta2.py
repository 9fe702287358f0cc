"""Q8, part 2: Adam's β2 at a fixed half-life in examples (Marek et al. 2025) against β2 = 0.999 and plain SGD.
The ``beta2`` sweep: per arm and B, steps and examples to the target, the fraction of runs that diverged and the
robust band of learning rates; ratios between arms paired by seed. Also Q4's paragraph on β2
(:func:`q4_paragraph`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import load, order, plots, reduce
from analysis.markdown import interval, md_table
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
    """Per (arm, B): steps and examples to the target, the fraction of runs that diverged, the robust band
    of learning rates (decades within ``BAND``x of the fewest steps), and the best rate."""

    experiment: str
    table: pd.DataFrame
    per_seed: dict[str, pd.DataFrame]  # arm -> reduce.per_seed_steps (rows B, columns seeds), training-loss target
    runs: pd.DataFrame
    roles: dict[str, str] = field(default_factory=dict)  # ROLES -> the arm's label: fixed β2, half-life β2, plain

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


def beta2_facts(runs: pd.DataFrame, experiment: str = "beta2", n_boot: int = 1000,
                roles: dict[str, str] | None = None) -> Beta2Facts:
    """``runs`` with an ``arm`` column (else each run's arm is its label in the grid ``<experiment>``); ``roles``:
    which arm plays which part (default: the grid's ``[meta]``)."""
    if "arm" not in runs:
        runs = runs.assign(arm=order.labels_of(runs, experiment)["workload"])
    roles = {r: order.meta(experiment).get(r, r) for r in ROLES} if roles is None else roles
    rows, per_seed = [], {}
    for arm, g in runs.groupby("arm"):
        per_seed[arm] = reduce.per_seed_steps(g, by=("batch_size",))
        for B, gb in g.groupby("batch_size"):
            s = reduce.reached_steps(gb)
            widths = gb.assign(s=s).groupby("seed").apply(
                lambda d: band_width(d.set_index("learning_rate")["s"]), include_groups=False)
            seeds = per_seed[arm].loc[B]
            best = gb.assign(s=s).sort_values("s").groupby("seed").head(1)["learning_rate"]
            rows.append({"arm": arm, "batch_size": int(B), "steps": float(np.median(seeds)),
                         "examples": float(np.median(seeds)) * B, "n_seeds": int(seeds.size),
                         "diverged": float((gb["outcome"] == "diverged").mean()), "n_runs": len(gb),
                         "band": float(np.nanmedian(widths)) if widths.notna().any() else np.nan,
                         "band_min": float(widths.min()), "band_max": float(widths.max()),
                         "best_lr": float(best.mode().min()) if len(best) else np.nan,
                         "beta2": float(gb["beta2"].iloc[0]) if "beta2" in gb else np.nan,
                         "eval_every": float(gb["eval_every"].iloc[0]) if "eval_every" in gb else np.nan})
    table = pd.DataFrame(rows).sort_values(["arm", "batch_size"]).reset_index(drop=True)
    return Beta2Facts(experiment, table, per_seed, runs, roles)


def arm_ratio(facts: Beta2Facts, num: str, den: str, batch_size: int, n_boot: int = 1000) -> tuple[float, float, float]:
    """Steps of arm ``num`` over arm ``den`` at one B (median over seeds, paired bootstrap)."""
    a, b = facts.per_seed.get(num), facts.per_seed.get(den)
    if a is None or b is None or batch_size not in a.index or batch_size not in b.index:
        return np.nan, np.nan, np.nan
    return reduce.paired_ratio(a.loc[batch_size], b.loc[batch_size], n_boot=n_boot)


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
    # 1. stability at small B
    div = {arm: np.mean([get(arm, B, "diverged") for B in smalls]) for arm in (fixed, half, plain)}
    div_at = {arm: {B: get(arm, B, "diverged") for B in sizes} for arm in (fixed, half)}
    r1 = arm_ratio(b, half, fixed, small)
    steps1 = get(half, small, "steps")
    if not np.isfinite(steps1):
        stable = f"**Does not hold** here: the half-life arm did not reach the target at B = {small}."
    elif div[half] < div[fixed] - 0.05:
        stable = "**Holds**, and the half-life β2 is what makes small B stabler here."
    elif div[half] <= div[fixed] + 0.05:
        reached = [B for B in sizes if np.isfinite(get(half, B, "steps")) and np.isfinite(get(fixed, B, "steps"))]
        where = "at every B" if len(reached) == len(sizes) else f"at B ∈ {{{', '.join(map(str, reached))}}}"
        stable = (f"**Holds** in the sense that both arms reach the target {where}, but β2 = 0.999 is as stable as "
                  "the half-life rule here: on this workload the rule is not what makes small batches train.")
    else:
        stable = "**Does not hold**: the half-life β2 diverged more often than β2 = 0.999."

    def per_b(arm):
        return ", ".join(f"{d:.0%} at B = {B}" for B, d in div_at[arm].items() if np.isfinite(d))

    claims.append(
        f"1. *Small batches down to B = 1 train stably with the half-life β2.* Of each arm's (rate, seed) runs, the "
        f"half-life arm diverged in {per_b(half)}; β2 = 0.999 in {per_b(fixed)} (the same rate grid). Plain SGD diverged in {div[plain]:.0%} at B ≤ 4, on a grid that reaches rate 10 "
        f"(Adam's stops at 0.1), so not comparable. At B = {small} the half-life arm's fewest steps are "
        f"{interval(*r1, fmt='.2f')}× the fixed arm's. A run stops at its target or its budget, so a divergence "
        f"after either is not counted. " + stable)
    # 2. robustness
    band_small = {arm: np.nanmedian([get(arm, B, "band") for B in smalls]) for arm in (fixed, half, plain)}
    band_large = {arm: get(arm, large, "band") for arm in (fixed, half, plain)}
    step = 0.45  # a difference of one half-decade grid step (0.5 decades, 3.16 is 10^0.4997)
    diff = band_small[half] - band_large[half]
    robust = ("**Holds**: the band is wider at small B." if diff >= step else
              "**Does not hold**: the band is narrower at small B." if diff <= -step else
              "**Not resolved**: the band is the same width at small and large B to within one grid step.")
    claims.append(
        f"2. *Small batches are more robust to the learning rate.* The band of rates within {BAND:g}× of the fewest "
        f"steps spans {band_small[half]:.1f} decades at B ≤ 4 and {band_large[half]:.1f} at B = {large} with the "
        f"half-life β2 ({band_small[fixed]:.1f} and {band_large[fixed]:.1f} with β2 = 0.999; SGD {band_small[plain]:.1f} "
        f"and {band_large[plain]:.1f}; medians over seeds, on a half-decade grid). " + robust)
    # 3. SGD competitive
    r3 = {B: arm_ratio(b, plain, half, B) for B in sizes}
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
    acc = ctx.accumulation
    bc = headline_b_crit(ctx)
    if acc is not None and len(acc.table) and bc:
        big = acc.table[(acc.table["target"] == TRAIN_TARGET) & (acc.table["k"] > 1)]
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
        "arm": t["arm"], "B": t["batch_size"], "β2": table["β2"].where(t["arm"] != plain, "–"),
        "steps": t["steps"], "examples": t["examples"], "best lr": t["best_lr"],
        "diverged": t["diverged"].map(lambda v: f"{v:.0%}"),
        f"band (decades, within {BAND:g}×)": [f"{m:.1f} [{lo:.1f}, {hi:.1f}]" if np.isfinite(m) else "–"
                                              for m, lo, hi in t[["band", "band_min", "band_max"]].to_numpy()]})
    return "\n".join([
        "**Adam's β2 at a fixed half-life in examples (Marek et al. 2025).** β2 averages squared gradients over "
        "about 1/(1 − β2) steps, so a fixed β2 averages over B/(1 − β2) examples: at B = 1 β2 = 0.999 remembers "
        "about 700 examples, at B = 3200 two million. Holding the half-life t½ fixed in examples gives "
        "β2(B) = 0.5^(B / t½) (`mbstudy.scaling_rules.beta2_at`); t½ = 88,678 examples is β2 = 0.999 at B = 128. "
        f"Experiment `{b.experiment}` (every run to its target, its budget or its divergence: no pruning), "
        f"MNIST-1D MLP, {int(t['n_seeds'].max())} seeds; Marek et al.'s claims, point by point:",
        "", *claims, "",
        md_table(table, ".3g"), "",
        ctx.figure("q8b_beta2"),
    ])


def q4_paragraph(ctx: Context) -> str:
    """Q4's paragraph on β2: what the beta2 experiment says about Adam's averaging."""
    b = ctx.beta2
    if b is None or b.table.empty:
        return ""
    fixed, half, _ = b.arms
    sizes = sorted(b.table["batch_size"].unique())
    small, large = sizes[0], sizes[-1]
    r_small, r_large = arm_ratio(b, half, fixed, small), arm_ratio(b, half, fixed, large)
    at = b.table.set_index(["arm", "batch_size"])
    res = {B: float(at["eval_every"].get((fixed, B), np.nan) / at["steps"].get((fixed, B), np.nan)) for B in (small, large)}
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
        axes[0, 2].errorbar(s["batch_size"], s["band"], yerr=[(s["band"] - s["band_min"]).fillna(0),
                                                              (s["band_max"] - s["band"]).fillna(0)], capsize=2, **kw)
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
                 "SGD (MNIST-1D MLP; medians over seeds, bars: range)", fontsize=9)
    return fig




SECTION = Section(
    "beta2",
    text=text,
    provides=(Provider("beta2", lambda ctx: beta2_facts(load.load_runs("beta2", hint="make sweep GRID=beta2"))),),
    figures=(FigureSpec("q8b_beta2", beta2_figure, ("beta2",), "Examples to target, the fraction of runs that "
                        "diverged and the robust band of learning rates against B, for Adam with a fixed β2, Adam with "
                        "β2 at a fixed half-life, and plain SGD."),),
)
