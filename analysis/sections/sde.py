"""Q8, part 3: the SDE square-root rule (Malladi et al. 2022). The ``sde`` sweep: Adam at a reference B0 and
scaled to κB0 by the square-root rule, the linear rule or not at all; each rule's training-loss curve against
examples seen, its seed-paired difference from the reference's, and the reference's own seed noise as the margin
of equivalence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order, plots, stats
from analysis.markdown import interval, md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section

plt = plots.plt
REFERENCE = "reference"  # the sde grid's label of the arm the rules scale from (its meta names the rate)
ALPHA = 0.05  # Holm's family-wise error rate over the section's comparisons


@dataclass(frozen=True)
class SdeFacts:
    """The reference at B0 and each rule's training-loss curve against examples seen. Per rule and κ, the
    seed-paired difference of log loss from the reference's (the same seed: the same initialisation), averaged over
    the evaluations (``mean``) and at the last (``final``), each a mean over seeds with its 95% t-interval; the
    margin of equivalence is the reference's own seed-to-seed standard deviation of log loss (``spread``). A rule
    *matches* the reference where both intervals lie inside ±spread (equivalence: a difference that small is
    within the seed noise, even where it is resolved from 0), else *differs* where the whole-curve difference is
    resolved from 0 under Holm's rule over the section's comparisons, and is *not resolved* otherwise."""

    experiment: str
    b0: int
    lr0: float
    curves: pd.DataFrame  # rule, kappa, batch_size, seed, examples, loss
    distances: pd.DataFrame  # rule, kappa, batch_size, mean [lo, hi], final [lo, hi], p, p_holm, spread, verdict
    reference_rates: pd.DataFrame  # learning_rate, final loss (median over seeds) at B0
    rules: tuple[str, ...] = ()  # the rules' labels (the grid's arms but the reference), in the grid's order


def sde_rule_of(runs: pd.DataFrame, lr0: float) -> pd.Series:
    """The rule of every run: its arm's label, ``reference`` for the reference arm's runs at ``lr0`` and ``other``
    for its other rates (and for a run with no arm)."""
    arm = runs["arm"].fillna("").astype(str)
    ref = arm == REFERENCE
    out = np.where(ref, np.where(np.isclose(runs["learning_rate"].astype(float), lr0), REFERENCE, "other"),
                   np.where(arm == "", "other", arm))
    return pd.Series(out, index=runs.index)


def sde_verdict(mean: tuple[float, float, float], final: tuple[float, float, float], margin: float,
                p_holm: float) -> str:
    """"matches", "differs" or "not resolved" (see :class:`SdeFacts`).

    >>> sde_verdict((0.01, -0.02, 0.04), (0.0, -0.03, 0.03), 0.05, 0.6)
    'matches'
    >>> sde_verdict((0.3, 0.2, 0.4), (0.1, 0.0, 0.2), 0.05, 0.001)
    'differs'
    """
    inside = all(np.isfinite(v[1]) and np.isfinite(v[2]) and -margin < v[1] and v[2] < margin for v in (mean, final))
    if inside:  # equivalent within the margin, even where a smaller difference is resolved
        return "matches"
    return "differs" if np.isfinite(p_holm) and p_holm < ALPHA else "not resolved"


def sde_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "sde", lr0: float | None = None) -> SdeFacts:
    """``runs`` with an ``arm`` column (else each run's arm is its label in the grid ``<experiment>``); ``lr0``:
    the reference's rate (default: the grid's ``[meta] reference_learning_rate``). B0 is the reference arm's batch
    size, κ = B / B0."""
    if "arm" not in runs:
        runs = runs.assign(arm=order.labels_of(runs, experiment)["arm"])
    lr0 = float(order.meta(experiment).get("reference_learning_rate", np.nan)) if lr0 is None else lr0
    rules = tuple(dict.fromkeys(a for a in runs["arm"] if a and a != REFERENCE))
    grid = order.grid(experiment)
    if grid is not None:  # the grid's order, not the runs'
        rules = tuple(order.ordered(rules, dict.fromkeys(lab[1] for lab in grid.labels.values())))
    b0 = int(runs.loc[runs["arm"] == REFERENCE, "batch_size"].iloc[0])
    runs = runs.assign(rule=sde_rule_of(runs, lr0), kappa=(runs["batch_size"] // b0).astype(int))
    h = history[history["metric"] == "train/loss"].merge(
        runs[["run_id", "rule", "kappa", "batch_size", "seed", "learning_rate"]], on="run_id")
    h = h.assign(examples=h["step"] * h["batch_size"], loss=h["value"].astype(float))
    h = h[h["examples"] > 0]
    final = h.sort_values("examples").groupby("run_id").tail(1)
    ref_rates = (final[final["kappa"] == 1].groupby("learning_rate", as_index=False)["loss"].median()
                 .rename(columns={"loss": "final_loss"}))
    curves = h[h["rule"] != "other"][["rule", "kappa", "batch_size", "seed", "examples", "loss"]]

    def matrix(d: pd.DataFrame) -> pd.DataFrame:
        """log loss, rows seeds, columns examples seen"""
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(d.pivot_table(index="seed", columns="examples", values="loss", aggfunc="first"))

    ref = matrix(curves[curves["rule"] == REFERENCE])
    spread = float(np.mean(np.std(ref.to_numpy(float), axis=0, ddof=1))) if len(ref) > 1 else np.nan
    rows = []
    for (rule, kappa), d in curves[curves["rule"] != REFERENCE].groupby(["rule", "kappa"]):
        m = matrix(d)
        seeds = m.index.intersection(ref.index)
        cols = m.columns.intersection(ref.columns)  # the evaluations both curves have, in examples seen
        diff = (m.loc[seeds, cols] - ref.loc[seeds, cols]).to_numpy(float)
        diff = np.where(np.isnan(diff), np.inf, diff)  # a diverged run's loss is not finite: no value
        whole = stats.mean_interval(diff.mean(axis=1)) if diff.size else (np.nan,) * 4
        last = stats.mean_interval(diff[:, -1]) if diff.size else (np.nan,) * 4
        rows.append({"rule": rule, "kappa": int(kappa), "batch_size": int(kappa * b0),
                     "mean": whole[0], "lo": whole[1], "hi": whole[2], "p": whole[3],
                     "final": last[0], "final_lo": last[1], "final_hi": last[2],
                     "spread": spread, "n_seeds": len(seeds), "n_diverged": int((~np.isfinite(diff)).any(axis=1).sum()),
                     "n_evals": len(cols)})
    distances = pd.DataFrame(rows, columns=["rule", "kappa", "batch_size", "mean", "lo", "hi", "p", "final",
                                            "final_lo", "final_hi", "spread", "n_seeds", "n_diverged", "n_evals"])
    distances["p_holm"] = stats.holm(distances["p"].fillna(1.0)) if len(distances) else []
    distances["verdict"] = [  # a seed whose loss left the floats (diverged) is no value: the rule failed there
        f"diverged in {r.n_diverged} of {r.n_seeds} seeds" if r.n_diverged else
        sde_verdict((r.mean, r.lo, r.hi), (r.final, r.final_lo, r.final_hi), r.spread, r.p_holm)
        for r in distances.itertuples()]
    if not distances.empty:
        rank = {rule: i for i, rule in enumerate(rules)}
        distances = distances.sort_values(["kappa", "rule"], key=lambda s: s.map(rank) if s.name == "rule" else s)
        distances = distances.reset_index(drop=True)
    return SdeFacts(experiment, b0, lr0, curves.reset_index(drop=True), distances, ref_rates, rules)


def text(ctx: Context) -> str:
    s = ctx.sde
    if s is None:
        return ctx.not_measured("sde", "make sweep GRID=sde")
    d = s.distances
    if d.empty:
        return "The sde sweep holds no scaled run.\n"
    rates = s.reference_rates.sort_values("learning_rate")
    best = float(rates.loc[rates["final_loss"].idxmin(), "learning_rate"])
    spread = float(d["spread"].iloc[0])
    by = {(r.rule, r.kappa): r for r in d.itertuples()}
    kappas = sorted(d["kappa"].unique())

    def where(rule: str, v: str) -> list[int]:
        return [k for k in kappas if (rule, k) in by and by[rule, k].verdict == v]

    def phrase(rule: str) -> str:
        parts = [f"{v} at κ ∈ {{{', '.join(map(str, ks))}}}" for v in ("matches", "not resolved", "differs")
                 if (ks := where(rule, v))]
        parts += [f"{by[rule, k].verdict} at κ = {k}" for k in kappas
                  if (rule, k) in by and by[rule, k].verdict.startswith("diverged")]
        return "; ".join(parts) or "not measured"

    sqrt = "square-root" if "square-root" in s.rules else s.rules[0]
    m = where(sqrt, "matches")
    dif = [k for k in kappas if (sqrt, k) in by and by[sqrt, k].verdict not in ("matches", "not resolved")]
    head = ("**Yes, within the seed noise at every κ measured**" if len(m) == len(kappas) else
            f"**Yes at κ ∈ {{{', '.join(map(str, m))}}}, no at κ ∈ {{{', '.join(map(str, dif))}}}**" if m and dif else
            f"**Within the seed noise at κ ∈ {{{', '.join(map(str, m))}}}; not resolved elsewhere**" if m else
            f"**No: it differs from the reference at κ ∈ {{{', '.join(map(str, dif))}}}**" if dif else
            "**Not resolved at any κ**")
    n = int(d["n_seeds"].max())
    return "\n".join([
        f"**Does the SDE square-root rule (Malladi et al. 2022) keep Adam's training curve when B grows?** {head}: "
        f"scaled from B0 = {s.b0} by the square-root rule (η√κ, 1 − β1 and 1 − β2 times κ, ε/√κ), Adam's training "
        f"loss against examples seen {phrase(sqrt)}; "
        + "; ".join(f"the {rule} rule {phrase(rule)}" for rule in s.rules if rule != sqrt) + ". "
        f"Evidence: experiment `{s.experiment}`, MNIST-1D MLP, {n} seeds, every run the same 65,536 examples. Per "
        "seed, the difference of log training loss from the reference's (the same seed: the same initialisation), "
        "averaged over the evaluations and at the last one; the mean over seeds with its 95% t-interval. A rule "
        f"*matches* where both intervals lie inside ±{spread:.3f}, the reference's own seed-to-seed standard "
        "deviation of log loss; otherwise it *differs* where the whole-curve difference is resolved from 0 under Holm's rule "
        f"over the section's {len(d)} comparisons (5%); otherwise *not resolved*.",
        " The per-κ table is in the appendix.",
        "",
        f"Limits: one workload and one reference rate, lr {s.lr0:g} at B0 (of its half-decade neighbours, the best "
        f"final training loss was at lr {best:g}: "
        + ", ".join(f"{r.learning_rate:g} → {r.final_loss:.3f}" for r in rates.itertuples())
        + "). To first order the square-root rule's β2, 1 − κ(1 − β2), is the half-life rule's β2^κ; its β1 = "
        "1 − κ(1 − β1) reaches 0.2 at κ = 8, where the first-order SDE approximation is least justified.",
        "",
        ctx.figure("q8c_sde"),
    ])


def appendix(ctx: Context) -> str:
    s = ctx.sde
    if s is None or s.distances.empty:
        return ""
    d = s.distances[s.distances["kappa"] > 1]
    show = pd.DataFrame({
        "κ": d["kappa"], "B": d["batch_size"], "rule": d["rule"],
        "Δ log loss, whole curve [95% CI]": [interval(*r, fmt="+.3f") for r in d[["mean", "lo", "hi"]].to_numpy()],
        "Δ at the end [95% CI]": [interval(*r, fmt="+.3f") for r in d[["final", "final_lo", "final_hi"]].to_numpy()],
        "p (Holm)": d["p_holm"], "verdict": d["verdict"]})
    return "### Q8: the SDE rule, per κ and rule\n\n" + md_table(show, ".3g")


def sde_figure(ctx: Context):
    """Training loss against examples for each κ: the reference at B0 (median, seed range) and the three rules."""
    s = ctx.sde
    c = s.curves
    kappas = sorted(k for k in c["kappa"].unique() if k > 1)
    if not kappas or (c["rule"] == REFERENCE).sum() == 0:
        raise Skip("the sde sweep holds no reference or no scaled runs")
    fig, axes = plt.subplots(1, len(kappas), figsize=(3.4 * len(kappas), 3.1), squeeze=False, sharey=True)
    colors = dict(zip(s.rules, plots.sns.color_palette("deep", len(s.rules))))
    ref = c[c["rule"] == REFERENCE].groupby("examples")["loss"].agg(["median", "min", "max"])
    for j, kappa in enumerate(kappas):
        ax = axes[0, j]
        ax.fill_between(ref.index, ref["min"], ref["max"], color="0.8", label=f"reference B = {s.b0} (seed range)")
        ax.plot(ref.index, ref["median"], color="k", lw=1.2, label=f"reference B = {s.b0}, lr = {s.lr0:g}")
        for rule in s.rules:
            d = c[(c["rule"] == rule) & (c["kappa"] == kappa)].groupby("examples")["loss"].median()
            if len(d):
                row = s.distances[(s.distances["rule"] == rule) & (s.distances["kappa"] == kappa)]
                dist = f" (Δ = {row['mean'].iloc[0]:+.2f}, {row['verdict'].iloc[0]})" if len(row) else ""
                ax.plot(d.index, d.to_numpy(), lw=1, color=colors[rule], label=f"{rule}{dist}")
        ax.set_yscale("log")
        ax.set_xlabel("examples seen")
        ax.set_title(f"κ = {kappa}: B = {kappa * s.b0}", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        if j == 0:
            ax.set_ylabel("training loss (median over seeds)")
    spread = s.distances["spread"].iloc[0] if len(s.distances) else np.nan
    plots.suptitle(fig, f"Q8: Adam scaled from B = {s.b0} to κB by the SDE square-root rule, the linear rule or not at all "
                 f"(MNIST-1D MLP)\nΔ: mean over seeds and evaluations of the paired difference of log loss from the reference "
                        f"(its seed SD: {spread:.2f})", fontsize=9)
    return fig




def _read(ctx: Context) -> SdeFacts:
    runs = load.load_runs("sde", hint="make sweep GRID=sde")
    return sde_facts(runs, load.load_history(runs, "sde", keys=("train/loss",), progress=ctx.progress))


SECTION = Section(
    "sde",
    text=text,
    provides=(Provider("sde", _read),),
    appendix=appendix,
    figures=(FigureSpec("q8c_sde", sde_figure, ("sde",), "Training loss against examples seen: the reference at B0 "
                        "(median and seed range) and Adam scaled to κB0 by the square-root rule, the linear rule or "
                        "not at all."),),
)
