"""Q6, why powers of two for the batch size? Training-step time at B = 2^k − 1, 2^k and 2^k + 1 (from the
benchmark of :mod:`analysis.sections.cost`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import plots, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, md_table, t_text
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Section

plt = plots.plt


TIME_FLOOR = 0.05  # the smallest step-time difference called: one CPU's timings move by a few % between sessions
SIDES = {"2^k − 1": "us/pow2_minus_1", "2^k + 1": "us/pow2_plus_1"}


def _typed(p2: pd.DataFrame) -> pd.DataFrame:
    t = p2[["device", "k", "us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"]].copy()
    for c in ("us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"):
        t[c] = t[c].astype(float)
    t["k"] = t["k"].astype(int)
    return t.sort_values(["device", "k"]).reset_index(drop=True)


def pow2_tests(p2: pd.DataFrame) -> pd.DataFrame:
    """Per device and side (2^k − 1, 2^k + 1): the step time over 2^k's, k by k (the same program one example
    apart), as a geometric mean over the k measured with a 95% t-interval and the p-value of a ratio of 1 (NaN under
    3 values of k), Holm over the comparisons; ``verdict`` needs the adjusted p below 0.05 and a ratio at least
    :data:`TIME_FLOOR` from 1 (a smaller difference is what a change of session or CPU moves)."""
    t = _typed(p2)
    rows = []
    for dev, g in t.groupby("device"):
        for side, col in SIDES.items():
            logs = np.log((g[col] / g["us/pow2"]).to_numpy(float))
            est, lo, hi = (float(x) for x in stats.t_interval(logs))
            n = int(np.isfinite(logs).sum())
            rows.append({"device": dev, "side": side, "ratio": est, "lo": lo, "hi": hi, "n": n,
                         "p": float(stats.t_pvalue(logs)) if n >= MIN_INTERVAL_SEEDS else np.nan,
                         "k": ", ".join(map(str, g["k"]))})
    out = pd.DataFrame(rows, columns=["device", "side", "ratio", "lo", "hi", "n", "p", "k"])
    out["p_holm"] = stats.holm(out["p"]) if len(out) else []
    big = (out["ratio"] - 1).abs() >= TIME_FLOOR
    out["verdict"] = np.where((out["p_holm"] < 0.05) & big, np.where(out["ratio"] > 1, "slower than 2^k",
                                                                     "faster than 2^k"), "not resolved")
    return out


def _ratio(r) -> str:
    text = t_text(r.ratio, r.lo, r.hi, int(r.n))
    text = text.replace("too few seeds", "too few k")
    return text.replace(" ", "× ", 1) if " " in text else text + "×"


def text(ctx: Context) -> str:
    if ctx.bench is None:
        return ctx.not_measured("bench", "run make bench")
    p2 = ctx.bench.pow2
    if p2.empty:
        return "The benchmark runs hold no powers-of-two results; run `make bench`.\n"
    t = _typed(p2)
    tests = pow2_tests(p2)
    slower = tests[tests["verdict"] == "slower than 2^k"]
    per = "; ".join(f"{r.side} on {r.device}: {_ratio(r)}, {r.verdict}" for r in tests.itertuples())
    head = ("**On this CPU the measurements resolve no per-step advantage for a power of two"
            if slower.empty else f"**A batch one off a power of two was slower per step in {len(slower)} of "
            f"{len(tests)} comparisons") + f": step time over 2^k's, {per}.**"
    fastest = int(((t["us/pow2"] < t["us/pow2_minus_1"]) & (t["us/pow2"] < t["us/pow2_plus_1"])).sum())
    return (
        head + " Powers of two matter where hardware tiles work in fixed-size blocks (GPU warps of 32, tensor-core "
        "tiles, vector registers), which were not measured here.\n\n"
        f"Training-step time of the MNIST-1D MLP (SGD with momentum, `make bench`) at B = 2^k − 1, 2^k and 2^k + 1 for "
        f"k = {', '.join(map(str, sorted(set(t['k']))))}: each k gives one ratio per side, the same program one "
        "example apart; the ratios are summarised over k as a geometric mean with a 95% t-interval (with fewer than 3 "
        f"values of k, none), a verdict needing its Holm-adjusted p-value over the {len(tests)} comparisons below 0.05 "
        f"and a ratio at least {TIME_FLOOR:.0%} from 1 (step times on one CPU move by a few percent between sessions, "
        f"so a smaller difference is not called). 2^k was the fastest of the three in {fastest} of {len(t)} cases "
        "(the times are in the appendix).\n\n"
        + ctx.figure("q6_powers_of_two")
    )


def appendix(ctx: Context) -> str:
    if ctx.bench is None or ctx.bench.pow2.empty:
        return ""
    return ("### Q6: training-step time (µs) at 2^k − 1, 2^k and 2^k + 1\n\n"
            + md_table(_typed(ctx.bench.pow2), ".1f") + "\n")


def powers_of_two(ctx: Context):
    """Training-step time at 2^k ± 1 relative to 2^k."""
    b = ctx.bench
    p2 = b.pow2
    if p2.empty:
        raise Skip("the benchmark session holds no powers-of-two rows")
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_pow2(ax, p2)
    r = pd.concat([p2["us/pow2_minus_1"] / p2["us/pow2"], p2["us/pow2_plus_1"] / p2["us/pow2"]])
    ax.set_title(f"Training step at 2^k ± 1 ({b.runs['device'].iloc[0]}): {r.min():.2f}–{r.max():.2f}× of 2^k (range)")
    return fig


def finding(ctx: Context) -> Answer | None:
    if ctx.bench is None or ctx.bench.pow2.empty:
        return None
    tests = pow2_tests(ctx.bench.pow2)
    slower = tests[tests["verdict"] == "slower than 2^k"]
    return Answer(("No resolved advantage for 2^k on this CPU" if slower.empty else
                   f"2^k ± 1 slower in {len(slower)} of {len(tests)} comparisons on this CPU")
                  + ": " + "; ".join(f"{r.side} {r.verdict}" for r in tests.itertuples()) + ".",
                  "step time over 2^k's: " + ", ".join(f"{r.side} {_ratio(r)}" for r in tests.itertuples()),
                  f"one CPU, k = {tests['k'].iloc[0]}; accelerators' tiles not measured")


SECTION = Section(
    "Q6", "Why powers of two for the batch size?",
    text=text,
    figures=(FigureSpec("q6_powers_of_two", powers_of_two, ("bench",),
                        "Training-step time at B = 2^k ± 1 relative to 2^k.", log_artifact=False),),
    limits="This CPU alone, B around 2^k for a few k, one network; accelerators with fixed tile sizes (GPU warps, "
           "tensor cores) were not measured.",
    finding=("Q6 powers of two?", finding),
    appendix=appendix,
)
