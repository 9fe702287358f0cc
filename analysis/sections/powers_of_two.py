"""Q6, why powers of two for the batch size? Training-step time at B = 2^k − 1, 2^k and 2^k + 1 (from the
benchmark of :mod:`analysis.sections.cost`)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis import plots
from analysis.markdown import md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Section

plt = plots.plt


def text(ctx: Context) -> str:
    if ctx.bench is None:
        return ctx.not_measured("bench", "run make bench")
    p2 = ctx.bench.pow2
    if p2.empty:
        return "The benchmark runs hold no powers-of-two results; run `make bench`.\n"
    t = p2[["device", "k", "us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"]].copy()
    for c in ("us/pow2_minus_1", "us/pow2", "us/pow2_plus_1"):
        t[c] = t[c].astype(float)
    t["k"] = t["k"].astype(int)
    t = t.sort_values(["device", "k"])
    r_minus = (t["us/pow2_minus_1"] / t["us/pow2"]).astype(float)
    r_plus = (t["us/pow2_plus_1"] / t["us/pow2"]).astype(float)
    worst = float(max(abs(r_plus - 1).max(), abs(r_minus - 1).max()))
    fastest = int(((t["us/pow2"] < t["us/pow2_minus_1"]) & (t["us/pow2"] < t["us/pow2_plus_1"])).sum())
    med = float(np.median(np.concatenate([r_minus, r_plus])))
    if fastest <= len(t) / 2 and abs(med - 1) < 0.1:
        verdict = (f"no systematic advantage for a power of two: 2^k was the fastest of the three in {fastest} of "
                   f"{len(t)} cases, the median ratio (2^k ± 1)/2^k is {med:.2f}, and the scatter (up to {worst:.0%}) "
                   "goes both ways")
    else:
        verdict = (f"2^k was the fastest of the three in {fastest} of {len(t)} cases; median ratio (2^k ± 1)/2^k = "
                   f"{med:.2f} (up to {worst:.0%} apart)")
    return (
        f"Measured ({', '.join(sorted(set(t['device'])))}): {verdict}. A batch of 2^k + 1 costs "
        f"{r_plus.min():.2f}–{r_plus.max():.2f}× a batch of 2^k and 2^k − 1 costs {r_minus.min():.2f}–"
        f"{r_minus.max():.2f}× (per training step, `make bench`). Powers of two matter where hardware tiles "
        "work in fixed-size blocks (GPU warps of 32, tensor-core tiles, vector registers).\n\n"
        f"Training-step time (µs), MNIST-1D MLP, SGD with momentum:\n\n{md_table(t, '.1f')}\n\n"
        + ctx.figure("q6_powers_of_two")
    )


def powers_of_two(ctx: Context):
    """Training-step time at 2^k ± 1 relative to 2^k."""
    b = ctx.bench
    p2 = b.pow2
    if p2.empty:
        raise Skip("the benchmark session holds no powers-of-two rows")
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    plots.plot_pow2(ax, p2)
    r = pd.concat([p2["us/pow2_minus_1"] / p2["us/pow2"], p2["us/pow2_plus_1"] / p2["us/pow2"]])
    ax.set_title(f"Training step at 2^k ± 1 ({b.runs['device'].iloc[0]}): {r.min():.2f}–{r.max():.2f}× of 2^k")
    return fig


def finding(ctx: Context) -> str | None:
    if ctx.bench is None or ctx.bench.pow2.empty:
        return None
    t = ctx.bench.pow2
    p, m, o = (t[c].astype(float) for c in ("us/pow2", "us/pow2_minus_1", "us/pow2_plus_1"))
    fastest = int(((p < m) & (p < o)).sum())
    r = np.concatenate([(m / p).to_numpy(), (o / p).to_numpy()])
    return (f"2^k was fastest of {{2^k−1, 2^k, 2^k+1}} in {fastest} of {len(t)} cases on this CPU; 2^k ± 1 cost "
            f"{r.min():.2f}–{r.max():.2f}× 2^k.")


SECTION = Section(
    "Q6", "Why powers of two for the batch size?",
    text=text,
    figures=(FigureSpec("q6_powers_of_two", powers_of_two, ("bench",),
                        "Training-step time at B = 2^k ± 1 relative to 2^k.", log_artifact=False),),
    limits="This CPU alone, B around 2^k for a few k, one network; accelerators with fixed tile sizes (GPU warps, "
           "tensor cores) were not measured.",
    finding=("Q6 powers of two?", finding),
)
