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

from analysis import load, order, plots
from analysis.markdown import md_table
from analysis.plots import Skip
from analysis.section import Context, FigureSpec, Provider, Section
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
        median=("test", "median"), lo=("test", "min"), hi=("test", "max"), n=("test", "size"),
        step=("step", "median"), learning_rates=("learning_rate", lambda s: ",".join(f"{x:g}" for x in sorted(set(s)))))
    return GeneralisationFacts(experiment, runs, table, gaps(best),
                               order.workload_labels(experiment) if labels is None else labels)


def gaps(best: pd.DataFrame) -> pd.DataFrame:
    """Per (workload, budget): the test error at the largest B minus at the smallest, seed by seed (the same
    seed: the same initialisation), with the mean and range over seeds and a verdict that needs every seed
    to agree (with 3 seeds a sign test cannot do better): ``larger B worse``, ``larger B better`` or ``no
    consistent gap``."""
    rows = []
    for (w, budget), g in best.groupby(["workload", "budget"], sort=False):
        small, large = g["batch_size"].min(), g["batch_size"].max()
        a = g[g["batch_size"] == small].set_index("seed")["test"]
        b = g[g["batch_size"] == large].set_index("seed")["test"]
        d = (b - a).dropna()
        if d.empty:
            continue
        verdict = ("larger B worse" if (d > 0).all() else "larger B better" if (d < 0).all()
                   else "no consistent gap")
        rows.append({"workload": w, "budget": budget, "small_B": int(small), "large_B": int(large),
                     "gap": float(d.mean()), "gap_lo": float(d.min()), "gap_hi": float(d.max()),
                     "n_seeds": int(len(d)), "verdict": verdict, "error_small_B": float(a.median()),
                     "error_large_B": float(b.median())})
    return pd.DataFrame(rows)


def figure_table(g: GeneralisationFacts) -> pd.DataFrame:
    """The table the Q5b figure draws: ``table`` with the budgets in :data:`BUDGETS` order."""
    t = g.table.copy()
    t["budget"] = pd.Categorical(t["budget"], categories=[b for b in BUDGETS if b in set(t["budget"])], ordered=True)
    return t.sort_values(["budget", "workload", "batch_size"])


def text(ctx: Context) -> str:
    g = ctx.generalisation
    if g is None:
        return ctx.not_measured("generalisation", "make sweep GRID=generalisation")
    if g.gaps.empty:
        return "The generalisation sweep holds no completed run with a validation and test error; rerun it.\n"
    gp = g.gaps
    lines = []
    for b in BUDGETS:
        sub = gp[gp["budget"] == b]
        if len(sub):
            counts = sub["verdict"].value_counts()
            lines.append(f"- **{b}**: " + ", ".join(f"{v} in {n}" for v, n in counts.items()) + " of "
                         f"{len(sub)} workloads; test error at B = {int(sub['large_B'].iloc[0])} minus at B = "
                         f"{int(sub['small_B'].iloc[0])}: "
                         + ", ".join(f"{r.workload} {r.gap:+.3f} [{r.gap_lo:+.3f}, {r.gap_hi:+.3f}]"
                                     for r in sub.itertuples()) + ".")
    conv = gp[gp["budget"] == BUDGETS[2]]
    worse_conv = int((conv["verdict"] == "larger B worse").sum())
    worse_epochs = int((gp[gp["budget"] == BUDGETS[0]]["verdict"] == "larger B worse").sum())
    answer = (f"At a fixed number of epochs the larger batch was worse on every seed in {worse_epochs} of "
              f"{int((gp['budget'] == BUDGETS[0]).sum())} workloads; trained to the best validation error with the "
              f"learning rate tuned per B, in {worse_conv} of {len(conv)}. ")
    ep = gp[gp["budget"] == BUDGETS[0]].set_index("workload")["gap"]
    kept = conv[conv["verdict"] == "larger B worse"]
    answer += ("The gap survives the third budget on some workloads, smaller: "
               + ", ".join(f"{r.workload} {r.gap:+.3f} (at {EPOCHS} epochs {ep.get(r.workload, np.nan):+.3f})"
                           for r in kept.itertuples())
               + "; there, fewer updates do not explain all of it."
               if worse_conv else
               "No gap survives the third budget: what a fixed budget shows as a large-batch gap goes with the "
               "fewer updates a large batch gets (Hoffer et al. 2017), not with the batch size itself (Keskar et "
               "al. 2017 claimed the latter).")
    t = g.table.copy()
    t["test error [range]"] = [f"{m:.3f} [{lo:.3f}, {hi:.3f}]" for m, lo, hi in t[["median", "lo", "hi"]].to_numpy()]
    t = t.pivot_table(index=["workload", "budget"], columns="batch_size", values="test error [range]",
                      aggfunc="first").reset_index()
    t.columns = [f"B = {c}" if isinstance(c, (int, np.integer)) else c for c in t.columns]
    return "\n".join([
        f"Each workload, with heavy-ball momentum at B = {', '.join(str(b) for b in sorted(set(g.table['batch_size'])))}, "
        f"{g.runs['learning_rate'].nunique()} learning rates "
        f"({', '.join(f'{x:g}' for x in sorted(set(g.runs['learning_rate'])))}) and {int(g.table['n'].max())} seeds "
        "(sweep `generalisation`), read under three "
        f"budgets: {EPOCHS} epochs, {STEPS} steps, and the whole run at its best validation error (early stopping, "
        "the runs are long enough to be past it). The learning rate is chosen per B and budget by the validation "
        f"error; the test error (1 − accuracy; MSE for the {' and '.join(_regression(g))}) is read at the same "
        "evaluation. The gap is the "
        "test error at the largest B minus at the smallest, seed by seed; a verdict needs every seed to agree.\n",
        f"**Answer:** {answer}\n",
        *lines, "",
        md_table(t) + "\n",
        ctx.figure("w3_generalisation"),
        "**Limits.** Three batch sizes and one optimizer (momentum 0.9); no weight decay, augmentation or "
        "learning-rate schedule, which Shallue et al. and Hoffer et al. show can move a gap; 3 seeds, so a verdict "
        "is a sign agreement, not a test at a stated level; the data sets are small, and the MNIST-1D MLP overfits "
        "(validation error rises after its minimum), which is what early stopping reads.\n",
    ])


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
            ax.errorbar(s["batch_size"], s["median"], yerr=[s["median"] - s["lo"], s["hi"] - s["median"]],
                        fmt="o-", ms=3, lw=1, capsize=2, label=b)
        ax.set_xscale("log", base=2)
        ax.set_title(g.labels.get(c, c), fontsize=8)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("test MSE" if c in _regression(g).values() else "test error (1 − accuracy)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7, bbox_to_anchor=(0.5, 0.0))
    worse = g.gaps[g.gaps["verdict"] == "larger B worse"]
    plots.suptitle(fig, f"Q5b: test error against B, momentum, learning rate tuned per B and budget (median, range over "
                 f"seeds); larger B worse in {len(worse)} of {len(g.gaps)} (workload, budget) pairs")
    return fig


def finding(ctx: Context) -> str | None:
    g = ctx.generalisation
    if g is None or g.gaps.empty:
        return None
    out = []
    for b in BUDGETS:
        sub = g.gaps[g.gaps["budget"] == b]
        if len(sub):
            out.append(f"{b}: larger B worse in {int((sub['verdict'] == 'larger B worse').sum())} of {len(sub)} workloads")
    return "Test error, B = 8 against 512, momentum, lr tuned per B: " + "; ".join(out) + "."




def _read(ctx: Context) -> GeneralisationFacts:
    runs = load.load_runs("generalisation", hint="make sweep GRID=generalisation")
    hist = load.load_history(runs, "generalisation", keys=KEYS, progress=ctx.progress)
    return generalisation_facts(runs, hist)


SECTION = Section(
    "Q5b", "Do small batches generalise better?",
    text=text,
    provides=(Provider("generalisation", _read),),
    figures=(FigureSpec("w3_generalisation", generalisation_figure, ("generalisation",), "Test error against B per "
                        "workload, one line per budget (median over seeds, bars the range)."),),
    finding=("Q5b do small batches generalise better?", finding),
)
