"""Q5, part 3: does momentum extend perfect scaling on the teacher? (Shallue et al. 2019 say momentum raises B_crit.)

The science sweep measured SGD (momentum 0) and momentum 0.9 on the teacher; ``teacher_momentum.toml`` adds heavy
ball at 0.5 and 0.99 on the same workload, seeds, budgets and rate search. Every momentum is read the same way
(:mod:`analysis.science`: steps to the target read from the histories, each seed's curve fitted alone) on the batch
sizes all four share (B = 4 ... 800; the science sweep's B = 1 and 2 are left out of its fits here so that every
curve is fitted on the same points). Each momentum's B_crit, S_min and E_min = S_min B_crit are compared with SGD's,
paired by seed (geometric mean of the per-seed ratios, 95% t-interval, the p-value of a ratio of 1), under Holm's
rule over the section's comparisons. A B_crit that leaves the measured range is a bound and enters no ratio.

The question behind it (issue 25): the science sweep found momentum's B_crit on the teacher *below* SGD's, while
its E_min was about SGD's, so the difference sat in S_min, the fewest steps at large B. A heavy-ball buffer needs
about 1 / (1 - momentum) steps to build up (2, 10 and 100 steps for 0.5, 0.9 and 0.99), which is a large share of
a target reached in a handful of large-batch steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, plots, science, stats
from analysis.load import MissingRuns
from analysis.markdown import interval, md_table, seed_summary, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from mbstudy.metrics import TRAIN_TARGET

plt = plots.plt
WORKLOAD = "teacher-mlp"
GRID = "teacher_momentum"
QUANTITIES = ("B_crit", "S_min", "E_min")


@dataclass(frozen=True)
class MomentumFacts:
    experiment: str
    level: float  # the target (the training loss) the cells are read at
    batch_sizes: tuple[int, ...]  # the batch sizes every momentum's curve is fitted on
    cells: dict[float, science.Cell]  # momentum -> the cell (0: SGD, from the science sweep)
    tests: pd.DataFrame  # momentum, quantity, ratio, lo, hi, p, n, p_holm: each against SGD, paired by seed


def _restricted(best: pd.DataFrame, optimizer: str, level: float, batch_sizes) -> science.Cell:
    g = best[(best["workload"] == WORKLOAD) & (best["target"] == TRAIN_TARGET) & best["batch_size"].isin(batch_sizes)]
    return science.make_cell(g.assign(optimizer=optimizer), WORKLOAD, TRAIN_TARGET, level, optimizer)


def momentum_facts(sci_best: pd.DataFrame, new_best: dict[float, pd.DataFrame], level: float, batch_sizes,
                   experiment: str = GRID) -> MomentumFacts:
    """``sci_best``: the science sweep's per-seed steps (:attr:`analysis.science.ScienceFacts.best`: SGD is momentum
    0, its momentum optimizer 0.9); ``new_best``: per momentum, the teacher_momentum sweep's per-seed steps
    (:func:`analysis.science.per_seed_steps` of that momentum's runs); ``level``: the target; ``batch_sizes``: the
    batch sizes every curve is fitted on."""
    Bs = tuple(sorted(int(b) for b in batch_sizes))
    teacher = sci_best[sci_best["workload"] == WORKLOAD]
    if teacher[teacher["optimizer"] == "sgd"].empty:
        raise MissingRuns("the science sweep holds no SGD run on the teacher; run make sweep GRID=science")
    cells = {0.0: _restricted(teacher[teacher["optimizer"] == "sgd"], "sgd", level, Bs)}
    if len(teacher[teacher["optimizer"] == "momentum"]):
        cells[0.9] = _restricted(teacher[teacher["optimizer"] == "momentum"], "momentum", level, Bs)
    for m, best in new_best.items():
        cells[float(m)] = _restricted(best, "momentum", level, Bs)
    rows = []
    sgd = cells[0.0]
    for m in sorted(cells):
        if m == 0.0:
            continue
        c = cells[m]
        seeds = [s for s in c.table.columns if s in set(sgd.table.columns)]
        ia = [list(c.table.columns).index(s) for s in seeds]
        ib = [list(sgd.table.columns).index(s) for s in seeds]
        for q in QUANTITIES:
            cens = (c.fits["censored"][ia], sgd.fits["censored"][ib]) if q != "E_min" else (None, None)
            est, lo, hi, p, n = stats.paired_ratio(c.fits[q][ia], sgd.fits[q][ib], *cens)
            rows.append({"momentum": m, "quantity": q, "ratio": est, "lo": lo, "hi": hi, "p": p, "n": n})
    tests = pd.DataFrame(rows, columns=["momentum", "quantity", "ratio", "lo", "hi", "p", "n"])
    tests["p_holm"] = stats.holm(tests["p"]) if len(tests) else []
    return MomentumFacts(experiment, level, Bs, dict(sorted(cells.items())), tests)


def _read(ctx: Context) -> MomentumFacts:
    runs = load.load_runs(GRID, hint=f"make sweep GRID={GRID}")
    sci = ctx.workloads
    if sci is None:
        raise MissingRuns(f"the science sweep's SGD and momentum 0.9 on the teacher are {GRID}'s reference; run make "
                          "sweep GRID=science")
    hist = load.load_history(runs, GRID, keys=("train/loss",), progress=ctx.progress)
    levels = science.levels_of(runs)
    if (WORKLOAD, TRAIN_TARGET) not in levels:
        raise MissingRuns(f"the {GRID} sweep has no teacher run with a training-loss target; run make sweep GRID={GRID}")
    level = levels[(WORKLOAD, TRAIN_TARGET)][-1]
    new_best = {float(m): science.per_seed_steps(sub, hist, {(WORKLOAD, TRAIN_TARGET): (level,)})
                for m, sub in runs.groupby("momentum")}
    return momentum_facts(sci.best, new_best, level, runs["batch_size"].unique())


def _test(f: MomentumFacts, m: float, q: str):
    r = f.tests[(f.tests["momentum"] == m) & (f.tests["quantity"] == q)]
    return None if r.empty else r.iloc[0]


def _said(r, above="larger", below="smaller") -> str:
    if r is None or not np.isfinite(r["p_holm"]):
        return "not tested (a bound)"
    return verdict_of(r["ratio"], r["p_holm"], above, below)


def _ratio(r) -> str:
    return "–" if r is None else interval(r["ratio"], r["lo"], r["hi"], ".2f")


def extends(f: MomentumFacts) -> list[float]:
    """The momenta whose B_crit is resolved above SGD's (Holm)."""
    return [m for m in f.cells if m and _said(_test(f, m, "B_crit")) == "larger"]


def text(ctx: Context) -> str:
    head = "### Momentum on the teacher: does it extend perfect scaling?"
    f = ctx.teacher_momentum
    if f is None:
        return head + "\n\n" + ctx.not_measured("teacher_momentum", f"make sweep GRID={GRID}")
    ms = [m for m in f.cells if m]
    up, down = extends(f), [m for m in ms if _said(_test(f, m, "B_crit")) == "smaller"]
    answer = ("**On the teacher, " + ("momentum " + ", ".join(f"{m:g}" for m in up) + " raised B_crit above SGD's"
                                      if up else "no momentum raised B_crit above SGD's")
              + (("; " if up else ", and ") + ", ".join(f"{m:g}" for m in down) + " lowered it" if down else "")
              + " (Holm): " + "; ".join(f"{m:g}: {_ratio(_test(f, m, 'B_crit'))}×" for m in ms)
              + ". Perfect scaling is " + ("extended by momentum here only at " + ", ".join(f"{m:g}" for m in up)
                                           if up else "not extended by momentum on this workload") + ".**")
    rows = []
    for m, c in f.cells.items():
        rows.append({"momentum": f"{m:g}" + (" (SGD)" if m == 0 else ""),
                     "source": "science" if m in (0.0, 0.9) else GRID,
                     "B_crit (95%)": seed_summary(c.b_crit, ".0f"), "S_min": seed_summary(c.s_min, ".1f"),
                     "E_min (examples)": seed_summary(c.e_min, ".0f"),
                     "buffer steps 1/(1−β)": "–" if m == 0 else f"{1 / (1 - m):.0f}",
                     "B_crit / SGD's": "–" if m == 0 else f"{_ratio(_test(f, m, 'B_crit'))} "
                                                          f"({_said(_test(f, m, 'B_crit'))})",
                     "S_min / SGD's": "–" if m == 0 else f"{_ratio(_test(f, m, 'S_min'))} "
                                                         f"({_said(_test(f, m, 'S_min'))})",
                     "E_min / SGD's": "–" if m == 0 else f"{_ratio(_test(f, m, 'E_min'))} "
                                                         f"({_said(_test(f, m, 'E_min'))})"})
    e_ratios = [_test(f, m, "E_min")["ratio"] for m in ms if _test(f, m, "E_min") is not None]
    e_move = max((abs(np.log(x)) for x in e_ratios if np.isfinite(x)), default=np.nan)
    cut = [m for m in ms if _said(_test(f, m, "S_min")) == "smaller"]
    raised = [m for m in ms if _said(_test(f, m, "S_min")) == "larger"]
    why = [f"E_min moved by at most {np.expm1(e_move):.0%} from SGD's" if np.isfinite(e_move) else "E_min not measured"]
    if cut:
        why.append("momentum " + ", ".join(f"{m:g}" for m in cut) + " cut S_min ("
                   + ", ".join(f"{_ratio(_test(f, m, 'S_min'))}×" for m in cut) + ")")
    if raised:
        why.append("momentum " + ", ".join(f"{m:g}" for m in raised) + " raised it ("
                   + ", ".join(f"{_ratio(_test(f, m, 'S_min'))}×, to {f.cells[m].s_min.value:.0f} steps against a "
                               f"buffer of about {1 / (1 - m):.0f}" for m in raised) + ")")
    seeds = max(c.n_seeds for c in f.cells.values())
    return "\n".join([
        head, "", answer, "",
        f"The teacher (MSE, training-loss target {f.level:g}, beyond least squares), heavy ball at momentum 0 (SGD), "
        f"0.5, 0.9 and 0.99, the rate searched per (momentum, B, seed), {seeds} seeds; every curve fitted on B = "
        f"{f.batch_sizes[0]} … {f.batch_sizes[-1]} (the science sweep's SGD and 0.9 refitted on these batch sizes, "
        "so their values here differ from the workloads table's). Each ratio is paired by seed, 95% t-interval, "
        f"Holm over the section's {int(f.tests['p'].notna().sum())} tested comparisons.", "",
        md_table(pd.DataFrame(rows)), "",
        "Why, measured: B_crit = E_min / S_min, the examples needed at small B over the fewest steps at large B. "
        + "; ".join(why) + ": the change of B_crit is in S_min. A heavy-ball buffer averages the gradients of about "
        "1/(1 − β) steps; that S_min grows only at the largest momentum is consistent with that lag at large B, not "
        "a proof of it.", "",
        ctx.figure("q5_teacher_momentum"),
    ])


def finding(ctx: Context) -> str | None:
    f = ctx.teacher_momentum
    if f is None:
        return None
    up = extends(f)
    return ("momentum on the teacher: " + (f"raises B_crit at {', '.join(f'{m:g}' for m in up)}" if up else
                                           "raises B_crit at no momentum tried")
            + "; " + ", ".join(f"{m:g}: {_ratio(_test(f, m, 'B_crit'))}×" for m in f.cells if m))


def figure(ctx: Context):
    f = ctx.teacher_momentum
    if f is None or not f.cells:
        raise Skip("no teacher_momentum runs")
    fig, ax = plt.subplots(figsize=(5.4, 3.8), constrained_layout=True)
    colors = plots.sns.color_palette("viridis", len(f.cells))
    for (m, c), color in zip(f.cells.items(), colors):
        plots.plot_seed_band(ax, c.table, color, f"momentum {m:g}" + (" (SGD)" if m == 0 else "")
                             + f": B_crit {seed_summary(c.b_crit, '.0f')}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B")
    ax.set_ylabel(f"steps to training loss {f.level:g}")
    ax.legend(fontsize=7)
    plots.suptitle(fig, "Momentum on the teacher: steps to the target against B")
    return fig


SECTION = Section(
    "teacher_momentum",
    text=text,
    provides=(Provider("teacher_momentum", _read),),
    figures=(FigureSpec("q5_teacher_momentum", figure, ("teacher_momentum",),
                        "Steps to the teacher's training-loss target against B for heavy-ball momentum 0 (SGD), 0.5, "
                        "0.9 and 0.99, each at its searched rate: the geometric mean over seeds, the band the seeds' "
                        "range."),),
)
