"""The language model: steps to a validation loss against B, the science protocol on a small transformer.

The ``lm`` sweep trains the decoder-only transformer (``mbstudy.transformer``) on CPython's documentation as
characters, to a validation loss beyond what the text's bigram reaches (``make baselines``), for Adam and SGD with
momentum, the learning rate searched per (optimizer, B, seed). Its runs are read exactly as the science sweep's
(:func:`analysis.science.science_facts`: steps to several levels read from the histories, each seed's curve fitted
alone, B_crit as a geometric mean with its t-interval or a bound); momentum's B_crit over Adam's is a paired ratio
over seeds, and each is set beside the same optimizer's on the MNIST-1D MLP. Holm's rule over the section's tests.

Its part :mod:`~analysis.sections.language_model.claims` runs Q8 and Q9 on the transformer (β2, accumulation,
warm-up, branching) and Gray et al.'s LayerNorm noise scale; :mod:`~analysis.sections.language_model.layernorm`
computes a subset of layers' noise scale from the per-layer statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order, plots, stats
from analysis.markdown import md_table
from analysis.order import label as opt_label
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from analysis.sections.language_model import claims
from mbstudy.metrics import TRAIN_TARGET, VAL_TARGET

plt = plots.plt
WORKLOAD = "text-transformer"
PAIR = ("momentum", "adam")  # the ratio the section tests: the first's B_crit over the second's


@dataclass(frozen=True)
class LanguageModelFacts:
    experiment: str
    science: object  # analysis.science.ScienceFacts of the lm sweep
    tests: pd.DataFrame  # level: momentum / Adam B_crit, paired over seeds; Holm
    bigram: float  # the bigram's validation loss (nan: make baselines not run)


def lm_facts(f, bigram: float = np.nan) -> LanguageModelFacts:
    rows = []
    for level in f.levels.get((WORKLOAD, VAL_TARGET), ()):
        a, b = f.cell(WORKLOAD, VAL_TARGET, PAIR[0], level), f.cell(WORKLOAD, VAL_TARGET, PAIR[1], level)
        if a is None and b is None:
            continue
        est = lo = hi = p = np.nan
        n = 0
        if a is not None and b is not None and not (a.b_crit.bound or b.b_crit.bound):
            seeds = [s for s in a.table.columns if s in set(b.table.columns)]
            ia = [list(a.table.columns).index(s) for s in seeds]
            ib = [list(b.table.columns).index(s) for s in seeds]
            est, lo, hi, p, n = stats.paired_ratio(a.fits["B_crit"][ia], b.fits["B_crit"][ib],
                                                   a.fits["censored"][ia], b.fits["censored"][ib])
        rows.append({"level": level, PAIR[0]: a.b_crit.text() if a is not None else "not run",
                     PAIR[1]: b.b_crit.text() if b is not None else "not run", "ratio": est, "lo": lo, "hi": hi,
                     "p": p, "n": n})
    tests = pd.DataFrame(rows, columns=["level", *PAIR, "ratio", "lo", "hi", "p", "n"])
    if len(tests):
        tests["p_holm"] = stats.holm(tests["p"].fillna(1.0).to_numpy(float))
    return LanguageModelFacts(f.experiment, f, tests, bigram)


def _read(ctx: Context) -> LanguageModelFacts:
    from analysis import science

    from analysis.sections.language_model.facts import current_runs

    runs = current_runs(load.load_runs("lm", hint="make sweep GRID=lm"), "lm")
    hist = load.load_history(runs, "lm", keys=("train/loss", "val/loss"), progress=ctx.progress)
    f = science.science_facts(runs, hist, "lm", order.workload_labels("lm"), order.meta("lm").get("levels", {}))
    bigram = np.nan
    b = ctx.baselines
    if b is not None:
        row = b.rows[b.rows["dataset"] == "text"]
        bigram = float(row["val/loss"].iloc[0]) if len(row) else np.nan
    return lm_facts(f, bigram)


# ------------------------------------------------------------------ text


def verdict(r) -> str:
    if "not run" in (getattr(r, PAIR[0]), getattr(r, PAIR[1])):
        return "not compared (one optimizer run)"
    if not np.isfinite(r.lo):
        return "not tested (a bound)" if not np.isfinite(r.ratio) else "too few seeds"
    if r.p_holm < 0.05:
        return f"{opt_label(PAIR[0])} larger" if r.ratio > 1 else f"{opt_label(PAIR[0])} smaller"
    return "not resolved"


def _mnist(ctx: Context, optimizer: str) -> str:
    f = ctx.workloads
    if f is None:
        return "–"
    c = f.cell("mnist1d-mlp", TRAIN_TARGET, optimizer)
    return c.b_crit.text() if c is not None else "–"


def text(ctx: Context) -> str:
    s = ctx.language_model
    if s is None or s.tests.empty:
        return ctx.not_measured("language_model", "run make sweep GRID=lm")
    t = s.tests.assign(verdict=[verdict(r) for r in s.tests.itertuples()])
    hard = t.iloc[-1]
    levels = ", ".join(f"{x:g}" for x in t["level"])
    head = (f"**On the language model, B_crit at the hardest validation loss ({hard['level']:g} nats per character) "
            f"is {hard[PAIR[1]]} for Adam and {hard[PAIR[0]]} for momentum"
            + (f": {hard['verdict']} (Holm over {len(t)} levels)" if np.isfinite(hard["ratio"]) else "")
            + ".** The transformer (d = 32, one block, context 32) trains on CPython's "
            "documentation as characters to validation losses " + levels + " nats per character (on 512 windows "
            "spread over the validation block)"
            + (f", all below the bigram's {s.bigram:.3f}" if np.isfinite(s.bigram) else "")
            + "; every run stops at the hardest, the easier levels are read from the same histories, and the "
              "learning rate is searched per (optimizer, B, seed) as in the science sweep.")
    rows = [{"validation loss": f"{r.level:g}", f"{opt_label(PAIR[1])} B_crit (95%)": getattr(r, PAIR[1]),
             f"{opt_label(PAIR[0])} B_crit (95%)": getattr(r, PAIR[0]),
             "momentum / Adam (95%)": f"{r.ratio:.2f} [{r.lo:.2f}, {r.hi:.2f}]" if np.isfinite(r.lo) else "–",
             "Holm p": f"{r.p_holm:.3f}" if np.isfinite(r.p) else "–", "verdict": r.verdict}
            for r in t.itertuples()]
    beside = (f"Beside it, the MNIST-1D MLP (training-loss target {ctx.workloads.hardest('mnist1d-mlp', TRAIN_TARGET):g}): "
              f"Adam {_mnist(ctx, 'adam')}, momentum {_mnist(ctx, 'momentum')}."
              if ctx.workloads is not None and ("mnist1d-mlp", TRAIN_TARGET) in ctx.workloads.levels else "")
    return "\n\n".join([head, md_table(pd.DataFrame(rows)), beside, ctx.figure("l1_lm_steps"), claims.text(ctx)]) + "\n"


def finding(ctx: Context) -> Answer | None:
    s = ctx.language_model
    if s is None or s.tests.empty:
        return None
    r = next(s.tests.tail(1).itertuples())
    more = claims.finding_text(ctx)
    return Answer(f"the transformer's B_crit: Adam {getattr(r, PAIR[1])}, momentum {getattr(r, PAIR[0])} "
                  f"({verdict(r)})", f"validation loss {r.level:g} nats/char" + (f"; {more}" if more else ""),
                  "a 22k-parameter transformer on 2 CPU cores")


# ------------------------------------------------------------------ figure


def _draw(ctx: Context):
    s = ctx.language_model
    if s is None or not s.science.cells:
        raise Skip("no lm runs")
    f = s.science
    fig, ax = plt.subplots(figsize=(5.2, 3.8), constrained_layout=True)
    colors = plots.optimizer_colors(PAIR)
    level = f.hardest(WORKLOAD, VAL_TARGET)
    for opt in (PAIR[1], PAIR[0]):
        c = f.cell(WORKLOAD, VAL_TARGET, opt, level)
        if c is None:
            continue
        plots.plot_seed_band(ax, c.table, colors.get(opt), f"{opt_label(opt)}: B_crit {c.b_crit.text()}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size B (sequences of 32 characters)")
    ax.set_ylabel(f"steps to validation loss {level:g}")
    ax.legend(fontsize=8)
    plots.suptitle(fig, "The language model: steps to the target against B")
    return fig


SECTION = Section(
    "LM", "Does the critical batch size behave the same on a language model?",
    heading="The language model: steps to a validation loss against B",
    text=text,
    provides=(Provider("language_model", _read),),
    figures=(FigureSpec("l1_lm_steps", _draw, ("language_model",), "Steps to the hardest validation loss against B "
                        "for the transformer on text (geometric mean over seeds, the band the seeds' range), Adam and "
                        "momentum, each at its searched rate."),),
    limits="A 22k-parameter transformer with a context of 32 characters, so far from the language models the "
           "2024-25 claims were made on; 6 seeds (10 for Adam's Q5 and the warm-ups), 5 for the branches (8 "
           "references); the warm-ups' rates were not searched.",
    parts=(claims.SECTION,),
    finding=("LM: B_crit on a transformer", finding),
)
