"""Q9, part 4: the noisy quadratic model (Zhang et al. 2019, :mod:`mbstudy.nqm`) matched to the branching
reference's initial loss and B_simple: its steps-to-target curves and B_crit per optimizer, against the measured
ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from analysis import plots, reduce, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, md_table, seed_summary, t_text, verdict_of
from analysis.order import label, optimizers_in
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections.workloads import headline_panel
from mbstudy.optimizers import OPTIMIZERS

plt = plots.plt
NQM_DIM = 1000  # directions of the matched model (Zhang et al. 2019 use 10^4; the curves' shape is the same)
NQM_BATCH_SIZES = tuple(2 ** k for k in range(13))  # 1 .. 4096


@dataclass(frozen=True)
class NqmFacts:
    b_simple0: float  # the reference's B_simple at initialisation, which the model matches
    loss0: float  # the reference's initial training loss
    target: float  # the training-loss target; the model's is target / loss0 of its initial loss
    curves: pd.DataFrame  # optimizer, batch_size, steps, lr
    fits: pd.DataFrame  # optimizer, B_crit, S_min, r2


def nqm_facts(b_simple0: float, loss0: float, target: float, *, dim: int = NQM_DIM) -> NqmFacts:
    """Steps to ``target / loss0`` of the initial loss against B in the noisy quadratic model whose B_simple at
    initialisation is ``b_simple0`` (:func:`mbstudy.nqm.power_law`: h_i = 1/i, noise covariance proportional to
    the Hessian), for SGD, heavy-ball momentum 0.9 and the diagonal preconditioner (power 0.5, Adam's stand-in),
    each at its best learning rate per B; and the hyperbola's B_crit of each curve."""
    from mbstudy import nqm

    model = nqm.power_law(dim, b_simple0=b_simple0, loss0=1.0)
    rows, fits = [], []
    for name, kind in ((o.name, o.nqm) for o in OPTIMIZERS.values() if o.nqm):
        c = nqm.steps_curve(model, kind, list(NQM_BATCH_SIZES), target / loss0)
        rows += [{"optimizer": name, "batch_size": int(b), "steps": float(s), "lr": float(lr)}
                 for b, s, lr in zip(c["batch_size"], c["steps"], c["lr"])]
        fit = reduce.fit_hyperbola(c["batch_size"], c["steps"])
        fits.append({"optimizer": name, "B_crit": fit["B_crit"], "S_min": fit["S_min"], "r2": fit["r2"]})
    return NqmFacts(b_simple0, loss0, target, pd.DataFrame(rows), pd.DataFrame(fits))


def measured_pairs(ctx: Context, optimizers) -> pd.DataFrame:
    """Every pair of optimizers' measured B_crit on the headline workload (the science sweep), seed by seed
    (:func:`analysis.stats.paired_ratio`: b over a), Holm over the pairs; a pair with a bound is not tested."""
    f = ctx.workloads
    panel = headline_panel(ctx)
    rows = []
    if f is None or panel is None:
        return pd.DataFrame(columns=["a", "b", "ratio", "lo", "hi", "p", "n", "p_holm", "verdict"])
    cells = {o: f.cell(panel.workload, panel.target, o, panel.level) for o in optimizers}
    cells = {o: c for o, c in cells.items() if c is not None}
    names = list(cells)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            A, B = cells[a], cells[b]
            sa, sb = list(A.table.columns), list(B.table.columns)
            common = [x for x in sa if x in sb]
            ia, ib = [sa.index(x) for x in common], [sb.index(x) for x in common]
            est, lo, hi, p, n = stats.paired_ratio(B.fits["B_crit"][ib], A.fits["B_crit"][ia],
                                                   B.fits["censored"][ib], A.fits["censored"][ia])
            if n < MIN_INTERVAL_SEEDS:
                lo = hi = p = np.nan
            rows.append({"a": a, "b": b, "ratio": est, "lo": lo, "hi": hi, "p": p, "n": n,
                         "bound": bool(A.b_crit.bound or B.b_crit.bound)})
    out = pd.DataFrame(rows, columns=["a", "b", "ratio", "lo", "hi", "p", "n", "bound"])
    out["p_holm"] = stats.holm(out["p"]) if len(out) else []
    out["verdict"] = ["not tested (a bound)" if bd else verdict_of(r, q, "larger", "smaller")
                      for r, q, bd in zip(out["ratio"], out["p_holm"], out["bound"])]
    return out


def agreement(n: NqmFacts, pairs: pd.DataFrame) -> tuple[str, list[str], list[str]]:
    """Whether the NQM's order of B_crit agrees with the measured pairs: ``("agrees", agreeing, unresolved)``,
    ``"contradicts"`` (a resolved pair the other way), ``"agrees on the resolved pairs"`` or ``"not resolved"``."""
    b = n.fits.set_index("optimizer")["B_crit"]
    agree, against, open_ = [], [], []
    for r in pairs.itertuples():
        if r.a not in b.index or r.b not in b.index:
            continue
        name = f"{r.a} vs {r.b}"
        if r.verdict in ("larger", "smaller"):
            nqm_up = b[r.b] > b[r.a]
            (agree if nqm_up == (r.verdict == "larger") else against).append(name)
        else:
            open_.append(name)
    if against:
        return "contradicts", against, open_
    if agree and not open_:
        return "agrees", agree, open_
    return ("agrees on the resolved pairs" if agree else "not resolved"), agree, open_


def text(ctx: Context) -> str:
    n = ctx.nqm
    if n is None:
        return "### The noisy quadratic model\n\n" + ctx.not_measured("branching", "make sweep GRID=branching")
    panel = headline_panel(ctx)
    fits = n.fits.set_index("optimizer")
    rows = []
    for opt in optimizers_in(n.fits["optimizer"]):
        m = panel.fits.get(opt) if panel is not None else None
        bound = panel.bounds.get(opt, "") if panel is not None else ""
        rows.append({"optimizer": opt, "NQM B_crit": f"{fits.loc[opt, 'B_crit']:.0f}",
                     "NQM fit R²": f"{fits.loc[opt, 'r2']:.3f}",
                     "measured B_crit (science sweep, 95% t-interval)":
                         seed_summary(stats.Summary(*m["B_crit"], panel.n_seeds, bound), ".0f") if m else "–"})
    order_nqm = sorted(fits.index, key=lambda o: fits.loc[o, "B_crit"])
    pairs = measured_pairs(ctx, order_nqm)
    said, agree, open_ = agreement(n, pairs)
    pair_text = "; ".join(f"{r.b} / {r.a} {t_text(r.ratio, r.lo, r.hi, r.n, '.2f')} ({r.verdict})"
                          for r in pairs.itertuples())
    verdict = {"agrees": "orders the optimizers' B_crit as measured (every measured pair resolved under Holm)",
               "contradicts": f"does not order the optimizers as measured (resolved the other way: {', '.join(agree)})",
               "agrees on the resolved pairs": (f"agrees with the measured order on {', '.join(agree)}; "
                                                f"{', '.join(open_)} not resolved, so the full order is not tested"),
               "not resolved": "is not tested against the measured order: no measured pair is resolved"}[said]
    if len(pairs) == 0:
        head = (f"**The matched NQM orders B_crit {' < '.join(order_nqm)}; not compared with the measured order: "
                + ctx.not_measured("workloads", "make sweep GRID=science").strip().rstrip(".") + ".**")
    else:
        head = f"**The matched NQM orders B_crit {' < '.join(order_nqm)}; it {verdict}.**"
    return "\n".join([
        "### The noisy quadratic model (Zhang et al. 2019)",
        "",
        head,
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
        (f"Measured pairs (B_crit ratio seed by seed, 95% t-interval; Holm over the {len(pairs)} pairs): {pair_text}. "
         if len(pairs) else "")
        + "Its absolute B_crit is not a prediction: the model is matched on B_simple and the target only.",
        "",
        ctx.figure("q9d_nqm"),
    ])


def nqm_figure(ctx: Context):
    """Steps to target against B: the science sweep's MNIST-1D MLP (left), the matched NQM's prediction (right)."""
    n = ctx.nqm
    panel = headline_panel(ctx)
    fig, axes = plt.subplots(1, 2, figsize=(9.6, 3.6))
    colors = plots.optimizer_colors(n.fits["optimizer"])
    if panel is not None:
        for opt in optimizers_in(panel.steps["optimizer"]):
            st = panel.steps[panel.steps["optimizer"] == opt]
            bc = panel.fits[opt]["B_crit"][0]
            axes[0].plot(st["batch_size"], st["steps"], "o-", ms=3, lw=1, color=colors[opt],
                         label=f"{opt}: B_crit {bc:.0f}")
    axes[0].set_title("measured: science sweep, MNIST-1D MLP, training-loss target", fontsize=8)
    fits = n.fits.set_index("optimizer")
    for opt in optimizers_in(n.curves["optimizer"]):
        c = n.curves[(n.curves["optimizer"] == opt) & np.isfinite(n.curves["steps"])]
        kind = OPTIMIZERS[opt].nqm if opt in OPTIMIZERS else opt
        name = opt if kind == opt else f"{kind} ({label(opt)}'s stand-in)"
        axes[1].plot(c["batch_size"], c["steps"], "o-", ms=3, lw=1, color=colors[opt],
                     label=f"{name}: B_crit {fits.loc[opt, 'B_crit']:.0f}")
    axes[1].set_title(f"noisy quadratic model matched to B_simple = {n.b_simple0:.0f} at initialisation", fontsize=8)
    for ax in axes:
        plots.log2_axis(ax)
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to the target (best learning rate)")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=6, loc="upper right")
    plots.suptitle(fig, f"Q9d: the noisy quadratic model's steps against B beside the measured ones (target "
                 f"{n.target:g} of an initial loss {n.loss0:.2f})", fontsize=9)
    return fig




def _read(ctx: Context) -> NqmFacts | None:
    """None without the branching reference's B_simple and loss at step 0 (the report says so)."""
    b = ctx.branching
    at0 = None if b is None or b.b_simple.empty else b.b_simple[b.b_simple["s"] == 0]
    start = None if b is None else b.curves[(b.curves["s"] == 0) & (b.curves["examples"] == 0)]["loss"].median()
    values = (None if at0 is None or at0.empty else float(at0["b_simple"].iloc[0]), start,
              None if b is None else b.target)
    return nqm_facts(*values) if all(v is not None and np.isfinite(v) and v > 0 for v in values) else None


SECTION = Section(
    "nqm",
    text=text,
    provides=(Provider("nqm", _read),),
    figures=(FigureSpec("q9d_nqm", nqm_figure, ("branching", "nqm"),
                        ("Q9d. Steps to the target against B: measured (the science sweep's MNIST-1D "
                        "MLP) and the matched noisy quadratic model's prediction.")),),
)
