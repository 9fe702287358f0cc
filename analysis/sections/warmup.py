"""Q9, part 2: batch-size warm-up against constant batch sizes (``warmup.toml``): steps and examples to the target
of doubling schedules against constant batch sizes, paired by seed: against the constant B with the fewest steps,
and against the constant B that needed the fewest examples at or above the schedule's own (so that a ratio below 1
is fewer steps at no more examples). A schedule needs more than half of its seeds to reach the target to be
compared. Every ratio is the geometric mean over seeds of the per-seed ratios with a 95% t-interval and the
p-value of a ratio of 1; a verdict needs its Holm-adjusted p-value (over every comparison of the section) below 0.05.
A seed whose schedule never reached the target makes the ratio a bound (not tested).

``warmup_placed.toml`` (issue 25): schedules placed where the branching sweep's local B_crit says
(:func:`mbstudy.schedule.placed`), each at three rate levels and compared, as one arm per schedule, with the warmup
sweep's constant batch sizes (:func:`placed_facts`); the report re-derives the placement from the branching sweep in
the store (:func:`placement_check`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from analysis import load, plots, reduce, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, md_table, t_text, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from mbstudy.schedule import parse

plt = plots.plt


@dataclass(frozen=True)
class WarmupFacts:
    experiment: str
    constant: pd.DataFrame  # batch_size, learning_rate, steps, examples (medians over seeds of per-seed minima)
    per_seed: pd.DataFrame  # arm ("B=<b>" or the schedule), seed, steps, examples: each seed's fastest run
    schedules: pd.DataFrame  # schedule, final_b, steps, examples, vs_best (ratio, lo, hi, p, n), vs_equal and
    # vs_start (the same): vs_equal against the constant B with the fewest examples at or above the schedule's
    # (_constant_at), vs_start against the constant run at the schedule's starting B (Merrill et al.'s baseline);
    # best_holm, equal_holm, start_holm: Holm-adjusted p-values over the three columns; *_verdict
    best_constant: int  # the constant B with the fewest steps


def _constant_at(examples: float, per_seed: pd.DataFrame) -> float:
    """The steps of the constant batch size that needed the fewest examples at or above ``examples`` (one seed's
    curve, on its branch from the most example-efficient B upward, where more examples buy fewer steps); NaN when
    every constant B needed fewer. A schedule with fewer steps than that constant B, which also had at least its
    examples, took fewer steps at no more examples: a saving no interpolation had to invent."""
    c = per_seed[["batch_size", "examples", "steps"]].dropna().sort_values("batch_size")
    if c.empty:
        return np.nan
    c = c.iloc[int(np.argmin(c["examples"].to_numpy())):]
    c = c[c["examples"].cummax() == c["examples"]]  # the points where the examples grow with B
    above = c[c["examples"] >= examples]
    return float(above["steps"].iloc[0]) if len(above) else np.nan


def _paired(steps: pd.Series, other: pd.Series) -> tuple[float, float, float, float, int]:
    """The schedule's steps over ``other``'s, seed by seed (:func:`analysis.stats.paired_ratio`); a seed whose
    schedule did not reach the target is censored (the comparison is not made); under
    :data:`~analysis.markdown.MIN_INTERVAL_SEEDS` seeds no interval and no p-value."""
    seeds = steps.index.intersection(other.dropna().index)
    a, b = steps.loc[seeds].to_numpy(float), other.loc[seeds].to_numpy(float)
    est, lo, hi, p, n = stats.paired_ratio(a, b, censored_a=~np.isfinite(a))
    if n < MIN_INTERVAL_SEEDS:
        lo = hi = p = np.nan
    return est, lo, hi, p, n


def _verdict(r, p_holm) -> str:
    if not np.isfinite(r[0]):
        return "not tested (a seed did not reach the target, or too few reached it)"
    return verdict_of(r[0], p_holm, "more steps", "fewer steps")


def shape_of(schedule: str) -> str:
    """A schedule without its learning rates: the arm that a rate search over it tunes.

    >>> shape_of("768x16@0.1,160x64@0.316")
    '768x16,160x64'
    """
    return ",".join(f"{n}x{b}" for n, b, _ in parse(schedule))


def start_b(arm: str) -> int:
    """The first phase's batch size of a schedule or of an arm named by its shape.

    >>> start_b("768x16@0.1,160x64@0.316"), start_b("896x8 → 16")
    (16, 8)
    """
    return int(re.match(r"\s*\d+\s*x\s*(\d+)", arm)[1])


def warmup_facts(runs: pd.DataFrame, experiment: str = "warmup", n_boot: int | None = None, *,
                 tuned: bool = False) -> WarmupFacts:
    """``n_boot``: unused (the intervals are t-intervals over seeds); kept for the callers. ``tuned``: schedules
    that differ only in their rates are one arm, each seed's fastest of them (as a constant B is the fastest of its
    rates); the arm is named by its shape (:func:`shape_of`) and its final B."""
    runs = runs.assign(schedule=runs["schedule"].fillna("") if "schedule" in runs else "")
    steps = reduce.reached_steps(runs)  # inf: not reached
    examples = runs.get("examples_to_target", pd.Series(np.nan, index=runs.index)).astype(float)
    runs = runs.assign(s=steps, e=examples.where(np.isfinite(steps), np.inf))
    sched = runs["schedule"].map(shape_of) + " → " + runs["batch_size"].astype(str) if tuned else runs["schedule"]
    runs["arm"] = np.where(runs["schedule"] == "", "B=" + runs["batch_size"].astype(str), sched)
    fastest = runs.sort_values("s").groupby(["arm", "seed"], as_index=False).first()
    per_seed = fastest[["arm", "seed", "batch_size", "learning_rate", "s", "e"]].rename(
        columns={"s": "steps", "e": "examples"})
    const = runs[runs["schedule"] == ""]
    constant = reduce.steps_to_target(const, by=("batch_size",))[["batch_size", "learning_rate", "steps", "examples"]]
    best_b = int(constant.loc[constant["steps"].idxmin(), "batch_size"]) if len(constant) else 0

    cps = per_seed[per_seed["arm"].str.startswith("B=") & np.isfinite(per_seed["steps"])]
    best = cps[cps["batch_size"] == best_b].set_index("seed")["steps"]
    rows = []
    nan5 = (np.nan, np.nan, np.nan, np.nan, 0)
    for sched, g in per_seed[~per_seed["arm"].str.startswith("B=")].groupby("arm"):
        g = g.set_index("seed")
        reached = np.isfinite(g["steps"])
        ok = reached.sum() > len(g) / 2 and best_b > 0  # as reduce.steps_to_target: more than half the seeds
        # a seed that never reached the target makes the ratio a bound (censored), not a missing pair
        equal = pd.Series({seed: _constant_at(e, cps[cps["seed"] == seed])
                           if np.isfinite(e) else 1.0 for seed, e in g["examples"].items()})
        b0 = start_b(sched)
        start = cps[cps["batch_size"] == b0].set_index("seed")["steps"]
        rows.append({"schedule": sched, "final_b": int(g["batch_size"].iloc[0]), "start_b": int(b0),
                     "steps": g["steps"].median() if ok else np.nan,
                     "examples": g["examples"].median() if ok else np.nan,
                     "n_seeds": len(g), "n_reached": int(reached.sum()),
                     "vs_best": _paired(g["steps"], best) if ok else nan5,
                     "vs_equal": _paired(g["steps"], equal) if ok else nan5,
                     "vs_start": _paired(g["steps"], start) if ok and len(start) else nan5})
    rows = pd.DataFrame(rows)
    if len(rows):
        n = len(rows)
        p = stats.holm([r[3] for r in rows["vs_best"]] + [r[3] for r in rows["vs_equal"]]
                       + [r[3] for r in rows["vs_start"]])
        rows["best_holm"], rows["equal_holm"], rows["start_holm"] = p[:n], p[n:2 * n], p[2 * n:]
        for what in ("best", "equal", "start"):
            rows[f"{what}_verdict"] = [_verdict(r, q) for r, q in zip(rows[f"vs_{what}"], rows[f"{what}_holm"])]
    return WarmupFacts(experiment, constant, per_seed, rows, best_b)


def _ratio(r) -> str:
    return t_text(r[0], r[1], r[2], int(r[4]), ".2f") if np.isfinite(r[0]) else "–"


def counts(w: WarmupFacts) -> dict[str, int]:
    """How many schedules took fewer / more steps (resolved under Holm) than each comparison's constant B."""
    t = w.schedules
    return {f"{what}_{v}": int((t[f"{what}_verdict"] == f"{v} steps").sum()) if f"{what}_verdict" in t else 0
            for what in ("best", "equal", "start") for v in ("fewer", "more")}


def verdict(w: WarmupFacts) -> str:
    """The section's answer in a clause, from the Holm verdicts."""
    c, n = counts(w), len(w.schedules)
    return (f"a doubling warm-up took fewer steps than its starting B (Merrill et al.'s comparison) in "
            f"{c['start_fewer']} of {n} schedules (more in {c['start_more']}), than a constant B with at least its "
            f"examples in {c['equal_fewer']} (more in {c['equal_more']}), and than the fastest constant B in "
            f"{c['best_fewer']} (more in {c['best_more']})")


def text(ctx: Context) -> str:
    w = ctx.warmup
    if w is None:
        return "### Batch-size warm-up\n\n" + ctx.not_measured("warmup", "make sweep GRID=warmup")
    if w.schedules.empty or w.best_constant == 0 or w.schedules["steps"].notna().sum() == 0:
        return ("### Batch-size warm-up\n\nNot compared: " + ("no constant batch size reached the target in more than "
                "half of its seeds" if w.best_constant == 0 else "no schedule reached the target in more than half "
                "of its seeds") + f" ({len(w.schedules)} schedules in the sweep).\n")
    t = w.schedules.sort_values(["final_b", "steps"])
    c = w.constant.set_index("batch_size")
    best = c.loc[w.best_constant]
    fastest = t.loc[t["steps"].dropna().idxmin()]
    seeds = int(t["n_seeds"].max())
    n_tests = int(np.isfinite([r[3] for r in t["vs_best"]] + [r[3] for r in t["vs_equal"]]
                              + [r[3] for r in t["vs_start"]]).sum())
    fv = fastest["best_verdict"]
    return "\n".join([
        "### Batch-size warm-up",
        "",
        f"**With SGD on this workload {verdict(w)} (Holm, 5%)" + _adam_clause(ctx) + ".**",
        "",
        f"Constant batch sizes from {int(c.index.min())} to {int(c.index.max())} (three rates each) against doubling "
        "schedules (`mbstudy.schedule.doubling`: B doubles every fixed number of examples, the learning rate "
        "linear in B and capped at 1.0), all to the training-loss target, evaluated every 1024 examples, "
        f"{seeds} seeds. The fewest steps at a constant B: {best['steps']:.0f} at B = {w.best_constant} "
        f"({best['examples']:.0f} examples; medians over seeds). "
        "Each schedule's steps are compared, paired by seed (geometric mean of the per-seed ratios, 95% t-interval), "
        "with the constant run at the schedule's starting B (Merrill et al.'s baseline, which the schedule spends "
        "more examples than), with that best constant B and with the constant B that needed the fewest examples at "
        "or above the schedule's own (from the most example-efficient B upward; a ratio below 1 against it is fewer "
        "steps at no more examples). "
        f"A verdict needs its Holm-adjusted p-value over the section's {n_tests} tested comparisons below 0.05; "
        "every schedule's ratios are in the appendix.",
        "",
        f"The fastest warm-up (`{fastest['schedule']}`) took {fastest['steps']:.0f} steps, "
        f"{_ratio(fastest['vs_best'])}× the best constant B's: "
        + (f"a saving of {1 - fastest['vs_best'][0]:.0%} (Merrill et al. report 43% on OLMo 1B)." if fv == "fewer steps"
           else f"{fv} (Merrill et al. report 43% fewer steps on OLMo 1B).")
        + (f" Limits: {seeds} seeds are too few for an interval or a verdict." if seeds < MIN_INTERVAL_SEEDS else ""),
        "",
        _adam_paragraph(ctx),
        "",
        placed_paragraph(ctx),
        "",
        ctx.figure("q9b_warmup"),
    ])


def _usable(w: WarmupFacts | None) -> bool:
    return w is not None and not w.schedules.empty and w.best_constant != 0 and w.schedules["steps"].notna().any()


def _adam_clause(ctx: Context) -> str:
    wa = ctx.warmup_adam
    if not _usable(wa):
        return ""
    c, n = counts(wa), len(wa.schedules)
    return (f"; with Adam, fewer than its starting B in {c['start_fewer']} of {n} (more in {c['start_more']}) and "
            f"than the fastest constant B in {c['best_fewer']} (more in {c['best_more']})")


def _adam_paragraph(ctx: Context) -> str:
    wa = ctx.warmup_adam
    if wa is None:
        return "**With Adam** (Merrill et al.'s optimizer): " + ctx.not_measured("warmup_adam",
                                                                               "make sweep GRID=warmup_adam")
    if not _usable(wa):
        return "**With Adam**: not compared (no constant B or no schedule reached the target in most seeds)."
    t = wa.schedules
    c = wa.constant.set_index("batch_size")
    best = c.loc[wa.best_constant]
    fastest = t.loc[t["steps"].dropna().idxmin()]
    return (f"**With Adam** (`warmup_adam`: the same protocol, rates linear in B from the science sweep's best Adam rate "
            f"at B0, capped at 0.0316; {int(t['n_seeds'].max())} seeds): {verdict(wa)} (Holm over the Adam sweep's "
            f"own comparisons). The fewest steps at a constant B: {best['steps']:.0f} at B = {wa.best_constant}; the "
            f"fastest warm-up (`{fastest['schedule']}`) took {fastest['steps']:.0f}, {_ratio(fastest['vs_best'])}× "
            f"those and {_ratio(fastest['vs_start'])}× its starting B's.")


# --------------------------------------------------------------- placed where the local B_crit says (issue 25)

PLACED_TOL = 0.2  # the branching sweep's headline tolerance, from which warmup_placed's schedules were made


def placed_facts(ctx: Context) -> WarmupFacts:
    """``warmup_placed``'s schedules (each the fastest of its three rate levels per seed) against the ``warmup``
    sweep's constant batch sizes (the same three rates per B, the same configurations)."""
    placed = load.load_runs("warmup_placed", hint="make sweep GRID=warmup_placed")
    const = load.load_runs("warmup", hint="make sweep GRID=warmup")
    const = const[const["schedule"].fillna("") == ""]
    return warmup_facts(pd.concat([const, placed], ignore_index=True), "warmup_placed", tuned=True)


def _local_at_placed_tol(f) -> pd.DataFrame:
    """A branching sweep's local B_crit at :data:`PLACED_TOL`, by branch point."""
    return f.local[np.isclose(f.local["tol"], PLACED_TOL)].sort_values("s")


def lm_placement(ctx: Context) -> str:
    """The language model's placed warm-up in a sentence (issue 25 asks for it there too), or why there is none."""
    f = ctx.lm_branching
    if f is None:
        return ""
    loc = _local_at_placed_tol(f)
    bounds = loc[loc["bound"] != ""]
    if loc.empty:
        return ""
    if len(bounds):
        at = ", ".join(f"{'≥' if b.bound == '>=' else '≤'} {b.b_crit:.0f} at step {int(b.s)}" for b in bounds.itertuples())
        return (f" On the language model no schedule was placed: its local B_crit at {PLACED_TOL:.0%} is a bound at "
                f"{len(bounds)} of its {len(loc)} branch points ({at}), so the rule has no value to place B by there.")
    w = ctx.lm_warmup_placed
    if not _usable(w):
        return " The language model's local B_crit has a value at every branch point, but no placed sweep ran on it."
    r = w.schedules.sort_values("steps").iloc[0]
    return (f" On the language model (`lm_warmup_placed`, Adam) the same rule gives `{r.schedule}`: "
            f"{_ratio(r.vs_start)}× B = {r.start_b}'s steps ({r.start_verdict}), {_ratio(r.vs_best)}× the fastest "
            f"constant B's ({r.best_verdict}; Holm over that sweep's own comparisons).")


def placement_from(f, held: set[str], sweep: str) -> tuple[dict[str, str], str]:
    """The schedules :func:`mbstudy.schedule.placed` makes (each rule) from branching facts ``f``'s local B_crit at
    :data:`PLACED_TOL`, as arm names (``shape → final B``), and a sentence on whether the placed sweep ``sweep``
    (its arms ``held``) holds them."""
    from mbstudy.schedule import placed

    loc = _local_at_placed_tol(f)
    if loc.empty or (loc["bound"] != "").any() or not np.isfinite(loc["b_crit"].astype(float)).all():
        return {}, (f"The {f.experiment} sweep's local B_crit is a bound at some checkpoint, so the placement was not "
                    "re-derived from it.")
    points = [(int(s_) * f.reference_b, float(b)) for s_, b in zip(loc["s"], loc["b_crit"])]
    made = {}
    for rule in ("floor", "nearest"):
        phases, final = placed(points, rule=rule)
        made[rule] = ",".join(f"{n // b}x{b}" for n, b in phases) + f" → {final}"
    same = set(made.values()) == held
    return made, ("The sweep's schedules are the ones this rule makes from the local B_crit in this store "
                  "(re-derived at report time)." if same else
                  "The local B_crit in this store makes other schedules (" + "; ".join(
                      f"{r}: `{v}`" for r, v in made.items()) + f") than the sweep holds: rerun the {f.experiment} "
                  f"sweep's numbers into experiments/grids/{sweep}.toml.")


def placement_check(ctx: Context) -> tuple[dict[str, str], str]:
    """:func:`placement_from` the branching sweep's local B_crit in this store, against ``warmup_placed``."""
    f = ctx.branching
    if f is None:
        return {}, "The branching sweep is not in this store, so the placement was not re-derived from it."
    held = set(ctx.warmup_placed.schedules["schedule"]) if ctx.warmup_placed is not None else set()
    return placement_from(f, held, "warmup_placed")


def _edge_share(w: WarmupFacts) -> tuple[int, int]:
    """(seeds whose fastest rate level is the lowest or highest of the three, schedule-seed pairs) of the placed
    arms: their rate is a level, so its edge is the level's."""
    t = w.per_seed[~w.per_seed["arm"].str.startswith("B=") & np.isfinite(w.per_seed["steps"])]
    levels = {0.316: 0, 1.0: 1, 3.16: 2}  # the final phase's rate (B = 128) names the level
    k = t["learning_rate"].round(3).map(levels)
    return int(k.isin([0, 2]).sum()), len(t)


def placed_paragraph(ctx: Context) -> str:
    w = ctx.warmup_placed
    if w is None:
        return ("**Placed where the local B_crit says, rates tuned alike** (Merrill et al.'s recipe): "
                + ctx.not_measured("warmup_placed", "make sweep GRID=warmup_placed"))
    if not _usable(w):
        return ("**Placed where the local B_crit says**: not compared (no constant B or no placed schedule reached "
                "the target in most seeds).")
    _, check = placement_check(ctx)
    t = w.schedules.sort_values("steps")
    edge, pairs = _edge_share(w)
    rows = "; ".join(
        f"`{r.schedule}` {r.steps:.0f} steps ({r.examples:.0f} examples): {_ratio(r.vs_start)}× B = {r.start_b}'s "
        f"steps ({r.start_verdict}), {_ratio(r.vs_best)}× B = {w.best_constant}'s ({r.best_verdict}), "
        f"{_ratio(r.vs_equal)}× the constant B with at least its examples ({r.equal_verdict})"
        for r in t.itertuples())
    return (f"**Placed where the local B_crit says, rates tuned alike** (`warmup_placed`, Merrill et al.'s recipe): "
            f"{verdict(w).replace('a doubling warm-up', 'a placed warm-up')} (Holm over this sweep's own comparisons). "
            "From each branch point of the branching sweep on, a schedule trains at the largest power of two at or "
            "below (floor) or nearest to (nearest) the least local B_crit (tolerance "
            f"{PLACED_TOL:.0%}, SGD) measured there or later, so B only grows; each is the fastest of three rate "
            "levels per seed (level k: every phase at the k-th of the three rates the constant arm tries at its B), as "
            f"each constant B is the fastest of its three rates; {int(t['n_seeds'].max())} seeds. {check} Medians over "
            f"seeds and paired ratios: {rows}. {edge} of {pairs} (schedule, seed) pairs had their fastest level at the "
            "lowest or highest of the three. Merrill et al. report 43% fewer steps than their constant-B baseline."
            + lm_placement(ctx))


def _appendix_table(w: WarmupFacts, title: str) -> str:
    t = w.schedules.sort_values(["final_b", "steps"])
    show = pd.DataFrame({
        ("schedule (STEPSxB, → the final B; each seed at its fastest rate level)" if w.experiment == "warmup_placed"
         else "schedule (STEPSxB@LR, then the final B)"): t["schedule"].map(lambda s: f"`{s}`"),
        "final B": t["final_b"], "seeds reached": [f"{a}/{b}" for a, b in t[["n_reached", "n_seeds"]].to_numpy()],
        "steps": t["steps"].map(lambda v: f"{v:.0f}" if np.isfinite(v) else "–"),
        "examples": t["examples"].map(lambda v: f"{v:.0f}" if np.isfinite(v) else "–"),
        "steps / its starting B's [95% t]": [_ratio(r) for r in t["vs_start"]],
        "verdict (Holm)  ": t["start_verdict"],
        f"steps / B = {w.best_constant}'s [95% t]": [_ratio(r) for r in t["vs_best"]],
        "verdict (Holm)": t["best_verdict"],
        "steps / constant B with at least its examples [95% t]": [_ratio(r) for r in t["vs_equal"]],
        "verdict (Holm) ": t["equal_verdict"]})
    return "\n".join([title, "", "Steps of the schedule over a constant B's, per seed: geometric mean with a 95% "
                      "t-interval; verdicts under Holm's rule over the sweep's comparisons.", "", md_table(show), ""])


def appendix(ctx: Context) -> str:
    out = []
    if _usable(ctx.warmup):
        out.append(_appendix_table(ctx.warmup, "### Q9b: every warm-up schedule against constant batch sizes"))
    if _usable(ctx.warmup_adam):
        out.append(_appendix_table(ctx.warmup_adam, "### Q9b with Adam: every warm-up schedule against constant "
                                                    "batch sizes"))
    if _usable(ctx.warmup_placed):
        out.append(_appendix_table(ctx.warmup_placed, "### Q9b placed at the local B_crit: each schedule (the fastest "
                                                      "of three rate levels per seed) against constant batch sizes"))
    return "\n".join(out)


def warmup_figure(ctx: Context):
    """Steps against examples to the target: constant batch sizes (the curve) and the doubling warm-ups."""
    w = ctx.warmup
    if w.constant.empty or w.schedules.empty:
        raise Skip("the warm-up sweep holds no constant-B or no scheduled run that reached the target")
    finals = sorted(w.schedules["final_b"].unique())
    fig, axes = plt.subplots(1, len(finals), figsize=(4.6 * len(finals), 3.7), squeeze=False, sharey=True)
    firsts = [parse(s)[0] for s in w.schedules["schedule"]]
    starts = sorted({b for _, b, _ in firsts})
    colors = dict(zip(starts, plots.sns.color_palette("deep", len(starts))))
    markers = dict(zip(sorted({n * b for n, b, _ in firsts}), "Ds^vP"))
    for j, final in enumerate(finals):
        ax = axes[0, j]
        c = w.constant
        ax.plot(c["examples"], c["steps"], "k-", lw=1, marker="o", ms=3, label="constant B (median over seeds)")
        for b, e, s in zip(c["batch_size"], c["examples"], c["steps"]):
            ax.annotate(f"{b}", (e, s), textcoords="offset points", xytext=(3, 3), fontsize=6)
        sch = w.schedules[w.schedules["final_b"] == final]
        for row in sch.sort_values("schedule").itertuples():
            (steps, b0, _), *_ = parse(row.schedule)
            ax.plot(row.examples, row.steps, markers.get(steps * b0, "o"), color=colors[b0], ms=5, ls="none",
                    label=f"doubling from {b0}, {steps * b0} examples per phase")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("examples to the training-loss target")
        ax.set_title(f"warm-ups to B = {final}", fontsize=8)
        if j == 0:
            ax.set_ylabel("steps to the target")
        ax.legend(fontsize=6, loc="upper right")
    plots.suptitle(fig, "Q9b: batch-size warm-up against constant batch sizes (MNIST-1D MLP, SGD; median over seeds)",
                 fontsize=9)
    return fig




SECTION = Section(
    "warmup",
    text=text,
    appendix=appendix,
    provides=(Provider("warmup", lambda ctx: warmup_facts(load.load_runs("warmup", hint="make sweep GRID=warmup"))),
              Provider("warmup_adam", lambda ctx: warmup_facts(
                  load.load_runs("warmup_adam", hint="make sweep GRID=warmup_adam"), "warmup_adam")),
              Provider("warmup_placed", placed_facts)),
    figures=(FigureSpec("q9b_warmup", warmup_figure, ("warmup",),
                        ("Q9b. Steps against examples to the target: constant batch sizes (the "
                        "curve, labelled by B) and the doubling warm-ups.")),),
)
