"""Muon (Jordan et al. 2024; Essential AI 2025, arXiv:2505.02222): does it stay data-efficient beyond Adam's
critical batch size?

The claim: Muon keeps its data efficiency to larger batch sizes than AdamW (a larger critical batch size), so it
trades compute for time better. The ``muon`` sweep runs optax's Muon in the science sweep's protocol on the
MNIST-1D MLP (the same targets, budgets, evaluation grid and rate search, every fourth power of two of B), and is
compared with the science sweep's Adam runs at the same batch sizes and seeds: per seed, each optimizer's curve is
fitted alone (:func:`analysis.stats.seed_fits`), and Muon's B_crit over Adam's is a paired ratio over the seeds
where neither is a bound; so is the ratio of steps at the largest B. Holm's rule over the section's tests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import levels as lv
from analysis import load, order, plots, stats
from analysis.markdown import md_table
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from mbstudy.metrics import TRAIN_TARGET, VAL_TARGET

plt = plots.plt
WORKLOAD = "mnist1d-mlp"


@dataclass(frozen=True)
class MuonFacts:
    experiment: str
    reference: str  # the optimizer Muon is compared with
    tables: dict  # (target, level, optimizer) -> B x seeds steps table
    tests: pd.DataFrame  # target, level, quantity: Muon's B_crit (or steps at the largest B) over the reference's


def _table(best: pd.DataFrame, optimizer: str, target: str, level: float, batch_sizes) -> pd.DataFrame:
    g = best[(best["workload"] == WORKLOAD) & (best["optimizer"] == optimizer) & (best["target"] == target)]
    t = lv.table(g, level)
    return t.reindex([b for b in batch_sizes if b in t.index])


def muon_facts(muon_best: pd.DataFrame, science_best: pd.DataFrame, levels: dict, reference: str = "adam",
               experiment: str = "muon") -> MuonFacts:
    """``*_best``: :func:`analysis.science.per_seed_steps`'s rows (workload, optimizer, batch_size, seed, target,
    level, steps, bound, learning_rate); ``levels``: (workload, target) -> levels, easiest first."""
    muon_b = sorted(muon_best.loc[muon_best["workload"] == WORKLOAD, "batch_size"].unique())
    tables, rows = {}, []
    for (w, target), levs in levels.items():
        if w != WORKLOAD:
            continue
        for level in levs:
            m = _table(muon_best, "muon", target, level, muon_b)
            a = _table(science_best, reference, target, level, muon_b)
            if m.empty or a.empty:
                continue
            seeds = sorted(set(m.columns) & set(a.columns))
            m, a = m[seeds].reindex(a.index), a[seeds]
            tables[(target, level, "muon")], tables[(target, level, reference)] = m, a
            B = np.asarray(a.index, float)
            fm, fa = stats.seed_fits(B, m.to_numpy(float)), stats.seed_fits(B, a.to_numpy(float))
            sm = stats.summarise(fm["B_crit"], fm["censored"], fm["edge"])
            sa = stats.summarise(fa["B_crit"], fa["censored"], fa["edge"])
            ok = (fm["censored"] == 0) & (fa["censored"] == 0)
            ratio = (stats.paired_ratio(fm["B_crit"][ok], fa["B_crit"][ok]) if sm.measured and sa.measured
                     else (np.nan,) * 4 + (0,))
            rows.append({"target": target, "level": level, "quantity": "B_crit", "muon": sm.text(".4g"),
                         "reference": sa.text(".4g"), "ratio": ratio[0], "lo": ratio[1], "hi": ratio[2], "p": ratio[3],
                         "n": ratio[4]})
            top = a.index.max()
            st = stats.paired_ratio(m.loc[top].to_numpy(float), a.loc[top].to_numpy(float))
            mm, aa = stats.summarise(m.loc[top].to_numpy(float)), stats.summarise(a.loc[top].to_numpy(float))
            rows.append({"target": target, "level": level, "quantity": f"steps at B = {top:g}", "muon": mm.text(),
                         "reference": aa.text(), "ratio": st[0], "lo": st[1], "hi": st[2], "p": st[3], "n": st[4]})
    tests = pd.DataFrame(rows, columns=["target", "level", "quantity", "muon", "reference", "ratio", "lo", "hi", "p",
                                        "n"])
    if len(tests):
        tests["p_holm"] = stats.holm(tests["p"].fillna(1.0).to_numpy(float))
    return MuonFacts(experiment, reference, tables, tests)


def _read(ctx: Context) -> MuonFacts | None:
    from analysis import science

    f = ctx.workloads
    if f is None:
        return None
    runs = load.load_runs("muon", hint="make sweep GRID=muon")
    hist = load.load_history(runs, "muon", keys=("train/loss", "val/acc", "val/loss"), progress=ctx.progress)
    levels = science.levels_of(runs, order.meta("muon").get("levels", {}))
    best = science.per_seed_steps(runs, hist, levels)
    return muon_facts(best, f.best, levels, order.meta("muon").get("reference", "adam"))


# ------------------------------------------------------------------ text


def verdict(r) -> str:
    if not np.isfinite(r.lo):
        return "not tested (a bound)" if r.n == 0 else "too few seeds"
    if r.p_holm < 0.05:
        return "Muon larger" if r.ratio > 1 else "Muon smaller"
    return "not resolved"


def _what(target: str) -> str:
    return "training loss" if target == TRAIN_TARGET else "validation error" if target == VAL_TARGET else target


def text(ctx: Context) -> str:
    s = ctx.muon
    if s is None or s.tests.empty:
        return ctx.not_measured("muon", "run make sweep GRID=muon")
    t = s.tests.assign(verdict=[verdict(r) for r in s.tests.itertuples()])
    bc = t[t["quantity"] == "B_crit"]
    larger, smaller = (bc["verdict"] == "Muon larger").sum(), (bc["verdict"] == "Muon smaller").sum()
    hard = bc[bc.groupby("target")["level"].transform("min") == bc["level"]]
    hard_txt = "; ".join(f"{_what(r.target)} {r.level:g}: {r.muon} against {r.reference}"
                         + (f" (×{r.ratio:.2f} [{r.lo:.2f}, {r.hi:.2f}], {r.verdict})" if np.isfinite(r.lo)
                            else f" ({r.verdict})") for r in hard.itertuples())
    steps = t[(t["quantity"] != "B_crit") & np.isfinite(t["ratio"])]
    steps_txt = (f" At the largest B, Muon took {steps['ratio'].min():.2f}–{steps['ratio'].max():.2f}× Adam's steps "
                 f"to the levels both reached." if len(steps) else "")
    head = (f"**Muon's critical batch size is larger than Adam's at {larger}, smaller at {smaller}, of the "
            f"{len(bc)} levels tested** (the rest not resolved or not testable). At the hardest targets: "
            f"{hard_txt}. The claim (Essential AI 2025): Muon stays data-efficient beyond AdamW's critical batch "
            "size. Measured on the MNIST-1D MLP in the science sweep's protocol, against the science sweep's Adam at "
            "the same batch sizes and seeds; Holm's rule over the section's "
            f"{len(t)} tests." + steps_txt)
    return "\n\n".join([head, "Every level's B_crit and steps at the largest B, with the ratios, are in the "
                             "appendix.", ctx.figure("s3_muon")]) + "\n"


def appendix(ctx: Context) -> str:
    s = ctx.muon
    if s is None or s.tests.empty:
        return ""
    t = s.tests.assign(verdict=[verdict(r) for r in s.tests.itertuples()])
    rows = [{"target": _what(r.target), "level": f"{r.level:g}", "quantity": r.quantity, "Muon (95%)": r.muon,
             "Adam (95%)": r.reference,
             "Muon / Adam (95%)": f"{r.ratio:.2f} [{r.lo:.2f}, {r.hi:.2f}]" if np.isfinite(r.lo) else "–",
             "Holm p": f"{r.p_holm:.3f}" if np.isfinite(r.p) else "–", "verdict": r.verdict}
            for r in t.itertuples()]
    return "### Muon against Adam, every level\n\n" + md_table(pd.DataFrame(rows))


def finding(ctx: Context) -> Answer | None:
    s = ctx.muon
    if s is None or s.tests.empty:
        return None
    t = s.tests.assign(verdict=[verdict(r) for r in s.tests.itertuples()])
    bc = t[(t["quantity"] == "B_crit") & (t["target"] == TRAIN_TARGET)]
    if bc.empty:
        return None
    r = next(bc[bc["level"] == bc["level"].min()].itertuples())
    return Answer(f"Muon's B_crit against Adam's at the hardest training-loss level: {r.verdict}",
                  f"Muon {r.muon}, Adam {r.reference}", "one small MLP; optax's Muon at its defaults")


# ------------------------------------------------------------------ figure


def _draw(ctx: Context):
    s = ctx.muon
    if s is None or not s.tables:
        raise Skip("no muon runs")
    targets = list(dict.fromkeys(t for t, _, _ in s.tables))
    fig, axes = plt.subplots(1, len(targets), figsize=(4.6 * len(targets), 3.6), constrained_layout=True,
                             squeeze=False)
    colors = plots.optimizer_colors(["muon", s.reference])
    for ax, target in zip(axes[0], targets):
        level = min(lev for t, lev, _ in s.tables if t == target)
        for opt in (s.reference, "muon"):
            tab = s.tables.get((target, level, opt))
            if tab is None:
                continue
            plots.plot_seed_band(ax, tab, colors.get(opt), order.label(opt))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to the target")
        ax.set_title(f"{_what(target)} {level:g}", fontsize=9)
    axes[0][0].legend(fontsize=8)
    plots.suptitle(fig, "Muon against Adam: steps to the hardest targets (geometric mean, band: seeds' range)")
    return fig


SECTION = Section(
    "Muon", "Does Muon stay data-efficient beyond Adam's critical batch size?",
    heading="Muon: does it stay data-efficient beyond Adam's critical batch size?",
    text=text,
    provides=(Provider("muon", _read),),
    appendix=appendix,
    figures=(FigureSpec("s3_muon", _draw, ("muon",), "Steps to the hardest training-loss and validation targets "
                        "against B on the MNIST-1D MLP: Muon and the science sweep's Adam at the same batch sizes "
                        "(geometric mean over seeds; the band is the seeds' range)."),),
    limits="One small MLP (three weight matrices); optax's Muon at its defaults (its Adam for the biases at the "
           "same rate); the paper's evidence is language-model pre-training.",
    finding=("Muon: data-efficient beyond Adam's B_crit?", finding),
)
