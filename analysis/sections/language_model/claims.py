"""The language model, part 2: Q8 and Q9 on the transformer, and Gray et al.'s LayerNorm noise scale: the text,
the appendix and the figure. What they read (each sweep's facts, and the part's comparisons adjusted together by
Holm's rule) is :mod:`analysis.sections.language_model.facts`, whose docstring describes the sweeps and the
protocol.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from analysis import plots
from analysis.markdown import interval, md_table, verdict_of
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
from analysis.sections import local_critical as q9_local
from analysis.sections import warmup as q9_warmup
from analysis.sections.beta2 import arm_test
from analysis.sections.local_critical import TOL, BranchFacts, value_text
from analysis.sections.warmup import WarmupFacts
from analysis.sections.language_model.facts import (GRIDS, common_range, edges, load_grid, read_accumulation, read_beta2,
                                                    read_branching, read_branching_common, read_layernorm, read_placed,
                                                    read_tests, read_warmup)

plt = plots.plt


# ------------------------------------------------------------------ text


def _get(t: pd.DataFrame, key: str):
    r = t[t["key"] == key]
    return None if r.empty else r.iloc[0]


def said(r, above: str, below: str) -> str:
    """``above``/``below`` when resolved under Holm, else why not."""
    if r is None:
        return "not measured"
    if not np.isfinite(r["p_holm"]):
        return "not tested (a bound, or too few seeds)"
    return verdict_of(r["estimate"], r["p_holm"], above, below)


def ratio(r) -> str:
    return "–" if r is None else interval(r["estimate"], r["lo"], r["hi"], ".2f")


def _mnist_beta2(ctx: Context, plain: bool) -> str:
    b = ctx.beta2
    if b is None or b.table.empty:
        return "not measured"
    fixed, half, pl = b.arms
    B = int(b.table["batch_size"].min())
    t = arm_test(b, pl, half, B) if plain else arm_test(b, half, fixed, B)
    v = "" if not np.isfinite(t[3]) else verdict_of(t[0], t[3], "more steps", "fewer steps")
    return f"{interval(*t[:3], fmt='.2f')} at B = {B}" + (f" ({v})" if v else "")


def _lm_beta2(ctx: Context, t: pd.DataFrame, plain: bool) -> str:
    b = ctx.lm_beta2
    if b is None or b.table.empty:
        return "not measured"
    B = int(b.table["batch_size"].min())
    r = _get(t, f"beta2:{'plain' if plain else 'half'}:{B}")
    return f"{ratio(r)} at B = {B} ({said(r, 'more steps', 'fewer steps')})"


def _acc_summary(table: pd.DataFrame, holm_col: str = "examples_holm") -> str:
    if table is None or table.empty:
        return "not measured"
    more = table[table["k"] > 1]
    costly = sum(verdict_of(r.examples_ratio, getattr(r, holm_col), "x", "y") == "x" for r in more.itertuples())
    cheaper = sum(verdict_of(r.examples_ratio, getattr(r, holm_col), "x", "y") == "y" for r in more.itertuples())
    w = more.loc[more["examples_ratio"].idxmax()]
    return (f"more examples in {costly} of {len(more)} cells, fewer in {cheaper}; at most "
            f"{interval(w.examples_ratio, w.examples_lo, w.examples_hi, '.2f')}× (b = {int(w.micro)}, k = {int(w.k)})")


def _mnist_acc_cells(ctx: Context) -> pd.DataFrame | None:
    """Q8's accumulation cells as its section counts them (the training-loss target, k > 1)."""
    from analysis.sections.accumulate_or_step import _cells

    return _cells(ctx)


def _lm_acc(ctx: Context, t: pd.DataFrame) -> str:
    a = ctx.lm_accumulation
    if a is None:
        return "not measured"
    rows = t[t["part"] == "Q8 accumulation"]
    if rows.empty:
        return "not measured"
    costly = sum(said(r, "x", "y") == "x" for _, r in rows.iterrows())
    cheaper = sum(said(r, "x", "y") == "y" for _, r in rows.iterrows())
    w = rows.loc[rows["estimate"].idxmax()]
    return (f"more examples in {costly} of {len(rows)} cells, fewer in {cheaper}; at most {ratio(w)}× "
            f"({w['comparison'].split(' / ')[0].replace('examples ', '')})")


def _warm(t: pd.DataFrame, key: str, prefix: str = "warmup") -> tuple[pd.Series | None, str]:
    rows = t[t["key"].str.startswith(f"{prefix}:{key}:")]
    if rows.empty:
        return None, "not measured"
    best = rows.loc[rows["estimate"].idxmin()]
    fewer = sum(said(r, "more", "fewer") == "fewer" for _, r in rows.iterrows())
    more = sum(said(r, "more", "fewer") == "more" for _, r in rows.iterrows())
    return best, f"fewer steps in {fewer} of {len(rows)} schedules, more in {more}; the best {ratio(best)}×"


def _mnist_warm(w: WarmupFacts | None, key: str) -> str:
    """An MNIST-1D warm-up sweep's schedules against their starting B (``start``) or the fastest constant B
    (``best``)."""
    if w is None or w.schedules.empty or f"vs_{key}" not in w.schedules:
        return "not measured"
    c, n = q9_warmup.counts(w), len(w.schedules)
    r = [x for x in w.schedules[f"vs_{key}"] if np.isfinite(x[0])]
    best = min(r, key=lambda x: x[0]) if r else None
    return (f"fewer steps in {c[f'{key}_fewer']} of {n} schedules, more in {c[f'{key}_more']}"
            + (f"; the best {interval(best[0], best[1], best[2], '.2f')}×" if best is not None else ""))


def _warm_claims(claim: str, mnist: WarmupFacts | None, t: pd.DataFrame, prefix: str) -> list[dict]:
    """The two rows of the claims table for a kind of warm-up: against its starting B, then against the fastest
    constant B; the MNIST-1D column from that sweep's facts, the LM's from the part's tests (keys ``prefix:...``)."""
    return [{"claim": text, "MNIST-1D MLP (steps, half-life / 0.999)": _mnist_warm(mnist, key),
             "language model": _warm(t, key, prefix)[1]}
            for text, key in ((claim, "start"), ("… and than the fastest constant B", "best"))]


def _shape(f: BranchFacts | None) -> str:
    if f is None or f.local.empty:
        return "not measured"
    head = f.local[f.local["tol"] == TOL].sort_values("s")
    return " → ".join(f"{value_text(r)} at {r['fraction']:.0%}" for _, r in head.iterrows())


def _rise(f: BranchFacts | None) -> str:
    """Merrill et al.'s rise in a few words: resolved up, resolved down, not tested (bounds) or not resolved."""
    if f is None or f.local.empty:
        return "not measured"
    r = q9_local.shape(f)["rise"]
    return ("a resolved rise" if r.startswith("rises") else "a resolved fall" if r.startswith("falls") else
            "no change tested (bounds at an end of the batch sizes tried)" if r.startswith("goes") else
            "no change resolved")


def text(ctx: Context) -> str:
    head = "### Q8 and Q9 on the language model, and the LayerNorm noise scale"
    c = ctx.lm_tests
    if c is None:
        return head + "\n\n" + ctx.not_measured("lm_tests", "run make study-extended")
    t = c.table
    b, br, ln, w = ctx.lm_beta2, ctx.lm_branching, ctx.lm_layernorm, ctx.lm_warmup
    gray, drift = _get(t, "gray:last"), _get(t, "gray:drift")
    _, start_text = _warm(t, "start")
    small = int(b.table["batch_size"].min()) if b is not None and len(b.table) else 0
    answer = (
        f"**On the transformer, the half-life β2 against 0.999 at B = {small}: "
        f"{said(_get(t, f'beta2:half:{small}'), 'more steps', 'fewer steps')}; accumulation: "
        f"{_lm_acc(ctx, t).split(';')[0]}; warm-up against its starting B: {start_text.split(';')[0]}; the local "
        f"B_crit (tolerance {TOL:.0%}) {_shape(br)}: {_rise(br)}; the LayerNorm-only B_simple is {ratio(gray)}× the "
        "whole model's at the "
        f"end ({said(gray, 'above it', 'below it')}).**")
    beside = pd.DataFrame([
        {"claim": "Adam's β2 at a fixed half-life beats 0.999 at small B (Marek et al. 2025)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _mnist_beta2(ctx, False),
         "language model": _lm_beta2(ctx, t, False)},
        {"claim": "plain SGD is competitive at small B (Marek et al.)",
         "MNIST-1D MLP (steps, half-life / 0.999)": "SGD / half-life: " + _mnist_beta2(ctx, True),
         "language model": "SGD / half-life: " + _lm_beta2(ctx, t, True)},
        {"claim": "accumulating k micro-batches into one step costs examples (Q8)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _acc_summary(_mnist_acc_cells(ctx)),
         "language model": _lm_acc(ctx, t)},
        *_warm_claims("a batch-size warm-up takes fewer steps than its starting B (Merrill et al. 2025: 43% fewer "
                      "on OLMo 1B)", ctx.warmup, t, "warmup"),
        *_warm_claims("a warm-up placed where the local B_crit says takes fewer steps than its starting B (Merrill "
                      "et al.'s recipe)", ctx.warmup_placed, t, "placed"),
        {"claim": "the local B_crit starts near zero, rises, then plateaus (Merrill et al.)",
         "MNIST-1D MLP (steps, half-life / 0.999)": _shape(ctx.branching), "language model": _shape(br)},
        {"claim": "the LayerNorm parameters' B_simple predicts the whole model's (Gray et al. 2024)",
         "MNIST-1D MLP (steps, half-life / 0.999)": "– (no LayerNorm)",
         "language model": f"ratio {ratio(gray)} at the end ({said(gray, 'above 1', 'below 1')}); its change over "
                           f"training {ratio(drift)} ({said(drift, 'rises', 'falls')})"},
    ]).rename(columns={"MNIST-1D MLP (steps, half-life / 0.999)": "MNIST-1D MLP"})
    parts = [head, "", answer, "", ctx.figure("l2_lm_training"), "",
             "The same claims on both workloads (each cell a ratio of steps or examples, paired by seed, geometric "
             "mean and 95% t-interval; every LM run read on the validation loss; verdicts under Holm's rule over the "
             f"part's {int(np.isfinite(t['p']).sum())} tested comparisons, the MNIST-1D column from Q8 and Q9 above "
             "under their own Holm families):", "", md_table(beside)]
    parts += ["", _how(ctx, br, ln, w)]
    return "\n".join(parts) + "\n"


def _against_common(ctx: Context, br: BranchFacts) -> str:
    """The local B_crit at the checkpoints read against a smaller B than the others, read against the others' one
    too (at the headline tolerance): how much those values owe to their reference. "" when there are none."""
    c = ctx.lm_branching_common
    if c is None:
        return ""
    common = int(c.kept["batch_size"].min())
    odd = [int(s) for s, b in br.kept.groupby("s")["batch_size"].min().items() if b < common]

    def at(f: BranchFacts) -> list[str]:
        rows = f.local[(f.local["tol"] == TOL) & f.local["s"].isin(odd)].sort_values("s")
        return [f"{value_text(r)} at step {int(r['s'])}" for _, r in rows.iterrows()]

    now, then = at(br), at(c)
    if not then:
        return ""
    return f"read against B = {common} as at the others, the local B_crit is {', '.join(then)} (not {', '.join(now)}); "


def _how(ctx: Context, br, ln, w) -> str:
    bits = []
    b = ctx.lm_beta2
    if b is not None and len(b.table):
        seeds = int(b.table["n_seeds"].max())
        e, n = edges(b.runs, b.runs["s"], ["arm", "batch_size"])
        bits.append(f"**β2** (`lm_beta2`, {seeds} seeds, no pruning): β2 = 0.999 against β2 = 0.999^(B/32) (a "
                    "half-life of 22,170 examples, 0.999's at B = 32) and plain SGD, at B = "
                    + ", ".join(str(int(x)) for x in sorted(b.table["batch_size"].unique()))
                    + ", three to six rates a quarter decade apart around the lm sweep's best; "
                    f"{e} of {n} (arm, B, seed) cells had their best rate at an edge of their grid.")
    a = ctx.lm_accumulation
    if a is not None and len(a.table):
        acc = a.runs[a.runs["accumulation"] > 1]
        e, n = edges(acc, acc["steps_to_val_target"].where(acc["outcome"].isin(["completed", "pruned"]), np.inf),
                     ["optimizer", "batch_size", "accumulation"])
        bits.append(f"**Accumulation** (`lm_accumulation`, {int(a.table['n_seeds'].max())} seeds): one step of k "
                    "micro-batches of b against k steps of b (the lm sweep's own runs at B = b), three rates around "
                    f"the lm sweep's best at kb; {e} of {n} (k, b, seed) cells had their best rate at an edge of its "
                    "three.")
    if w is not None and len(w.schedules):
        bits.append(f"**Warm-up** (`lm_warmup`, {int(w.schedules['n_seeds'].max())} seeds): doubling schedules from "
                    "B = 8 to 128 at the lm sweep's best rates, each seed's steps over the constant run's at its "
                    f"starting B and at the fastest constant B ({w.best_constant}); the constant arms' rates are "
                    "searched per seed, the schedules' fixed, which favours the constant arms.")
    if br is not None and not br.local.empty:
        bits.append(f"**Branching** (`lm_branching`): a reference at B = {br.reference_b}, lr {br.reference_lr:g} "
                    f"(steps to the target {br.ref_steps[0]:.0f}), branched at steps "
                    + ", ".join(str(int(s)) for s in sorted(br.local["s"].unique()))
                    + f" into B = {int(br.kept['batch_size'].min())} … {int(br.kept['batch_size'].max())}"
                    + (f" (from every branch point B = {common_range(br)}; {extra}: added where the first design "
                       "left the local B_crit a bound)" if (extra := q9_local.design_text(br.kept)) else "")
                    + f" for {br.budget} sequences; the local B_crit at a tolerance of {TOL:.0%} "
                    "as in Q9 (the validation loss in place of the training loss"
                    + (f"; each branch point's kept fractions against its own smallest B: {least}"
                       if (least := q9_local.smallest_text(br.kept)) else "") + "); "
                    + _against_common(ctx, br) +
                    f"{br.edge:.0%} of the chosen rates at an edge of their grid{q9_local.edges_text(br)}.")
    p = ctx.lm_warmup_placed
    if p is not None and len(p.schedules) and br is not None:
        _, check = q9_warmup.placement_from(br, set(p.schedules["schedule"]), GRIDS["placed"])
        runs = load_grid(GRIDS["placed"])  # one arm: its final B names it
        e, n = edges(runs, runs["steps_to_val_target"].where(runs["outcome"].isin(["completed", "pruned"]), np.inf),
                     ["batch_size"])
        bits.append(f"**Placed warm-up** (`{GRIDS['placed']}`, {int(p.schedules['n_seeds'].max())} seeds): Q9's rule "
                    f"on this workload's local B_crit (tolerance {q9_warmup.PLACED_TOL:.0%}): from each branch point "
                    "on, the largest power of two at or below (or nearest to) the least local B_crit measured there "
                    "or later. " + check + " Each seed's fastest of three rate levels a quarter decade apart (the "
                    "same rate in every phase) against the lm sweep's constant batch sizes, whose rates are searched "
                    "per seed: " + "; ".join(f"`{r.schedule}` {r.steps:.0f} steps ({r.examples:.0f} sequences)"
                                             for r in p.schedules.itertuples())
                    + f"; {e} of {n} seeds had their fastest level only at the lowest or highest of the three.")
    if ln is not None and not ln.agreement.empty:
        bits.append(f"**LayerNorm noise scale**: the branching references' per-layer noise statistics (a "
                    f"{ln.noise_batch}-sequence noise batch, every 32 steps): tr Σ and |G|² summed over the "
                    f"{len(ln.layers)} LayerNorm layers of {ln.n_layers}, their ratio against the whole model's "
                    "B_simple, per seed.")
    return "\n\n".join(bits)


def appendix(ctx: Context) -> str:
    c = ctx.lm_tests
    if c is None or c.table.empty:
        return ""
    t = c.table
    rows = [{"part": r.part, "comparison": r.comparison, "ratio (95%)": interval(r.estimate, r.lo, r.hi, ".2f"),
             "seeds": "–" if not np.isfinite(r.n) else int(r.n),
             "Holm p": f"{r.p_holm:.3g}" if np.isfinite(r.p_holm) else "–",
             "verdict": said(t.loc[i], "above 1", "below 1")} for i, r in zip(t.index, t.itertuples())]
    out = ["### The language model's Q8 and Q9: every comparison", "",
           "Each a ratio paired by seed (geometric mean, 95% t-interval), Holm's rule over all of them; a row "
           "without a p-value is a bound or has too few seeds.", "", md_table(pd.DataFrame(rows))]
    br = ctx.lm_branching
    if br is not None and not br.local.empty:
        out += ["", "The local critical batch size of the language model at every tolerance, with the reference's "
                "B_simple:", "", md_table(q9_local.facts_table(br))]
    return "\n".join(out)


def finding_text(ctx: Context) -> str:
    c = ctx.lm_tests
    if c is None:
        return ""
    t = c.table
    b = ctx.lm_beta2
    small = int(b.table["batch_size"].min()) if b is not None and len(b.table) else 0
    gray = _get(t, "gray:last")
    return (f"half-life β2 at B = {small}: {said(_get(t, f'beta2:half:{small}'), 'more steps', 'fewer steps')}; "
            f"warm-up vs its start: {_warm(t, 'start')[1].split(';')[0]}; LayerNorm/whole B_simple {ratio(gray)}")


# ------------------------------------------------------------------ figure


def training_figure(ctx: Context):
    """Left: the local B_crit (headline tolerance) and the reference's B_simple against the point of training.
    Right: the LayerNorm-only B_simple over the whole model's, over training."""
    br, ln = ctx.lm_branching, ctx.lm_layernorm
    if br is None and ln is None:
        raise Skip("neither lm_branching's branches nor its references are in the store")
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.4), constrained_layout=True)
    ax = axes[0]
    if br is not None and not br.local.empty:
        loc = br.local[br.local["tol"] == TOL].sort_values("s")
        frac = loc.set_index("s")["fraction"]
        plots.errorbar(ax, loc["fraction"] * 100, loc["b_crit"], loc["lo"], loc["hi"], fmt="o-", color="C0",
                       label=f"local B_crit ({TOL:.0%} tolerance)")
        for r in loc.itertuples():
            if r.bound:
                ax.annotate({">=": "≥ (bound)", "<=": "≤ (bound)"}.get(r.bound, r.bound), (r.fraction * 100, r.b_crit),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        if not br.b_simple.empty:
            plots.errorbar(ax, br.b_simple["s"].map(frac) * 100, br.b_simple["b_simple"], br.b_simple["lo"],
                           br.b_simple["hi"], fmt="s--", color="C3", label="B_simple of the reference")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("branch point, % of the reference's steps to the target")
        ax.set_ylabel("batch size (sequences)")
        ax.set_title(f"branches from B = {br.reference_b} (geo. mean, 95% t)", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    ax = axes[1]
    a = ln.agreement[ln.agreement["n"] >= 2] if ln is not None else pd.DataFrame()
    if len(a):
        x = a["step"].to_numpy(float)
        plots.errorbar(ax, x, a["ratio"], a["lo"], a["hi"], fmt="o-", color="C2",
                       label=f"LayerNorm only ({len(ln.layers)} layers) / whole model")
        ax.axhline(1, color="0.4", lw=0.8, ls="--")
        ax.set_ylim(0, max(1.1, float(np.nanmax(a["hi"])) * 1.05))
        ax.set_xlabel("step of the reference run")
        ax.set_ylabel("B_simple, LayerNorm only / whole model")
        ax.set_title("Gray et al.: LayerNorm only (geo. mean, 95% t)", fontsize=8)
        ax.legend(fontsize=7)
    else:
        ax.set_axis_off()
    plots.suptitle(fig, "The language model over training: the local critical batch size and the noise scales")
    return fig


SECTION = Section(
    "lm_claims",
    text=text,
    appendix=appendix,
    provides=(Provider("lm_beta2", read_beta2), Provider("lm_accumulation", read_accumulation),
              Provider("lm_warmup", read_warmup), Provider("lm_branching", read_branching),
              Provider("lm_branching_common", read_branching_common),
              Provider("lm_layernorm", read_layernorm), Provider("lm_warmup_placed", read_placed),
              Provider("lm_tests", read_tests)),
    figures=(FigureSpec("l2_lm_training", training_figure, ("lm_tests",),
                        "The language model over training. Left: the local critical batch size by branching (Q9's "
                        "method on the validation loss) and the reference's B_simple, against the branch point. "
                        "Right: the LayerNorm parameters' B_simple over the whole model's (Gray et al. 2024), per "
                        "seed then over seeds."),),
)
