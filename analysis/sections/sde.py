"""Q8, part 3: the SDE square-root rule (Malladi et al. 2022). The ``sde`` sweep: Adam at a reference B0 and
scaled to κB0 by the square-root rule, the linear rule or not at all; each rule's training-loss curve against
examples seen, its distance to the reference's and the reference's own seed noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order, plots, reduce
from analysis.markdown import interval, md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section

plt = plots.plt
REFERENCE = "reference"  # the sde grid's label of the arm the rules scale from (its meta names the rate)
LEVEL = 0.95


@dataclass(frozen=True)
class SdeFacts:
    """The reference at B0 and each rule's training-loss curve against examples seen, and the distance
    between each rule's curve and the reference's (mean over the evaluations of |difference of the medians
    over seeds of log loss|; its bootstrap interval resamples both arms' seeds, which biases it upward),
    the reference's seed-to-seed spread (mean over evaluations of the std over seeds of log loss) and the
    seed-noise level (95th percentile of the reference's distance to itself under resampling)."""

    experiment: str
    b0: int
    lr0: float
    curves: pd.DataFrame  # rule, kappa, batch_size, seed, examples, loss
    distances: pd.DataFrame  # rule, kappa, distance [lo, hi], spread, noise, within (distance <= noise)
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


def _distance(rule: np.ndarray, ref: np.ndarray) -> float:
    """Mean over examples of |median over seeds of log loss, rule − reference| (rows: seeds)."""
    with np.errstate(invalid="ignore"):
        d = np.abs(np.median(rule, axis=0) - np.median(ref, axis=0))
    return float(np.mean(d)) if np.all(np.isfinite(d)) else np.inf


def sde_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "sde", lr0: float | None = None,
              n_boot: int = 1000) -> SdeFacts:
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

    def matrix(d: pd.DataFrame) -> np.ndarray:
        return np.log(d.pivot_table(index="seed", columns="examples", values="loss", aggfunc="first").to_numpy(float))

    ref = matrix(curves[curves["rule"] == REFERENCE])
    spread = float(np.mean(np.std(ref, axis=0, ddof=1))) if ref.shape[0] > 1 else np.nan
    rng = np.random.default_rng(0)
    n = len(ref)
    # seed noise: the distance between two resamples of the reference's own seeds; a rule whose distance is
    # under its 95th percentile is as close to the reference as the reference is to itself
    null = [_distance(ref[rng.integers(0, n, n)], ref[rng.integers(0, n, n)]) for _ in range(n_boot)]
    noise = float(np.quantile(null, LEVEL)) if n > 1 else np.nan
    rows = []
    for (rule, kappa), d in curves[curves["rule"] != REFERENCE].groupby(["rule", "kappa"]):
        m = matrix(d)
        cols = min(m.shape[1], ref.shape[1])
        m, r = m[:, :cols], ref[:, :cols]
        point = _distance(m, r)
        reps = [_distance(m[rng.integers(0, len(m), len(m))], r[rng.integers(0, len(r), len(r))]) for _ in range(n_boot)]
        lo, hi = reduce.percentile_interval(reps, LEVEL, n_boot)
        rows.append({"rule": rule, "kappa": int(kappa), "batch_size": int(kappa * b0), "distance": point, "lo": lo,
                     "hi": hi, "spread": spread, "noise": noise, "within": bool(point <= noise), "n_seeds": len(m)})
    distances = pd.DataFrame(rows)
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
    noise = float(d["noise"].iloc[0])
    within = d[d["within"]]
    show = pd.DataFrame({"κ": d["kappa"], "B": d["batch_size"], "rule": d["rule"],
                         "distance D [95% CI]": [interval(*r, fmt=".3f") for r in d[["distance", "lo", "hi"]].to_numpy()],
                         "within seed noise": d["within"].map({True: "yes", False: "no"})})
    by_rule = {rule: ", ".join(f"κ = {k}" for k in within[within["rule"] == rule]["kappa"]) or "no κ"
               for rule in s.rules}
    missed = sorted(set(d["kappa"]) - set(within[within["rule"] == "square-root"]["kappa"]))
    return "\n".join([
        f"**The SDE square-root rule (Malladi et al. 2022) keeps Adam's loss-against-examples curve within seed "
        f"noise at {by_rule['square-root']}**" + (f", not at κ = {', '.join(map(str, missed))}" if missed else "")
        + f". From the reference B0 = {s.b0} at lr {s.lr0:g} (of its half-decade neighbours, the best "
        f"final training loss was at lr {best:g}: "
        + ", ".join(f"{r.learning_rate:g} → {r.final_loss:.3f}" for r in rates.itertuples())
        + f"), each κ scales B to κB0 by the square-root rule (η√κ, 1 − β1 and 1 − β2 times κ, ε/√κ), the linear "
        "rule (ηκ) or none, and every run sees the same 65,536 examples. D is the mean over evaluations of "
        "|Δ median log loss| against the reference; the seed noise is the 95th percentile of D between two "
        f"resamples of the reference's own seeds (**{noise:.3f}**; the reference's seed-to-seed standard deviation "
        f"of log loss is {float(d['spread'].iloc[0]):.3f}). Within the seed noise: square-root rule at "
        f"{by_rule['square-root']}; linear rule at {by_rule['linear']}; no rescaling at {by_rule['none']}.",
        "",
        md_table(show, ".3g"), "",
        "(D's interval resamples the seeds of both curves, which adds seed noise to an absolute difference: it sits "
        "above the point estimate when the curves agree.) To first order the square-root rule's β2, 1 − κ(1 − β2), "
        "is the half-life rule's β2^κ; its β1 = 1 − κ(1 − β1) reaches 0.2 at κ = 8, where the first-order SDE "
        "approximation is least justified.",
        "",
        ctx.figure("q8c_sde"),
    ])


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
                dist = f" (D = {row['distance'].iloc[0]:.2f})" if len(row) else ""
                ax.plot(d.index, d.to_numpy(), lw=1, color=colors[rule], label=f"{rule}{dist}")
        ax.set_yscale("log")
        ax.set_xlabel("examples seen")
        ax.set_title(f"κ = {kappa}: B = {kappa * s.b0}", fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
        if j == 0:
            ax.set_ylabel("training loss (median over seeds)")
    noise = s.distances["noise"].iloc[0] if len(s.distances) else np.nan
    plots.suptitle(fig, f"Q8: Adam scaled from B = {s.b0} to κB by the SDE square-root rule, the linear rule or not at all "
                 f"(MNIST-1D MLP)\nD: mean |Δ log loss| against the reference (seed noise: {noise:.2f})", fontsize=9)
    return fig




def _read(ctx: Context) -> SdeFacts:
    runs = load.load_runs("sde", hint="make sweep GRID=sde")
    return sde_facts(runs, load.load_history(runs, "sde", keys=("train/loss",), progress=ctx.progress))


SECTION = Section(
    "sde",
    text=text,
    provides=(Provider("sde", _read),),
    figures=(FigureSpec("q8c_sde", sde_figure, ("sde",), "Training loss against examples seen: the reference at B0 "
                        "(median and seed range) and Adam scaled to κB0 by the square-root rule, the linear rule or "
                        "not at all."),),
)
