"""Q7, per-example losses 2 and −2 "average to zero": do per-example gradients cancel? The simple noise scale
B_simple = tr(Σ)/‖G‖² over training, logged by the main sweep's runs at their best learning rate."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis import plots, stats
from analysis.markdown import MIN_INTERVAL_SEEDS, seed_summary, t_text, verdict_of
from analysis.order import label, optimizers_in
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from analysis.sections.main_sweep import DefaultFacts
from analysis.sections.workloads import headline_panel

plt = plots.plt


@dataclass(frozen=True)
class NoiseFacts:
    """The simple noise scale B_simple = tr(Σ)/‖G‖² over training, from the main sweep's best-lr runs."""

    experiment: str  # the main sweep, where these curves were logged
    curves: pd.DataFrame  # ``DefaultFacts.b_simple_curves``, never empty here
    at_init: float  # geometric mean over seeds of B_simple at step 0
    end_median: float  # geometric mean over seeds of the median over groups of the last logged value
    per_seed: pd.DataFrame = field(default_factory=pd.DataFrame)  # optimizer, seed, init, end
    tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # per optimizer: end / init paired by seed, Holm
    init: stats.Summary = stats.Summary(np.nan, np.nan, np.nan, 0)  # B_simple at step 0 over seeds


def noise_facts(default: DefaultFacts) -> NoiseFacts | None:
    """None when the main sweep logged no B_simple. Per seed: B_simple at initialisation (the median over the
    groups at step 0: the same weights and data, so the same value up to the evaluation's rounding) and, per
    optimizer, the median over its (reduction, B) groups of the last logged value; per optimizer the ratio end /
    init seed by seed (geometric mean, 95% t-interval, p-value of a ratio of 1), Holm over the optimizers."""
    curves = default.b_simple_curves
    if curves.empty:
        return None
    runs = default.b_simple_runs
    if runs is None or runs.empty:  # facts from before the per-run table: the medians over groups only
        end = curves.sort_values("step").groupby(["optimizer", "reduction", "batch_size"]).tail(1)["mean"]
        return NoiseFacts(experiment=default.experiment, curves=curves,
                          at_init=curves[curves["step"] == 0]["mean"].median(), end_median=end.median())
    per_seed = seed_values(runs)
    init = stats.summarise(per_seed.drop_duplicates("seed")["init"])
    end_seed = per_seed.groupby("seed")["end_all"].first()
    return NoiseFacts(experiment=default.experiment, curves=curves, at_init=init.value,
                      end_median=float(np.exp(np.mean(np.log(end_seed)))) if len(end_seed) else np.nan,
                      per_seed=per_seed, tests=growth_tests(per_seed), init=init)


def seed_values(runs: pd.DataFrame) -> pd.DataFrame:
    """Per (optimizer, seed): ``init`` (the seed's B_simple at step 0, median over every group), ``end`` (median over
    the optimizer's groups of each run's last value) and ``end_all`` (the same over every optimizer)."""
    groups = ["optimizer", "reduction", "batch_size", "seed"]
    r = runs[np.isfinite(runs["value"].astype(float)) & (runs["value"].astype(float) > 0)]
    init = r[r["step"] == 0].groupby("seed")["value"].median()
    last = r.sort_values("step").groupby(groups, as_index=False).tail(1)
    end = last.groupby(["optimizer", "seed"])["value"].median().rename("end").reset_index()
    end_all = last.groupby("seed")["value"].median()
    return end.assign(init=end["seed"].map(init), end_all=end["seed"].map(end_all))[
        ["optimizer", "seed", "init", "end", "end_all"]].dropna(subset=["init"]).reset_index(drop=True)


def growth_tests(per_seed: pd.DataFrame) -> pd.DataFrame:
    """Per optimizer: end / init of B_simple, seed by seed, with its 95% t-interval, the p-value of a ratio of 1
    (NaN under :data:`~analysis.markdown.MIN_INTERVAL_SEEDS` seeds), Holm over the optimizers, and the verdict."""
    rows = []
    for opt in optimizers_in(per_seed["optimizer"]):
        g = per_seed[per_seed["optimizer"] == opt]
        est, lo, hi, p, n = stats.paired_ratio(g["end"].to_numpy(float), g["init"].to_numpy(float))
        rows.append({"optimizer": opt, "ratio": est, "lo": lo, "hi": hi, "p": p if n >= MIN_INTERVAL_SEEDS else np.nan,
                     "n": n, "end": stats.summarise(g["end"])})
    out = pd.DataFrame(rows, columns=["optimizer", "ratio", "lo", "hi", "p", "n", "end"])
    out["p_holm"] = stats.holm(out["p"]) if len(out) else []
    out["verdict"] = [verdict_of(r, q, "grows", "shrinks") for r, q in zip(out["ratio"], out["p_holm"])]
    return out


def _bcrit_in_range(ctx: Context, b_simple: pd.DataFrame) -> str:
    """Where the headline's measured B_crit lie against the range B_simple spanned over training (a bound is
    printed as one and not placed: it is not a value)."""
    p = headline_panel(ctx)
    if p is None or not p.fits:
        return ""
    lo, hi = float(b_simple["mean"].min()), float(b_simple["mean"].max())
    measured = {o: v["B_crit"][0] for o, v in p.fits.items() if not p.bounds.get(o) and np.isfinite(v["B_crit"][0])}
    bounds = {o: v["B_crit"][0] for o, v in p.fits.items() if p.bounds.get(o)}
    inside = [o for o, v in measured.items() if lo <= v <= hi]
    out = f" B_simple ranged over {lo:.0f}–{hi:.0f} in these runs (range over groups and steps, mean over seeds)"
    if measured:
        out += (f"; the measured critical batch sizes ({', '.join(f'{label(o)} {v:.0f}' for o, v in measured.items())})"
                f" lie inside that range for {len(inside)} of {len(measured)} optimizers")
    if bounds:
        out += ("; " + ", ".join(f"{label(o)} {'≥' if p.bounds[o] == '>=' else '≤'} {v:.0f}" for o, v in bounds.items())
                + " are bounds and are not placed")
    return out + "."


def _init_text(n: NoiseFacts) -> str:
    return seed_summary(n.init, ".0f") if n.init.n else f"{n.at_init:.0f}"


def text(ctx: Context) -> str:
    noise = ctx.noise
    if noise is None:
        return ctx.not_measured("default", "run make sweep")
    init, end = noise.at_init, noise.end_median
    eq = ctx.equivalence.runs if ctx.equivalence else None
    eqs = ""
    if eq is not None and "err/b_simple_vs_direct" in eq:
        eqs = (f" The estimate from per-example norms (no B × P tensor) matches the direct computation from "
               f"per-example gradients to {eq['err/b_simple_vs_direct'].max():.1e}.")
    t = noise.tests
    if len(t):
        called = t[t["verdict"] != "not resolved"]
        grows = t[t["verdict"] == "grows"]
        per = "; ".join(f"{label(r.optimizer)} {_times(t_text(r.ratio, r.lo, r.hi, int(r.n), '.1f'))}, {r.verdict}"
                        for r in t.itertuples())
        trend = (f"B_simple grew during training for {_names(grows)}" if len(grows) == len(t) else
                 f"B_simple's change over training is resolved for {len(called)} of {len(t)} optimizers" if len(called)
                 else "whether B_simple grows over training is not resolved by these seeds")
        answer = (f"**Partly: per-example gradients cancel only in part — at initialisation B_simple = tr(Σ)/‖G‖² ≈ "
                  f"{_init_text(noise)}, so about that many examples are needed before the mean gradient outweighs "
                  f"their spread; {trend}.** End over start, seed by seed: {per}.")
        method = (f"Per seed, B_simple at step 0 (the median over the groups: the same weights and data) and at the "
                  "last evaluation (the median over each optimizer's (reduction, B) groups at their best rate); the "
                  "ratio end / start is a geometric mean over seeds with a 95% t-interval, a verdict needing its "
                  f"Holm-adjusted p-value over the {len(t)} optimizers below 0.05 (fewer than 3 seeds: no interval, "
                  "not resolved).")
    else:
        answer = (f"**Partly: at initialisation B_simple ≈ {init:.0f}, by the end of training the median over groups "
                  f"is {end:.0f} (no per-seed values: not resolved).**")
        method = ""
    return (
        answer + "\n\n"
        "Losses do not cancel (each is ≥ 0); gradients are vectors and partly do. How much is measured by the "
        "simple noise scale B_simple = tr(Σ)/‖G‖², the ratio of per-example gradient variance to the squared "
        f"mean gradient, computed exactly over the whole training set at every evaluation.{eqs} {method} "
        "A growing B_simple means the mean gradient shrinks faster than the spread, so larger batches become "
        "useful later in training (McCandlish et al. 2018)."
        + _bcrit_in_range(ctx, noise.curves) + "\n\n"
        + ctx.figure("d_b_simple")
    )


def _times(text: str) -> str:
    """``4.0× [3.1, 5.2]``-style: the × after the estimate, before its interval or note."""
    return text.replace(" ", "× ", 1) if " " in text else text + "×"


def _names(t: pd.DataFrame) -> str:
    names = [label(o) for o in t["optimizer"]]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def b_simple(ctx: Context):
    """B_simple over training per B, against science's fitted B_crit when that sweep exists."""
    n = ctx.noise
    if n is None:
        raise Skip("the runs logged no grad/b_simple history")
    fits = ctx.science.fits if ctx.science else {}
    opts = optimizers_in(n.curves["optimizer"])
    fig, axes = plt.subplots(1, len(opts), figsize=(3.2 * len(opts), 2.9), squeeze=False)
    for j, opt in enumerate(opts):
        g = n.curves[(n.curves["optimizer"] == opt) & (n.curves["reduction"] == ctx.default.curve_reduction)]
        plots.plot_b_simple(axes[0, j], g, fits.get(opt, {}).get("B_crit"))
        axes[0, j].set_title(opt)
        if axes[0, j].get_legend() is not None:
            axes[0, j].get_legend().remove()
    plots.legend_right(fig, axes[0, 0])
    plots.suptitle(fig, f"B_simple: {n.at_init:.0f} at initialisation, {n.end_median:.0f} at the end")
    return fig


def finding(ctx: Context) -> Answer | None:
    if ctx.noise is None:
        return None
    n = ctx.noise
    t = n.tests
    if len(t):
        verdicts = "; ".join(f"{label(r.optimizer)} {r.verdict}" for r in t.itertuples())
        number = (f"B_simple at init {_init_text(n)}; end/init " + ", ".join(
            f"{label(r.optimizer)} {_times(t_text(r.ratio, r.lo, r.hi, int(r.n), '.1f'))}" for r in t.itertuples()))
        return Answer(f"Partly: B_simple = tr(Σ)/‖G‖² ≈ {n.at_init:.0f} at initialisation; over training: {verdicts}.",
                      number, f"MNIST-1D MLP, {int(t['n'].max())} seed{'s' if int(t['n'].max()) != 1 else ''}, "
                      "best-rate runs of the main sweep")
    return Answer(f"Partly. B_simple ≈ {n.at_init:.0f} at initialisation, median {n.end_median:.0f} at the end.",
                  f"{n.end_median / n.at_init:.1f}× over training", "no per-seed values: not resolved")


def _read(ctx: Context) -> NoiseFacts | None:
    return None if ctx.default is None else noise_facts(ctx.default)


SECTION = Section(
    "Q7", "Per-example losses 2 and −2 \"average to zero\": do per-example gradients cancel?",
    text=text,
    provides=(Provider("noise", _read),),
    figures=(FigureSpec("d_b_simple", b_simple, ("default",), "B_simple over training per batch size (best learning "
                        "rate), against the fitted B_crit.", sweep=True,
                        sweep_caption="B_simple over training per batch size (best learning rate)."),),
    limits="B_simple on the default sweep's MNIST-1D MLP runs at their best learning rate; it estimates the noise "
           "scale under the assumption of a well-conditioned Hessian (McCandlish et al.), which is not checked here.",
    finding=("Q7 do gradients cancel?", finding),
)
