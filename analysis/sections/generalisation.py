"""Q5b, do small batches generalise better? The ``generalisation`` sweep read under three budgets.

Every run of ``experiments/grids/generalisation.toml`` logs the validation and
test error at every evaluation. From each run's history:

- ``fixed epochs``: the first evaluation at or after :data:`EPOCHS` passes over
  the training set (``EPOCHS * n_train / B`` steps);
- ``fixed steps``: the evaluation at :data:`STEPS` steps;
- ``to convergence``: the evaluation with the lowest validation error over the
  whole run (early stopping; the runs are long enough to be past it).

For each (workload, B, budget, seed) the learning rate is the one with the
lowest validation error at that budget (tuned per B, as Shallue et al. §4.8
require), and the test error is read at the same evaluation. Error is
1 − accuracy for classification and the MSE for regression data sets.
Pure: DataFrames in, DataFrames out.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis import load, order, plots, reduce, stats
from analysis.markdown import md_table
from analysis.plots import Skip
from analysis.section import Answer, Context, FigureSpec, Provider, Section
from analysis.sections.workloads import ordered, workload_of
from mbstudy.data import DATASETS, n_validation

plt = plots.plt

EPOCHS = 10
STEPS = 1000
BUDGETS = (f"fixed epochs ({EPOCHS})", f"fixed steps ({STEPS})", "to convergence (best validation error)")
KEYS = ("val/acc", "val/loss", "test/acc", "test/loss")  # the history the reduction reads


@dataclass(frozen=True)
class GeneralisationFacts:
    experiment: str
    runs: pd.DataFrame
    table: pd.DataFrame  # per workload, budget, B: test error median, lo, hi over seeds; n; learning rates chosen
    gaps: pd.DataFrame  # per workload, budget: test error at the largest B minus at the smallest, per seed and summary
    labels: dict[str, str] = dataclasses.field(default_factory=dict)  # workload -> its grid's label, in order
    edges: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)  # chosen rates on the grid's edge


def _errors(history: pd.DataFrame) -> pd.DataFrame:
    """Per run and step: ``val`` and ``test`` error (1 − accuracy where logged, else the MSE)."""
    wide = history[history["metric"].isin(KEYS)].pivot_table(index=["run_id", "step"], columns="metric",
                                                              values="value", aggfunc="first")
    out = pd.DataFrame(index=wide.index)
    for split in ("val", "test"):
        acc, loss = wide.get(f"{split}/acc"), wide.get(f"{split}/loss")
        out[split] = (1 - acc).where(acc.notna(), loss) if acc is not None else loss
    return out.dropna().reset_index()


def _n_train(row) -> int:
    n = DATASETS[row["dataset"]].n_train
    return n - n_validation(n, float(row.get("val_fraction", 0.0) or 0.0))


def budget_points(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per run and budget: the step read, the validation and test error there."""
    err = _errors(history)
    rows = []
    for r in runs.to_dict("records"):
        e = err[err["run_id"] == r["run_id"]].sort_values("step")
        if e.empty or r["outcome"] != "completed":
            continue
        at_epochs = math.ceil(EPOCHS * _n_train(r) / r["batch_size"])
        picks = {BUDGETS[0]: e[e["step"] >= at_epochs].head(1),
                 BUDGETS[1]: e[e["step"] >= STEPS].head(1),
                 BUDGETS[2]: e.loc[[e["val"].idxmin()]]}
        for budget, p in picks.items():
            if len(p):
                rows.append({"run_id": r["run_id"], "budget": budget, "step": int(p["step"].iloc[0]),
                             "val": float(p["val"].iloc[0]), "test": float(p["test"].iloc[0])})
    return pd.DataFrame(rows, columns=["run_id", "budget", "step", "val", "test"])


def generalisation_facts(runs: pd.DataFrame, history: pd.DataFrame, experiment: str = "generalisation",
                         labels: dict[str, str] | None = None) -> GeneralisationFacts:
    """``labels``: workload -> label, in order; by default the grid ``<experiment>``'s."""
    pts = budget_points(runs, history)
    cols = ["run_id", "workload", "optimizer", "batch_size", "learning_rate", "seed"]
    df = pts.merge(runs.assign(workload=workload_of(runs))[cols], on="run_id")
    keys = ["workload", "budget", "batch_size", "seed"]
    best = df.sort_values(["val", "learning_rate"], kind="stable").groupby(keys, as_index=False).head(1)
    table = best.groupby(["workload", "budget", "batch_size"], as_index=False).agg(
        median=("test", "mean"), lo=("test", "min"), hi=("test", "max"), n=("test", "size"),
        step=("step", "median"), learning_rates=("learning_rate", lambda s: ",".join(f"{x:g}" for x in sorted(set(s)))))
    return GeneralisationFacts(experiment, runs, table, gaps(best),
                               order.workload_labels(experiment) if labels is None else labels,
                               edge_optima(best, runs))


def gaps(best: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, budget): the test error at the largest B minus at the smallest, seed by seed (the same
    seed: the same initialisation), its mean over seeds with a 95% t-interval and the p-value of no gap; the family
    of the section's comparisons is adjusted by Holm's rule, and a verdict (``larger B worse``, ``larger B better``
    or ``not resolved``) needs its adjusted p-value below 0.05. A gap smaller than one test example's share of the
    error (``resolution``: 1 / the test set's size, for an error rate) cannot be told apart at all."""
    rows = []
    for (w, budget), g in best.groupby(["workload", "budget"], sort=False):
        small, large = g["batch_size"].min(), g["batch_size"].max()
        a = g[g["batch_size"] == small].set_index("seed")["test"]
        b = g[g["batch_size"] == large].set_index("seed")["test"]
        d = (b - a).dropna()
        if d.empty:
            continue
        m, lo, hi, p = stats.mean_interval(d.to_numpy(float))
        rows.append({"workload": w, "budget": budget, "small_B": int(small), "large_B": int(large),
                     "gap": m, "gap_lo": lo, "gap_hi": hi, "p": p, "seed_lo": float(d.min()), "seed_hi": float(d.max()),
                     "n_seeds": int(len(d)), "error_small_B": float(a.mean()), "error_large_B": float(b.mean())})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    out["p_holm"] = stats.holm(out["p"])
    out["verdict"] = ["not resolved" if not (np.isfinite(q) and q < 0.05) else
                      "larger B worse" if m > 0 else "larger B better" for m, q in zip(out["gap"], out["p_holm"])]
    return out


def edge_optima(best: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """The (workload, budget, B, seed) whose chosen learning rate is the smallest or largest of the rates tried at
    that workload and B."""
    side = reduce.rate_edge(best, runs.assign(workload=workload_of(runs)), ["workload", "batch_size"])
    return best[side != ""][["workload", "budget", "batch_size", "seed", "learning_rate"]].reset_index(drop=True)


def figure_table(g: GeneralisationFacts) -> pd.DataFrame:
    """The table the Q5b figure draws: ``table`` with the budgets in :data:`BUDGETS` order."""
    t = g.table.copy()
    t["budget"] = pd.Categorical(t["budget"], categories=[b for b in BUDGETS if b in set(t["budget"])], ordered=True)
    return t.sort_values(["budget", "workload", "batch_size"])


def _gap(r) -> str:
    return f"{r.gap:+.3f} [{r.gap_lo:+.3f}, {r.gap_hi:+.3f}]" if np.isfinite(r.gap_lo) else f"{r.gap:+.3f}"


def text(ctx: Context) -> str:
    g = ctx.generalisation
    if g is None:
        return ctx.not_measured("generalisation", "make sweep GRID=generalisation")
    if g.gaps.empty:
        return "The generalisation sweep holds no completed run with a validation and test error; rerun it.\n"
    gp = g.gaps
    by = {b: gp[gp["budget"] == b] for b in BUDGETS}
    worse = {b: by[b][by[b]["verdict"] == "larger B worse"] for b in BUDGETS}
    conv, ep = BUDGETS[2], BUDGETS[0]
    answer = (f"**At a fixed number of epochs the larger batch generalised worse in {len(worse[ep])} of {len(by[ep])} "
              f"workloads; trained to its best validation error, with the learning rate tuned per B, in "
              f"{len(worse[conv])} of {len(by[conv])}**")
    answer += ((": " + ", ".join(f"{g.labels.get(r.workload, r.workload)} {_gap(r)}" for r in worse[conv].itertuples())
                + ". There, fewer updates do not explain all of it.") if len(worse[conv]) else
               ": what a fixed budget shows as a large-batch gap goes with the fewer updates a large batch gets "
               "(Hoffer et al. 2017), not with the batch size itself (Keskar et al. 2017 claimed the latter).")
    lines = []
    for b in BUDGETS:
        sub = by[b]
        if len(sub):
            counts = sub["verdict"].value_counts()
            lines.append(f"- **{b}**: " + ", ".join(f"{v} in {n}" for v, n in counts.items()) + f" of {len(sub)} "
                         f"workloads; test error at B = {int(sub['large_B'].iloc[0])} minus at B = "
                         f"{int(sub['small_B'].iloc[0])}, mean over seeds [95% t-interval]: "
                         + ", ".join(f"{g.labels.get(r.workload, r.workload)} {_gap(r)}" for r in sub.itertuples())
                         + ".")
    seeds = int(g.table["n"].max())
    edges = len(g.edges)
    return "\n".join([
        answer + "\n",
        f"Each workload, with heavy-ball momentum at B = {', '.join(str(b) for b in sorted(set(g.table['batch_size'])))}, "
        f"{_rates_text(g)} and {seeds} seeds "
        "(sweep `generalisation`), read under three "
        f"budgets: {EPOCHS} epochs, {STEPS} steps, and the whole run at its best validation error (early stopping, "
        "the runs are long enough to be past it). The learning rate is chosen per B and budget by the validation "
        f"error; the test error (1 − accuracy; MSE for the {' and '.join(_regression(g))}) is read at the same "
        "evaluation. The gap is the test error at the largest B minus at the smallest, seed by seed (the same "
        "initialisation); a verdict needs its Holm-adjusted p-value (over the section's "
        f"{len(gp)} comparisons) below 0.05. {edges} of the (workload, budget, B, seed) choices took the smallest or "
        "largest rate of the grid" + (" (listed in the appendix)." if edges else "."), "",
        *lines, "",
        ctx.figure("w3_generalisation"),
    ])


def _rates_text(g: GeneralisationFacts) -> str:
    """``7 learning rates (0.00316, …)``, and the rates only some (workload, B) tried, with where."""
    r = g.runs.assign(workload=workload_of(g.runs))
    tried = r.groupby(["workload", "batch_size"])["learning_rate"].agg(lambda s: frozenset(s.round(12)))
    common = frozenset.intersection(*tried) if len(tried) else frozenset()
    out = f"{len(common)} learning rates ({', '.join(f'{x:g}' for x in sorted(common))})"
    extra = sorted(set(r["learning_rate"].round(12)) - common)
    for x in extra:
        where = [(w, int(b)) for (w, b), rates in tried.items() if x in rates]
        out += (f", and {x:g} at " + "; ".join(f"B = {b} of {g.labels.get(w, w)}" for w, b in where)
                + " (where a first run's best was the grid's edge)")
    return out


def appendix(ctx: Context) -> str:
    g = ctx.generalisation
    if g is None or g.table.empty:
        return ""
    t = g.table.copy()
    t["test error, mean [seed range]"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]"
                                          for m, lo, hi in t[["median", "lo", "hi"]].to_numpy()]
    t = t.pivot_table(index=["workload", "budget"], columns="batch_size", values="test error, mean [seed range]",
                      aggfunc="first").reset_index()
    t["workload"] = t["workload"].map(lambda w: g.labels.get(w, w))
    t.columns = [f"B = {c}" if isinstance(c, (int, np.integer)) else c for c in t.columns]
    parts = ["### Q5b: test error per workload, budget and batch size", "",
             "The mean over seeds of the test error at each budget's chosen rate, with the seeds' range (a range, not "
             "an interval).", "", md_table(t), ""]
    if len(g.edges):
        e = g.edges.assign(workload=g.edges["workload"].map(lambda w: g.labels.get(w, w)))
        parts += ["Choices on the edge of the rate grid:", "", md_table(e, ".3g"), ""]
    return "\n".join(parts)


def _regression(g: GeneralisationFacts) -> dict[str, str]:
    """The regression data sets of the sweep (error = MSE) -> their workload."""
    r = g.runs.assign(workload=workload_of(g.runs)).drop_duplicates("workload")
    return {d: w for d, w in zip(r["dataset"], r["workload"]) if d in DATASETS and DATASETS[d].task == "regression"}


def generalisation_figure(ctx: Context):
    """Test error against B, one panel per workload, one line per budget of Q5b."""
    g = ctx.generalisation
    t = figure_table(g)
    if t.empty:
        raise Skip("no completed run of the generalisation sweep logged a validation and test error")
    cols = ordered(t["workload"], g.labels)
    fig, axes = plt.subplots(1, len(cols), figsize=(3.1 * len(cols), 3.0), squeeze=False)
    for j, c in enumerate(cols):
        ax = axes[0, j]
        for b in t["budget"].cat.categories:
            s = t[(t["workload"] == c) & (t["budget"] == b)].sort_values("batch_size")
            ax.errorbar(s["batch_size"], s["median"], yerr=[(s["median"] - s["lo"]).clip(lower=0),
                                                              (s["hi"] - s["median"]).clip(lower=0)],
                        fmt="o-", ms=3, lw=1, capsize=2, label=b)
        ax.set_xscale("log", base=2)
        ax.set_title(g.labels.get(c, c), fontsize=8)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("test MSE" if c in _regression(g).values() else "test error (1 − accuracy)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, bbox_to_anchor=(0.5, 0.0))
    worse = g.gaps[g.gaps["verdict"] == "larger B worse"]
    plots.suptitle(fig, f"Q5b: test error against B, momentum, learning rate tuned per B and budget (mean, range over "
                        f"seeds); larger B worse in {len(worse)} of {len(g.gaps)} (workload, budget) pairs (Holm, 5%)")
    return fig


def finding(ctx: Context) -> Answer | None:
    g = ctx.generalisation
    if g is None or g.gaps.empty:
        return None
    by = {b: g.gaps[g.gaps["budget"] == b] for b in BUDGETS}
    worse = {b: int((by[b]["verdict"] == "larger B worse").sum()) for b in BUDGETS}
    small, large = int(g.gaps["small_B"].iloc[0]), int(g.gaps["large_B"].iloc[0])
    answer = (f"At a fixed number of epochs the larger batch generalised worse in {worse[BUDGETS[0]]} of "
              f"{len(by[BUDGETS[0]])} workloads; tuned and trained to its best validation error, in "
              f"{worse[BUDGETS[2]]} of {len(by[BUDGETS[2]])}.")
    conv = by[BUDGETS[2]]
    return Answer(answer, "test error at B = {} minus B = {} to convergence: ".format(large, small)
                  + ", ".join(f"{g.labels.get(r.workload, r.workload)} {_gap(r)}" for r in conv.itertuples()),
                  "heavy-ball momentum only, no augmentation, weight decay or schedule; Holm over the section's "
                  f"{len(g.gaps)} comparisons")


def _read(ctx: Context) -> GeneralisationFacts:
    runs = load.load_runs("generalisation", hint="make sweep GRID=generalisation")
    hist = load.load_history(runs, "generalisation", keys=KEYS, progress=ctx.progress)
    return generalisation_facts(runs, hist)


SECTION = Section(
    "Q5b", "Do small batches generalise better?",
    text=text,
    provides=(Provider("generalisation", _read),),
    figures=(FigureSpec("w3_generalisation", generalisation_figure, ("generalisation",), "Test error against B per "
                        "workload, one line per budget (mean over seeds, bars the range)."),),
    appendix=appendix,
    finding=("Q5b do small batches generalise better?", finding),
)
